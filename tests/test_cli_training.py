"""``cnnjax train`` and ``cnnjax evaluate`` on a tiny Fashion-MNIST-shaped data set."""

import json

import numpy as np
import pytest

import cnnjax
from cnnjax.cli import main
from cnnjax.data import write_idx


@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory):
    """600 training and 100 test images: class c is a bright horizontal band at row 2c."""
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 600), ("t10k", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 3 : 2 * c + 6] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_train_then_evaluate(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "weights"
    code = main(["train", "--data-dir", str(tiny_fashion), "--epochs", "2", "--batch-size", "32",
                 "--learning-rate", "0.05", "--out", str(out), "--quiet"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    manifest = json.loads((out / "fashionnet.json").read_text())
    assert manifest["training"]["examples"] == {"train": 540, "validation": 60, "test": 100}
    assert manifest["training"]["config"]["epochs"] == 2 and len(manifest["training"]["history"]) == 2
    assert f"test accuracy {manifest['test_accuracy']:.4f}" in printed
    # The written weights load through the model zoo, checksum included, and evaluate the same.
    model = cnnjax.load_model("fashionnet", weights_dir=out)
    assert model.spec.input_size == (28, 28) and model.spec.channels == 1
    assert main(["evaluate", "--weights", str(out), "--data-dir", str(tiny_fashion)]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {manifest['test_accuracy']:.4f}" in printed
    assert "Ankle boot" in printed


def test_train_without_data_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CNNJAX_DATA", raising=False)
    code = main(["train", "--data-dir", str(tmp_path / "nowhere"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "nowhere" in err and "download" in err
