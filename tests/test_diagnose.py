"""Ng's bias/variance verdicts, the curve verdicts on curves built to show each problem, and the
evaluation-mode training error that fit now records."""

import math

import numpy as np
import pytest

from cnnjax.diagnose import bias_variance, curve_verdicts, fit_errors
from cnnjax.testing import tiny_cnn
from cnnjax.training import evaluate, fit


@pytest.mark.parametrize(
    "rates, verdict",
    [
        (dict(human=0.01, train=0.10, test=0.104), "bias"),  # Ng's example, exactly
        (dict(human=0.01, train=0.02, test=0.10), "variance"),  # its mirror
        (dict(human=0.01, train=0.15, validation=0.30), "both"),
        (dict(human=0.01, train=0.02, validation=0.025, test=0.10), "mismatch"),
        (dict(human=0.01, train=0.012, validation=0.015, test=0.016), "fine"),
    ],
)
def test_ngs_verdicts(rates, verdict):
    result = bias_variance(**rates)
    assert result.verdict == verdict, result.explanation
    assert result.next_steps and verdict in result.explanation


def test_the_gaps_and_the_explanation_carry_the_numbers():
    result = bias_variance(human=0.01, train=0.10, test=0.104)
    assert result.avoidable_bias == pytest.approx(0.09) and result.variance == pytest.approx(0.004)
    assert result.explanation == (
        "avoidable bias 9.0% (training 10.0% vs human 1.0%), variance 0.4% (test 10.4%): the problem is bias"
    )
    assert "a bigger model (more layers or units)" in result.next_steps


@pytest.mark.parametrize(
    "rates, message",
    [
        (
            dict(human=0.01, train=10, test=10.4),
            r"train must be an error rate in \[0, 1\], got 10 \(a percentage",
        ),
        (dict(human=0.01, train=-0.1, test=0.1), "train must be"),
        (dict(human=0.01, train=0.1, test=math.nan), "test must be"),
        (dict(human=0.01, train=0.1), "give the validation error"),
        (dict(human=0.10, train=0.01, test=0.2), "swapped"),
    ],
)
def test_bad_rates_are_refused_with_their_names(rates, message):
    with pytest.raises(ValueError, match=message):
        bias_variance(**rates)


def history(train, val):
    return [{"epoch": e + 1, "train_loss": t, "val_loss": v, "val_accuracy": 0.5}
            for e, (t, v) in enumerate(zip(train, val))]  # fmt: skip


@pytest.mark.parametrize(
    "train, val, expected",
    [
        ([1.0, 0.6, 0.4, 0.3, 0.25], [1.0, 0.7, 0.55, 0.5, 0.48], [("still improving", 5)]),
        ([1.0, 0.6, 0.4, 0.3, 0.2], [1.0, 0.7, 0.6, 0.65, 0.7], [("overfitting", 3)]),
        ([2.302, 2.301, 2.302, 2.301], [2.30, 2.30, 2.30, 2.30], [("stuck", None)]),
        ([1.0, 0.5, math.nan], [1.0, 0.6, math.nan], [("diverging", 3)]),
        ([1.0, 0.4, 0.9], [1.0, 0.5, 0.45], [("diverging", 3), ("still improving", 3)]),
        ([1.0, 0.8, 0.7, 0.65, 0.6], [1.0, 0.7, 1.0, 0.65, 0.95], [("too noisy", None)]),
        ([1.0, 0.6, 0.45, 0.4, 0.39], [1.0, 0.7, 0.6, 0.58, 0.58], []),  # healthy, converged
    ],
)
def test_each_curve_verdict_fires_on_its_case_and_not_on_a_healthy_run(train, val, expected):
    assert [(v.kind, v.epoch) for v in curve_verdicts(history(train, val))] == expected


def test_bad_histories_are_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        curve_verdicts([])
    with pytest.raises(ValueError, match="lacks val_loss"):
        curve_verdicts([{"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.5}])
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": 1}\n{not json\n')
    with pytest.raises(ValueError, match="line 2, is not JSON"):
        curve_verdicts(log)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        curve_verdicts(tmp_path / "none.jsonl")


def test_fit_records_the_training_error_in_evaluation_mode(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 32, 32, 3), np.float32), rng.integers(0, 10, 48)
    model = tiny_cnn()
    result = fit(model, (x, y), (x[:16], y[:16]), learning_rate=0.05, epochs=2, batch_size=8, patience=None,
                 progress=False, checkpoint_dir=tmp_path)  # fmt: skip
    last = result.history[-1]
    loss, acc = evaluate(model, result.last_params, x[:16], y[:16])  # the first len(val) training images
    assert last["train_eval_loss"] == pytest.approx(loss, rel=1e-5) and last["train_eval_accuracy"] == acc
    errors = fit_errors(tmp_path / "metrics.jsonl")  # the log gives the same as the history
    assert errors == fit_errors(result)
    best = min(result.history, key=lambda h: h["val_loss"])
    assert errors["validation"] == pytest.approx(1 - best["val_accuracy"])
    assert bias_variance(human=0.0, **errors).verdict in ("bias", "variance", "both", "fine")
