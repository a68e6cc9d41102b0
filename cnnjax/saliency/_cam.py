"""Class activation maps (Zhou et al., CVPR 2016) and the check that a model ends the way CAM needs."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_float, is_concrete
from cnnjax._src.chunks import chunk_size_for, chunked_map
from cnnjax._src.contract import Model
from cnnjax._src.sharding import on_mesh, shard_rows, unpad_rows
from cnnjax._src.targets import ModelCache, check_spatial_layer, class_table
from cnnjax.receptive_field import upsample_to_input

__all__ = ["CamHead", "cam", "cam_head"]


@dataclasses.dataclass(frozen=True, eq=False)
class CamHead:
    """A model's classifier as seen by CAM: ``logits = mean_{x, y} f(x, y) @ weights + bias``.

    Attributes:
      layer: the spatial layer ``f`` whose global average the logits are affine in.
      weights: float32 ``[channels, classes]``.
      bias: float32 ``[classes]``.
      error: the largest deviation from the identity seen while checking (logit units).
    """

    layer: str
    weights: jax.Array
    bias: jax.Array
    error: float

    def __repr__(self):
        return f"CamHead(layer={self.layer!r}, weights={tuple(self.weights.shape)}, error={self.error:.2g})"


@functools.partial(jax.jit, static_argnames=("apply", "layer", "chunk"))
def _identify(apply, params, image, noise, *, layer, chunk):
    """Weights and bias of an affine map from ``mean(f)`` to the logits, read off the model,
    and how far the model is from it. Image 0 is the image as it is, image 1 the same with
    spatially varying noise added to ``f`` (one forward pass for both)."""
    images = jnp.concatenate([image, image])
    k = noise.shape[-1]

    def tail(uniform, full):  # logits of both images, the layer perturbed
        out = apply(params, images, perturb={layer: uniform + full})
        return out["logits"], out[layer]

    zero_u = jnp.zeros((2, 1, 1, k), noise.dtype)
    full = jnp.concatenate([jnp.zeros_like(noise), noise])
    logits, vjp, f = jax.vjp(tail, zero_u, full, has_aux=True)
    n_classes = logits.shape[-1]
    scale = 1.0 + jnp.max(jnp.abs(logits))

    # d logits / d (one shift at every position of a channel) = W^T if logits = mean(f) W + b.
    def row(e):
        return vjp(jnp.stack([e, jnp.zeros_like(e)]))[0][0].reshape(k)

    weights = chunked_map(row, jnp.eye(n_classes, dtype=logits.dtype), chunk).T  # [k, classes]
    mean_f = jnp.mean(f, axis=(1, 2))
    bias = logits[0] - mean_f[0] @ weights
    # At the noisy features the same W and b must give the logits (affine, not just locally),
    affine_err = jnp.max(jnp.abs(logits[1] - (mean_f[1] @ weights + bias))) / scale
    # and the gradient must be W u / (h w) at every position, for a random u (an unweighted mean).
    u = jax.random.normal(jax.random.key(1), (n_classes,), logits.dtype)
    g = vjp(jnp.stack([jnp.zeros_like(u), u]))[1][1]
    expected = (weights @ u) / (f.shape[1] * f.shape[2])
    g_err = jnp.max(jnp.abs(g - expected[None, None])) / (jnp.max(jnp.abs(expected)) + 1e-12)
    return weights, bias, jnp.stack([affine_err, g_err])


_HEADS = ModelCache()


def cam_head(model: Model, layer: str | None = None, *, tolerance: float = 1e-4) -> CamHead:
    """Check that a model ends in global average pooling and one linear layer; return it.

    Nothing is read from parameter names: with ``f`` the layer's activation at a random image,
    the weights ``W`` are the derivative of the logits with respect to one uniform shift of
    each channel (through ``perturb``) and the bias ``b = logits - mean(f) @ W``; the model must
    then also satisfy ``logits = mean_{x,y} f'(x, y) @ W + b`` at ``f' = f +`` spatially varying
    noise, and its gradient with respect to ``f`` must be the same at every position (relative
    errors below ``tolerance``). Cached per model.

    Args:
      model: a :class:`~cnnjax.Model`.
      layer: the feature layer (default: the last spatial layer).
      tolerance: relative error allowed (float32 rounding is ~1e-6).

    Returns:
      A :class:`CamHead`.

    Raises:
      ValueError: the logits are not an affine function of the layer's global average (CAM
        does not apply; Grad-CAM does), or the layer has no spatial extent.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> cam_head(tiny_cnn())
      CamHead(layer='conv3', weights=(16, 10), error=...)
    """
    spec = model.spec
    layer = check_spatial_layer(spec, layer)
    tolerance = check_float(tolerance, "tolerance", lo=0.0, lo_open=True)
    return _HEADS.get(model, (layer, tolerance), lambda: _find_head(model, layer, tolerance))


def _find_head(model: Model, layer: str, tolerance: float) -> CamHead:
    spec = model.spec
    h, w = spec.input_size
    f_shape = spec.layer(layer).shape
    # NumPy draws the probe (eager jax.random calls would compile programs of their own): a
    # random image and noise on the scale of typical activations (features are O(1)).
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.random((1, h, w, spec.channels), np.float32))
    noise = jnp.asarray(rng.standard_normal((1, *f_shape)).astype(np.float32))
    chunk = chunk_size_for(spec.num_classes, 4 * int(np.prod(f_shape)))
    weights, bias, errors = _identify(model.apply, model.params, image, noise, layer=layer, chunk=chunk)
    errors = np.asarray(errors)
    if not np.all(np.isfinite(errors)) or errors.max() > tolerance:
        what = ("with noise added to the features", "in the gradient's positions")
        worst = int(np.nanargmax(np.where(np.isfinite(errors), errors, np.inf)))
        raise ValueError(
            f"CAM needs logits that are an affine function of the global average of a spatial layer "
            f"(global average pooling and one linear layer); the logits of {spec.name!r} are not, "
            f"after layer {layer!r} (relative error {errors[worst]:.3g} {what[worst]}). Grad-CAM "
            "applies to any layer of any model: cnnjax.grad_cam(model, images, layer=...)"
        )
    return CamHead(layer, weights, bias, float(errors.max()))


@functools.partial(jax.jit, static_argnames=("apply", "layer"))
def _cam_maps(apply, params, images, weights, bias, classes, *, layer):
    acts = apply(params, images)
    f, logits = acts[layer], acts["logits"]
    wc = jnp.take(weights, classes, axis=1)  # [k, n, t]
    maps = jnp.einsum("nhwk,knt->nthw", f, wc)
    # The identity: logits = mean of the map + bias, per target.
    recon = jnp.mean(maps, axis=(2, 3)) + jnp.take(bias, classes)
    error = jnp.max(jnp.abs(recon - jnp.take_along_axis(logits, classes, axis=1)))
    return maps, error / (1.0 + jnp.max(jnp.abs(logits)))


@on_mesh
def cam(model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False,
        mesh=None) -> jax.Array:  # fmt: skip
    """Class activation maps (Zhou et al., CVPR 2016) for networks ending in GAP + linear.

    ``M_c(x, y) = sum_k w_k^c f_k(x, y)`` with ``f`` the last spatial layer and ``w`` the
    linear layer's weights, so that the class score is its spatial mean plus the bias:
    ``S_c = (1 / hw) sum_{x,y} M_c(x, y) + b_c`` (the paper sums instead of averaging and
    omits the bias). All requested classes come from one einsum; the identity is checked on
    every call (relative error below 1e-5, else ``ValueError``). The weights are found by
    :func:`cam_head`, which checks that the model really ends that way.

    Args:
      model: a :class:`~cnnjax.Model` ending in global average pooling and one linear layer.
      images: float32 ``[n, h, w, c]`` in [0, 1].
      classes: the classes to explain (the vocabulary's ``classes``): None for every class, one
        index or name, a list of them for every image, or an ``[n, k]`` array of each image's
        own (``classify``'s indices fit).
      layer: the feature layer (default: the last spatial layer).
      upsample: return maps at the input size, each activation at its receptive field's
        centre (:func:`cnnjax.receptive_field.upsample_to_input`).
      mesh: a ``jax.sharding.Mesh``: the images are split over its first axis (padded to a
        multiple of its size, the padding dropped); the same maps as on one device.

    Returns:
      float32 ``[n, targets, h, w]`` (``[n, targets, H, W]`` with ``upsample``).

    Raises:
      ValueError: bad images or classes, a non-spatial layer, a model without global average
        pooling (use :func:`cnnjax.saliency.grad_cam`).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model, image = tiny_cnn(), np.random.default_rng(0).random((1, 32, 32, 3), np.float32)
      >>> cam(model, image).shape  # every class, at conv3
      (1, 10, 16, 16)
      >>> cam(model, image, 3, upsample=True).shape  # class 3, at the input's size
      (1, 1, 32, 32)
    """
    spec = model.spec
    images = spec.check_images(images)
    head = cam_head(model, layer)
    n, (images, idx) = shard_rows(mesh, images, class_table(spec, classes, images.shape[0]))
    maps, error = _cam_maps(model.apply, model.params, images, head.weights, head.bias, jnp.asarray(idx),
                            layer=head.layer)  # fmt: skip
    maps = unpad_rows(maps, n)
    if is_concrete(error) and not float(error) < 1e-5:
        raise ValueError(
            f"the CAM identity fails on these images for {spec.name!r} (relative error {float(error):.3g})"
        )
    return upsample_to_input(model, head.layer, maps) if upsample else maps
