"""The engine every input-synthesis technique runs on: minimise the losses of N independent
image latents with an optax optimiser, in ``lax.scan`` chunks.

Techniques build ``loss_fn(latents, keys) -> (losses [N], aux)`` for a stack of N problems
(targets x restarts, images, settings) that closes over the model and the targets. A run is
three compiled programs: the technique's setup (targets, starting latents, :func:`init_state`),
its ``advance`` (:func:`minimise_chunk`: up to :data:`CHUNK_STEPS` steps in one ``lax.scan``)
called as often as the run needs by :func:`drive`, which checks for Ctrl-C between calls, and
its finish (the results from the final latents). The optimiser's state and update are vmapped
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

from cnnjax._src.checks import check_floats, wait
from cnnjax._src.contract import Activations
from cnnjax._src.sharding import to_host

__all__ = [
    "CHUNK_STEPS",
    "Optimizer",
    "by_learning_rate",
    "chunks",
    "drive",
    "init_state",
    "learning_rate_hyperparams",
    "minimise_chunk",
    "apply_stacked",
    "normalize_by_mean_abs",
    "check_optimizer",
]


Optimizer = optax.GradientTransformation | Callable[[Any], optax.GradientTransformation]


#: Steps per compiled call of a long optimisation: between calls the host checks for Ctrl-C.
CHUNK_STEPS = 128


def init_state(optimizer: Optimizer, latents: Any, hyperparams: Any = None) -> Any:
    """The optimiser's state for each of the N problems (vmapped ``init``)."""
    factory = not isinstance(optimizer, optax.GradientTransformation)
    return jax.vmap(lambda z, h: (optimizer(h) if factory else optimizer).init(z))(latents, hyperparams)


def minimise_chunk(
    loss_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
    latents: Any,
    state: Any,
    keys: jax.Array,
    optimizer: Optimizer,
    hyperparams: Any,
    start: jax.Array,
    *,
    length: int,
    steps: int,
    final: bool = True,
) -> tuple[Any, Any, Any]:
    """Iterations ``start .. start + length - 1`` of ``steps`` optimiser steps on N independent
    problems, in one loop (inside the caller's ``jax.jit``).

    Iteration ``i`` evaluates ``loss_fn`` at the current latents with the keys
    ``fold_in(keys[p], i)`` and, while ``i < steps``, takes one step; with ``final``, the
    iteration at ``steps`` only evaluates (the final losses: the network is compiled once,
    inside the loop, and not again after it). Later ones, which pad a run out to whole chunks,
    do not run (the loop's trip count is traced; their aux is zeros). ``steps`` may be traced: a run with
    another number of steps reuses the compiled program when :func:`chunks` gives it the same
    ``length``.

    Args:
      loss_fn: ``(latents, keys) -> (losses [N], aux)``: ``latents`` with a leading axis of N
        problems, ``keys`` one key per problem for this step. Problem ``i``'s loss must
        depend on ``latents[i]`` only.
      latents: the latents, a pytree whose leaves have a leading axis N.
      state: the optimiser's state (:func:`init_state`).
      keys: one key per problem ``[N]``.
      optimizer: any optax transformation, applied to each problem separately; or a function
        ``hyperparams -> transformation``, built per problem from its own hyperparameters.
      hyperparams: with an optimizer function, its argument: a pytree whose leaves have a
        leading axis N (traced: new values never recompile); else None.
      start: the first iteration's index (traced).
      length: iterations in this call (static).
      steps: optimiser steps in the whole run (an int, or traced).
      final: whether the run ends with the evaluation at ``steps`` (static; :func:`drive`
        passes its own).

    Returns:
      ``(latents, state, aux stacked over the iterations)``.
    """
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

    def live(carry, i):
        z, state = carry
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        (_, (losses, aux)), g = grad_fn(z, step_keys)
        z, state = jax.lax.cond(
            i >= steps, lambda: (z, state), lambda: update(z, state, g, losses, step_keys)
        )
        return (z, state), aux

    n = jax.tree.leaves(latents)[0].shape[0]
    if keys.shape != (n,):
        raise ValueError(f"minimise_chunk needs one key per problem ({n}), got keys of shape {keys.shape}")
    # The iterations up to the final evaluation run; those past it (padding a run out to whole
    # chunks) do not: a loop with a traced trip count, each iteration's aux written into a
    # buffer of ``length`` rows whose shapes come from one trace of the loss (no FLOPs).
    shapes = jax.eval_shape(lambda z: loss_fn(z, keys)[1], latents)
    buffer = jax.tree.map(lambda a: jnp.zeros((length,) + a.shape, a.dtype), shapes)

    def step(j, carry):
        carry, buffer = carry
        carry, aux = live(carry, start + j)
        buffer = jax.tree.map(lambda b, a: jax.lax.dynamic_update_index_in_dim(b, a, j, 0), buffer, aux)
        return carry, buffer

    count = jnp.clip(steps + int(final) - start, 0, length)
    (latents, state), aux = jax.lax.fori_loop(0, count, step, ((latents, state), buffer))
    return latents, state, aux


def chunks(steps: int, final: bool, chunk: int | None = None) -> tuple[int, int]:
    """``(calls, length)``: ``steps`` steps (and the final evaluation) in ``calls`` compiled
    calls of ``length`` iterations each (one program for every call). The length is rounded
    up to a power of two (at most the chunk), so runs of similar lengths share one program; the
    iterations past the run's end cost nothing (:func:`minimise_chunk`)."""
    total = steps + int(final)
    chunk = CHUNK_STEPS if chunk is None else chunk
    calls = -(-total // chunk)
    need = -(-total // calls)
    return calls, min(1 << (need - 1).bit_length(), max(chunk, need))


def drive(advance: Callable, latents: Any, state: Any, steps: int, *, final: bool) -> tuple[Any, Any, Any]:
    """Run a whole optimisation as :func:`chunks` calls of ``advance(latents, state, start, *,
    length, final) -> (latents, state, aux)`` (a jitted :func:`minimise_chunk`), waiting for each in a
    way Ctrl-C interrupts at once: a long run stops within a call, never runs on unseen.

    Returns:
      ``(latents, history, final aux)``: ``history`` stacks ``aux`` over the ``steps`` steps
      (NumPy, on the host), ``final aux`` is the evaluation after the last step (None without
      ``final``).
    """
    calls, length = chunks(steps, final)
    parts = []
    for c in range(calls):
        latents, state, aux = advance(latents, state, np.int32(c * length), length=length, final=final)
        parts.append(to_host(wait(aux)))
    aux = jax.tree.map(lambda *a: np.concatenate(a), *parts)
    history = jax.tree.map(lambda a: a[:steps], aux)
    return latents, history, (jax.tree.map(lambda a: a[steps], aux) if final else None)


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
    :func:`minimise_chunk` passes (``{"learning_rate": ...}``), with a stable identity per ``make``
    so that jit's cache recognises it."""
    return _BY_LR.setdefault(make, lambda h: make(h["learning_rate"]))


_BY_LR: dict = {}
