"""Activation maximisation: the input that maximises a neuron, a channel, a class or a direction.

``visualize(model, objectives)`` optimises one image (or a batch of ``batch`` images) per
objective, all objectives in one compiled program: the objectives are stacked into a pytree
with a leading target axis and the whole run (initialisation, ``steps`` optimiser steps in a
``lax.scan``, ``restarts`` independent restarts and the choice of the best) is vmapped over
it. Every target and restart has its own optimiser state and its own random transforms.

Presets (:data:`PRESETS`):

* ``"lucid"``: Fourier latent with decorrelated colour and a sigmoid, Adam 0.05, 512 steps,
  128 px, transforms pad 12 / jitter 8 / scale 0.9-1.1 / rotate +-10 degrees / jitter 4
  (Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017, and Lucid's defaults).
* ``"yosinski"``: pixel space, SGD 0.3 with L2 decay 1e-4, a Gaussian blur (sigma 1) every 4
  steps and clipping of the 20% smallest-norm pixels (Yosinski et al. 2015, section 3), 256
  steps, 224 px.
* ``"plain"``: the three-step recipe with nothing else: forward, gradient of the objective
  with respect to the image, add a little of it (SGD 0.3, 64 steps) to the image, kept in
  [0, 1] (Erhan et al. 2009; Simonyan et al. 2014).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import param as _param
from cnnjax import priors as _priors
from cnnjax import transforms as _transforms
from cnnjax._src.checks import MAX_STEPS, as_key, check_finite_run, check_positive_int
from cnnjax._src.chunks import MEMORY_FACTOR, budget_chunk, check_memory_budget, forward_bytes, map_row_chunks
from cnnjax._src.contract import Model, Objective, Parameterization, Transform
from cnnjax._src.sharding import chunk_for_mesh, on_mesh, shard_tree_rows, to_host
from cnnjax.objectives import stack
from cnnjax.synthesis._engine import (
    Optimizer,
    apply_stacked,
    by_learning_rate,
    check_optimizer,
    drive,
    init_state,
    learning_rate_hyperparams,
    minimise_chunk,
)

__all__ = [
    "MEMORY_FACTOR",
    "PRESETS",
    "Preset",
    "VisualizeResult",
    "bytes_per_target",
    "get_preset",
    "visualize",
]


class VisualizeResult(NamedTuple):
    """What :func:`visualize` returns.

    Attributes:
      images: float32 ``[targets * batch, h, w, c]`` in [0, 1], target-major.
      scores: ``[targets, batch]``, the objective of each final image (untransformed).
      history: ``[targets, steps]``, the objective (summed over the batch, on the transformed
        images the optimiser saw) before each step, of the chosen restart (NumPy, on the host).
      restart: ``[targets]``, which restart was chosen (the best final score).
      restart_scores: ``[targets, restarts]``, the final score (summed over the batch) of every
        restart.
    """

    images: jax.Array
    scores: jax.Array
    history: np.ndarray
    restart: jax.Array
    restart_scores: jax.Array


class Preset(NamedTuple):
    """Default settings of :func:`visualize`: an image size, a number of steps, a
    parameterization factory ``(size, batch, channels) -> Parameterization``, a transform,
    an optimiser as a function of the learning rate, and the learning rate."""

    size: int
    steps: int
    param: Callable[[int, int, int], Parameterization]
    transform: Transform | None
    optimizer: Callable[[jax.Array], optax.GradientTransformation]
    learning_rate: float


def _yosinski_optimizer(learning_rate):
    # Decay and blur as in the Deep Visualization Toolbox's example run (decay 1e-4, blur
    # radius 1 every 4 steps), plus clipping of the 20% smallest-norm pixels; the learning
    # rate was chosen on the bundled model (0.1, 0.3, 1 and 8 tried; 1 and 8 overshoot).
    return optax.chain(
        optax.sgd(learning_rate),
        _priors.l2_decay(1e-4),
        _priors.blur_every(4, 1.0),
        _priors.clip_small_norm(20),
        _priors.box(-0.5, 0.5),
    )


def _plain_optimizer(learning_rate):
    return optax.chain(optax.sgd(learning_rate), _priors.box(-0.5, 0.5))


def _lucid_param(size, batch, channels):
    return _param.image(size, batch, channels, decorrelated=channels == 3)


def _pixel_param(size, batch, channels):
    return _param.pixel(size, batch, channels)


@functools.cache
def get_preset(name: str) -> Preset:
    """The preset called ``name`` (built once, so repeated calls reuse one compiled program)."""
    T = _transforms
    if name == "lucid":
        transform = T.compose(
            T.pad(12),
            T.jitter(8),
            T.random_scale(),
            T.random_rotate(tuple(range(-10, 11)) + (0,) * 5),
            T.jitter(4),
        )
        return Preset(128, 512, _lucid_param, transform, optax.adam, 0.05)
    if name == "yosinski":
        return Preset(224, 256, _pixel_param, None, _yosinski_optimizer, 0.3)
    if name == "plain":
        return Preset(224, 64, _pixel_param, None, _plain_optimizer, 0.3)
    raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")


PRESETS = ("lucid", "yosinski", "plain")


@functools.partial(jax.jit, static_argnames=("param", "optimizer", "restarts", "targets"))
def _setup(objective, key, first, hyperparams, *, param, optimizer, restarts, targets):
    # N = targets x restarts independent problems; problem i optimises target i // restarts.
    # Target ``first + i`` of the call takes fold_in(key, first + i), which is split(key, n)[first + i]
    # (JAX's partitionable threefry): a chunk of the targets draws what the whole call would.
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(targets, dtype=jnp.uint32))
    problem_keys = jax.vmap(lambda k: jax.random.split(k, restarts))(keys).reshape(-1)
    k_init, k_run = jax.vmap(jax.random.split, out_axes=1)(problem_keys)
    objs = jax.tree.map(lambda a: jnp.repeat(a, restarts, axis=0), objective)
    latents = jax.vmap(param.init)(k_init)
    return latents, init_state(optimizer, latents, hyperparams), k_run, objs


def _scores(apply, params, objs, latents, step_keys, param, transform):
    x = jax.vmap(param.to_image)(latents)  # [N, batch, h, w, c]
    if step_keys is not None:
        x = jax.vmap(transform)(step_keys, x)
    acts = apply_stacked(apply, params, x, objs.layers())
    return jax.vmap(lambda o, a: o(a))(objs, acts)  # [N, batch]


@functools.partial(jax.jit, static_argnames=("apply", "param", "transform", "optimizer", "length", "final"))
def _advance(apply, params, objs, keys, hyperparams, latents, state, start, *, param, transform, optimizer,
             length, final, steps):  # fmt: skip
    def loss_fn(latents, step_keys):
        s = _scores(
            apply, params, objs, latents, step_keys if transform is not None else None, param, transform
        )
        return -s.sum(axis=1), s

    return minimise_chunk(
        loss_fn, latents, state, keys, optimizer, hyperparams, start, length=length, steps=steps, final=final
    )


@functools.partial(jax.jit, static_argnames=("apply", "param", "transform", "restarts", "targets"))
def _finish(apply, params, objs, latents, final, *, param, transform, restarts, targets):
    t = targets
    if final is None:  # the final images are scored untransformed, by one more forward pass
        final = _scores(apply, params, objs, latents, None, param, transform)
    final = final.reshape(t, restarts, -1)
    totals = final.sum(axis=2)
    best = jnp.argmax(jnp.where(jnp.isfinite(totals), totals, -jnp.inf), axis=1)
    images = jax.vmap(param.to_image)(latents)
    images = images.reshape((t, restarts) + images.shape[1:])[jnp.arange(t), best]
    images = images.reshape((-1,) + images.shape[2:])  # [targets * batch, h, w, c], target-major
    return images, final[jnp.arange(t), best], best, totals


def _run(
    model, objective, key, first, hyperparams, *, param, transform, optimizer, steps, restarts, targets,
    mesh=None,
):  # fmt: skip
    """Setup, the steps in chunks (Ctrl-C is seen between them), finish, for ``targets`` targets
    whose first is the call's target ``first``. With a ``mesh`` the problems (targets x restarts)
    are split over its first axis; ``targets`` must then be a multiple of its size (the caller
    pads)."""
    latents, state, keys, objs = _setup(objective, key, np.uint32(first), hyperparams, param=param,
                                        optimizer=optimizer, restarts=restarts, targets=targets)  # fmt: skip
    if mesh is not None:
        latents, state, keys, objs = shard_tree_rows(mesh, (latents, state, keys, objs), targets * restarts)
    advance = functools.partial(_advance, model.apply, model.params, objs, keys, hyperparams, param=param,
                                transform=transform, optimizer=optimizer, steps=steps)  # fmt: skip
    # Without transforms the loop's own forward pass scores the final images.
    final = transform is None
    latents, history, final_scores = drive(advance, latents, state, steps, final=final)
    images, scores, best, totals = _finish(
        model.apply, model.params, objs, latents, final_scores, param=param, transform=transform,
        restarts=restarts, targets=targets,
    )  # fmt: skip
    # The history is on the host already (and its length, the steps, is no compiled shape).
    history = history.sum(axis=-1).T.reshape(targets, restarts, -1)[np.arange(targets), to_host(best)]
    return images, scores, history, best, totals


@on_mesh
def visualize(
    model: Model,
    objectives: Objective | Sequence[Objective],
    *,
    preset: str = "lucid",
    size: int | None = None,
    steps: int | None = None,
    batch: int = 1,
    restarts: int = 1,
    param: Parameterization | None = None,
    transform: Transform | None | str = "preset",
    optimizer: Optimizer | None = None,
    learning_rate: Any = None,
    key: Any = 0,
    mesh=None,
    memory_budget: int | None = None,
    dtype=None,
) -> VisualizeResult:
    r"""Find inputs that maximise objectives: :math:`x^* = \arg\max_x a(t(x))` for each target.

    Args:
      model: a :class:`~cnnjax.Model`.
      objectives: one objective, or a list of objectives of the same kind (e.g. one
        ``channel(layer, c)`` per channel): each is a target, all run in one compiled,
        vmapped program; new targets of the same kind never recompile.
      preset: ``"lucid"``, ``"yosinski"`` or ``"plain"`` (see the module docstring); the
        arguments below override its settings.
      size: image height and width.
      steps: optimiser steps.
      batch: images per target (use with :func:`cnnjax.objectives.diversity`).
      restarts: independent runs per target; the one with the best final score is kept.
      param: a parameterization with ``batch`` images of the model's channels.
      transform: a random transform applied before every forward, or None for none.
      optimizer: a function of the learning rate returning an optax transformation (such as
        ``optax.adam``; default the preset's), or an optax transformation used as it is.
      learning_rate: the optimizer's learning rate (default the preset's): one value, or one
        per target, so a sweep of learning rates is one program (repeat the objective). It is
        an array argument: a new value never recompiles.
      key: an int seed or a PRNG key; target ``i`` uses ``fold_in(key, i)`` (which is
        ``split(key, targets)[i]``), whatever the chunk it runs in.
      mesh: a ``jax.sharding.Mesh``: the problems (targets x restarts) are split over its first
        axis, the targets padded to a multiple of its size (copies of the first, dropped from
        the result); the same result as on one device.
      memory_budget: bytes of device memory for the run's intermediate results (default: half
        the device's ``bytes_limit``, 2 GiB on CPU). Targets that need more
        (:func:`bytes_per_target` each) run in equal chunks that fit, one after the other
        through one compiled program (the last padded with copies of its first target and the
        padding dropped); the result is the one of a single call with all the targets, to the
        rounding of the network's kernels at another batch size (which Adam's normalisation
        can amplify for a target of near-zero gradient).
      dtype: the model's arithmetic (:meth:`cnnjax.Model.astype`): None (float32) or
        ``jnp.bfloat16`` on a GPU or TPU; the images, gradients and optimiser state stay float32.

    Returns:
      A :class:`VisualizeResult` ``(images, scores, history, restart, restart_scores)``;
      ``images`` is float32 ``[targets * batch, size, size, channels]`` in [0, 1].

    Raises:
      ValueError: unknown layer (lists the valid ones), channel or class out of range,
        unknown class name (suggests close matches), an image too small for the model after
        the transforms, bad settings.
      DivergedError: a run that diverged (non-finite objective).

    Example:
      >>> from cnnjax import objectives
      >>> from cnnjax.testing import tiny_cnn
      >>> vis = visualize(tiny_cnn(), [objectives.channel("conv3", c) for c in (0, 1)],
      ...                 preset="plain", size=32, steps=8, learning_rate=[0.1, 0.3])
      >>> vis.images.shape
      (2, 32, 32, 3)
      >>> budget = 2 * bytes_per_target(tiny_cnn(), preset="plain", size=32)  # two targets a chunk
      >>> chunked = visualize(tiny_cnn(), [objectives.channel("conv3", c) for c in range(5)],
      ...                     preset="plain", size=32, steps=8, memory_budget=budget)
      >>> chunked.images.shape, chunked.scores.shape
      ((5, 32, 32, 3), (5, 1))
    """
    model = model if dtype is None else model.astype(dtype)
    budget = check_memory_budget(memory_budget)
    p, size, batch, restarts, param, transform = _preset_settings(model, preset, size, batch, restarts, param,
                                                                  transform)  # fmt: skip
    targets = [objectives] if isinstance(objectives, Objective) else list(objectives)
    steps = check_positive_int(p.steps if steps is None else steps, "steps", hi=MAX_STEPS)
    if optimizer is None:
        optimizer = p.optimizer
        learning_rate = p.learning_rate if learning_rate is None else learning_rate
    optimizer = check_optimizer(optimizer, learning_rate)
    resolved = stack(resolve_objectives(model, targets, param, transform))
    if learning_rate is None:
        hyperparams = None
    else:
        hyperparams = learning_rate_hyperparams(learning_rate, len(targets))  # one per target
        optimizer = by_learning_rate(optimizer)
    n = len(targets)
    devices = 1 if mesh is None else mesh.devices.shape[0]
    each = _bytes_per_target(model, param, transform, restarts)
    chunk = budget_chunk(n, each, budget, devices)
    chunk = chunk_for_mesh(mesh, chunk)  # a mesh's targets padded to a multiple of the devices
    key = as_key(key)

    def run(first, chunk_rows):
        rows, hp = chunk_rows
        if hp is not None and restarts > 1:  # one per problem
            hp = {"learning_rate": np.repeat(np.asarray(hp["learning_rate"]), restarts)}
        return _run(model, rows, key, first, hp, param=param, transform=transform, optimizer=optimizer,
                    steps=steps, restarts=restarts, targets=chunk, mesh=mesh)  # fmt: skip

    # Chunks beyond the budget are joined on the host as they finish, the last one's padding dropped.
    images, scores, history, best, totals = map_row_chunks(run, (resolved, hyperparams), chunk)
    if len(history) > n:  # a mesh's padding dropped (one chunk of all the targets, padded)
        images, scores, history, best, totals = (
            images[: n * batch],
            scores[:n],
            history[:n],
            best[:n],
            totals[:n],
        )
    check_finite_run("visualize", images, history)
    return VisualizeResult(images, scores, history, best, totals)


def _model_image(param: Parameterization, transform: Transform | None) -> jax.ShapeDtypeStruct:
    """The shape of the images the network sees in a run (after the transform), without FLOPs."""
    latent = jax.eval_shape(param.init, jax.random.key(0))
    image = jax.eval_shape(param.to_image, latent)
    if transform is not None:
        image = jax.eval_shape(transform, jax.random.key(0), image)
    return jax.ShapeDtypeStruct(image.shape, jnp.float32)


def _bytes_per_target(
    model: Model, param: Parameterization, transform: Transform | None, restarts: int
) -> int:
    image = _model_image(param, transform)  # [batch, h, w, c]
    latent = jax.eval_shape(param.init, jax.random.key(0))
    latent_bytes = sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(latent))
    per_problem = image.shape[0] * MEMORY_FACTOR * forward_bytes(model.apply, model.params, image.shape[1:])
    # the latents, their gradient and an optimiser's state (Adam: two moments)
    return int(restarts * (per_problem + 4 * latent_bytes))


def bytes_per_target(
    model: Model,
    *,
    preset: str = "lucid",
    size: int | None = None,
    batch: int = 1,
    restarts: int = 1,
    param: Parameterization | None = None,
    transform: Transform | None | str = "preset",
) -> int:
    """The device memory :func:`visualize` counts per target against its ``memory_budget``.

    ``MEMORY_FACTOR`` (3) times the bytes of the network's forward pass on the target's images
    (``batch`` of them, at the size the transform makes; the outputs of its convolutions,
    matrix products and calls with a custom derivative), plus four times its latents
    (their gradient and an optimiser's state), for each of its ``restarts``. Arguments as
    :func:`visualize`; nothing is compiled (``jax.eval_shape``).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> bytes_per_target(tiny_cnn(), preset="plain", size=32) > 0
      True
    """
    _, _, _, restarts, param, transform = _preset_settings(
        model, preset, size, batch, restarts, param, transform
    )
    return _bytes_per_target(model, param, transform, restarts)


def _preset_settings(model, preset, size, batch, restarts, param, transform):
    """The preset and the settings it fills in (size, parameterization, transform), checked:
    ``(preset, size, batch, restarts, param, transform)``."""
    p = get_preset(preset)
    size = check_positive_int(p.size if size is None else size, "size")
    batch = check_positive_int(batch, "batch")
    restarts = check_positive_int(restarts, "restarts")
    if param is None:
        param = p.param(size, batch, model.spec.channels)
    if transform == "preset":
        transform = p.transform
    return p, size, batch, restarts, param, transform


def resolve_objectives(
    model: Model, targets: Sequence[Objective], param: Parameterization, transform: Transform | None
) -> list[Objective]:
    """Check objectives against the model at the size the run will feed it, before any work.

    The image a parameterization produces is passed through the transform abstractly
    (``jax.eval_shape``, no FLOPs); that size must be one the model takes, and the activation
    shapes at that size are what objectives check their positions against.
    """
    if not targets:
        raise ValueError("visualize needs at least one objective")
    for t in targets:
        if not isinstance(t, Objective):
            raise ValueError(f"expected cnnjax objectives (cnnjax.objectives.*), got {type(t).__name__}")
    image = _model_image(param, transform)
    model.spec.check_images(image)
    acts = jax.eval_shape(model.apply, model.params, image)
    shapes = {name: tuple(a.shape[1:]) for name, a in acts.items()}
    return [t.resolve(model.spec, shapes) for t in targets]
