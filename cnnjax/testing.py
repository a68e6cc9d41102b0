"""Helpers for testing techniques: a tiny CNN, a compile counter, the technique contract and
a synthetic concept data set.

Used by cnnjax's own test suite and usable by anyone testing code built on cnnjax: the
network is small enough that a technique's whole run compiles and executes in seconds on a
laptop CPU, :func:`count_compiles` proves that a second call does not recompile, and
:func:`check_technique_contract` checks what every technique promises; :func:`write_broden`
writes a small Broden-layout concept data set whose ground truth (colours, shapes, textures)
is known exactly.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import numpy_seed
from cnnjax._src.contract import Model
from cnnjax.models import from_function

__all__ = ["CompileCount", "check_technique_contract", "count_compiles", "tiny_cnn", "write_broden"]

TINY_LAYERS = ("input", "conv1", "conv2", "conv3", "pooled", "logits")


def _conv(x, w, b, stride):
    y = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b.reshape(1, 1, 1, -1)


def tiny_cnn(key=0, *, size: int = 32, channels: int = 3, num_classes: int = 10, width: int = 8) -> Model:
    """A random-weight CNN that ends in global average pooling and one linear layer.

    ``conv1`` (3x3, ``width`` channels, stride 1) - ReLU - ``conv2`` (3x3, ``2 * width``,
    stride 2) - ReLU - ``conv3`` (3x3, ``2 * width``, stride 1) - ReLU - ``pooled`` (global
    average) - ``logits`` (linear). Theoretical receptive fields: 3, 5 and 9 pixels; effective
    strides 1, 2 and 2. Activations are recorded after the ReLU.

    Args:
      key: an int seed or a JAX key for the weights (He-normal kernels, small random biases).
      size: the spec's input size (the network itself accepts any size >= 8).
      channels: input channels.
      num_classes: outputs.
      width: channels of ``conv1``.

    Returns:
      A :class:`~cnnjax.Model` (via :func:`cnnjax.from_function`); the same arguments give the
      same model object, so techniques compiled for it are reused.

    Example:
      >>> model = tiny_cnn()
      >>> model.spec.layer_names
      ('input', 'conv1', 'conv2', 'conv3', 'pooled', 'logits')
      >>> model.spec.layer("conv2").shape, model.spec.layer("conv2").stride
      ((16, 16, 16), 2)
      >>> tiny_cnn() is model
      True
    """
    seed = numpy_seed(key)
    return _tiny_cnn(seed if isinstance(seed, int) else tuple(seed), size, channels, num_classes, width)


@functools.cache
def _tiny_cnn(seed, size: int, channels: int, num_classes: int, width: int) -> Model:
    # NumPy draws the weights: eager jax.random calls would compile one program per shape.
    rng = np.random.default_rng(seed)
    widths = (channels, width, 2 * width, 2 * width)
    params = {}
    for i in range(3):
        cin, cout = widths[i], widths[i + 1]
        params[f"conv{i + 1}"] = {
            "w": jnp.asarray(
                (rng.normal(size=(3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5).astype(np.float32)
            ),
            "b": jnp.asarray((rng.normal(size=(cout,)) * 0.05).astype(np.float32)),
        }
    params["dense"] = {
        "w": jnp.asarray(
            (rng.normal(size=(widths[-1], num_classes)) * (1.0 / widths[-1]) ** 0.5).astype(np.float32)
        ),
        "b": jnp.asarray((rng.normal(size=(num_classes,)) * 0.05).astype(np.float32)),
    }

    def forward(p, x, tap):
        h = x
        for i, stride in enumerate((1, 2, 1)):
            c = p[f"conv{i + 1}"]
            h = tap(f"conv{i + 1}", jax.nn.relu(_conv(h, c["w"], c["b"], stride)))
        h = tap("pooled", jnp.mean(h, axis=(1, 2)))
        return h @ p["dense"]["w"] + p["dense"]["b"][None]

    return from_function(
        forward,
        params,
        name="tiny_cnn",
        input_size=size,
        channels=channels,
        receptive_fields={"input": 1, "conv1": 3, "conv2": 5, "conv3": 9},
    )


class CompileCount:
    """The XLA backend compilations seen inside :func:`count_compiles`: ``n`` of them, and the
    name of each compiled program in ``names`` (``"jit(_run)"``, ``"jit(convert_element_type)"``
    for an eager operation...)."""

    def __init__(self):
        self.n = 0
        self.names: list[str] = []


_lock = threading.Lock()
_active: list[CompileCount] = []
_registered = False


def _listener(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        with _lock:
            for counter in _active:
                counter.n += 1
                counter.names.append(str(kwargs.get("fun_name", "?")))


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
    """Count XLA compilations (of anything, eager operations included) inside the block.

    Example:
      >>> double = jax.jit(lambda x: 2 * x)
      >>> a, b = np.ones(3, np.float32), np.full(3, 5.0, np.float32)  # NumPy: no device operation
      >>> _ = double(a)  # compiles
      >>> with count_compiles() as c:
      ...     _ = double(b)  # same shape, new values
      >>> c.n
      0
    """
    global _registered
    with _lock:
        if not _registered:
            jax.monitoring.register_event_duration_secs_listener(_listener)
            _registered = True
        counter = CompileCount()
        _active.append(counter)
    try:
        yield counter
    finally:
        with _lock:
            _active.remove(counter)


def _images(out):
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def check_technique_contract(run, targets_a, targets_b, *, independent=True, random=True, atol=1e-5):
    """Check the contract every technique passes: one compiled program, vmapped over targets.

    ``run(targets, key) -> images`` (or a tuple whose first element is the images), where
    ``targets`` is a pytree of arrays with a leading target axis. Checks that

    * the images are float32, finite, in [0, 1], one per target;
    * a second call with new targets of the same shapes compiles nothing;
    * the same key gives the same images, bit for bit;
    * (``independent``) changing one target leaves the other targets' images unchanged, so
      the batch really is a vmap over independent targets;
    * (``random``) another key gives other images.

    Returns:
      The images of the first call (NumPy).

    Example:
      A stand-in technique: one noisy image per target, the target shifting its brightness.

      >>> @jax.jit
      ... def run(targets, key):
      ...     noise = jax.random.normal(key, (len(targets), 8, 8, 3))
      ...     return jax.nn.sigmoid(noise + targets.reshape(-1, 1, 1, 1))
      >>> targets_a, targets_b = np.array([0.0, 1.0], np.float32), np.array([2.0, -1.0], np.float32)
      >>> check_technique_contract(run, targets_a, targets_b).shape
      (2, 8, 8, 3)
    """
    key0, key1 = jax.random.key(0), jax.random.key(1)
    n = len(jax.tree.leaves(targets_a)[0])
    a = _images(run(targets_a, key0))
    assert a.dtype == np.float32, a.dtype
    assert a.shape[0] == n, (a.shape, n)
    assert np.all(np.isfinite(a)), "non-finite images"
    assert a.min() >= 0.0 and a.max() <= 1.0, (a.min(), a.max())

    # New target values, same shapes: nothing compiles (inputs are built before counting).
    targets_b = jax.tree.map(jnp.asarray, targets_b)
    jax.block_until_ready(targets_b)
    with count_compiles() as compiles:
        b = _images(run(targets_b, key0))
    assert compiles.n == 0, f"a new target recompiled ({compiles.n} compilations)"
    assert not np.array_equal(a, b), "the targets do not change the result"

    again = _images(run(targets_a, key0))
    np.testing.assert_array_equal(a, again, err_msg="same key, different images")

    if random:
        other = _images(run(targets_a, key1))
        assert not np.array_equal(a, other), "the key does not change the result"

    if independent and n > 1:
        mixed = jax.tree.map(lambda x, y: jnp.asarray(x).at[0].set(jnp.asarray(y)[0]), targets_a, targets_b)
        m = _images(run(mixed, key0))
        np.testing.assert_allclose(m[1:], a[1:], atol=atol, err_msg="targets are coupled")
    return a


# write_broden's concepts: (name, category) by id; id 0 is "-", no concept.
_BRODEN_CONCEPTS = (
    ("-", ""),
    ("red", "color"),
    ("green", "color"),
    ("blue", "color"),
    ("square", "object"),
    ("disc", "object"),
    ("stripes", "texture"),
    ("dots", "texture"),
    ("indoor", "scene"),
    ("outdoor", "scene"),
)
_BRODEN_COLORS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.9, 0.1), 3: (0.1, 0.1, 0.9)}
_BRODEN_CATEGORIES = ("color", "object", "scene", "texture")


def write_broden(root: str | os.PathLike[str], n: int = 24, size: int = 32, *, seed: int = 0) -> Path:
    """Write a small synthetic concept data set in the Broden layout (see
    :func:`cnnjax.data.load_broden`), whose ground truth is known exactly.

    Each ``size x size`` RGB PNG image ``images/synthetic/NNNN.png`` has a background that is
    either horizontal black and white stripes (2 rows each: period 4 px) or grey noise with
    black dots (texture ``stripes`` / ``dots``, image-level, exactly half the images each), and
    one or two shapes (``square`` or ``disc``, of side or diameter ``size / 4`` to ``size / 2``)
    filled with a pure ``red`` (0.9, 0.1, 0.1), ``green`` or ``blue``, each channel within
    0.03 of it; a later shape covers an earlier one. The scene is ``indoor`` for even image
    numbers and ``outdoor`` for odd ones (image-level and arbitrary). Each image has a
    ``color`` and an ``object`` mask of ``size // 2 x size // 2`` pixels: the label maps of
    the image's visible shapes, downsampled by nearest neighbour (mask pixel ``i`` is image
    pixel ``floor((i + 0.5) * size / (size // 2))``, i.e. ``1::2`` for an even ``size``).
    Every third image (number ``i % 3 == 2``) is in split ``"val"``, the others in
    ``"train"``.

    Concept ids (label.csv): 0 ``-``; 1-3 ``red``, ``green``, ``blue`` (color); 4-5
    ``square``, ``disc`` (object); 6-7 ``stripes``, ``dots`` (texture); 8-9 ``indoor``,
    ``outdoor`` (scene). index.csv has the columns ``image,split,ih,iw,sh,sw,color,object,
    scene,texture``; ``c_color.csv``, ``c_object.csv``, ``c_scene.csv`` and
    ``c_texture.csv`` list each category's concepts. Files already in ``root`` with the same
    names are replaced.

    Args:
      root: the folder to write (created if needed).
      n: the number of images.
      size: the images' side, at least 8; the masks' side is ``size // 2``.
      seed: the seed of everything drawn (NumPy); the same arguments write the same files.

    Returns:
      ``root`` as a ``Path``.

    Example:
      >>> import tempfile
      >>> root = write_broden(tempfile.mkdtemp(), n=4, size=16)
      >>> sorted(p.name for p in root.iterdir())
      ['c_color.csv', 'c_object.csv', 'c_scene.csv', 'c_texture.csv', 'images', 'index.csv', 'label.csv']
      >>> (root / "index.csv").read_text().splitlines()[1]
      'synthetic/0000.png,train,16,16,8,8,synthetic/0000_color.png,synthetic/0000_object.png,8,6'
    """
    from PIL import Image

    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(size, int) and size >= 8):
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    root = Path(root)
    (root / "images" / "synthetic").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mask_side = size // 2
    # Mask pixel i is image pixel floor((i + 0.5) * size / mask_side): nearest-neighbour sampling.
    sample = np.floor((np.arange(mask_side) + 0.5) * size / mask_side).astype(int)
    y, x = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    stripes = set(rng.permutation(n)[: n // 2].tolist())
    frequency = np.zeros(len(_BRODEN_CONCEPTS), np.int64)
    coverage = np.zeros(len(_BRODEN_CONCEPTS))
    rows = []
    for i in range(n):
        if i in stripes:
            texture = 6
            phase = int(rng.integers(4))
            level = np.where((np.arange(size) + phase) % 4 < 2, 0.05, 0.95)[:, None, None]
            image = level + rng.uniform(-0.03, 0.03, (size, size, 3))
        else:
            texture = 7
            image = 0.5 + rng.uniform(-0.08, 0.08, (size, size, 3))
            oy, ox = rng.uniform(0, 6, 2)
            # Dots of radius 1.5 on a 6-pixel lattice, shifted by (oy, ox).
            dy, dx = (y - oy + 3) % 6 - 3, (x - ox + 3) % 6 - 3
            image[dy**2 + dx**2 <= 1.5**2] = 0.05
        color_map = np.zeros((size, size), np.int32)
        object_map = np.zeros((size, size), np.int32)
        for _ in range(1 + int(rng.random() < 0.5)):
            color, shape = int(rng.integers(1, 4)), int(rng.integers(4, 6))
            r = rng.uniform(size / 8, size / 4)
            cy, cx = rng.uniform(r, size - r, 2)
            if shape == 4:
                inside = (np.abs(y - cy) <= r) & (np.abs(x - cx) <= r)
            else:
                inside = (y - cy) ** 2 + (x - cx) ** 2 <= r**2
            image[inside] = np.asarray(_BRODEN_COLORS[color]) + rng.uniform(
                -0.03, 0.03, (int(inside.sum()), 3)
            )
            color_map[inside], object_map[inside] = color, shape
        scene = 8 + i % 2
        name = f"synthetic/{i:04d}"
        pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{name}.png")
        for suffix, label_map in (("color", color_map), ("object", object_map)):
            mask = label_map[sample][:, sample]
            rgb = np.stack([mask % 256, mask // 256, np.zeros_like(mask)], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / "images" / f"{name}_{suffix}.png")
            ids, counts = np.unique(mask[mask > 0], return_counts=True)
            frequency[ids] += 1
            coverage[ids] += counts / mask.size
        frequency[[scene, texture]] += 1
        coverage[[scene, texture]] += 1.0
        split = "val" if i % 3 == 2 else "train"
        rows.append(
            [f"{name}.png", split, size, size, mask_side, mask_side]
            + [f"{name}_color.png", f"{name}_object.png", scene, texture]
        )

    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "split", "ih", "iw", "sh", "sw", *_BRODEN_CATEGORIES])
        writer.writerows(rows)
    with open(root / "label.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for number, (name, category) in enumerate(_BRODEN_CONCEPTS):
            in_category = f"{category}({frequency[number]})" if category else ""
            writer.writerow([number, name, in_category, frequency[number], f"{coverage[number]:.4f}", ""])
    for category in _BRODEN_CATEGORIES:
        with open(root / f"c_{category}.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["code", "number", "name", "frequency", "coverage"])
            numbers = [k for k, (_, c) in enumerate(_BRODEN_CONCEPTS) if c == category]
            for code, number in enumerate(numbers, 1):
                name = _BRODEN_CONCEPTS[number][0]
                writer.writerow([code, number, name, frequency[number], f"{coverage[number]:.4f}"])
    return root
