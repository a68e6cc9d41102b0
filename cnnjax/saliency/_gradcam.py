"""Maps weighted by gradients: Grad-CAM, Grad-CAM++ and Layer-CAM, for any spatial layer of any model.

Each reads the gradient of a class score with respect to a layer's activation through the
contract's ``perturb``: one forward pass, and one backward pass per target, vmapped in chunks
in one compiled call.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.chunks import chunk_size_for, chunked_map
from cnnjax._src.contract import Model
from cnnjax._src.sharding import on_mesh, shard_rows, unpad_rows
from cnnjax._src.targets import check_spatial_layer, class_table
from cnnjax.receptive_field import upsample_to_input

__all__ = ["grad_cam", "grad_cam_plus_plus", "layer_cam"]


def _weighted(method: str, a: jax.Array, g: jax.Array) -> jax.Array:
    """One map ``[n, h, w]`` from activations ``a`` and gradients ``g`` ``[n, h, w, k]``."""
    if method == "gradcam":
        alpha = jnp.mean(g, axis=(1, 2))  # (1 / Z) sum_{ij} dS/dA_ij
        return jax.nn.relu(jnp.einsum("nhwk,nk->nhw", a, alpha))
    if method == "gradcam++":
        g2, g3 = g * g, g * g * g
        denom = 2.0 * g2 + jnp.sum(a, axis=(1, 2), keepdims=True) * g3
        safe = jnp.where(denom != 0.0, denom, 1.0)
        alpha = jnp.where(denom != 0.0, g2 / safe, 0.0)
        w = jnp.sum(alpha * jax.nn.relu(g), axis=(1, 2))
        return jax.nn.relu(jnp.einsum("nhwk,nk->nhw", a, w))
    if method == "layercam":
        return jax.nn.relu(jnp.sum(jax.nn.relu(g) * a, axis=-1))
    raise ValueError(f"unknown method {method!r}")


@functools.partial(jax.jit, static_argnames=("apply", "layer", "method", "chunk"))
def _gradient_maps(apply, params, images, classes, *, layer, method, chunk):
    acts = apply(params, images)

    def logits_of(delta):
        out = apply(params, images, perturb={layer: delta})
        return out["logits"], out[layer]

    logits, vjp, a = jax.vjp(logits_of, jnp.zeros_like(acts[layer]), has_aux=True)

    def one(cls):  # cls [n]: one target per image; each image's logits depend on it alone
        (g,) = vjp(jax.nn.one_hot(cls, logits.shape[-1], dtype=logits.dtype))
        return _weighted(method, a, g)

    maps = chunked_map(one, classes.T, chunk)  # [t, n, h, w]
    return jnp.transpose(maps, (1, 0, 2, 3))


@on_mesh
def _gradient_method(method: str, model: Model, images, classes, layer, upsample, mesh) -> jax.Array:
    spec = model.spec
    images = spec.check_images(images)
    layer = check_spatial_layer(spec, layer)
    idx = class_table(spec, classes, images.shape[0])
    chunk = chunk_size_for(idx.shape[1], 4 * 3 * images.shape[0] * int(np.prod(spec.layer(layer).shape)))
    n, (images, idx) = shard_rows(mesh, images, idx)
    maps = _gradient_maps(
        model.apply, model.params, images, jnp.asarray(idx), layer=layer, method=method, chunk=chunk
    )
    maps = unpad_rows(maps, n)
    return upsample_to_input(model, layer, maps) if upsample else maps


def grad_cam(
    model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False, mesh=None
) -> jax.Array:
    """Grad-CAM (Selvaraju et al., ICCV 2017) for any spatial layer of any model.

    ``alpha_k^c = (1 / Z) sum_{ij} dS_c / dA_k(i, j)``, ``L_c = ReLU(sum_k alpha_k^c A_k)``,
    with ``S_c`` the logit (pre-softmax score) and the gradient taken through ``perturb``. On a
    network ending in global average pooling and a linear layer, at the last spatial layer,
    ``L_c = ReLU(M_c) / (hw)`` with ``M_c`` the CAM. One forward pass, one backward pass per
    target (vmapped in chunks, one compiled call).

    Args:
      model: a :class:`~cnnjax.Model`.
      images: float32 ``[n, h, w, c]`` in [0, 1].
      classes: the classes to explain, as for :func:`cnnjax.saliency.cam` (default: every class).
      layer: a spatial layer (default: the last one).
      upsample: return maps at the input size, each activation at its receptive field's centre.
      mesh: a ``jax.sharding.Mesh``: the images are split over its first axis (as for
        :func:`cnnjax.saliency.cam`).

    Returns:
      float32 ``[n, targets, h, w]``, non-negative.

    Example:
      >>> from cnnjax.models import classify
      >>> from cnnjax.testing import tiny_cnn
      >>> model, images = tiny_cnn(), np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
      >>> probs, idx = classify(model, images)
      >>> maps = grad_cam(model, images, idx[:, :1], layer="conv2")  # each image's top class
      >>> maps.shape, bool(maps.min() >= 0)
      ((2, 1, 16, 16), True)
    """
    return _gradient_method("gradcam", model, images, classes, layer, upsample, mesh)


def grad_cam_plus_plus(model: Model, images, classes=None, *, layer: str | None = None,
                       upsample: bool = False, mesh=None) -> jax.Array:  # fmt: skip
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), their closed form, eq. 19.

    With ``g = dS_c / dA_k`` and the exponential of the score as the target, whose higher
    derivatives become powers of ``g`` for piecewise-linear networks:

        alpha_k(i, j) = g^2 / (2 g^2 + sum_{ab} A_k(a, b) g^3)   (0 where the denominator is 0)
        w_k = sum_{ij} alpha_k(i, j) ReLU(g(i, j)),     L_c = ReLU(sum_k w_k A_k)

    (the positive factor ``exp(S_c)`` of the paper's weights is dropped: it scales the map).
    Arguments and result as :func:`grad_cam`.
    """
    return _gradient_method("gradcam++", model, images, classes, layer, upsample, mesh)


def layer_cam(
    model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False, mesh=None
) -> jax.Array:
    """Layer-CAM (Jiang et al., IEEE TIP 2021): position-wise gradient weights.

    ``L_c(i, j) = ReLU(sum_k ReLU(dS_c / dA_k(i, j)) A_k(i, j))``; useful at earlier, finer
    layers, where a single weight per channel (Grad-CAM) blurs. Arguments and result as
    :func:`grad_cam`.
    """
    return _gradient_method("layercam", model, images, classes, layer, upsample, mesh)
