"""Attacks that minimise the perturbation: the box-constrained L-BFGS attack of Szegedy et al.
(2014) and the L2 attack of Carlini & Wagner (2017), each with its search over the constant c.

For both, the [0, 1] box is a change of variables (``x + r = (tanh w + 1) / 2``), not a
projection: L-BFGS's curvature pairs and its Wolfe line search assume that the step it proposed
is the step taken. The L-BFGS attack is vmapped over images, model included, because each
example needs its own line search; Carlini-Wagner's Adam is elementwise, so it runs the model on
the whole batch at once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnnjax._src.checks import check_float, check_int
from cnnjax._src.chunks import check_memory_budget
from cnnjax._src.contract import Model
from cnnjax._src.sharding import on_mesh, shard_rows, unpad_rows
from cnnjax.attacks._common import (
    MAX_STEPS,
    AttackResult,
    check_finite,
    image_bytes,
    in_chunks,
    num_classes,
    resolve_classes,
    succeeded,
    targets_or_labels,
)
from cnnjax.attacks._steps import col
from cnnjax.losses import carlini_wagner_loss, complement_cross_entropy, margin, softmax_cross_entropy

__all__ = ["carlini_wagner", "lbfgs"]

# tanh-space box (Carlini & Wagner 2017): pixel values are kept this far inside (0, 1) so that
# arctanh stays finite for pixels at exactly 0 or 1.
_TANH_SHRINK = 1e-6


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
    t4 = col(take)
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
    n, k = images.shape[0], num_classes(apply, params, images)
    return _Best(images, jnp.full((n,), jnp.inf), jnp.zeros((n,)), jnp.zeros((n,), bool), jnp.zeros((n, k)))


# --------------------------------------------------------------------------------------------
# Szegedy et al. (2014): box-constrained L-BFGS with a search over c


@functools.partial(jax.jit, static_argnames=("apply", "memory_size", "linesearch_steps"))
def _lbfgs_run(apply, params, images, classes, targeted, c_init, steps, search_steps, *, memory_size,
               linesearch_steps):  # fmt: skip
    # steps and search_steps are traced: loops with traced trip counts (any counts, one program);
    # memory_size sets L-BFGS's state's shapes and linesearch_steps optax's line search.
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

        def body(_, carry):
            w, state, value, grad = carry
            updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=f)
            w = optax.apply_updates(w, updates)
            # The line search has already evaluated f and its gradient at the accepted point.
            return w, state, optax.tree.get(state, "value"), optax.tree.get(state, "grad")

        value, grad = jax.value_and_grad(f)(w0)
        w, *_ = jax.lax.fori_loop(0, steps, body, (w0, opt.init(w0), value, grad))
        xa = image(w)
        return xa, apply(params, xa[None])["logits"][0]

    def search(_, carry):
        c, c_ok, c_fail, best = carry
        xa, logits = jax.vmap(minimise)(images, classes, targeted, c)
        success = succeeded(logits, classes, targeted)
        dist = jnp.sqrt(jnp.sum((xa - images) ** 2, axis=(1, 2, 3)))
        best = _keep_best(best, xa, dist, c, success, logits)
        c, c_ok, c_fail = _search_constant(c, c_ok, c_fail, success, more_is_harder=True)
        return c, c_ok, c_fail, best

    n = images.shape[0]  # c starts at c_init; nothing succeeded (0) or failed (inf) yet
    bounds = jnp.zeros((n,)), jnp.full((n,), jnp.inf)
    init = (jnp.full((n,), c_init), *bounds, _init_best(apply, params, images))
    *_, best = jax.lax.fori_loop(0, search_steps, search, init)
    return _result_from_best(best, steps * search_steps)


@on_mesh
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
    mesh=None,
    memory_budget: int | None = None,
    dtype=None,
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
      model, images, labels, targets, mesh, memory_budget, dtype: as :func:`~cnnjax.attacks.pgd` (an
        image also counts its L-BFGS memory against the budget).
      c: the first constant, > 0.
      steps: L-BFGS iterations per constant (each a line search of >= 1 gradient).
      search_steps: constants tried.
      memory_size: L-BFGS memory.
      linesearch_steps: at most this many evaluations per line search.

    Returns:
      An :class:`AttackResult` with ``c`` the constant of each returned perturbation (NaN if
      none succeeded; then the images are the attempt with the smallest c).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> adv = lbfgs(model, images, targets=3, steps=5, search_steps=2)  # towards class 3
      >>> adv.images.shape, adv.c.shape
      ((2, 32, 32, 3), (2,))

    Reference: Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus (2014),
    "Intriguing properties of neural networks", ICLR, section 4.1.
    """
    budget = check_memory_budget(memory_budget)
    images = model.spec.check_images(images)
    c = check_float(c, "c", lo=0.0, lo_open=True)
    steps = check_int(steps, "steps", lo=1, hi=MAX_STEPS)
    search_steps = check_int(search_steps, "search_steps", lo=1, hi=100)
    memory_size = check_int(memory_size, "memory_size", lo=1, hi=1000)
    linesearch_steps = check_int(linesearch_steps, "linesearch_steps", lo=1, hi=1000)
    model = model if dtype is None else model.astype(dtype)
    classes, targeted = targets_or_labels(model, images, labels, targets)

    def run(images, classes):  # a chunk's default labels come from its own forward pass
        classes, flags = resolve_classes(model, images, classes, targeted)
        n, (images, classes, flags) = shard_rows(mesh, images, classes, flags)
        result = _lbfgs_run(
            model.apply, model.params, images, classes, flags, jnp.float32(c), jnp.int32(steps),
            jnp.int32(search_steps), memory_size=memory_size, linesearch_steps=linesearch_steps,
        )  # fmt: skip
        return unpad_rows(result, n)

    bytes_each = image_bytes(model, images, copies=2 * memory_size + 12)
    result = in_chunks(run, (images, classes), bytes_each=bytes_each, memory_budget=budget, mesh=mesh)
    return check_finite(result, "lbfgs")


# --------------------------------------------------------------------------------------------
# Carlini & Wagner (2017), L2


@functools.partial(jax.jit, static_argnames=("apply",))
def _cw_run(apply, params, images, classes, targeted, c_init, learning_rate, kappa, steps, search_steps):
    # steps and search_steps are traced: loops with traced trip counts (any counts, one program).
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

    def round_(_, carry):
        c, c_ok, c_fail, best = carry

        def step(_, inner):
            w, state, best, any_success = inner
            (_, (xa, logits, dist2)), g = jax.value_and_grad(objective, has_aux=True)(w, c)
            success = cw_success(logits)
            # CW keep the best iterate of every step, not only the last one.
            best = _keep_best(best, xa, jnp.sqrt(dist2), c, success, logits)
            updates, state = opt.update(g, state, w)
            return optax.apply_updates(w, updates), state, best, any_success | success

        any0 = jnp.zeros(c.shape, bool)
        _, _, best, any_success = jax.lax.fori_loop(0, steps, step, (w0, opt.init(w0), best, any0))
        c, c_ok, c_fail = _search_constant(c, c_ok, c_fail, any_success, more_is_harder=False)
        return c, c_ok, c_fail, best

    n = images.shape[0]
    bounds = jnp.full((n,), jnp.inf), jnp.zeros((n,))  # no success (upper bound), no failure yet
    init = (jnp.full((n,), c_init), *bounds, _init_best(apply, params, images))
    *_, best = jax.lax.fori_loop(0, search_steps, round_, init)
    return _result_from_best(best, steps * search_steps)


@on_mesh
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
    mesh=None,
    memory_budget: int | None = None,
    dtype=None,
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
      model, images, labels, targets, mesh, memory_budget, dtype: as :func:`~cnnjax.attacks.pgd`.
      c: the first constant, > 0.
      steps: Adam iterations per constant (CW: up to 10,000 with early abort).
      search_steps: constants tried (CW: 9).
      learning_rate: Adam's step in tanh space (CW: 0.01).
      kappa: the confidence margin in logits, >= 0.

    Returns:
      An :class:`AttackResult` with ``c`` per image (NaN where no constant succeeded; then the
      images are the last iterate of the largest c).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> adv = carlini_wagner(model, images, targets=[3, 7], steps=10, search_steps=2)
      >>> adv.c.shape, bool(np.all((np.asarray(adv.images) >= 0) & (np.asarray(adv.images) <= 1)))
      ((2,), True)

    Reference: Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural
    Networks", IEEE Symposium on Security and Privacy.
    """
    budget = check_memory_budget(memory_budget)
    images = model.spec.check_images(images)
    c = check_float(c, "c", lo=0.0, lo_open=True)
    steps = check_int(steps, "steps", lo=1, hi=MAX_STEPS)
    search_steps = check_int(search_steps, "search_steps", lo=1, hi=100)
    learning_rate = check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
    kappa = check_float(kappa, "kappa", lo=0.0)
    model = model if dtype is None else model.astype(dtype)
    classes, targeted = targets_or_labels(model, images, labels, targets)

    def run(images, classes):  # a chunk's default labels come from its own forward pass
        classes, flags = resolve_classes(model, images, classes, targeted)
        n, (images, classes, flags) = shard_rows(mesh, images, classes, flags)
        result = _cw_run(
            model.apply, model.params, images, classes, flags, jnp.float32(c), jnp.float32(learning_rate),
            jnp.float32(kappa), jnp.int32(steps), jnp.int32(search_steps),
        )  # fmt: skip
        return unpad_rows(result, n)

    bytes_each = image_bytes(model, images, copies=12)
    result = in_chunks(run, (images, classes), bytes_each=bytes_each, memory_budget=budget, mesh=mesh)
    return check_finite(result, "carlini_wagner")
