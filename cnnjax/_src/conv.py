"""A dense convolution as one matrix product over extracted patches (im2col).

XLA's CPU convolution is slow for few input channels: the EfficientNet stem (3x3, stride 2,
3 -> 32 channels) measured 14 ms for 8 images at 224 px, against about 2 ms as patches and
a matrix product. Patches cost ``kh * kw`` times the input's memory, so this is for thin
inputs (a network's first layer), not for wide layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax._src.depthwise import resolve_padding

__all__ = ["patch_conv"]


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
