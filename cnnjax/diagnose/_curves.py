"""Verdicts on a training run's curves, from ``fit``'s history or its ``metrics.jsonl`` log."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["CurveVerdict", "curve_verdicts", "fit_errors", "read_history"]

_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy")


class CurveVerdict(NamedTuple):
    """One finding about a run: ``kind`` (``"diverging"``, ``"stuck"``, ``"still improving"``,
    ``"overfitting"``, ``"too noisy"``), the ``epoch`` it concerns (1-based; None for the
    whole run) and the ``evidence`` in numbers."""

    kind: str
    epoch: int | None
    evidence: str


def read_history(history: Any) -> list[dict]:
    """A ``fit`` history: a list of per-epoch dicts, a ``FitResult``, or the path of a
    ``metrics.jsonl`` log; checked to hold the keys every epoch has.

    Raises:
      FileNotFoundError: no such log.
      ValueError: a malformed log or history (naming the line or the missing key).
    """
    if hasattr(history, "history"):
        history = history.history
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if not path.is_file():
            raise FileNotFoundError(f"metrics log {path} does not exist")
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"metrics log {path}, line {n}, is not JSON ({e.msg})") from None
        history = rows
    if not isinstance(history, Sequence) or not history:
        raise ValueError("the history is empty: give fit's history (one dict per epoch) or its metrics.jsonl")
    for i, row in enumerate(history):
        missing = [k for k in _KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"epoch entry {i} of the history lacks {', '.join(missing)}")
    return list(history)


def fit_errors(history: Any) -> dict[str, float]:
    """The error rates of a finished ``fit`` run at its best epoch (lowest validation loss):
    ``{"train": ..., "validation": ...}``, the training error measured in evaluation mode
    (``train_eval_accuracy``), for :func:`bias_variance`.

    Example:
      >>> h = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.7},
      ...      {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.8}]
      >>> h[0]["train_eval_accuracy"], h[1]["train_eval_accuracy"] = 0.72, 0.9
      >>> {k: round(v, 2) for k, v in fit_errors(h).items()}
      {'train': 0.1, 'validation': 0.2}
    """
    rows = read_history(history)
    best = min(rows, key=lambda r: r["val_loss"] if math.isfinite(r["val_loss"]) else math.inf)
    if "train_eval_accuracy" not in best:
        raise ValueError("the history has no train_eval_accuracy (a run of an older cnnjax?); measure the "
                         "training error with cnnjax.training.evaluate")  # fmt: skip
    return {"train": 1.0 - best["train_eval_accuracy"], "validation": 1.0 - best["val_accuracy"]}


def curve_verdicts(history: Any, *, tolerance: float = 0.005) -> list[CurveVerdict]:
    """What a run's curves say, each finding with its evidence.

    * diverging: a loss is not finite, or the last training loss is above twice its minimum;
    * stuck: the training loss moved by less than 1% over the run (two epochs or more);
    * still improving: the last epoch has the lowest validation loss, lower than the epoch
      before by more than ``tolerance`` (relative): training stopped too early;
    * overfitting from epoch N: the validation loss is lowest at N and rose in the two or more
      epochs after it while the training loss kept falling;
    * too noisy: over four epochs or more, the validation loss's epoch-to-epoch changes are
      larger (standard deviation) than its net change.

    Args:
      history: as for :func:`read_history`.
      tolerance: the relative change that counts as an improvement.

    Returns:
      A list of :class:`CurveVerdict` (empty when nothing stands out).

    Example:
      >>> h = [{"epoch": e, "train_loss": 1 / e, "val_loss": v, "val_accuracy": 0.5}
      ...      for e, v in zip(range(1, 6), [1.0, 0.8, 0.7, 0.75, 0.8])]
      >>> [(v.kind, v.epoch) for v in curve_verdicts(h)]
      [('overfitting', 3)]
    """
    rows = read_history(history)
    train = [float(r["train_loss"]) for r in rows]
    val = [float(r["val_loss"]) for r in rows]
    out: list[CurveVerdict] = []
    bad = [r["epoch"] for r, t, v in zip(rows, train, val) if not (math.isfinite(t) and math.isfinite(v))]
    if bad:
        return [CurveVerdict("diverging", bad[0], f"the loss is not finite from epoch {bad[0]}")]
    if train[-1] > 2 * min(train):
        evidence = f"training loss {train[-1]:.4g}, over twice its minimum {min(train):.4g}"
        out.append(CurveVerdict("diverging", rows[-1]["epoch"], evidence))
    if len(rows) >= 2 and abs(train[-1] - train[0]) < 0.01 * abs(train[0]):
        out.append(CurveVerdict("stuck", None, f"training loss {train[0]:.4g} -> {train[-1]:.4g} over "
                                f"{len(rows)} epochs (under 1%)"))  # fmt: skip
    best = min(range(len(val)), key=val.__getitem__)
    if len(rows) >= 2 and best == len(val) - 1 and val[-1] < val[-2] * (1 - tolerance):
        out.append(CurveVerdict("still improving", rows[-1]["epoch"], f"validation loss {val[-2]:.4g} -> "
                                f"{val[-1]:.4g} in the last epoch: train longer"))  # fmt: skip
    after = range(best + 1, len(val))
    if len(after) >= 2 and val[-1] > val[best] * (1 + tolerance) and train[-1] < train[best]:
        out.append(CurveVerdict("overfitting", rows[best]["epoch"],
                                f"validation loss lowest at epoch {rows[best]['epoch']} ({val[best]:.4g}), "
                                f"{val[-1]:.4g} at the end while the training loss fell {train[best]:.4g} -> "
                                f"{train[-1]:.4g}"))  # fmt: skip
    if len(val) >= 4:
        diffs = [b - a for a, b in zip(val, val[1:])]
        mean = sum(diffs) / len(diffs)
        spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / len(diffs))
        if spread > abs(val[-1] - val[0]):
            evidence = (f"the validation loss moves {spread:.4g} per epoch (standard deviation) for a net "
                        f"change of {val[-1] - val[0]:+.4g}")  # fmt: skip
            out.append(CurveVerdict("too noisy", None, evidence))
    return out
