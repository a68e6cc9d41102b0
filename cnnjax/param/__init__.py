"""Parameterizations: how an optimised image is represented (``init(key) -> latent``,
``to_image(latent) -> images in [0, 1]``).

* :func:`pixel`: the pixels themselves (centred on mid-grey, clipped to [0, 1]).
* :func:`fft`: a 2-D Fourier spectrum scaled by ``1 / f^decay``, so gradient steps move all
  spatial frequencies at a comparable rate instead of favouring high-frequency noise (Olah et
  al., "Feature Visualization", Distill 2017).
* :func:`image`: the composite most feature visualisations use: Fourier, decorrelated colour
  (channels mixed by the square root of the colour covariance, :data:`COLOR_CORRELATION_SQRT`)
  and a sigmoid into [0, 1].

Factories are cached on their (hashable) arguments, so the same settings give the same
functions, and a technique jitted over them compiles once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_positive_int
from cnnjax._src.contract import Parameterization

__all__ = ["pixel", "fft", "image", "decorrelate", "COLOR_CORRELATION_SQRT"]

#: Square root of the colour covariance of ImageNet images (rows: R, G, B; columns: the
#: decorrelated components), the figures published with Lucid (``lucid.optvis.param.color``).
COLOR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)


def _shape(size, batch, channels):
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return tuple(check_positive_int(v, f"image {name}") for name, v in
                 (("batch", batch), ("height", h), ("width", w), ("channels", channels)))  # fmt: skip


@functools.cache
def pixel(
    size: int | tuple[int, int], batch: int = 1, channels: int = 3, *, sd: float = 0.01, centre: float = 0.5
) -> Parameterization:
    """Pixels as the latent: ``image = clip(latent + centre, 0, 1)``.

    The latent starts as Gaussian noise of standard deviation ``sd`` around 0 (so the image
    starts as mid-grey plus noise), and decaying the latent towards 0 (``l2_decay``) pulls
    the image towards grey, as Yosinski et al. (2015) decay towards the mean image.

    Args:
      size: ``h`` or ``(h, w)``.
      batch: images per latent.
      channels: 3 (RGB) or 1.
      sd: the initial noise.
      centre: the value a zero latent maps to.
    """
    shape = _shape(size, batch, channels)

    def init(key):
        return sd * jax.random.normal(key, shape, jnp.float32)

    def to_image(latent):
        return jnp.clip(latent + centre, 0.0, 1.0)

    return Parameterization(init, to_image)


def _frequency_scale(h: int, w: int, decay_power: float) -> np.ndarray:
    """``1 / (4 max(f, 1/max(h, w))^decay)`` on the rfft2 grid (``f`` in cycles per pixel).

    With an orthonormal inverse transform this is the scaling Lucid uses (its
    ``fft_image``: ``sqrt(h w) / f^decay`` through an unnormalised inverse, divided by 4),
    so optimiser settings tuned there (Adam 0.05) carry over.
    """
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    return (0.25 / np.maximum(f, 1.0 / max(h, w)) ** decay_power).astype(np.float32)


@functools.cache
def fft(
    size: int | tuple[int, int],
    batch: int = 1,
    channels: int = 3,
    *,
    sd: float = 0.01,
    decay_power: float = 1.0,
) -> Parameterization:
    r"""A Fourier-space latent: ``x = irfft2(s(f) * (a + i b))`` with :math:`s(f) \propto f^{-d}`.

    ``to_image`` returns the *unsquashed* signal (zero mean, small at init); compose with
    :func:`image` (or your own squashing) to get [0, 1] images. Each frequency's amplitude
    is scaled by ``1 / f^decay_power`` (1/f: the spectrum of natural images), which equalises
    how fast the optimiser moves each frequency.

    Args:
      size: ``h`` or ``(h, w)``.
      batch: images per latent.
      channels: channels of the signal.
      sd: standard deviation of the spectrum's coefficients at init.
      decay_power: the exponent ``d`` (0: white, no scaling).
    """
    b, h, w, c = _shape(size, batch, channels)
    scale = jnp.asarray(_frequency_scale(h, w, decay_power))[None, None]  # [1, 1, h, w//2+1]
    spectrum_shape = (b, c, h, w // 2 + 1, 2)

    def init(key):
        return sd * jax.random.normal(key, spectrum_shape, jnp.float32)

    def to_image(latent):
        spectrum = jax.lax.complex(latent[..., 0], latent[..., 1]) * scale
        x = jnp.fft.irfft2(spectrum, s=(h, w), norm="ortho")  # [b, c, h, w]
        return jnp.transpose(x, (0, 2, 3, 1))

    return Parameterization(init, to_image)


def decorrelate(x: jax.Array) -> jax.Array:
    """Map decorrelated colour components ``[..., 3]`` to RGB (zero-mean, before squashing).

    Multiplies by :data:`COLOR_CORRELATION_SQRT` divided by its largest column norm, so that
    a unit step in any latent direction is at most a unit step in RGB.
    """
    m = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))
    return jnp.einsum("...k,rk->...r", x, jnp.asarray(m))


@functools.cache
def image(
    size: int | tuple[int, int],
    batch: int = 1,
    channels: int = 3,
    *,
    fourier: bool = True,
    decorrelated: bool = True,
    sd: float = 0.01,
    decay_power: float = 1.0,
) -> Parameterization:
    """The standard feature-visualisation image: Fourier latent, decorrelated colour, sigmoid.

    ``image = sigmoid(decorrelate(signal))`` where the signal comes from :func:`fft`
    (``fourier=True``) or is the latent itself. Decorrelation applies to 3-channel images only.

    Args:
      size: ``h`` or ``(h, w)``.
      batch: images per latent.
      channels: 3 or 1.
      fourier: Fourier (True) or pixel (False) latent.
      decorrelated: mix colours by the square root of the colour covariance.
      sd: initial scale.
      decay_power: Fourier amplitude exponent.

    Example:
      >>> p = image(128)
      >>> x = p.to_image(p.init(jax.random.key(0)))
      >>> x.shape, bool(x.min() > 0) and bool(x.max() < 1)
      ((1, 128, 128, 3), True)
    """
    b, h, w, c = _shape(size, batch, channels)
    if decorrelated and c != 3:
        raise ValueError(f"colour decorrelation needs 3 channels, got {c}; pass decorrelated=False")
    if fourier:
        inner = fft((h, w), b, c, sd=sd, decay_power=decay_power)
    else:
        shape = (b, h, w, c)
        inner = Parameterization(lambda key: sd * jax.random.normal(key, shape, jnp.float32), lambda z: z)

    def to_image(latent):
        x = inner.to_image(latent)
        if decorrelated:
            x = decorrelate(x)
        return jax.nn.sigmoid(x)

    return Parameterization(inner.init, to_image)
