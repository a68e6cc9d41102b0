"""Attack steps as optax pieces: the steepest-descent step in a norm ball, the projection back
onto the ball and the box, and uniform starting points in the ball."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from cnnjax.attacks._common import check_norm

__all__ = ["col", "per_example", "project", "steepest_descent", "unit_ball_noise"]


def per_example(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Apply a transformation to each example (leading axis) on its own, e.g. a per-image norm.

    ``optax.normalize_by_update_norm`` divides by the norm of the whole update; wrapped here,
    each image of a batch is divided by its own gradient's norm.
    """
    return optax.GradientTransformation(
        lambda params: jax.vmap(inner.init)(params),
        lambda updates, state, params=None: jax.vmap(inner.update)(updates, state, params),
    )


def steepest_descent(norm: str, learning_rate) -> optax.GradientTransformation:
    r"""The steepest-descent step in a norm ball, as an optax transformation (PGD's step).

    .. math:: u_\infty = -\alpha \operatorname{sign}(g), \qquad u_2 = -\alpha\, g / \lVert g \rVert_2

    with the L2 norm taken per example (leading axis); a zero gradient gives no step. Follow
    it with :func:`project` after ``optax.apply_updates``.

    Args:
      norm: ``"inf"`` or ``"2"``.
      learning_rate: alpha, a scalar or a per-example ``[n, 1, 1, 1]`` array.

    Returns:
      An ``optax.GradientTransformation`` (stateless).

    Example:
      >>> x0 = np.full((2, 4, 4, 3), 0.5, np.float32)
      >>> grad = np.random.default_rng(0).normal(size=x0.shape).astype(np.float32)  # of the loss
      >>> tx = steepest_descent("inf", 1 / 255)
      >>> updates, state = tx.update(grad, tx.init(x0))
      >>> x = project(optax.apply_updates(x0, updates), x0, np.full((2,), 8 / 255, np.float32), "inf")
      >>> bool(np.allclose(np.abs(np.asarray(x) - x0), 1 / 255))  # one step of 1/255, down the gradient
      True

    Reference: Madry et al. (2018), section 2.1 (the L-infinity step is FGSM's sign).
    """
    direction = (optax.scale_by_sign() if check_norm(norm) == "inf"
                 else per_example(optax.normalize_by_update_norm(1.0, eps=1e-30)))  # fmt: skip
    return optax.chain(direction, optax.scale(-learning_rate))


def col(v: jax.Array) -> jax.Array:
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
    if check_norm(norm) == "inf":
        e = col(eps)
        return optax.projections.projection_box(x, jnp.maximum(x0 - e, 0.0), jnp.minimum(x0 + e, 1.0))
    # The ball's projection is delta * min(1, eps / |delta|), written out rather than
    # optax.projections.projection_l2_ball, which divides 0 by 0 when eps^2 underflows.
    delta = x - x0
    size = jnp.sqrt(jnp.sum(delta * delta, axis=(1, 2, 3)))
    delta = delta * col(jnp.minimum(1.0, eps / jnp.maximum(size, 1e-30)))
    return optax.projections.projection_box(x0 + delta, 0.0, 1.0)


def unit_ball_noise(key: jax.Array, shape: tuple[int, ...], norm: str) -> jax.Array:
    """Uniform samples from the unit ball of ``norm``, one per example (leading axis)."""
    if norm == "inf":
        return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    k_dir, k_rad = jax.random.split(key)
    d = math.prod(shape[1:])
    g = jax.random.normal(k_dir, shape)
    g = g / col(jnp.maximum(jnp.sqrt(jnp.sum(g * g, axis=(1, 2, 3))), 1e-30))
    # Radius u^(1/d) makes the density uniform in the ball (Muller 1959; Marsaglia 1972).
    return g * col(jax.random.uniform(k_rad, shape[:1]) ** (1.0 / d))
