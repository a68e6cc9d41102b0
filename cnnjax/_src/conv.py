"""Dense convolutions fast on the CPU, forward and backward, in a jitted call and in a loop.

* :func:`patch_conv`: one matrix product over extracted patches (im2col). XLA's CPU convolution
  is slow for few input channels: the EfficientNet stem (3x3, stride 2, 3 -> 32 channels)
  measured 14 ms for 8 images at 224 px, against about 2 ms as patches and a matrix product.
  Patches cost ``kh * kw`` times the input's memory, so this is for thin inputs (a network's
  first layer), not for wide layers.
* :func:`dense_conv`: XLA's convolution (stride 1) with both gradients written as forward
  convolutions in the canonical layout. XLA's own gradients are convolutions with other
  dimension labels, which its CPU compiler turns back into the fast canonical form in a jitted
  call but not inside a loop body (``lax.scan``, ``fori_loop``): there the weight gradient of
  FashionNet's second layer (batch 128, 28x28, 32 -> 32 channels) measured 3.0 s against
  90 ms (AMD EPYC, jax 0.10.2). Written canonically it takes 68 ms in the loop, 97 ms jitted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax._src.depthwise import resolve_padding

__all__ = ["dense_conv", "patch_conv"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def dense_conv(
    x: jax.Array, kernel: jax.Array, padding: str | Sequence[tuple[int, int]] = "SAME"
) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, (1, 1), padding)`` (NHWC, HWIO), fast to differentiate.

    The same values as XLA's convolution; the gradients are computed by a ``jax.custom_vjp``
    as two forward convolutions (module docstring: XLA's own are slow inside loops on the CPU).
    ``jit``, ``vmap`` and ``grad`` work; forward-mode autodiff (``jvp``, ``jacfwd``) raises,
    as for any ``custom_vjp``.

    Args:
      x: [n, h, w, cin].
      kernel: [kh, kw, cin, cout].
      padding: "SAME", "VALID" or ((top, bottom), (left, right)), each side at most
        ``k - 1``.

    Returns:
      [n, h + top + bottom - kh + 1, w + left + right - kw + 1, cout].

    Example:
      >>> y = dense_conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)))
      >>> y.shape, float(y[0, 4, 4, 0])
      ((2, 8, 8, 4), 27.0)
    """
    kh, kw, cin, _ = kernel.shape
    if x.ndim != 4 or x.shape[-1] != cin:
        raise ValueError(f"x must be [n, h, w, {cin}] for kernel {kernel.shape}, got {x.shape}")
    pads = resolve_padding(padding, x.shape[1:3], (kh, kw), 1)
    if any(p > k - 1 for (lo, hi), k in zip(pads, (kh, kw)) for p in (lo, hi)):
        raise ValueError(f"padding {pads} exceeds kernel size - 1 for kernel {kernel.shape}")
    return _dense_conv(x, kernel, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_conv(x, kernel, pads):
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_NHWC)


def _dense_conv_fwd(x, kernel, pads):
    return _dense_conv(x, kernel, pads), (x, kernel)


def _dense_conv_bwd(pads, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    # dx: g against the flipped kernel with its in/out channels swapped (full correlation).
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    back = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]), (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
    dx = lax.conv_general_dilated(g, flipped, (1, 1), back, dimension_numbers=_NHWC)
    # dkernel[i, j, c, o] = sum_{n, m, l} xpad[n, m + i, l + j, c] g[n, m, l, o]: a convolution
    # over (m, l) whose "batch" is x's channels and whose contraction is the images.
    dk = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pads,
                                  dimension_numbers=_NHWC)  # fmt: skip
    return dx.astype(x.dtype), dk.transpose(1, 2, 0, 3).astype(kernel.dtype)


_dense_conv.defvjp(_dense_conv_fwd, _dense_conv_bwd)


def patch_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding="SAME") -> jax.Array:
    """``lax.conv_general_dilated`` (NHWC, HWIO) computed as patches times a matrix.

    ``y[n, m, l] = sum_{i, j, c} xp[n, s*m + i, s*l + j, c] * kernel[i, j, c]`` with ``xp`` the
    padded input; padding as in :func:`cnnjax.models.depthwise_conv` (TensorFlow SAME, VALID or
    explicit). Differentiable by JAX (slices, a concatenation and a dot).

    Args:
      x: [n, h, w, cin].
      kernel: [kh, kw, cin, cout].
      stride: int >= 1.
      padding: "SAME", "VALID" or ((top, bottom), (left, right)).

    Returns:
      [n, ho, wo, cout].
    """
    kh, kw, cin, cout = kernel.shape
    if x.ndim != 4 or x.shape[-1] != cin:
        raise ValueError(f"x must be [n, h, w, {cin}] for kernel {kernel.shape}, got {x.shape}")
    (pt, pb), (pl, pr) = resolve_padding(padding, x.shape[1:3], (kh, kw), stride)
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, hp, wp, _ = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    patches = jnp.concatenate(
        [
            lax.slice(
                xp,
                (0, i, j, 0),
                (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, cin),
                (1, stride, stride, 1),
            )  # fmt: skip
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    return jnp.tensordot(patches, kernel.reshape(kh * kw * cin, cout), axes=1)
