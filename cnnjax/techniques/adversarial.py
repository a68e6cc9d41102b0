"""Adversarial examples: FGSM, FGM, BIM, PGD, the L-BFGS attack of Szegedy et al., Carlini-Wagner L2.

Every attack takes a model, images in [0, 1] and labels (or targets), and returns an
:class:`AttackResult` whose ``images`` are float32 NHWC in [0, 1]. Perturbations are measured
in [0, 1] pixel space; the model's :class:`~cnnjax.ValueMapping` maps the adversarial image to
the network's own range, so nothing here normalises.

How the pieces fit DESIGN.md:

* The whole attack is one ``jax.jit`` (``model.apply`` static); its loop is ``lax.scan``.
* Steps are optax transformations (:func:`steepest_descent`): ``chain(scale_by_sign(),
  scale(-alpha))`` for L-infinity, ``chain(per-example normalize_by_update_norm,
  scale(-alpha))`` for L2; ``optax.lbfgs`` and ``optax.adam`` for Szegedy and Carlini-Wagner.
  The projection (:func:`project`, ``optax.projections.projection_box``) is applied to the
  iterate after each update.
* Epsilons, restarts and images are batch axes of one program: a sweep of E epsilons with R
  restarts on n images runs the model on E * R * n images per step. The per-example logic
  (step, projection, early stopping, best-of-R) is elementwise or vmapped; the model itself is
  called on the flattened batch, which is the same computation as ``jax.vmap`` over it but
  lowers in 3.3 s instead of 8.7 s on the bundled EfficientNet (its depthwise VJP batches
  slowly under vmap). The L-BFGS attack is vmapped over images, model included, because
  each example needs its own line search.
* Epsilon, step size, targets, keys and the targeted / random-start / early-stopping flags
  are array arguments: a new value never recompiles, and FGSM, BIM and PGD with the same
  number of steps share one program.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax._src.checks import as_key
from cnnjax._src.contract import Model
from cnnjax.losses.classification import (
    carlini_wagner_loss,
    complement_cross_entropy,
    margin,
    softmax_cross_entropy,
)
from cnnjax.techniques.classify import classify

__all__ = [
    "AttackResult",
    "bim",
    "carlini_wagner",
    "fgm",
    "fgsm",
    "lbfgs",
    "pgd",
    "project",
    "steepest_descent",
]

_MAX_STEPS = 100_000
_MAX_RESTARTS = 1000
# tanh-space box (Carlini & Wagner 2017): pixel values are kept this far inside (0, 1) so that
# arctanh stays finite for pixels at exactly 0 or 1.
_TANH_SHRINK = 1e-6


class AttackResult(NamedTuple):
    """What an attack returns.

    With a scalar epsilon every field has a leading image axis ``n``; with a sequence of E
    epsilons (a sweep), a leading ``[E]`` axis comes first.

    Attributes:
      images: float32 ``[..., n, h, w, c]`` adversarial images in [0, 1].
      success: bool ``[..., n]``: the prediction is the target (targeted) or not the label.
      predictions: int32 ``[..., n]`` top-1 class of each adversarial image.
      confidence: float32 ``[..., n]`` softmax probability of that class.
      steps: int32 ``[..., n]`` optimiser steps taken (with early stopping: until success).
      c: float32 ``[..., n]`` the constant of the returned perturbation (L-BFGS and
        Carlini-Wagner; NaN where no constant succeeded), else None.
    """

    images: jax.Array
    success: jax.Array
    predictions: jax.Array
    confidence: jax.Array
    steps: jax.Array
    c: jax.Array | None = None


# --------------------------------------------------------------------------------------------
# Checks (all before any model work)


def _norm(norm: Any) -> str:
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        text = "inf" if norm == math.inf else str(norm)
    else:
        text = str(norm).lower().removeprefix("l")
    if text in ("inf", "infinity"):
        return "inf"
    if text in ("2", "2.0"):
        return "2"
    raise ValueError(f"norm must be 'inf' (L-infinity) or 2 (L2), got {norm!r}")


def _epsilons(eps: Any, norm: str, dim: int) -> tuple[np.ndarray, bool]:
    """``eps`` as a float32 [E] array and whether it was a scalar; checked against the norm."""
    try:
        arr = np.asarray(eps, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number or a sequence of numbers, got {eps!r}") from None
    scalar = arr.ndim == 0
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"eps must be a number or a non-empty 1-D sequence, got shape {arr.shape}")
    arr = arr.reshape(-1)
    limit, what = (1.0, "L-infinity (the whole [0, 1] box)") if norm == "inf" else (
        math.sqrt(dim), f"L2 (sqrt of {dim} values, the diameter of the [0, 1] box)")  # fmt: skip
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > limit)
    if bad.any():
        raise ValueError(
            f"eps must be finite and in [0, {limit:.6g}] for {what} in [0, 1] pixel space "
            f"(e.g. 2/255 = {2 / 255:.5f}); got {float(arr[bad][0])!r}"
        )
    return arr.astype(np.float32), scalar


def _int_in(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        sign = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {sign}, got {value!r}")
    return float(value)


def _classes(model: Model, values: Any, n: int, what: str) -> jax.Array:
    """Class indices or names -> int32 [n]; a single class applies to every image."""
    spec = model.spec
    if isinstance(values, (str, numbers.Integral)) and not isinstance(values, bool):
        return jnp.asarray(np.full((n,), spec.class_index(values), np.int32))
    arr = np.asarray(values)
    if arr.ndim == 0:
        return _classes(model, arr.item(), n, what)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{what} must hold one class per image: got shape {arr.shape} for {n} images")
    if arr.dtype.kind in "iu":
        bad = (arr < 0) | (arr >= spec.num_classes)
        if bad.any():
            spec.class_index(int(arr[bad][0]))  # raises with the valid range
        return jnp.asarray(arr, jnp.int32)
    if arr.dtype.kind in "OUS":
        return jnp.asarray([spec.class_index(v) for v in arr.tolist()], jnp.int32)
    raise ValueError(f"{what} must be class indices (ints) or names (str), got dtype {arr.dtype}")


def _targets_or_labels(model: Model, images: jax.Array, labels: Any, targets: Any) -> tuple[jax.Array, bool]:
    """The classes the attack moves towards (targets) or away from (labels; default: predictions).

    Whether the attack is targeted travels into the compiled program as a per-image boolean
    array, not a static flag, so targeted and untargeted calls share one program.
    """
    n = images.shape[0]
    if targets is not None:
        if labels is not None:
            _classes(model, labels, n, "labels")  # checked, though a targeted attack ignores them
        return _classes(model, targets, n, "targets"), True
    if labels is not None:
        return _classes(model, labels, n, "labels"), False
    return None, False


def top1(model: Model, images: jax.Array) -> jax.Array:
    """The model's top-1 class per image, int32 ``[n]``, by :func:`~cnnjax.classify`.

    Asks for classify's default k (5) and keeps the first, so a batch that was already
    classified reuses that compiled program instead of compiling another forward pass.
    """
    return jnp.asarray(np.asarray(classify(model, images, k=min(5, model.spec.num_classes))[1])[:, 0])


def _finish(model: Model, images: jax.Array, classes: jax.Array | None, targeted: bool):
    """Default labels (the model's own top-1), computed only after every check passed, and the
    per-image targeted flags."""
    classes = top1(model, images) if classes is None else classes
    return classes, jnp.asarray(np.full(classes.shape, targeted))


def _check_finite(result: AttackResult, name: str) -> AttackResult:
    # On the host (NumPy): an eager jnp check would compile a few programs of its own.
    bad = int(np.sum(~np.all(np.isfinite(np.asarray(result.images)), axis=(-3, -2, -1))))
    if bad:
        raise FloatingPointError(
            f"{name} went non-finite for {bad} image(s) (a model that returns NaN or inf logits "
            "or gradients?); no images are returned"
        )
    return result


# --------------------------------------------------------------------------------------------
# Optax pieces


def per_example(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Apply a transformation to each example (leading axis) on its own, e.g. a per-image norm.

    ``optax.normalize_by_update_norm`` divides by the norm of the whole update; wrapped here,
    each image of a batch is divided by its own gradient's norm.
    """
    return optax.GradientTransformation(
        lambda params: jax.vmap(inner.init)(params),
        lambda updates, state, params=None: jax.vmap(inner.update)(updates, state, params),
    )


def steepest_descent(norm: str, step_size) -> optax.GradientTransformation:
    r"""The steepest-descent step in a norm ball, as an optax transformation (PGD's step).

    .. math:: u_\infty = -\alpha \operatorname{sign}(g), \qquad u_2 = -\alpha\, g / \lVert g \rVert_2

    with the L2 norm taken per example (leading axis); a zero gradient gives no step. Follow
    it with :func:`project` after ``optax.apply_updates``.

    Args:
      norm: ``"inf"`` or ``"2"``.
      step_size: alpha, a scalar or a per-example ``[n, 1, 1, 1]`` array.

    Returns:
      An ``optax.GradientTransformation`` (stateless).

    Example::

      tx = steepest_descent("inf", 1 / 255)
      updates, state = tx.update(grad_of_loss, tx.init(x))
      x = project(optax.apply_updates(x, updates), x0, jnp.full((n,), 8 / 255), "inf")

    Reference: Madry et al. (2018), section 2.1 (the L-infinity step is FGSM's sign).
    """
    direction = (optax.scale_by_sign() if _norm(norm) == "inf"
                 else per_example(optax.normalize_by_update_norm(1.0, eps=1e-30)))  # fmt: skip
    return optax.chain(direction, optax.scale(-step_size))


def _col(v: jax.Array) -> jax.Array:
    """A per-example [n] array as [n, 1, 1, 1], to broadcast against images without rank promotion."""
    return v.reshape(-1, 1, 1, 1)


def project(x: jax.Array, x0: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    r"""Project onto the epsilon ball around ``x0`` intersected with the [0, 1] box, per example.

    .. math:: \Pi(x) = \operatorname{clip}_{[0,1]}\big(x_0 + P_\epsilon(x - x_0)\big),
              \quad P_\epsilon = \text{projection onto } \lVert\delta\rVert \le \epsilon

    L-infinity: the intersection is itself a box, so this is the exact Euclidean projection.
    L2: onto the ball, then the box (``optax.projections.projection_box``); clipping moves
    every coordinate towards ``x0`` (which is in the box), so the result stays in the ball.

    Args:
      x: ``[n, h, w, c]`` the iterate.
      x0: ``[n, h, w, c]`` the original images, in [0, 1].
      eps: ``[n]`` radii.
      norm: ``"inf"`` or ``"2"``.

    Returns:
      ``[n, h, w, c]`` in the ball and the box.
    """
    if _norm(norm) == "inf":
        e = _col(eps)
        return optax.projections.projection_box(x, jnp.maximum(x0 - e, 0.0), jnp.minimum(x0 + e, 1.0))
    # The ball's projection is delta * min(1, eps / |delta|), written out rather than
    # optax.projections.projection_l2_ball, which divides 0 by 0 when eps^2 underflows.
    delta = x - x0
    size = jnp.sqrt(jnp.sum(delta * delta, axis=(1, 2, 3)))
    delta = delta * _col(jnp.minimum(1.0, eps / jnp.maximum(size, 1e-30)))
    return optax.projections.projection_box(x0 + delta, 0.0, 1.0)


def _unit_ball_noise(key: jax.Array, shape: tuple[int, ...], norm: str) -> jax.Array:
    """Uniform samples from the unit ball of ``norm``, one per example (leading axis)."""
    if norm == "inf":
        return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    k_dir, k_rad = jax.random.split(key)
    d = math.prod(shape[1:])
    g = jax.random.normal(k_dir, shape)
    g = g / _col(jnp.maximum(jnp.sqrt(jnp.sum(g * g, axis=(1, 2, 3))), 1e-30))
    # Radius u^(1/d) makes the density uniform in the ball (Muller 1959; Marsaglia 1972).
    return g * _col(jax.random.uniform(k_rad, shape[:1]) ** (1.0 / d))


# --------------------------------------------------------------------------------------------
# FGSM, FGM, BIM, PGD: one engine


def _attack_loss(logits, classes, targeted):
    """The loss the attack minimises: CE to the target, or minus CE to the label (per image)."""
    ce = softmax_cross_entropy(logits, classes)
    return jnp.where(targeted, ce, -ce)


def _num_classes(apply, params, images) -> int:
    return jax.eval_shape(lambda p, x: apply(p, x)["logits"], params, images[:1]).shape[-1]


def _succeeded(logits, classes, targeted):
    pred = jnp.argmax(logits, axis=-1)
    return jnp.where(targeted, pred == classes, pred != classes)


@functools.partial(
    jax.jit,
    static_argnames=("apply", "norm", "steps", "restarts", "squeeze"),
)
def _iterative(apply, params, images, classes, targeted, eps, step_size, key, random_start, early_stop,
               *, norm, steps, restarts, squeeze):  # fmt: skip
    (n, h, w, c), e, r = images.shape, eps.shape[0], restarts
    shape = (e, r, n)

    def flat(a, tail=()):  # broadcast over (eps, restart, image) and flatten to one batch axis
        return jnp.broadcast_to(a, shape + tail).reshape((-1,) + tail)

    x0 = flat(images[None, None], (h, w, c))
    cls = flat(classes[None, None])
    tgt = flat(targeted[None, None])
    eps_f = flat(eps[:, None, None])
    alpha_f = flat(step_size[:, None, None])
    # random_start and early_stop are traced booleans: PGD, BIM and FGSM share programs.
    keys = key[None] if r == 1 else jax.random.split(key, r)
    noise = jax.vmap(lambda k: _unit_ball_noise(k, (n, h, w, c), norm))(keys)
    x = jnp.where(random_start, project(x0 + _col(eps_f) * flat(noise[None], (h, w, c)), x0, eps_f, norm), x0)

    tx = steepest_descent(norm, _col(alpha_f))

    def loss(x):
        logits = apply(params, x)["logits"]
        # Examples are independent, so the gradient of the sum is each example's own gradient.
        return jnp.sum(_attack_loss(logits, cls, tgt)), logits

    def body(carry, last):
        x, state, done, count, _ = carry
        (_, logits), g = jax.value_and_grad(loss, has_aux=True)(x)
        # An example that already succeeded keeps its iterate: a mask, not a break.
        done = done | (early_stop & _succeeded(logits, cls, tgt))
        updates, state = tx.update(g, state, x)
        x_new = project(optax.apply_updates(x, updates), x0, eps_f, norm)
        frozen = done | last
        return (jnp.where(_col(frozen), x, x_new), state, done, count + (~frozen), logits), None

    # One pass more than there are steps, with its update masked: it evaluates the final
    # iterate inside the same loop body, so no separate forward pass is compiled (on
    # EfficientNet a few seconds of compile time saved for one extra gradient at run time).
    n_all = cls.shape[0]
    init = (x, tx.init(x), jnp.zeros((n_all,), bool), jnp.zeros((n_all,), jnp.int32),
            jnp.zeros((n_all, _num_classes(apply, params, images)), jnp.float32))  # fmt: skip
    (x, _, _, count, logits), _ = jax.lax.scan(body, init, jnp.arange(steps + 1) == steps)
    probs = jax.nn.softmax(logits, axis=-1)
    success = _succeeded(logits, cls, tgt)
    # Best of R restarts per example: a success first, then the attacker's highest loss.
    score = -_attack_loss(logits, cls, tgt).reshape(shape)
    success_r = success.reshape(shape)
    best = jnp.where(
        success_r.any(axis=1),
        jnp.argmax(jnp.where(success_r, score, -jnp.inf), axis=1),
        jnp.argmax(score, axis=1),
    )  # [e, n]

    def pick(a):
        a = a.reshape(shape + a.shape[1:])
        idx = best.reshape((e, 1, n) + (1,) * (a.ndim - 3))
        return jnp.take_along_axis(a, idx, axis=1)[:, 0]

    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    result = AttackResult(
        images=pick(x),
        success=pick(success),
        predictions=pick(pred),
        confidence=pick(jnp.max(probs, axis=-1)),
        steps=pick(count),
    )
    return jax.tree.map(lambda a: a[0], result) if squeeze else result


def _run_iterative(model, images, labels, targets, *, eps, norm, steps, step_size, default_step,
                   random_start, restarts, early_stop, key, name) -> AttackResult:  # fmt: skip
    """Check everything, then run :func:`_iterative`; ``step_size=None`` is ``default_step * eps / steps``."""
    images = model.spec.check_images(images)
    norm = _norm(norm)
    eps_arr, scalar = _epsilons(eps, norm, math.prod(images.shape[1:]))
    steps = _int_in(steps, "steps", 1, _MAX_STEPS)
    restarts = _int_in(restarts, "restarts", 1, _MAX_RESTARTS)
    if step_size is None:
        alpha = default_step * eps_arr / steps
    else:
        alpha = np.full_like(eps_arr, _positive(step_size, "step_size"))
    key = as_key(key)
    classes, targeted = _targets_or_labels(model, images, labels, targets)
    classes, targeted = _finish(model, images, classes, targeted)
    result = _iterative(
        model.apply, model.params, images, classes, targeted, jnp.asarray(eps_arr), jnp.asarray(alpha),
        key, jnp.asarray(bool(random_start)), jnp.asarray(bool(early_stop)), norm=norm, steps=steps,
        restarts=restarts, squeeze=scalar,
    )  # fmt: skip
    return _check_finite(result, name)


def pgd(
    model: Model,
    images,
    labels=None,
    *,
    eps,
    targets=None,
    norm: str | int | float = "inf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    early_stop: bool = True,
    key=0,
) -> AttackResult:
    r"""Projected gradient descent (Madry et al. 2018), L-infinity or L2, targeted or untargeted.

    .. math::

        x_0 = \Pi(x + \epsilon u),\ u \sim U(\text{unit ball}); \qquad
        x_{k+1} = \Pi\big(x_k + \alpha\, s(\nabla_x \ell(x_k))\big)

    with ``s = sign`` (L-infinity) or ``g / |g|_2`` (L2), ``\Pi`` the projection onto the
    epsilon ball around ``x`` intersected with the [0, 1] box, and ``\ell`` the cross-entropy
    of the label (untargeted) or minus that of the target (targeted).

    Early stopping is per example: once an image is adversarial its iterate is frozen (a
    mask inside ``lax.scan``, not a break: every image still runs every step), so a success
    is never lost at a later step and the perturbation is no larger than needed.
    ``restarts`` runs R random starts side by side in the batch and keeps, per image, a
    successful one (the highest loss among them), else the one with the highest loss.

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, h, w, c]`` in [0, 1].
      labels: the true classes (int or name, one per image or one for all); the untargeted
        attack moves away from them. Default: the model's own top-1 on ``images``.
      eps: the radius in [0, 1] pixel space (e.g. ``2/255``), or a sequence of radii: a sweep
        run as one program, every field of the result with a leading ``[E]`` axis.
      targets: classes to reach (one per image or one for all); makes the attack targeted.
      norm: ``"inf"`` or ``2``.
      steps: gradient steps, >= 1 (static: a new count compiles once).
      step_size: alpha in pixel units; default ``2.5 * eps / steps`` (Madry et al.).
      random_start: start uniformly inside the ball (else at ``x``, which is :func:`bim`).
      restarts: random starts per image, the best one kept.
      early_stop: freeze each image at its first success.
      key: an int seed or a ``jax.random.key``; the same key gives the same images.

    Returns:
      An :class:`AttackResult`; its ``images`` lie within ``eps`` of ``images`` and in [0, 1].

    Raises:
      ValueError: bad images, labels, targets or hyperparameters (before any work).
      FloatingPointError: the run went non-finite.

    Example::

      model = cnnjax.load_model()
      cat = cnnjax.sample_photos()["chelsea.png"]
      adv = pgd(model, cat, eps=2 / 255, steps=10)
      adv.success, adv.predictions  # the cat is no longer a tiger cat

    Reference: Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR.
    """
    return _run_iterative(model, images, labels, targets, eps=eps, norm=norm, steps=steps,
                          step_size=step_size, default_step=2.5, random_start=random_start,
                          restarts=restarts, early_stop=early_stop, key=key, name="pgd")  # fmt: skip


def bim(model: Model, images, labels=None, *, eps, targets=None, norm="inf", steps: int = 10,
        step_size: float | None = None, early_stop: bool = True) -> AttackResult:  # fmt: skip
    r"""The basic iterative method (Kurakin et al. 2017): :func:`pgd` starting at ``x`` itself.

    .. math:: x_0 = x; \qquad x_{k+1} = \Pi\big(x_k + \alpha\, s(\nabla_x \ell(x_k))\big)

    Args and Returns as :func:`pgd` (no random start, no restarts). The default
    ``step_size`` ``eps / steps`` walks exactly to the ball's surface along a constant sign;
    Kurakin et al. used ``alpha = 1/255`` and ``min(255 eps + 4, 1.25 * 255 eps)`` steps.

    Example::

      adv = bim(model, images, labels, eps=4 / 255, steps=10)

    Reference: Kurakin, Goodfellow & Bengio (2017), "Adversarial examples in the physical
    world", ICLR workshop.
    """
    return _run_iterative(model, images, labels, targets, eps=eps, norm=norm, steps=steps,
                          step_size=step_size, default_step=1.0, random_start=False, restarts=1,
                          early_stop=early_stop, key=0, name="bim")  # fmt: skip


def fgsm(model: Model, images, labels=None, *, eps, targets=None) -> AttackResult:
    r"""The fast gradient sign method (Goodfellow et al. 2015): one L-infinity step of size eps.

    .. math::

        x' = \operatorname{clip}_{[0,1]}\big(x + \epsilon\, \operatorname{sign} \nabla_x J(x, y)\big)
        \ \text{(untargeted)}, \qquad
        x' = \operatorname{clip}_{[0,1]}\big(x - \epsilon\, \operatorname{sign} \nabla_x J(x, t)\big)
        \ \text{(targeted)}

    with J the cross-entropy of the logits.

    Args:
      model, images, labels, eps, targets: as :func:`pgd` (``eps`` may be a sweep).

    Returns:
      An :class:`AttackResult` (``steps`` is 1).

    Example::

      adv = fgsm(model, images, labels, eps=[1 / 255, 2 / 255, 4 / 255])  # images [3, n, h, w, c]

    Reference: Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial
    Examples", ICLR.
    """
    return _run_iterative(model, images, labels, targets, eps=eps, norm="inf", steps=1, step_size=None,
                          default_step=1.0, random_start=False, restarts=1, early_stop=False, key=0,
                          name="fgsm")  # fmt: skip


def fgm(model: Model, images, labels=None, *, eps, targets=None) -> AttackResult:
    r"""The fast gradient method, L2: one step of length eps along the normalised gradient.

    .. math::

        x' = \operatorname{clip}_{[0,1]}\big(x \pm \epsilon\, g / \lVert g \rVert_2\big),
        \qquad g = \nabla_x J(x, c)

    (``+`` with the label untargeted, ``-`` with the target targeted.) A zero gradient leaves
    the image unchanged.

    Args:
      model, images, labels, eps, targets: as :func:`pgd`, ``eps`` an L2 radius.

    Returns:
      An :class:`AttackResult` (``steps`` is 1).

    Example::

      adv = fgm(model, images, labels, eps=0.5)

    Reference: Goodfellow, Shlens & Szegedy (2015), ICLR; the L2 form as in Miyato, Dai &
    Goodfellow (2017), "Adversarial Training Methods for Semi-Supervised Text Classification".
    """
    return _run_iterative(model, images, labels, targets, eps=eps, norm="2", steps=1, step_size=None,
                          default_step=1.0, random_start=False, restarts=1, early_stop=False, key=0,
                          name="fgm")  # fmt: skip

# --------------------------------------------------------------------------------------------
# Change of variables for the box (L-BFGS and Carlini-Wagner)


def _box_map(x: jax.Array):
    """``w -> image`` with the image in [0, 1] for every real ``w``, and ``w0`` mapping to ``x``.

    ``image(w) = clip(x + (tanh(w) + 1)/2 - (tanh(w0) + 1)/2, 0, 1)`` with
    ``w0 = arctanh(2x - 1)`` (shrunk by 1e-6 so pixels at 0 and 1 stay finite). The tanh is the
    change of variables of Carlini & Wagner (2017); writing it as ``x`` plus a difference makes
    ``image(w0) = x`` exactly, and the clip only ever acts within 1e-6 of the box's faces.
    """
    w0 = jnp.arctanh((2.0 * x - 1.0) * (1.0 - _TANH_SHRINK))
    base = 0.5 * (jnp.tanh(w0) + 1.0)
    return w0, lambda w: jnp.clip(x + (0.5 * (jnp.tanh(w) + 1.0) - base), 0.0, 1.0)


def _search_constant(c, c_ok, c_fail, success, *, more_is_harder):
    """One step of the search over the constant: widen by 10x until bracketed, then bisect.

    ``more_is_harder``: a larger c makes success harder (L-BFGS, c weighs the distance), so
    a success raises c; for Carlini-Wagner c weighs the loss and a success lowers it.
    CW bisect arithmetically between the bounds, as in their code; L-BFGS geometrically.
    """
    if more_is_harder:
        c_ok = jnp.where(success, jnp.maximum(c_ok, c), c_ok)
        c_fail = jnp.where(success, c_fail, jnp.minimum(c_fail, c))
        c_next = jnp.where(jnp.isinf(c_fail), c * 10.0,
                           jnp.where(c_ok == 0, c / 10.0, jnp.sqrt(c_ok * c_fail)))  # fmt: skip
    else:
        c_ok = jnp.where(success, jnp.minimum(c_ok, c), c_ok)  # upper bound: smallest success
        c_fail = jnp.where(success, c_fail, jnp.maximum(c_fail, c))  # lower bound
        c_next = jnp.where(jnp.isinf(c_ok), c * 10.0, 0.5 * (c_fail + c_ok))
    return c_next, c_ok, c_fail


class _Best(NamedTuple):
    images: jax.Array
    dist: jax.Array
    c: jax.Array
    found: jax.Array
    logits: jax.Array


def _keep_best(best: _Best, images, dist, c, success, logits) -> _Best:
    """Keep the smallest successful perturbation; until one exists, the latest attempt."""
    take = (success & (dist < best.dist)) | (~best.found & ~success)
    t4 = _col(take)
    return _Best(
        images=jnp.where(t4, images, best.images),
        dist=jnp.where(take & success, dist, best.dist),
        c=jnp.where(take, c, best.c),
        found=best.found | success,
        logits=jnp.where(take[:, None], logits, best.logits),
    )


def _result_from_best(best: _Best, steps: int) -> AttackResult:
    probs = jax.nn.softmax(best.logits, axis=-1)
    return AttackResult(
        images=best.images,
        success=best.found,
        predictions=jnp.argmax(best.logits, axis=-1).astype(jnp.int32),
        confidence=jnp.max(probs, axis=-1),
        steps=jnp.full(best.found.shape, steps, jnp.int32),
        c=jnp.where(best.found, best.c, jnp.nan),
    )


def _init_best(apply, params, images):
    n, k = images.shape[0], _num_classes(apply, params, images)
    return _Best(images, jnp.full((n,), jnp.inf), jnp.zeros((n,)), jnp.zeros((n,), bool), jnp.zeros((n, k)))


# --------------------------------------------------------------------------------------------
# Szegedy et al. (2014): box-constrained L-BFGS with a search over c


@functools.partial(
    jax.jit, static_argnames=("apply", "steps", "search_steps", "memory_size", "linesearch_steps")
)
def _lbfgs_run(apply, params, images, classes, targeted, c_init, *, steps, search_steps, memory_size,
               linesearch_steps):  # fmt: skip
    opt = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=linesearch_steps),
    )

    def class_loss(logits, cls, tgt):
        return jnp.where(tgt, softmax_cross_entropy(logits, cls), complement_cross_entropy(logits, cls))

    def minimise(x, cls, tgt, c):
        """argmin_w c |image(w) - x|^2 + loss(image(w)) for one image, by L-BFGS from w0."""
        w0, image = _box_map(x)

        def f(w):
            xa = image(w)
            logits = apply(params, xa[None])["logits"]
            return c * jnp.sum((xa - x) ** 2) + class_loss(logits, cls[None], tgt)[0]

        def body(carry, _):
            w, state, value, grad = carry
            updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=f)
            w = optax.apply_updates(w, updates)
            # The line search has already evaluated f and its gradient at the accepted point.
            return (w, state, optax.tree.get(state, "value"), optax.tree.get(state, "grad")), None

        value, grad = jax.value_and_grad(f)(w0)
        (w, *_), _ = jax.lax.scan(body, (w0, opt.init(w0), value, grad), length=steps)
        xa = image(w)
        return xa, apply(params, xa[None])["logits"][0]

    def search(carry, _):
        c, c_ok, c_fail, best = carry
        xa, logits = jax.vmap(minimise)(images, classes, targeted, c)
        success = _succeeded(logits, classes, targeted)
        dist = jnp.sqrt(jnp.sum((xa - images) ** 2, axis=(1, 2, 3)))
        best = _keep_best(best, xa, dist, c, success, logits)
        c, c_ok, c_fail = _search_constant(c, c_ok, c_fail, success, more_is_harder=True)
        return (c, c_ok, c_fail, best), None

    n = images.shape[0]  # c starts at c_init; nothing succeeded (0) or failed (inf) yet
    bounds = jnp.zeros((n,)), jnp.full((n,), jnp.inf)
    init = (jnp.full((n,), c_init), *bounds, _init_best(apply, params, images))
    (_, _, _, best), _ = jax.lax.scan(search, init, length=search_steps)
    return _result_from_best(best, steps * search_steps)


def lbfgs(
    model: Model,
    images,
    labels=None,
    *,
    targets=None,
    c: float = 1.0,
    steps: int = 20,
    search_steps: int = 6,
    memory_size: int = 10,
    linesearch_steps: int = 10,
) -> AttackResult:
    r"""The box-constrained L-BFGS attack of Szegedy et al. (2014), with its search over c.

    .. math::

        \min_r\; c \lVert r \rVert_2^2 + \ell(x + r, t) \quad \text{s.t.} \quad x + r \in [0, 1]^m

    with ``\ell`` the cross-entropy of the target t (targeted) or, untargeted,
    ``-log(1 - p_y)`` (:func:`~cnnjax.losses.complement_cross_entropy`, bounded below, unlike
    ``-cross_entropy``). The paper line-searches for "the minimum c > 0" whose minimiser
    reaches t; with c weighing the distortion, every smaller c succeeds too and the smallest
    perturbation comes from the largest successful c (the minimum of 1/c, the weight of the
    loss), which is what this search finds: c times 10 until a success and a failure bracket
    it, then geometric bisection, keeping the smallest successful perturbation seen.

    The squared norm replaces the paper's ``|r|`` because it is differentiable at ``r = 0``,
    where every minimisation starts. The box is a change of variables, not a projection:
    ``x + r = (tanh(w) + 1)/2`` (see :func:`_box_map`). ``optax.lbfgs`` builds its curvature
    model from successive steps and gradients and its zoom line search checks the Wolfe
    conditions along the step; projecting after each step would silently change the step and
    break both, while in ``w`` the problem is unconstrained and smooth and every iterate is in
    the box by construction. (Szegedy et al. used a box-constrained L-BFGS, i.e. L-BFGS-B,
    which optax does not have.)

    Each image gets its own L-BFGS run and line search (vmapped over images).

    Args:
      model, images, labels, targets: as :func:`pgd`.
      c: the first constant, > 0.
      steps: L-BFGS iterations per constant (each a line search of >= 1 gradient).
      search_steps: constants tried.
      memory_size: L-BFGS memory.
      linesearch_steps: at most this many evaluations per line search.

    Returns:
      An :class:`AttackResult` with ``c`` the constant of each returned perturbation (NaN if
      none succeeded; then the images are the attempt with the smallest c).

    Example::

      adv = lbfgs(model, cat, targets="goldfish")

    Reference: Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus (2014),
    "Intriguing properties of neural networks", ICLR, section 4.1.
    """
    images = model.spec.check_images(images)
    c = _positive(c, "c")
    steps = _int_in(steps, "steps", 1, _MAX_STEPS)
    search_steps = _int_in(search_steps, "search_steps", 1, 100)
    memory_size = _int_in(memory_size, "memory_size", 1, 1000)
    linesearch_steps = _int_in(linesearch_steps, "linesearch_steps", 1, 1000)
    classes, targeted = _targets_or_labels(model, images, labels, targets)
    classes, targeted = _finish(model, images, classes, targeted)
    result = _lbfgs_run(
        model.apply, model.params, images, classes, targeted, jnp.float32(c),
        steps=steps, search_steps=search_steps, memory_size=memory_size, linesearch_steps=linesearch_steps,
    )  # fmt: skip
    return _check_finite(result, "lbfgs")


# --------------------------------------------------------------------------------------------
# Carlini & Wagner (2017), L2


@functools.partial(jax.jit, static_argnames=("apply", "steps", "search_steps"))
def _cw_run(apply, params, images, classes, targeted, c_init, learning_rate, kappa, *, steps, search_steps):
    w0, image = _box_map(images)
    opt = optax.adam(learning_rate)

    def objective(w, c):
        xa = image(w)
        logits = apply(params, xa)["logits"]
        dist2 = jnp.sum((xa - images) ** 2, axis=(1, 2, 3))
        f = jnp.where(targeted, carlini_wagner_loss(logits, classes, targeted=True, kappa=kappa),
                      carlini_wagner_loss(logits, classes, targeted=False, kappa=kappa))  # fmt: skip
        return jnp.sum(dist2 + c * f), (xa, logits, dist2)

    def cw_success(logits):
        m = margin(logits, classes)
        return jnp.where(targeted, m > kappa, -m > kappa)

    def round_(carry, _):
        c, c_ok, c_fail, best = carry

        def step(inner, _):
            w, state, best, any_success = inner
            (_, (xa, logits, dist2)), g = jax.value_and_grad(objective, has_aux=True)(w, c)
            success = cw_success(logits)
            # CW keep the best iterate of every step, not only the last one.
            best = _keep_best(best, xa, jnp.sqrt(dist2), c, success, logits)
            updates, state = opt.update(g, state, w)
            return (optax.apply_updates(w, updates), state, best, any_success | success), None

        any0 = jnp.zeros(c.shape, bool)
        (_, _, best, any_success), _ = jax.lax.scan(step, (w0, opt.init(w0), best, any0), length=steps)
        c, c_ok, c_fail = _search_constant(c, c_ok, c_fail, any_success, more_is_harder=False)
        return (c, c_ok, c_fail, best), None

    n = images.shape[0]
    bounds = jnp.full((n,), jnp.inf), jnp.zeros((n,))  # no success (upper bound), no failure yet
    init = (jnp.full((n,), c_init), *bounds, _init_best(apply, params, images))
    (_, _, _, best), _ = jax.lax.scan(round_, init, length=search_steps)
    return _result_from_best(best, steps * search_steps)


def carlini_wagner(
    model: Model,
    images,
    labels=None,
    *,
    targets=None,
    c: float = 0.1,
    steps: int = 100,
    search_steps: int = 5,
    learning_rate: float = 0.01,
    kappa: float = 0.0,
) -> AttackResult:
    r"""The L2 attack of Carlini & Wagner (2017), with its binary search over c.

    .. math::

        \min_w\; \lVert x'(w) - x \rVert_2^2 + c\, f(x'(w)), \qquad x'(w) = \tfrac12(\tanh w + 1)

    with f the margin loss f6 (:func:`~cnnjax.losses.carlini_wagner_loss`) on the logits and
    confidence ``kappa``. Adam runs ``steps`` iterations per constant, keeping the smallest
    successful iterate of every step; after each round a success lowers c's upper bound and
    a failure raises its lower bound (c times 10 until the first success, then the midpoint),
    per image. Every image has its own c; the model runs on the whole batch at once (Adam
    is elementwise, so batching does not couple the images).

    Args:
      model, images, labels, targets: as :func:`pgd`.
      c: the first constant, > 0.
      steps: Adam iterations per constant (CW: up to 10,000 with early abort).
      search_steps: constants tried (CW: 9).
      learning_rate: Adam's step in tanh space (CW: 0.01).
      kappa: the confidence margin in logits, >= 0.

    Returns:
      An :class:`AttackResult` with ``c`` per image (NaN where no constant succeeded; then the
      images are the last iterate of the largest c).

    Example::

      adv = carlini_wagner(model, cat, targets=[1], steps=100)

    Reference: Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural
    Networks", IEEE Symposium on Security and Privacy.
    """
    images = model.spec.check_images(images)
    c = _positive(c, "c")
    steps = _int_in(steps, "steps", 1, _MAX_STEPS)
    search_steps = _int_in(search_steps, "search_steps", 1, 100)
    learning_rate = _positive(learning_rate, "learning_rate")
    kappa = _positive(kappa, "kappa", allow_zero=True)
    classes, targeted = _targets_or_labels(model, images, labels, targets)
    classes, targeted = _finish(model, images, classes, targeted)
    result = _cw_run(
        model.apply, model.params, images, classes, targeted, jnp.float32(c),
        jnp.float32(learning_rate), jnp.float32(kappa), steps=steps, search_steps=search_steps,
    )  # fmt: skip
    return _check_finite(result, "carlini_wagner")
