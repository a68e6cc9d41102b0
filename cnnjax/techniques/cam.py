"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM and Layer-CAM, and upsampling.

Every method returns float32 maps ``[images, targets, h, w]`` at the resolution of the layer
it reads (or, with ``upsample=True``, at the input resolution, each activation placed at the
centre of its theoretical receptive field). ``classes`` selects the targets the same way for
all methods:

* ``None``: every class (``targets = num_classes``);
* an int or a class name: that class for every image (``targets = 1``);
* a 1-D sequence: those classes for every image;
* a 2-D array ``[images, k]``: per-image classes (``classify``'s indices fit: one target per
  image is ``idx[:, :1]``).

Classes are array arguments of the compiled programs, so new classes of the same shape never
recompile; all targets of a call are vmapped in one compiled call. The maps are JAX arrays and
differentiable with respect to the images.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import is_concrete
from cnnjax._src.chunks import chunked_map
from cnnjax._src.contract import Model, ModelSpec

__all__ = [
    "CamHead",
    "cam",
    "cam_head",
    "grad_cam",
    "grad_cam_plus_plus",
    "layer_cam",
    "score_cam",
    "upsample_maps",
]

# Bytes of gradient per vmapped chunk of targets (bounds memory for 1000 classes).
_CHUNK_BYTES = 64_000_000


# --------------------------------------------------------------------------------------------
# Shared argument handling


def last_spatial_layer(spec: ModelSpec) -> str:
    """The last layer with spatial extent before the logits (what CAM methods read by default)."""
    spatial = [layer.name for layer in spec.layers if layer.spatial and layer.name not in ("input", "logits")]
    if not spatial:
        raise ValueError(f"model {spec.name!r} has no spatial layer besides the input")
    return spatial[-1]


def check_spatial_layer(spec: ModelSpec, layer: str | None) -> str:
    """``layer`` (default: :func:`last_spatial_layer`) checked to be a spatial layer."""
    if layer is None:
        return last_spatial_layer(spec)
    info = spec.layer(layer)
    if not info.spatial or layer == "logits":
        valid = [lay.name for lay in spec.layers if lay.spatial]
        raise ValueError(
            f"layer {layer!r} of {spec.name!r} has no spatial extent (shape {info.shape}); "
            f"spatial layers: {', '.join(valid)}"
        )
    return layer


def class_array(spec: ModelSpec, classes, n: int) -> np.ndarray:
    """``classes`` (None, int, name, 1-D sequence or ``[n, k]`` array) as int32 ``[n, k]``."""
    c = spec.num_classes
    if classes is None:
        return np.broadcast_to(np.arange(c, dtype=np.int32)[None], (n, c))
    if isinstance(classes, (str, int, np.integer)) and not isinstance(classes, bool):
        return np.full((n, 1), spec.class_index(classes), np.int32)
    if isinstance(classes, (list, tuple)) and any(isinstance(x, str) for x in classes):
        return np.broadcast_to(
            np.asarray([spec.class_index(x) for x in classes], np.int32)[None], (n, len(classes))
        )
    arr = np.asarray(classes)
    if arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) and arr.ndim in (1, 2)):
        raise ValueError(
            "classes must be None (all), a class index or name, a 1-D list of them, or an int "
            f"array [images, k]; got {classes!r}"
        )
    if arr.ndim == 2 and arr.shape[0] != n:
        raise ValueError(f"classes has shape {arr.shape}: a 2-D array needs one row per image ({n} images)")
    bad = (arr < 0) | (arr >= c)
    if bad.any():
        raise ValueError(
            f"class index {int(arr[bad].flat[0])} is out of range for {spec.name!r}: valid 0..{c - 1}"
        )
    return np.broadcast_to(
        arr.astype(np.int32)[None] if arr.ndim == 1 else arr.astype(np.int32), (n, arr.shape[-1])
    )


def baseline_image(spec: ModelSpec) -> np.ndarray:
    """The [0, 1] image ``[1, 1, 1, c]`` the model maps to zero input (its mean colour): what
    masked and deleted pixels become."""
    mapping = spec.value_mapping
    mean = np.broadcast_to(np.asarray(mapping.mean, np.float32), (spec.channels,))  # model channel order
    return np.clip(mean[::-1] if mapping.bgr else mean, 0.0, 1.0).reshape(1, 1, 1, -1)


def _chunk(targets: int, per_target_bytes: int) -> int:
    return max(1, min(targets, _CHUNK_BYTES // max(1, per_target_bytes)))


# --------------------------------------------------------------------------------------------
# Upsampling


def _interp_matrix(centres: np.ndarray, n_out: int) -> np.ndarray:
    """``R [n_out, n_in]``: linear interpolation at pixels 0..n_out-1 between values placed at
    ``centres`` (increasing), constant beyond the first and last centre."""
    centres = np.asarray(centres, np.float64)
    n_in = len(centres)
    R = np.zeros((n_out, n_in), np.float32)
    if n_in == 1:
        R[:, 0] = 1.0
        return R
    q = np.arange(n_out, dtype=np.float64)
    i = np.clip(np.searchsorted(centres, q, side="right") - 1, 0, n_in - 2)
    t = np.clip((q - centres[i]) / (centres[i + 1] - centres[i]), 0.0, 1.0)
    R[np.arange(n_out), i] = 1.0 - t
    R[np.arange(n_out), i + 1] += t
    return R


def upsample_maps(
    maps, size: tuple[int, int], centres: tuple[Sequence[float], Sequence[float]] | None = None
):
    """Upsample maps ``[..., h, w]`` to ``[..., H, W]`` by linear interpolation.

    ``out[Y, X] = sum_{y, x} R_y[Y, y] m[y, x] R_x[X, x]`` where ``R`` interpolates linearly
    between values placed at ``centres`` (input-pixel coordinates of each row / column) and
    is constant beyond the outermost centres. The default centres ``(i + 0.5) H / h - 0.5``
    are ordinary bilinear resizing (``jax.image.resize(..., "linear")``); pass
    ``theoretical(model)[layer].centres`` to put each activation at the centre of its
    receptive field (with TensorFlow SAME padding those differ: 15 pixels at
    EfficientNet-Lite0's 7x7 head). Differentiable; two matrix products.

    Args:
      maps: ``[..., h, w]`` array.
      size: ``(H, W)``.
      centres: ``(ys [h], xs [w])``, strictly increasing, or None.

    Returns:
      float32 ``[..., H, W]``.
    """
    maps = jnp.asarray(maps, jnp.float32)
    h, w = maps.shape[-2:]
    H, W = size
    if centres is None:
        centres = ((np.arange(h) + 0.5) * H / h - 0.5, (np.arange(w) + 0.5) * W / w - 0.5)
    ys, xs = (np.asarray(c, np.float64) for c in centres)
    if ys.shape != (h,) or xs.shape != (w,) or np.any(np.diff(ys) <= 0) or np.any(np.diff(xs) <= 0):
        raise ValueError(
            f"centres must be increasing arrays of length {h} and {w}, got {ys.shape} and {xs.shape}"
        )
    return _apply_interp(maps, jnp.asarray(_interp_matrix(ys, H)), jnp.asarray(_interp_matrix(xs, W)))


def _apply_interp(maps, ry, rx):
    return jnp.einsum("Yy,...yx,Xx->...YX", ry, maps, rx)


def _centre_matrices(model: Model, layer: str):
    """Interpolation matrices that put each activation of ``layer`` at its receptive field's
    centre (fields derived by :func:`cnnjax.receptive_field.theoretical`)."""
    from cnnjax.techniques.receptive_field import theoretical

    ys, xs = theoretical(model)[layer].centres
    H, W = model.spec.input_size
    return jnp.asarray(_interp_matrix(ys, H)), jnp.asarray(_interp_matrix(xs, W))


def _finish(model, layer, maps, upsample: bool):
    if not upsample:
        return maps
    ry, rx = _centre_matrices(model, layer)
    return _apply_interp(maps, ry, rx)


# --------------------------------------------------------------------------------------------
# CAM (Zhou et al. 2016)


class CamHead:
    """A model's classifier as seen by CAM: ``logits = mean_{x, y} f(x, y) @ weights + bias``.

    Attributes:
      layer: the spatial layer ``f`` whose global average the logits are affine in.
      weights: float32 ``[channels, classes]``.
      bias: float32 ``[classes]``.
      error: the largest deviation from the identity seen while checking (logit units).
    """

    def __init__(self, layer: str, weights: jax.Array, bias: jax.Array, error: float):
        self.layer, self.weights, self.bias, self.error = layer, weights, bias, error

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


_HEADS: dict[tuple[object, str], CamHead] = {}


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
    """
    spec = model.spec
    layer = check_spatial_layer(spec, layer)
    from cnnjax.techniques.receptive_field import _cache_key

    key = (_cache_key(model), layer)
    if key in _HEADS:
        return _HEADS[key]
    h, w = spec.input_size
    image = jax.random.uniform(jax.random.key(0), (1, h, w, spec.channels))
    f_shape = spec.layer(layer).shape
    # Noise on the scale of typical activations (a unit normal; features are O(1)).
    noise = jax.random.normal(jax.random.key(2), (1, *f_shape))
    chunk = _chunk(spec.num_classes, 4 * int(np.prod(f_shape)))
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
    head = CamHead(layer, weights, bias, float(errors.max()))
    _HEADS[key] = head
    if isinstance(key[0], int):
        weakref.finalize(model, _HEADS.pop, key, None)
    return head


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


def cam(model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False) -> jax.Array:
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
      classes: targets (see the module docstring); default every class.
      layer: the feature layer (default: the last spatial layer).
      upsample: return maps at the input size, each activation at its receptive field's
        centre (:func:`upsample_maps`).

    Returns:
      float32 ``[n, targets, h, w]`` (``[n, targets, H, W]`` with ``upsample``).

    Raises:
      ValueError: bad images or classes, a non-spatial layer, a model without global average
        pooling (use :func:`grad_cam`).

    Example::

      maps = cnnjax.cam(model, image)                 # [1, 1000, 7, 7]
      top = cnnjax.cam(model, image, "espresso", upsample=True)   # [1, 1, 224, 224]
    """
    spec = model.spec
    images = spec.check_images(images)
    head = cam_head(model, layer)
    idx = jnp.asarray(class_array(spec, classes, images.shape[0]))
    maps, error = _cam_maps(model.apply, model.params, images, head.weights, head.bias, idx, layer=head.layer)
    if is_concrete(error) and not float(error) < 1e-5:
        raise ValueError(
            f"the CAM identity fails on these images for {spec.name!r} (relative error {float(error):.3g})"
        )
    return _finish(model, head.layer, maps, upsample)


# --------------------------------------------------------------------------------------------
# Gradient-based maps


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


def _gradient_method(method: str, model: Model, images, classes, layer, upsample) -> jax.Array:
    spec = model.spec
    images = spec.check_images(images)
    layer = check_spatial_layer(spec, layer)
    idx = class_array(spec, classes, images.shape[0])
    chunk = _chunk(idx.shape[1], 4 * 3 * images.shape[0] * int(np.prod(spec.layer(layer).shape)))
    maps = _gradient_maps(
        model.apply, model.params, images, jnp.asarray(idx), layer=layer, method=method, chunk=chunk
    )
    return _finish(model, layer, maps, upsample)


def grad_cam(
    model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False
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
      classes: targets (see the module docstring); default every class.
      layer: a spatial layer (default: the last one).
      upsample: return maps at the input size, each activation at its receptive field's centre.

    Returns:
      float32 ``[n, targets, h, w]``, non-negative.

    Example::

      probs, idx = cnnjax.classify(model, images)
      maps = cnnjax.grad_cam(model, images, idx[:, :1], layer="block_10")   # [n, 1, 14, 14]
    """
    return _gradient_method("gradcam", model, images, classes, layer, upsample)


def grad_cam_plus_plus(model: Model, images, classes=None, *, layer: str | None = None,
                       upsample: bool = False) -> jax.Array:  # fmt: skip
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018), their closed form, eq. 19.

    With ``g = dS_c / dA_k`` and the exponential of the score as the target, whose higher
    derivatives become powers of ``g`` for piecewise-linear networks:

        alpha_k(i, j) = g^2 / (2 g^2 + sum_{ab} A_k(a, b) g^3)   (0 where the denominator is 0)
        w_k = sum_{ij} alpha_k(i, j) ReLU(g(i, j)),     L_c = ReLU(sum_k w_k A_k)

    (the positive factor ``exp(S_c)`` of the paper's weights is dropped: it scales the map).
    Arguments and result as :func:`grad_cam`.
    """
    return _gradient_method("gradcam++", model, images, classes, layer, upsample)


def layer_cam(
    model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False
) -> jax.Array:
    """Layer-CAM (Jiang et al., IEEE TIP 2021): position-wise gradient weights.

    ``L_c(i, j) = ReLU(sum_k ReLU(dS_c / dA_k(i, j)) A_k(i, j))``; useful at earlier, finer
    layers, where a single weight per channel (Grad-CAM) blurs. Arguments and result as
    :func:`grad_cam`.
    """
    return _gradient_method("layercam", model, images, classes, layer, upsample)


# --------------------------------------------------------------------------------------------
# Score-CAM (Wang et al. 2020)


@functools.partial(jax.jit, static_argnames=("apply", "layer", "batch"))
def _score_maps(apply, params, images, classes, ry, rx, baseline, *, layer, batch):
    a = apply(params, images)[layer]  # [n, h, w, k]

    def masked_probs(ch):
        up = _apply_interp(jnp.take(a, ch, axis=3), ry, rx)  # [n, H, W]
        lo = jnp.min(up, axis=(1, 2), keepdims=True)
        span = jnp.max(up, axis=(1, 2), keepdims=True) - lo
        mask = jnp.where(span > 0, (up - lo) / jnp.where(span > 0, span, 1.0), 0.0)[..., None]
        probs = jax.nn.softmax(apply(params, images * mask + baseline * (1.0 - mask))["logits"], axis=-1)
        return jnp.where(span[:, 0, 0, None] > 0, probs, 0.0)  # a constant channel carries no weight

    probs = chunked_map(masked_probs, jnp.arange(a.shape[-1]), batch)  # [k, n, classes]
    weights = jnp.take_along_axis(jnp.transpose(probs, (1, 0, 2)), classes[:, None, :], axis=2)  # [n, k, t]
    return jax.nn.relu(jnp.einsum("nhwk,nkt->nthw", a, weights))


def score_cam(model: Model, images, classes=None, *, layer: str | None = None, upsample: bool = False,
              batch_size: int = 16) -> jax.Array:  # fmt: skip
    """Score-CAM (Wang et al., CVPR Workshops 2020): channel weights from masked forward passes.

    For each channel ``k`` of the layer, ``H_k`` is its activation upsampled to the input (each
    activation at its receptive field's centre) and min-max normalised to [0, 1]; the input
    is masked as ``x H_k + m (1 - H_k)`` with ``m`` the model's mean colour (the image it maps
    to zero, which is what multiplying normalised inputs does in the authors' code), and

        w_k^c = softmax(f(masked_k))_c,      L_c = ReLU(sum_k w_k^c A_k)

    as in the authors' released code (the class probability of the masked input; channels
    with a constant map get no weight). The masked passes serve every class at once.

    Cost: one forward pass per channel per image, batched ``batch_size`` channels at a time by
    ``lax.map`` in one compiled call: 1280 passes per image at EfficientNet-Lite0's ``head``
    (about 13 s per image on 2 CPU cores); 40 at ``block_3``-sized layers.

    Arguments and result as :func:`grad_cam`, plus ``batch_size``: channels per chunk.
    """
    spec = model.spec
    images = spec.check_images(images)
    layer = check_spatial_layer(spec, layer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    idx = class_array(spec, classes, images.shape[0])
    ry, rx = _centre_matrices(model, layer)
    maps = _score_maps(model.apply, model.params, images, jnp.asarray(idx), ry, rx,
                       jnp.asarray(baseline_image(spec)), layer=layer,
                       batch=min(batch_size, spec.layer(layer).channels))  # fmt: skip
    return _finish(model, layer, maps, upsample)
