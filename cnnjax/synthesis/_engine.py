"""The engine every input-synthesis technique runs on: minimise the losses of N independent
image latents with an optax optimiser inside one ``lax.scan``.

Techniques build ``loss_fn(latents, keys) -> (losses [N], aux)`` for a stack of N problems
(targets x restarts, images, settings) that closes over the model and the targets, and call
:func:`minimise` inside their own ``jax.jit``. The optimiser's state and update are vmapped
over the N problems, so every problem has its own state (Adam moments, L-BFGS memory) exactly
as if it ran alone. The network itself runs once per step on all N problems' images merged
into one batch (:func:`apply_stacked`) rather than under ``vmap``: the same numbers, but XLA
compiles the model as a plain batch, which measured 2x faster to compile on CPU than the
vmapped model.

Hyperparameters are traced: the optimiser may be given as a function of a pytree of
hyperparameters (one value per problem, e.g. ``{"learning_rate": [N]}``) that returns an optax
transformation; it is built inside the compiled program, per problem, so a new learning rate
never recompiles and N problems with N learning rates are one vmapped program (a sweep).

Line-search optimisers (``optax.lbfgs``) get ``value``, ``grad`` and a ``value_fn`` that
re-evaluates one problem's loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax._src.checks import check_floats
from cnnjax._src.contract import Activations

__all__ = [
    "Optimizer",
    "by_learning_rate",
    "learning_rate_hyperparams",
    "minimise",
    "apply_stacked",
    "normalize_by_mean_abs",
    "check_optimizer",
]


Optimizer = optax.GradientTransformation | Callable[[Any], optax.GradientTransformation]


def minimise(
    loss_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
    latents: Any,
    keys: jax.Array,
    optimizer: Optimizer,
    steps: int,
    hyperparams: Any = None,
    *,
    final: bool = False,
) -> tuple[Any, ...]:
    """Run ``steps`` optimiser steps on N independent problems; one ``lax.scan``.

    Args:
      loss_fn: ``(latents, keys) -> (losses [N], aux)``: ``latents`` with a leading axis of N
        problems, ``keys`` one fresh key per problem and step. Problem ``i``'s loss must
        depend on ``latents[i]`` only.
      latents: the starting latents, a pytree whose leaves have a leading axis N.
      keys: one key per problem ``[N]``, split into one key per step: a problem's random
        draws depend on its own key only.
      optimizer: any optax transformation, applied to each problem separately; or a function
        ``hyperparams -> transformation``, built per problem from its own hyperparameters.
      steps: the number of steps (static).
      hyperparams: with an optimizer function, its argument: a pytree whose leaves have a
        leading axis N (traced: new values never recompile).
      final: also return ``aux`` at the final latents, computed by one more pass of the
        loop's body with its update skipped: the network is compiled once, inside the loop,
        instead of once more after it.

    Returns:
      ``(final latents, aux stacked over steps)``, and with ``final`` the final ``aux``;
      ``aux`` of step ``t`` is computed before the ``t``-th update.
    """
    n = jax.tree.leaves(latents)[0].shape[0]
    factory = not isinstance(optimizer, optax.GradientTransformation)

    def opt_for(h):
        return optax.with_extra_args_support(optimizer(h) if factory else optimizer)

    def total(z, keys):
        losses, aux = loss_fn(z, keys)
        return losses.sum(), (losses, aux)

    grad_fn = jax.value_and_grad(total, has_aux=True)

    def update(z, state, g, losses, keys):
        def update_one(g_i, state_i, z_i, loss_i, key_i, h_i):
            def value_fn(w):
                return loss_fn(jax.tree.map(lambda a: a[None], w), key_i[None])[0][0]

            return opt_for(h_i).update(g_i, state_i, z_i, value=loss_i, grad=g_i, value_fn=value_fn)

        updates, state = jax.vmap(update_one)(g, state, z, losses, keys, hyperparams)
        return optax.apply_updates(z, updates), state

    def step(carry, xs):
        z, state = carry
        keys, last = xs
        (_, (losses, aux)), g = grad_fn(z, keys)
        if final:  # the last pass only evaluates: its update is skipped
            z, state = jax.lax.cond(last, lambda: (z, state), lambda: update(z, state, g, losses, keys))
        else:
            z, state = update(z, state, g, losses, keys)
        return (z, state), aux

    if keys.shape != (n,):
        raise ValueError(f"minimise needs one key per problem ({n}), got keys of shape {keys.shape}")
    step_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, steps))(keys), 0, 1)  # [steps, N]
    last = jnp.zeros((steps,), bool)
    if final:
        step_keys = jnp.concatenate([step_keys, jax.vmap(lambda k: jax.random.fold_in(k, steps))(keys)[None]])
        last = jnp.arange(steps + 1) == steps
    state = jax.vmap(lambda z, h: opt_for(h).init(z))(latents, hyperparams)
    (latents, _), history = jax.lax.scan(step, (latents, state), (step_keys, last))
    if not final:
        return latents, history
    return latents, jax.tree.map(lambda a: a[:-1], history), jax.tree.map(lambda a: a[-1], history)


def apply_stacked(apply: Callable, params: Any, images: jax.Array, layers: Sequence[str]) -> Activations:
    """Run the model on ``images`` ``[N, B, h, w, c]`` as one batch of ``N * B`` and return the
    activations of ``layers`` shaped ``[N, B, ...]``."""
    n, b = images.shape[:2]
    acts = apply(params, images.reshape((n * b,) + images.shape[2:]))
    return {name: acts[name].reshape((n, b) + acts[name].shape[1:]) for name in layers}


def normalize_by_mean_abs(eps: float = 1e-12) -> optax.GradientTransformation:
    """Divide each problem's gradient by its mean absolute value.

    DeepDream's step rule (Mordvintsev et al. 2015); it makes a learning rate a mean change
    per pixel, whatever the scale of the loss, so one setting works at every layer.
    """

    def f(updates, params=None):
        del params
        return jax.tree.map(lambda g: g / (jnp.mean(jnp.abs(g)) + eps), updates)

    return optax.stateless(f)


def check_optimizer(optimizer: Any, learning_rate: Any) -> Optimizer:
    """An optax transformation (used as it is; ``learning_rate`` must then be None) or a
    function of the learning rate that returns one (such as ``optax.adam``)."""
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError(
                "learning_rate applies to an optimizer given as a function of it (such as optax.adam); "
                "an optax transformation carries its own"
            )
        return optimizer
    if not callable(optimizer):
        raise ValueError(
            "optimizer must be an optax.GradientTransformation or a function of the learning rate "
            f"returning one (such as optax.adam), got {type(optimizer).__name__}"
        )
    if learning_rate is None:
        raise ValueError("an optimizer given as a function of the learning rate needs learning_rate")
    return optimizer


def learning_rate_hyperparams(learning_rate: Any, problems: int, repeat: int = 1) -> dict:
    """``{"learning_rate": float32 [problems * repeat]}`` from a scalar or one value per problem."""
    lr = check_floats(learning_rate, "learning_rate", lo=0.0, lo_open=True, length=problems)
    return {"learning_rate": np.repeat(np.broadcast_to(lr, (problems,)), repeat)}


def by_learning_rate(make: Callable[[Any], optax.GradientTransformation]):
    """Turn ``make(learning_rate) -> transformation`` into a function of the hyperparameters
    :func:`minimise` passes (``{"learning_rate": ...}``), with a stable identity per ``make``
    so that jit's cache recognises it."""
    return _BY_LR.setdefault(make, lambda h: make(h["learning_rate"]))


_BY_LR: dict = {}
