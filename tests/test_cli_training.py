"""``cnnjax train`` and ``cnnjax evaluate`` on a tiny Fashion-MNIST-shaped data set."""

import json
from pathlib import Path

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
                 "--learning-rate", "0.05", "--out", str(out), "--quiet", "--instruments"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    manifest = json.loads((out / "fashionnet.json").read_text())
    instruments = manifest["training"]["history"][-1]["instruments"]
    assert set(instruments["grad_norm"]) == {"convs/0", "convs/1", "convs/2", "convs/3", "convs/4", "dense"}
    assert 0 <= instruments["dead_fraction"]["conv5"] <= 1 and instruments["steps"] == 540 // 32
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


def train(data, out, *extra):
    return main(["train", "--data-dir", str(data), "--epochs", "1", "--batch-size", "32", "--out", str(out),
                 "--quiet", *extra])  # fmt: skip


def test_a_diverging_run_writes_nothing_over_earlier_weights(tiny_fashion, tmp_path, capsys):
    out, ckpt = tmp_path / "weights", tmp_path / "ckpt"
    assert train(tiny_fashion, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    code = train(tiny_fashion, out, "--learning-rate", "1e6", "--overwrite", "--checkpoints", str(ckpt))
    printed = capsys.readouterr()
    assert code == 1 and "diverged" in printed.err and "wrote" not in printed.out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the good weights, untouched
    # It claims a checkpoint only if it wrote one.
    claimed = [w for w in printed.err.split() if "last.ckpt" in w]
    assert all(Path(w.strip("().,")).exists() for w in claimed), printed.err


def test_resuming_with_other_settings_is_refused_unless_restarted(tiny_fashion, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert train(tiny_fashion, tmp_path / "a", "--checkpoints", str(ckpt)) == 0
    capsys.readouterr()
    code = train(
        tiny_fashion, tmp_path / "b", "--checkpoints", str(ckpt), "--learning-rate", "0.01", "--key", "3"
    )
    err = capsys.readouterr().err
    assert code == 1 and "learning_rate" in err and "seed" in err and "--restart" in err, err
    assert not (tmp_path / "b" / "fashionnet.json").exists()
    # Asked to, it starts afresh: a new run, its own settings in the manifest.
    code = train(
        tiny_fashion, tmp_path / "b", "--checkpoints", str(ckpt), "--learning-rate", "0.01", "--restart"
    )
    assert code == 0
    manifest = json.loads((tmp_path / "b" / "fashionnet.json").read_text())
    assert manifest["training"]["config"]["learning_rate"] == 0.01
