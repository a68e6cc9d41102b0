"""``fit``: it learns, it stops early, it refuses bad input, it survives SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from PIL import Image

import cnnjax
from cnnjax._src.checkpoint import load_checkpoint, save_checkpoint
from cnnjax._src.safetensors import read_safetensors
from cnnjax.report import training_curves
from cnnjax.training import fit, momentum_sgd

sys.path.insert(0, str(Path(__file__).parent))
from _training_task import splits, tiny_cnn  # noqa: E402

TASK = Path(__file__).parent / "_training_task.py"


def test_end_to_end_training_reaches_accuracy(tmp_path):
    """The tiny CNN learns the four-quadrant task: at least 95% on held-out examples."""
    train, val, test = splits()
    model = tiny_cnn()
    result = fit(model, train, val, optimizer=momentum_sgd, learning_rate=0.05, epochs=6, batch_size=16,
                 key=0, checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    from cnnjax.training import evaluate

    _, test_acc = evaluate(result.model, result.params, *test)
    assert test_acc >= 0.95, result.history
    assert result.history[-1]["val_accuracy"] >= 0.95
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, len(result.history) + 1))
    assert (tmp_path / "best.ckpt").is_file() and (tmp_path / "last.ckpt").is_file()
    curves = np.asarray(
        Image.fromarray(np.uint8(255 * training_curves(result.history)))
    )  # the report draws it
    assert curves.shape == (300, 960, 3)
    blue = np.all(np.abs(curves.astype(int) - [74, 123, 208]) <= 2, axis=-1).sum()
    assert blue > 200  # the training curves are drawn


def test_early_stopping_keeps_the_best_epoch():
    train, (val_x, val_y), _ = splits()
    # Validation labels that are pure noise: the more confidently the network learns the
    # training task, the worse its validation loss, so it must stop early.
    noise = np.random.default_rng(1).permutation(val_y)
    result = fit(tiny_cnn(), train, (val_x, noise), optimizer=momentum_sgd, learning_rate=0.05, epochs=30,
                 batch_size=16, patience=2, progress=False)  # fmt: skip
    assert result.stopped == "early_stopping", result.message
    best = min(range(len(result.history)), key=lambda i: result.history[i]["val_loss"])
    assert result.best_epoch == best
    assert len(result.history) == best + 3  # two epochs of patience after the best
    np.testing.assert_array_equal(jax.tree.leaves(result.model.params)[0], jax.tree.leaves(result.params)[0])


def test_divergence_is_reported_and_the_last_good_state_kept(tmp_path):
    train, val, _ = splits()
    # With the L2 term, each step multiplies the weights by about (1 - 2 * 10 * 1) = -19.
    with pytest.raises(cnnjax.DivergedError, match="not finite") as error:
        fit(tiny_cnn(), train, val, optimizer=optax.sgd(10.0), l2=1.0, epochs=3, batch_size=16,
            checkpoint_dir=tmp_path, steps_per_checkpoint=5, progress=False)  # fmt: skip
    result = error.value.result
    assert result.stopped == "diverged" and "not finite" in result.message
    for leaf in jax.tree.leaves(result.last_params):
        assert np.all(np.isfinite(leaf))
    (state, _), _ = load_checkpoint(tmp_path / "last.ckpt", (result_state_like(), tiny_cnn().params))
    for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(leaf))


def result_state_like():
    from cnnjax.training import TrainState

    params = tiny_cnn().params
    return TrainState(params, optax.sgd(10.0).init(params))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: (t[0], t[1] + 4), r"labels must be in 0\.\.3"),
        (lambda t: (t[0][:, :10], t[1]), "must be 12x12"),
        (lambda t: (t[0], t[1][:-1]), "labels must be"),
        (lambda t: (t[0] * 255, t[1]), r"values in \[0, 1\]"),
        (lambda t: (t[0], t[1].astype(np.float32)), "must be integers"),
    ],
)
def test_bad_data_is_refused(change, message):
    train, val, _ = splits()
    with pytest.raises(ValueError, match=message):
        fit(tiny_cnn(), change(train), val, epochs=1, progress=False)


def test_batch_larger_than_data_is_refused():
    train, val, _ = splits()
    with pytest.raises(ValueError, match="larger than the training set"):
        fit(tiny_cnn(), train, val, batch_size=5000, progress=False)


def test_corrupted_checkpoint_is_refused_and_kept(tmp_path):
    train, val, _ = splits()
    fit(tiny_cnn(), train, val, epochs=1, batch_size=100, checkpoint_dir=tmp_path, progress=False)
    path = tmp_path / "last.ckpt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"checkpoint {path} is corrupted"):
        fit(tiny_cnn(), train, val, epochs=2, batch_size=100, checkpoint_dir=tmp_path, progress=False)
    assert path.read_bytes() == bytes(data), "the corrupted file is left for inspection, not overwritten"


def test_checkpoint_round_trip(tmp_path):
    tree = {"a": np.arange(6.0, dtype=np.float32).reshape(2, 3), "b": [np.int32(3), np.ones(2, np.float32)]}
    save_checkpoint(tmp_path / "c.ckpt", tree, {"epoch": 2})
    back, record = load_checkpoint(tmp_path / "c.ckpt", tree)
    assert record == {"epoch": 2}
    np.testing.assert_array_equal(back["a"], tree["a"])
    with pytest.raises(ValueError, match="different structure"):
        load_checkpoint(tmp_path / "c.ckpt", {"a": tree["a"]})


def _run_task(ckpt, out, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(TASK), str(ckpt), str(out)], env=env, **kw)


def _record(path):
    try:
        return json.loads(read_safetensors(path)[1]["record"])
    except (OSError, ValueError, KeyError):
        return None


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    # The uninterrupted run.
    ref = _run_task(tmp_path / "ref", tmp_path / "ref.npz")
    # The run that is killed mid-epoch with SIGKILL, then started again.
    victim = _run_task(tmp_path / "run", tmp_path / "run.npz")
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and victim.poll() is None:
        rec = _record(tmp_path / "run" / "last.ckpt") if (tmp_path / "run" / "last.ckpt").exists() else None
        if rec and rec["epoch"] >= 1 and rec["step"] >= 7:
            victim.send_signal(signal.SIGKILL)
            killed_at = rec
            break
        time.sleep(0.01)
    victim.wait()
    assert killed_at is not None and victim.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert not (tmp_path / "run.npz").exists()
    assert _run_task(tmp_path / "run", tmp_path / "run.npz").wait(timeout=300) == 0
    assert ref.wait(timeout=300) == 0
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "run.npz")
    assert a.files == b.files
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])
    history = _record(tmp_path / "run" / "last.ckpt")["history"]
    assert [h["epoch"] for h in history] == [1, 2]
