"""memory_budget: work beyond it runs in equal chunks through one compiled program, with the
result of a single call; bad budgets are refused before any work."""

import math

import jax
import numpy as np
import pytest

import cnnjax
from cnnjax import objectives
from cnnjax._src.chunks import (
    CPU_MEMORY_BUDGET,
    budget_chunk,
    check_memory_budget,
    default_memory_budget,
    forward_bytes,
    map_row_chunks,
)
from cnnjax.attacks import carlini_wagner, fgsm, lbfgs, pgd, robustness_curve
from cnnjax.synthesis import bytes_per_target
from cnnjax.testing import count_compiles, tiny_cnn

TINY = tiny_cnn()
HUGE = 1 << 40  # everything in one chunk
BAD = [0, -1, 2.5, 1e9, float("nan"), True, "1000000", np.float64(4e6)]


def _equal(a, b):
    """The same result, field by field: classes, flags and counts exactly, values to rounding."""
    for name, x, y in zip(a._fields, a, b):
        if x is None:
            assert y is None, name
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, (name, x.shape, y.shape)
        if x.dtype.kind == "f":  # XLA's kernels for another batch size may round differently
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3), np.float32)


# -- the budget and the chunk sizes ---------------------------------------------------------------


def test_default_budget_on_cpu_is_the_stated_figure():
    assert jax.devices()[0].platform == "cpu" and jax.devices()[0].memory_stats() is None
    assert default_memory_budget() == CPU_MEMORY_BUDGET == 2 * 1024**3
    assert check_memory_budget(None) == CPU_MEMORY_BUDGET
    assert check_memory_budget(np.int64(12345)) == 12345


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="memory_budget must be a positive integer"):
        check_memory_budget(bad)


def test_chunks_follow_the_budget():
    assert budget_chunk(10, 100, 1000) == 10  # fits: one call
    assert budget_chunk(10, 100, 999) == 5  # 9 fit; two calls of 5 (not 9 + 1)
    assert budget_chunk(10, 100, 300) == 3  # four calls of 3, the last padded by 2
    assert budget_chunk(10, 100, 50) == 1  # never less than one
    assert budget_chunk(10, 100, 999, multiple=4) == 8  # a mesh of 4: 8 fit (two calls of 8)
    assert budget_chunk(10, 100, 50, multiple=4) == 4
    for count, each, budget in [(1280, 7, 1000), (10_000, 333, 123_456), (7, 5, 11)]:
        chunk = budget_chunk(count, each, budget)
        calls = math.ceil(count / chunk)
        assert chunk * each <= budget or chunk == 1
        assert calls == math.ceil(count / max(1, budget // each))  # no more calls than needed
        assert chunk * calls - count < calls  # the padding is less than one row per call


def test_map_row_chunks_joins_what_one_call_returns():
    rows = (np.arange(10), np.arange(20).reshape(10, 2))
    calls = []

    def run(start, r):  # three entries per row along axis 1, one NumPy leaf, one device leaf, a None
        calls.append((start, len(r[0])))
        a, b = r
        return np.repeat(a[None], 3, axis=1) * 10, jax.device_put(b.sum(axis=1)[None]), None

    whole = run(0, rows)
    chunked = map_row_chunks(run, rows, 4, axis=1)
    assert calls[1:] == [(0, 4), (4, 4), (8, 4)]  # the last chunk padded to 4 rows
    assert isinstance(chunked[0], np.ndarray) and isinstance(chunked[1], jax.Array) and chunked[2] is None
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    assert map_row_chunks(run, rows, 10)[0].shape == (1, 30)  # one chunk: run itself


def test_forward_bytes_counts_the_materialised_outputs():
    # tiny_cnn at 32 px: three 3x3 convolutions (8, 16 and 16 channels; the second of stride 2),
    # each with a ReLU (a custom derivative: its output counted again), and the 10 logits' matrix
    # product (the global average pooling is a sum, fused: not counted).
    convs = 32 * 32 * 8 + 16 * 16 * 16 + 16 * 16 * 16
    assert forward_bytes(TINY.apply, TINY.params, (32, 32, 3)) == 4 * (2 * convs + 10)


# -- visualize -------------------------------------------------------------------------------------


def test_visualize_in_chunks_equals_one_call_and_compiles_one_chunk_program():
    kw = dict(preset="plain", size=32, steps=6, key=3, restarts=2, learning_rate=[0.1, 0.2, 0.3, 0.4, 0.5])
    objs = [objectives.channel("conv3", c) for c in range(5)]
    each = bytes_per_target(TINY, preset="plain", size=32, restarts=2)
    whole = cnnjax.visualize(TINY, objs, memory_budget=HUGE, **kw)
    # Two targets a chunk: the chunk program is the one of a two-target call, so after such a
    # call the five targets in three chunks (the last padded) compile nothing.
    cnnjax.visualize(TINY, objs[:2], memory_budget=HUGE, **{**kw, "learning_rate": [0.1, 0.2]})
    with count_compiles() as c:
        chunked = cnnjax.visualize(TINY, objs, memory_budget=2 * each + 1, **kw)
    assert c.n == 0, c.names
    _equal(whole, chunked)
    assert chunked.images.shape == (5, 32, 32, 3) and chunked.history.shape == (5, 6)
    assert len(set(np.round(np.asarray(chunked.scores[:, 0]), 4))) == 5  # five different targets


def test_visualize_refuses_a_bad_budget_before_any_work():
    with count_compiles() as c:
        for bad in (0, -5, 1.5, float("nan")):
            with pytest.raises(ValueError, match="memory_budget"):
                # an unknown layer too: the budget is checked first
                cnnjax.visualize(TINY, objectives.channel("nope", 0), preset="plain", memory_budget=bad)
    assert c.n == 0, c.names


# -- attacks ---------------------------------------------------------------------------------------


def test_pgd_in_chunks_equals_one_call():
    # Random starts, restarts and an epsilon sweep: image i draws from fold_in(key, i) in any chunk.
    images = _images(7)
    kw = dict(eps=[2 / 255, 8 / 255], steps=3, restarts=2, key=5)
    whole = pgd(TINY, images, memory_budget=HUGE, **kw)
    per_image = 2 * 2 * (3 * forward_bytes(TINY.apply, TINY.params, (32, 32, 3)) + 8 * 4 * 32 * 32 * 3)
    pgd(TINY, images[:3], memory_budget=HUGE, **kw)  # the chunk's program
    with count_compiles() as c:
        chunked = pgd(TINY, images, memory_budget=3 * per_image, **kw)  # three chunks of 3
    assert c.n == 0, c.names
    _equal(whole, chunked)
    assert chunked.images.shape == (2, 7, 32, 32, 3)
    # fgsm over the same budget: its own program, the same equality (labels given by name too)
    _equal(fgsm(TINY, images, labels=[1] * 7, eps=4 / 255, memory_budget=HUGE),
           fgsm(TINY, images, labels=[1] * 7, eps=4 / 255, memory_budget=3 * per_image))  # fmt: skip


def test_lbfgs_in_chunks_equals_one_call():
    # With its default labels, each chunk's from its own forward pass; two images a chunk (an image
    # counts 3 forward passes and its L-BFGS memory: 2 x 10 copies, plus 12). carlini_wagner runs
    # its chunks through the same code with the same rows.
    images = _images(5, seed=1)
    kw = dict(steps=3, search_steps=2)
    per_image = 3 * forward_bytes(TINY.apply, TINY.params, (32, 32, 3)) + (2 * 10 + 12) * 4 * 32 * 32 * 3
    _equal(
        lbfgs(TINY, images, memory_budget=HUGE, **kw), lbfgs(TINY, images, memory_budget=2 * per_image, **kw)
    )


def test_robustness_curve_passes_the_budget_on():
    images = _images(6, seed=2)
    labels = np.asarray(cnnjax.classify(TINY, images).classes[:, 0])
    whole = robustness_curve(TINY, images, labels, [0, 8 / 255], steps=2, memory_budget=HUGE)
    chunked = robustness_curve(TINY, images, labels, [0, 8 / 255], steps=2, memory_budget=150_000)
    np.testing.assert_array_equal(whole.accuracy, chunked.accuracy)
    assert whole.clean_accuracy == chunked.clean_accuracy == 1.0
    _equal(whole.result, chunked.result)


@pytest.mark.parametrize("attack", [pgd, fgsm, lbfgs, carlini_wagner], ids=lambda f: f.__name__)
def test_attacks_refuse_a_bad_budget_before_any_work(attack):
    kw = {"eps": 2 / 255} if attack in (pgd, fgsm) else {}
    with count_compiles() as c:
        for bad in (0, -1, 3.0, float("nan"), True):
            with pytest.raises(ValueError, match="memory_budget"):
                attack(TINY, _images(2), memory_budget=bad, **kw)
    assert c.n == 0, c.names
