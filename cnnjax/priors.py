"""Image priors of Yosinski et al. (2015) as optax transformations, for pixel-space latents.

"Understanding Neural Networks Through Deep Visualization" regularises gradient ascent by
applying an operator ``r`` to the image after every step, ``x <- r(x + eta * g)``: L2 decay,
a Gaussian blur every few steps, and zeroing pixels of small norm or small contribution. Here
each is an ``optax.GradientTransformation`` that changes the update so that
``params + update == r(params + incoming update)``; chain them after the optimiser::

    opt = optax.chain(optax.sgd(lr), priors.l2_decay(1e-4), priors.blur_every(4, 1.0))

They act on latents shaped like images ``[..., h, w, c]`` holding pixel values centred on 0
(``cnnjax.param.pixel``): decaying or zeroing a pixel moves it to mid-grey. The total-variation
and alpha-norm priors of Mahendran & Vedaldi (2015) are losses (:mod:`cnnjax.losses`) and
objectives (:mod:`cnnjax.objectives`) instead, since they have gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnnjax.transforms import blur, gaussian_kernel

__all__ = ["l2_decay", "blur_every", "clip_small_norm", "clip_small_contribution", "box", "post_step"]


class PostStepState(NamedTuple):
    count: jax.Array


def post_step(op: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]) -> optax.GradientTransformation:
    """A transformation that replaces ``params + updates`` by ``op(new, updates, count)``.

    ``new = params + updates`` is the image after the incoming step, ``count`` the number of
    steps taken before this one. The returned update is ``op(...) - params``, so an optimiser
    chain applies the operator exactly.
    """

    def init(params):
        del params
        return PostStepState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("this prior needs the current image: call update(updates, state, params)")
        new = jax.tree.map(lambda p, u: p + u, params, updates)
        out = jax.tree.map(lambda n, u: op(n, u, state.count), new, updates)
        return jax.tree.map(lambda o, p: o - p, out, params), PostStepState(state.count + 1)

    return optax.GradientTransformation(init, update)


def _fraction(pct: float, what: str) -> float:
    if not 0 <= pct < 100:
        raise ValueError(f"{what} percentile must be in [0, 100), got {pct}")
    return float(pct)


def l2_decay(rate: float) -> optax.GradientTransformation:
    r"""``x <- (1 - rate) x``: pulls every pixel towards mid-grey (Yosinski et al., eq. 2)."""
    if not 0 <= rate < 1:
        raise ValueError(f"decay rate must be in [0, 1), got {rate}")
    return post_step(lambda x, u, count: (1.0 - rate) * x)


def blur_every(every: int, sigma: float) -> optax.GradientTransformation:
    """Blur the image with a Gaussian of ``sigma`` pixels after every ``every``-th step.

    Cheaper than blurring at every step and as effective at removing the high frequencies
    gradient ascent produces (Yosinski et al. 2015, section 3).
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"blur_every needs a positive int period, got {every!r}")
    gaussian_kernel(sigma)

    def op(x, u, count):
        flat = x.reshape((-1,) + x.shape[-3:])
        blurred = blur(flat, sigma).reshape(x.shape)
        return jnp.where((count + 1) % every == 0, blurred, x)

    return post_step(op)


def _zero_below(x: jax.Array, score: jax.Array, pct: float) -> jax.Array:
    """Zero the pixels of each image whose ``score`` ([..., h, w]) is below its percentile."""
    flat = score.reshape(score.shape[:-2] + (-1,))
    threshold = jnp.percentile(flat, pct, axis=-1)[..., None, None]
    return jnp.where((score >= threshold)[..., None], x, 0.0)


def clip_small_norm(pct: float) -> optax.GradientTransformation:
    """Zero the pixels whose norm over the colour channels is below the ``pct`` percentile of
    the image (Yosinski et al.'s :math:`\\theta_{n\\_pct}`), leaving the main object on grey."""
    pct = _fraction(pct, "norm")
    if pct == 0:
        return optax.identity()
    return post_step(lambda x, u, count: _zero_below(x, jnp.linalg.norm(x, axis=-1), pct))


def clip_small_contribution(pct: float) -> optax.GradientTransformation:
    r"""Zero the pixels whose estimated contribution to the objective is below the ``pct``
    percentile (Yosinski et al.'s :math:`\theta_{c\_pct}`).

    The contribution of a pixel is the linear estimate of what setting it to grey would cost,
    :math:`|\sum_c x_c \, \partial a / \partial x_c|`; the incoming update stands in for the
    gradient (for SGD it is the gradient times the learning rate, which does not change the
    ranking).
    """
    pct = _fraction(pct, "contribution")
    if pct == 0:
        return optax.identity()
    return post_step(lambda x, u, count: _zero_below(x, jnp.abs(jnp.sum(x * u, axis=-1)), pct))


def box(lo: float = 0.0, hi: float = 1.0) -> optax.GradientTransformation:
    """Project onto ``[lo, hi]`` after each step: ``x <- clip(x, lo, hi)`` (latents that hold
    the image itself, e.g. DeepDream's)."""
    if not lo < hi:
        raise ValueError(f"box needs lo < hi, got [{lo}, {hi}]")
    return post_step(lambda x, u, count: jnp.clip(x, lo, hi))
