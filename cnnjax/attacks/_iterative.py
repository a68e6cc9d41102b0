"""FGSM, FGM, BIM and PGD: one engine, one compiled program per number of steps.

The whole attack is one ``jax.jit`` (``model.apply`` static) whose loop is ``lax.scan``.
Epsilons, restarts and images are batch axes of that program: a sweep of E epsilons with R
restarts on n images runs the model on E * R * n images per step. The model is called on the
flattened batch, which is the same computation as ``jax.vmap`` over it but lowers in 3.3 s
instead of 8.7 s on the bundled EfficientNet (its depthwise VJP batches slowly under vmap).
Epsilon, learning rate, targets, keys and the targeted / random-start / early-stopping flags are
array arguments: a new value never recompiles, and FGSM, BIM and PGD with the same number of
steps share one program.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax._src.checks import as_key, check_float, check_int
from cnnjax._src.chunks import check_memory_budget
from cnnjax._src.contract import Model
from cnnjax._src.sharding import on_mesh, shard_rows, unpad_rows
from cnnjax.attacks._common import (
    MAX_RESTARTS,
    MAX_STEPS,
    AttackResult,
    check_epsilons,
    check_finite,
    check_norm,
    image_bytes,
    in_chunks,
    num_classes,
    succeeded,
    targets_or_labels,
)
from cnnjax.attacks._steps import col, project, steepest_descent, unit_ball_noise
from cnnjax.losses import softmax_cross_entropy

__all__ = ["attack_loss", "bim", "fgm", "fgsm", "pgd"]


def attack_loss(logits, classes, targeted):
    """The loss the attack minimises: CE to the target, or minus CE to the label (per image)."""
    ce = softmax_cross_entropy(logits, classes)
    return jnp.where(targeted, ce, -ce)


@functools.partial(
    jax.jit,
    static_argnames=("apply", "norm", "restarts", "squeeze"),
)
def _iterative(apply, params, images, index, classes, targeted, eps, learning_rate, key, random_start,
               early_stop, steps, *, norm, restarts, squeeze):  # fmt: skip
    (n, h, w, c), e, r = images.shape, eps.shape[0], restarts
    shape = (e, r, n)
    # Untargeted without labels: the model's top-1 on the clean images, in this same program
    # (no second compiled forward pass); the branch runs only when a label is missing.
    classes = jax.lax.cond(
        jnp.any(classes < 0),
        lambda: jnp.where(
            classes < 0, jnp.argmax(apply(params, images)["logits"], -1).astype(classes.dtype), classes
        ),
        lambda: classes,
    )

    def flat(a, tail=()):  # broadcast over (eps, restart, image) and flatten to one batch axis
        return jnp.broadcast_to(a, shape + tail).reshape((-1,) + tail)

    x0 = flat(images[None, None], (h, w, c))
    cls = flat(classes[None, None])
    tgt = flat(targeted[None, None])
    eps_f = flat(eps[:, None, None])
    alpha_f = flat(learning_rate[:, None, None])
    # random_start and early_stop are traced booleans: PGD, BIM and FGSM share programs.
    # Image i of the call (``index``) starts from fold_in(restart's key, i): chunks of a call draw
    # what the whole call would.
    keys = key[None] if r == 1 else jax.random.split(key, r)

    def start_noise(k, i):
        return unit_ball_noise(jax.random.fold_in(k, i), (1, h, w, c), norm)[0]

    noise = jax.vmap(lambda k: jax.vmap(lambda i: start_noise(k, i))(index))(keys)
    x = jnp.where(random_start, project(x0 + col(eps_f) * flat(noise[None], (h, w, c)), x0, eps_f, norm), x0)

    tx = steepest_descent(norm, col(alpha_f))

    def loss(x):
        logits = apply(params, x)["logits"]
        # Examples are independent, so the gradient of the sum is each example's own gradient.
        return jnp.sum(attack_loss(logits, cls, tgt)), logits

    def live(carry, last):
        x, state, done, count, _ = carry
        (_, logits), g = jax.value_and_grad(loss, has_aux=True)(x)
        # An example that already succeeded keeps its iterate: a mask, not a break.
        done = done | (early_stop & succeeded(logits, cls, tgt))
        updates, state = tx.update(g, state, x)
        x_new = project(optax.apply_updates(x, updates), x0, eps_f, norm)
        frozen = done | last
        return jnp.where(col(frozen), x, x_new), state, done, count + (~frozen), logits

    # One pass more than there are steps, with its update masked: it evaluates the final
    # iterate inside the same loop body, so no separate forward pass is compiled (on
    # EfficientNet a few seconds of compile time saved for one extra gradient at run time).
    n_all = cls.shape[0]
    init = (x, tx.init(x), jnp.zeros((n_all,), bool), jnp.zeros((n_all,), jnp.int32),
            jnp.zeros((n_all, num_classes(apply, params, images)), jnp.float32))  # fmt: skip
    # ``steps`` is traced (nearby step counts share one program): a loop with a traced trip count.
    x, _, _, count, logits = jax.lax.fori_loop(0, steps + 1, lambda i, carry: live(carry, i == steps), init)
    probs = jax.nn.softmax(logits, axis=-1)
    success = succeeded(logits, cls, tgt)
    # Best of R restarts per example: a success first, then the attacker's highest loss.
    score = -attack_loss(logits, cls, tgt).reshape(shape)
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


@on_mesh
def _run(model, images, labels, targets, *, eps, norm, steps, learning_rate, default_step,
         random_start, restarts, early_stop, key, name, mesh=None, memory_budget=None,
         dtype=None) -> AttackResult:  # fmt: skip
    """Check everything, then run :func:`_iterative`; ``learning_rate=None`` is
    ``default_step * eps / steps``. With a ``mesh`` the images (and their classes) are split
    over its first axis, padded to a multiple of its size and the padding dropped after. Images
    beyond ``memory_budget`` run in chunks (:func:`~cnnjax.attacks._common.in_chunks`)."""
    model = model if dtype is None else model.astype(dtype)
    budget = check_memory_budget(memory_budget)
    images = model.spec.check_images(images)
    norm = check_norm(norm)
    eps_arr, scalar = check_epsilons(eps, norm, math.prod(images.shape[1:]))
    steps = check_int(steps, "steps", lo=1, hi=MAX_STEPS)
    restarts = check_int(restarts, "restarts", lo=1, hi=MAX_RESTARTS)
    if learning_rate is None:
        alpha = default_step * eps_arr / steps
    else:
        alpha = np.full_like(eps_arr, check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True))
    key = as_key(key)
    classes, targeted = targets_or_labels(model, images, labels, targets)
    if classes is None:  # the model's own top-1, computed inside the attack's program (-1: to compute)
        classes, targeted = np.full(images.shape[0], -1, np.int32), np.zeros(images.shape[0], bool)
    else:
        targeted = np.full(classes.shape, targeted)
    axis = 0 if scalar else 1

    def run(images, index, classes, targeted):
        n, (images, index, classes, targeted) = shard_rows(mesh, images, index, classes, targeted)
        result = _iterative(
            model.apply, model.params, images, index, classes, targeted, jnp.asarray(eps_arr),
            jnp.asarray(alpha), key, jnp.asarray(bool(random_start)), jnp.asarray(bool(early_stop)),
            np.int32(steps), norm=norm, restarts=restarts, squeeze=scalar,
        )  # fmt: skip
        return unpad_rows(result, n, axis=axis)

    index = np.arange(images.shape[0], dtype=np.uint32)
    bytes_each = len(eps_arr) * restarts * image_bytes(model, images, copies=8)
    result = in_chunks(run, (images, index, classes, targeted), bytes_each=bytes_each, memory_budget=budget,
                       mesh=mesh, axis=axis)  # fmt: skip
    return check_finite(result, name)


def pgd(
    model: Model,
    images,
    labels=None,
    *,
    eps,
    targets=None,
    norm: str | int | float = "inf",
    steps: int = 10,
    learning_rate: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    early_stop: bool = True,
    key=0,
    mesh: jax.sharding.Mesh | None = None,
    memory_budget: int | None = None,
    dtype=None,
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
      learning_rate: alpha in pixel units; default ``2.5 * eps / steps`` (Madry et al.).
      random_start: start uniformly inside the ball (else at ``x``, which is :func:`bim`).
      restarts: random starts per image, the best one kept.
      early_stop: freeze each image at its first success.
      key: an int seed or a ``jax.random.key``; the same key gives the same images (image i's
        random start is drawn from ``fold_in(key, i)``, whatever the chunk it runs in).
      mesh: a ``jax.sharding.Mesh``: the images are split over its first axis (padded to a
        multiple of its size, the padding dropped from the result); the same result as on one
        device.
      memory_budget: bytes of device memory for the attack's intermediate results (default: half
        the device's ``bytes_limit``, 2 GiB on CPU). Images that need more (each counts
        ``3 x`` the network's forward pass on it plus a few copies of itself, times the epsilons
        and restarts) run in equal chunks through one compiled program, the last padded with
        copies of its first image; the result is the one of a single call (to the rounding of
        the network's kernels at another batch size, which a sign step can amplify), so a whole
        data set can be attacked in one call.
      dtype: the model's arithmetic (:meth:`cnnjax.Model.astype`): None (float32) or
        ``jnp.bfloat16`` on a GPU or TPU; the images, the step and the projection stay float32.

    Returns:
      An :class:`AttackResult`; its ``images`` lie within ``eps`` of ``images`` and in [0, 1].

    Raises:
      ValueError: bad images, labels, targets or hyperparameters (before any work).
      DivergedError: the run went non-finite.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> adv = pgd(model, images, eps=[0, 2 / 255, 8 / 255], steps=5)  # away from the top-1
      >>> adv.images.shape, adv.success.shape  # one row per epsilon
      ((3, 2, 32, 32, 3), (3, 2))
      >>> bool(np.abs(np.asarray(adv.images[2]) - images).max() <= 8 / 255 + 1e-6)
      True
      >>> bool(adv.success[0].any())  # eps = 0 changes nothing
      False

    Reference: Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR.
    """
    return _run(model, images, labels, targets, eps=eps, norm=norm, steps=steps,
                          learning_rate=learning_rate, default_step=2.5, random_start=random_start,
                          restarts=restarts, early_stop=early_stop, key=key, name="pgd",
                          mesh=mesh, memory_budget=memory_budget, dtype=dtype)  # fmt: skip


def bim(model: Model, images, labels=None, *, eps, targets=None, norm="inf", steps: int = 10,
        learning_rate: float | None = None, early_stop: bool = True, mesh=None,
        memory_budget: int | None = None, dtype=None) -> AttackResult:  # fmt: skip
    r"""The basic iterative method (Kurakin et al. 2017): :func:`pgd` starting at ``x`` itself.

    .. math:: x_0 = x; \qquad x_{k+1} = \Pi\big(x_k + \alpha\, s(\nabla_x \ell(x_k))\big)

    Args (``memory_budget`` too) and Returns as :func:`pgd` (no random start, no restarts). The default
    ``learning_rate`` ``eps / steps`` walks exactly to the ball's surface along a constant sign;
    Kurakin et al. used ``alpha = 1/255`` and ``min(255 eps + 4, 1.25 * 255 eps)`` steps.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> adv = bim(model, images, [3, 3], eps=[1 / 255, 2 / 255, 4 / 255], steps=5)  # away from class 3
      >>> adv.predictions.shape, bool(np.abs(np.asarray(adv.images[2]) - images).max() <= 4 / 255 + 1e-6)
      ((3, 2), True)

    Reference: Kurakin, Goodfellow & Bengio (2017), "Adversarial examples in the physical
    world", ICLR workshop.
    """
    return _run(model, images, labels, targets, eps=eps, norm=norm, steps=steps,
                          learning_rate=learning_rate, default_step=1.0, random_start=False, restarts=1,
                          early_stop=early_stop, key=0, name="bim", mesh=mesh,
                          memory_budget=memory_budget, dtype=dtype)  # fmt: skip


def fgsm(model: Model, images, labels=None, *, eps, targets=None, mesh=None,
         memory_budget: int | None = None, dtype=None) -> AttackResult:  # fmt: skip
    r"""The fast gradient sign method (Goodfellow et al. 2015): one L-infinity step of size eps.

    .. math::

        x' = \operatorname{clip}_{[0,1]}\big(x + \epsilon\, \operatorname{sign} \nabla_x J(x, y)\big)
        \ \text{(untargeted)}, \qquad
        x' = \operatorname{clip}_{[0,1]}\big(x - \epsilon\, \operatorname{sign} \nabla_x J(x, t)\big)
        \ \text{(targeted)}

    with J the cross-entropy of the logits.

    Args:
      model, images, labels, eps, targets, mesh, memory_budget, dtype: as :func:`pgd` (``eps`` may be a
        sweep).

    Returns:
      An :class:`AttackResult` (``steps`` is 1).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> adv = fgsm(model, images, eps=[1 / 255, 2 / 255, 4 / 255])  # one row per epsilon
      >>> adv.images.shape, adv.steps.tolist()
      ((3, 2, 32, 32, 3), [[1, 1], [1, 1], [1, 1]])

    Reference: Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial
    Examples", ICLR.
    """
    return _run(model, images, labels, targets, eps=eps, norm="inf", steps=1, learning_rate=None,
                          default_step=1.0, random_start=False, restarts=1, early_stop=False, key=0,
                          name="fgsm", mesh=mesh, memory_budget=memory_budget, dtype=dtype)  # fmt: skip


def fgm(model: Model, images, labels=None, *, eps, targets=None, mesh=None,
        memory_budget: int | None = None, dtype=None) -> AttackResult:  # fmt: skip
    r"""The fast gradient method, L2: one step of length eps along the normalised gradient.

    .. math::

        x' = \operatorname{clip}_{[0,1]}\big(x \pm \epsilon\, g / \lVert g \rVert_2\big),
        \qquad g = \nabla_x J(x, c)

    (``+`` with the label untargeted, ``-`` with the target targeted.) A zero gradient leaves
    the image unchanged.

    Args:
      model, images, labels, eps, targets, mesh, memory_budget, dtype: as :func:`pgd`, ``eps`` an L2
        radius.

    Returns:
      An :class:`AttackResult` (``steps`` is 1).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> adv = fgm(model, images, eps=0.5)
      >>> delta = (np.asarray(adv.images) - images).reshape(2, -1)
      >>> bool(np.all(np.linalg.norm(delta, axis=1) <= 0.5 + 1e-5))  # at most eps (less where clipped)
      True

    Reference: Goodfellow, Shlens & Szegedy (2015), ICLR; the L2 form as in Miyato, Dai &
    Goodfellow (2017), "Adversarial Training Methods for Semi-Supervised Text Classification".
    """
    return _run(model, images, labels, targets, eps=eps, norm="2", steps=1, learning_rate=None,
                          default_step=1.0, random_start=False, restarts=1, early_stop=False, key=0,
                          name="fgm", mesh=mesh, memory_budget=memory_budget, dtype=dtype)  # fmt: skip
