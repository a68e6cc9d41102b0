"""Instruments in the training step: per-layer gradient norms, update ratios, dead units.

Each is checked against an independent computation outside the step (``jax.grad`` of the same
loss, norms in NumPy, dead channels from ``model.apply``'s activations); switching them on
changes neither the loss nor the parameters; ``fit`` logs them per epoch, the same whatever
the chunking and across a resume.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import cnnjax
from cnnjax.testing import tiny_cnn
from cnnjax.training import TrainState, fit, make_train_step

LR = 0.1
OPTIMIZER = optax.sgd(LR)


def _batch(n=4, size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.random((n, size, size, channels), dtype=np.float32))
    return images, jnp.asarray(rng.integers(0, 3, n).astype(np.int32))


@functools.cache  # one compiled step of tiny_cnn per setting, shared by the tests
def _step(instruments):
    return jax.jit(make_train_step(tiny_cnn(), OPTIMIZER, instruments=instruments))


def _run(params, instruments):
    """One step of tiny_cnn from ``params`` on the test batch: ``(state, metrics)``."""
    state = TrainState(params, OPTIMIZER.init(params))
    images, labels = _batch()
    return _step(instruments)(state, images, labels, jax.random.key(0))


def _norms(tree):
    """Top-level key -> the L2 norm of everything under it, in float64 NumPy."""
    return {k: np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in jax.tree.leaves(sub)))
            for k, sub in tree.items()}  # fmt: skip


def _dead(acts):
    """Spatial layer -> fraction of channels zero at every position of every example, in NumPy."""
    return {k: float(np.mean(np.all(np.asarray(a) == 0, axis=(0, 1, 2))))
            for k, a in acts.items() if k != "input" and np.ndim(a) == 4}  # fmt: skip


def test_grad_norms_and_update_ratios_equal_an_independent_computation():
    model = tiny_cnn()
    _, metrics = _run(model.params, True)
    images, labels = _batch()

    def loss(params):  # the step's loss (no L2), written out
        logits = model.apply(params, images)["logits"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.jit(jax.grad(loss))(model.params)
    g, p = _norms(grads), _norms(model.params)
    assert (
        sorted(metrics["grad_norm"])
        == sorted(metrics["update_ratio"])
        == ["conv1", "conv2", "conv3", "dense"]
    )
    for layer in g:
        np.testing.assert_allclose(float(metrics["grad_norm"][layer]), g[layer], rtol=1e-5)
        # Plain SGD steps -lr g: the ratio is lr ||g|| / ||p||.
        np.testing.assert_allclose(float(metrics["update_ratio"][layer]), LR * g[layer] / p[layer], rtol=1e-5)


def test_instruments_change_neither_the_loss_nor_the_parameters():
    model = tiny_cnn()
    state_on, on = _run(model.params, True)
    state_off, off = _run(model.params, False)
    assert set(off) == {"loss", "correct"}  # the default step adds nothing
    assert float(on["loss"]) == float(off["loss"]) and int(on["correct"]) == int(off["correct"])
    for a, b in zip(jax.tree.leaves(state_on), jax.tree.leaves(state_off), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dead_fraction_is_one_for_a_killed_layer_and_below_one_when_healthy():
    model = tiny_cnn()
    images, _ = _batch()
    # conv2 sees ReLU outputs (>= 0): all-negative weights and biases make it negative everywhere.
    killed = dict(model.params, conv2={k: -jnp.abs(v) - 0.01 for k, v in model.params["conv2"].items()})
    _, healthy = _run(model.params, True)
    _, dead = _run(killed, True)
    assert float(dead["dead_fraction"]["conv2"]) == 1.0
    assert all(float(v) < 1.0 for v in healthy["dead_fraction"].values()), healthy["dead_fraction"]
    for params, metrics in ((model.params, healthy), (killed, dead)):
        expected = _dead(jax.jit(model.apply)(params, images))
        assert sorted(metrics["dead_fraction"]) == sorted(expected) == ["conv1", "conv2", "conv3"]
        for layer, v in expected.items():
            assert float(metrics["dead_fraction"][layer]) == pytest.approx(v, abs=1e-7)


class _DropoutNet(nnx.Module):
    """A model with a training forward (``dropout_key``) that returns only logits."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x, tap, dropout_key=None):
        h = tap("conv", jax.nn.relu(self.conv(x)))
        h = tap("pooled", h.mean(axis=(1, 2)))
        if dropout_key is not None:
            h = jnp.where(jax.random.bernoulli(dropout_key, 0.5, h.shape), 2.0 * h, 0.0)
        return self.dense(h)


def test_dead_fraction_of_a_model_with_train_apply_comes_from_its_activations():
    net = _DropoutNet(nnx.Rngs(0))
    net.conv.bias[...] = net.conv.bias[...].at[:2].set(-100.0)  # two channels can never fire
    model = cnnjax.from_nnx(net, name="dropout_net", input_size=8, channels=1)
    assert model.train_apply is not None
    images, labels = _batch(size=8, channels=1)
    state = TrainState(model.params, OPTIMIZER.init(model.params))
    _, metrics = jax.jit(make_train_step(model, OPTIMIZER, instruments=True))(
        state, images, labels, jax.random.key(0)
    )
    assert sorted(metrics["grad_norm"]) == ["conv", "dense"]  # ['conv']['kernel'].value is "conv"
    expected = _dead(jax.jit(model.apply)(model.params, images))
    assert expected["conv"] >= 0.5
    assert {k: float(v) for k, v in metrics["dead_fraction"].items()} == pytest.approx(expected, abs=1e-7)


def _data(n=16):
    images, labels = _batch(n=n, seed=1)
    return (np.asarray(images), np.asarray(labels)), (np.asarray(images[:8]), np.asarray(labels[:8]))


def _fit(**kw):
    train, val = _data()
    return fit(
        tiny_cnn(), train, val, optimizer=OPTIMIZER, epochs=1, batch_size=8, key=3, progress=False, **kw
    )


def test_fit_logs_instruments_per_epoch_and_trains_the_same(tmp_path):
    on = _fit(instruments=True, steps_per_checkpoint=1, checkpoint_dir=tmp_path)
    off = _fit(steps_per_checkpoint=1)
    assert "instruments" not in off.history[0]
    assert on.history[0]["train_loss"] == off.history[0]["train_loss"]
    for a, b in zip(jax.tree.leaves(on.last_params), jax.tree.leaves(off.last_params), strict=True):
        np.testing.assert_array_equal(a, b)
    inst = on.history[0]["instruments"]
    assert set(inst) == {"grad_norm", "update_ratio", "dead_fraction", "steps"} and inst["steps"] == 2
    assert sorted(inst["grad_norm"]) == sorted(inst["update_ratio"]) == ["conv1", "conv2", "conv3", "dense"]
    assert sorted(inst["dead_fraction"]) == ["conv1", "conv2", "conv3"]
    assert all(
        v > 0 and np.isfinite(v) for v in [*inst["grad_norm"].values(), *inst["update_ratio"].values()]
    )
    assert all(0.0 <= v <= 1.0 for v in inst["dead_fraction"].values())
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["instruments"] == inst
    # Two chunks of one step, summed on the host, give the means of one chunk of two steps.
    whole = _fit(instruments=True, steps_per_checkpoint=2)
    for kind in ("grad_norm", "update_ratio", "dead_fraction"):
        assert whole.history[0]["instruments"][kind] == pytest.approx(inst[kind], rel=1e-6)


def test_a_resumed_run_logs_the_instruments_of_an_uninterrupted_one(tmp_path, monkeypatch):
    from cnnjax.training import _loop

    real, calls = _loop._run_chunk, []

    def killed_after_one_chunk(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_loop, "_run_chunk", killed_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        _fit(instruments=True, steps_per_checkpoint=1, checkpoint_dir=tmp_path)
    monkeypatch.setattr(_loop, "_run_chunk", real)
    resumed = _fit(instruments=True, steps_per_checkpoint=1, checkpoint_dir=tmp_path)
    uninterrupted = _fit(instruments=True, steps_per_checkpoint=1)
    assert resumed.history[0]["instruments"] == uninterrupted.history[0]["instruments"]
