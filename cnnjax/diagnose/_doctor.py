"""``doctor``: automated checks for the usual reasons a network "isn't working" (D. Holden,
"My neural network isn't working! What should I do?", 2017; A. Karpathy, "A recipe for
training neural networks", 2019), each with pass, warn or fail, its evidence and a suggestion.

The short training runs the checks need (a learning-rate range test, Smith 2017; overfitting
one batch; an input-independent baseline) are full-batch SGD with momentum 0.9 on a fixed batch
in evaluation mode, one ``lax.scan`` each; the range test is one program vmapped over the
learning rates.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.checks import check_float, check_positive_int
from cnnjax._src.contract import Model
from cnnjax.training import cross_entropy

__all__ = ["DoctorResult", "Finding", "doctor"]

_RANGE = np.logspace(-4, 1, 11).astype(np.float32)  # the range test's learning rates


class Finding(NamedTuple):
    """One check's outcome: ``status`` is ``"pass"``, ``"warn"`` or ``"fail"``."""

    check: str
    status: str
    evidence: str
    suggestion: str


class DoctorResult(NamedTuple):
    """Result of :func:`doctor`.

    Attributes:
      findings: one :class:`Finding` per check, in order.
      confusion: int ``[classes, classes]``: the validation set's confusion matrix (rows: true).
      confident_wrong: int ``[k]``: indices of the validation images misclassified with the
        highest confidence.
      learning_rates: float32 ``[r]`` and ``range_losses`` ``[r]``: the range test's curve.
      range_losses: the loss after the range test's steps at each learning rate.
    """

    findings: list[Finding]
    confusion: np.ndarray
    confident_wrong: np.ndarray
    learning_rates: np.ndarray
    range_losses: np.ndarray

    def summary(self) -> str:
        """One line per check."""
        lines = []
        for f in self.findings:
            advice = f" -> {f.suggestion}" if f.suggestion and f.status != "pass" else ""
            lines.append(f"{f.status.upper():4} {f.check}: {f.evidence}{advice}")
        return "\n".join(lines)


def _loss(apply, params, x, y):
    return cross_entropy(apply(params, x)["logits"], y)


@functools.partial(jax.jit, static_argnames=("apply", "steps"))
def _sgd_run(apply, params, x, y, lr, *, steps):
    """Full-batch SGD with momentum 0.9 for ``steps`` steps; the loss before each step."""
    grad = jax.value_and_grad(functools.partial(_loss, apply))

    def step(carry, _):
        p, v = carry
        loss, g = grad(p, x, y)
        v = jax.tree.map(lambda v, g: 0.9 * v + g, v, g)
        p = jax.tree.map(lambda p, v: p - lr * v, p, v)
        return (p, v), loss

    (p, _), losses = jax.lax.scan(step, (params, jax.tree.map(jnp.zeros_like, params)), None, length=steps)
    return p, losses


@functools.partial(jax.jit, static_argnames=("apply", "steps"))
def _range_test(apply, params, x, y, lrs, *, steps):
    final = jax.vmap(lambda lr: _sgd_run(apply, params, x, y, lr, steps=steps)[1][-1])(lrs)
    return final, _loss(apply, params, x, y)


@functools.partial(jax.jit, static_argnames=("apply",))
def _gradients(apply, params, x, y):
    loss, g = jax.value_and_grad(functools.partial(_loss, apply))(params, x, y)
    leaves = jax.tree_util.tree_leaves_with_path(g)
    p_leaves = jax.tree.leaves(params)
    return loss, [(jnp.linalg.norm(gl.reshape(-1)), jnp.linalg.norm(pl.reshape(-1))) for (_, gl), pl in
                  zip(leaves, p_leaves)]  # fmt: skip


def doctor(
    model: Model,
    train: Any,
    val: Any = None,
    *,
    learning_rate: float = 0.05,
    batch_size: int = 64,
    steps: int = 50,
) -> DoctorResult:
    """Check a model and its data for the usual failures, before (or after) training.

    The checks: ``inputs`` (layout, channels, value range, per-channel statistics, label range
    against the model's spec); ``final layer`` (logits that are already probabilities, fed to a
    loss that applies its own softmax; a loss far above log(classes) at the given parameters);
    ``gradients`` (non-finite, or per-parameter norms spanning over 1e6 relative to the
    parameters'); ``initialisation`` (activation standard deviations per layer that grow or
    shrink over 100x from the first layer); ``learning rate`` (a range test over 1e-4 .. 10: the
    given rate diverges, or is 100x below the best); ``overfit one batch`` (full-batch training
    on ``batch_size`` examples for ``steps`` steps must fit them: at least 90% accuracy);
    ``input-independent baseline`` (training on the batch with the inputs zeroed must do worse
    on held-out examples than with the inputs); ``results`` (validation accuracy against chance,
    the confusion matrix, the most confidently wrong examples).

    Args:
      model: a :class:`~cnnjax.Model` (its parameters as given: fresh or trained).
      train: ``(images, labels)`` or a ``Dataset``.
      val: the same for validation (default: the last 20% of ``train``).
      learning_rate: the rate the user trains with (SGD with momentum 0.9).
      batch_size: examples of the fixed batch the short runs train on.
      steps: steps of each short run.

    Returns:
      A :class:`DoctorResult`; ``result.summary()`` is one line per check.

    Raises:
      ValueError: images or labels that do not fit the model (shape, channels, count), or bad
        numbers.
    """
    spec = model.spec
    images, labels = _pair(train)
    if val is None:
        cut = max(1, len(labels) // 5)
        images, labels, val_images, val_labels = images[:-cut], labels[:-cut], images[-cut:], labels[-cut:]
    else:
        val_images, val_labels = _pair(val)
    learning_rate = check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
    batch_size = min(check_positive_int(batch_size, "batch_size"), len(labels))
    steps = check_positive_int(steps, "steps")
    findings = [_inputs(spec, images, labels)]
    x = jnp.asarray(np.clip(images[:batch_size], -1e6, 1e6), jnp.float32)
    y = jnp.asarray(labels[:batch_size], jnp.int32)
    findings.append(_final_layer(model, x, y))
    findings.append(_gradient_check(model, x, y))
    findings.append(_initialisation(model, x))
    rate_finding, lrs, range_losses = _learning_rate(model, x, y, learning_rate, steps)
    findings.append(rate_finding)
    fitted, losses = _sgd_run(model.apply, model.params, x, y, jnp.float32(learning_rate), steps=steps)
    fit_acc = float(jnp.mean(jnp.argmax(model.apply(fitted, x)["logits"], -1) == y))
    findings.append(Finding(
        "overfit one batch", "pass" if fit_acc >= 0.9 else "fail",
        f"{fit_acc:.0%} of {batch_size} examples fitted after {steps} full-batch steps (loss "
        f"{float(losses[0]):.3g} -> {float(losses[-1]):.3g})",
        "the network cannot fit a small subset: too small, a bug in the model or the loss, or a bad "
        "learning rate",
    ))  # fmt: skip
    vx, vy = (
        jnp.asarray(val_images[:batch_size], jnp.float32),
        jnp.asarray(val_labels[:batch_size], jnp.int32),
    )
    blind, _ = _sgd_run(
        model.apply, model.params, jnp.zeros_like(x), y, jnp.float32(learning_rate), steps=steps
    )
    real_loss, blind_loss = (
        float(_loss(model.apply, fitted, vx, vy)),
        float(_loss(model.apply, blind, vx, vy)),
    )
    chance = math.log(spec.num_classes)
    findings.append(Finding(
        "input-independent baseline", "pass" if real_loss < blind_loss - 0.05 * chance else "warn",
        f"held-out loss {real_loss:.3g} trained on the inputs, {blind_loss:.3g} with the inputs zeroed",
        "the inputs do not help: labels shuffled or not matching the images, or inputs the network "
        "cannot use",
    ))  # fmt: skip
    result_finding, confusion, wrong = _results(model, val_images, val_labels)
    findings.append(result_finding)
    return DoctorResult(findings, confusion, wrong, lrs, range_losses)


def _pair(data) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        return np.asarray(data.images), np.asarray(data.labels)
    images, labels = data
    return np.asarray(images), np.asarray(labels)


def _inputs(spec, images: np.ndarray, labels: np.ndarray) -> Finding:
    h, w = spec.input_size
    if images.ndim != 4 or images.shape[-1] != spec.channels:
        raise ValueError(f"images shaped {images.shape}: the model takes NHWC images [n, {h}, {w}, "
                         f"{spec.channels}] (transpose NCHW to NHWC; match the channels)")  # fmt: skip
    if len(labels) != len(images) or labels.ndim != 1:
        raise ValueError(f"{len(labels)} labels for {len(images)} images: give one integer label per image")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        scale = " (0-255 pixel values?)" if hi > 1.5 else ""
        return Finding("inputs", "fail", f"values in [{lo:.3g}, {hi:.3g}], not [0, 1]{scale}",
                       "divide by 255: cnnjax models take images in [0, 1] and normalise them "
                       "themselves")  # fmt: skip
    bad = (
        labels[(labels < 0) | (labels >= spec.num_classes)]
        if np.issubdtype(labels.dtype, np.integer)
        else labels
    )
    if len(bad):
        return Finding("inputs", "fail", f"labels outside [0, {spec.num_classes}): e.g. {bad[:3].tolist()}",
                       "labels are class indices 0 .. classes-1")  # fmt: skip
    mean = images.reshape(-1, images.shape[-1]).mean(0)
    std = images.reshape(-1, images.shape[-1]).std(0)
    counts = np.bincount(labels, minlength=spec.num_classes)
    evidence = (f"values in [{lo:.3g}, {hi:.3g}]; per-channel mean {np.round(mean, 3).tolist()}, std "
                f"{np.round(std, 3).tolist()}; labels in [0, {spec.num_classes}), "
                f"{int((counts == 0).sum())} classes "
                "absent")  # fmt: skip
    if (std < 0.01).any():
        return Finding("inputs", "warn", evidence, "a channel is (nearly) constant: check the preprocessing")
    if (counts == 0).any() or counts.max() > 10 * max(1, counts[counts > 0].min()):
        return Finding("inputs", "warn", evidence, "classes missing or very unbalanced: stratify the split")
    return Finding("inputs", "pass", evidence, "")


def _final_layer(model, x, y) -> Finding:
    logits = np.asarray(model.apply(model.params, x)["logits"])
    chance = math.log(model.spec.num_classes)
    if logits.min() >= 0 and np.allclose(logits.sum(-1), 1.0, atol=1e-3):
        return Finding("final layer", "fail", "the logits are probabilities (non-negative, summing to 1)",
                       "remove the softmax from the model: the loss applies its own")  # fmt: skip
    loss = float(cross_entropy(jnp.asarray(logits), y))
    status = "warn" if loss > 3 * chance else "pass"
    return Finding("final layer", status, f"loss {loss:.3g} at these parameters; log(classes) = {chance:.3g}",
                   "a loss far above log(classes) before training means over-confident random outputs: "
                   "initialise the last layer smaller")  # fmt: skip


def _gradient_check(model, x, y) -> Finding:
    loss, norms = _gradients(model.apply, model.params, x, y)
    g = np.array([float(a) for a, _ in norms])
    p = np.array([float(b) for _, b in norms])
    if not np.isfinite(g).all() or not math.isfinite(float(loss)):
        bad = int((~np.isfinite(g)).sum())
        return Finding("gradients", "fail", f"{bad} parameter arrays have non-finite gradients",
                       "look for log(0), division by zero, or inputs far out of range")  # fmt: skip
    ratio = g / np.maximum(p, 1e-12)
    nz = ratio[ratio > 0]
    spread = float(nz.max() / nz.min()) if len(nz) else math.inf
    evidence = (
        f"gradient/parameter norm ratios from {nz.min():.2g} to {nz.max():.2g}" if len(nz) else "all zero"
    )
    if not len(nz) or spread > 1e6:
        return Finding("gradients", "warn", evidence, "vanishing or exploding gradients: check the "
                       "initialisation, add normalisation, or a shallower network")  # fmt: skip
    return Finding("gradients", "pass", evidence, "")


def _initialisation(model, x) -> Finding:
    acts = model.apply(model.params, x)
    spatial = [name for name in model.spec.layer_names[1:] if len(model.spec.layer(name).shape) == 3]
    stds = {name: float(jnp.std(acts[name])) for name in spatial}
    if not stds:
        return Finding("initialisation", "pass", "no spatial layers to compare", "")
    first = next(iter(stds.values()))
    ratios = {k: v / max(first, 1e-12) for k, v in stds.items()}
    evidence = "activation std per layer: " + ", ".join(f"{k} {v:.3g}" for k, v in stds.items())
    if max(ratios.values()) > 100 or min(ratios.values()) < 0.01 or max(stds.values()) > 1e3:
        return Finding("initialisation", "warn", evidence, "activations grow or vanish with depth: use He "
                       "initialisation (variance 2 / fan-in) or normalisation layers")  # fmt: skip
    return Finding("initialisation", "pass", evidence, "")


def _learning_rate(model, x, y, learning_rate, steps):
    lrs = np.unique(np.concatenate([_RANGE, [learning_rate]])).astype(np.float32)
    final, start = _range_test(model.apply, model.params, x, y, jnp.asarray(lrs), steps=steps)
    final, start = np.asarray(final), float(start)
    ok = np.isfinite(final)
    best = float(lrs[np.nanargmin(np.where(ok, final, np.nan))]) if ok.any() else math.nan
    mine = final[int(np.nonzero(lrs == np.float32(learning_rate))[0][0])]
    evidence = (f"loss after {steps} steps: {mine:.3g} at the given rate {learning_rate:g}, lowest "
                f"{np.nanmin(np.where(ok, final, np.nan)):.3g} at {best:g} (start {start:.3g})")  # fmt: skip
    if not math.isfinite(mine) or mine > start:
        status, hint = "fail", f"the rate diverges: try about {best / 3:.2g}"
    elif learning_rate < best / 100:
        status, hint = "warn", f"the rate is far below the best of the range test: try about {best / 3:.2g}"
    else:
        status, hint = "pass", ""
    return Finding("learning rate", status, evidence, hint), lrs, final


def _results(model, images, labels):
    from cnnjax.models import classify

    k = model.spec.num_classes
    top = [classify(model, images[i : i + 256], top_k=1) for i in range(0, len(labels), 256)]
    probs = np.concatenate([np.asarray(t.probs[:, 0]) for t in top])
    pred = np.concatenate([np.asarray(t.classes[:, 0]) for t in top])
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    wrong = np.nonzero(pred != labels)[0]
    worst = wrong[np.argsort(-probs[wrong], kind="stable")[:8]]
    acc = float(np.mean(pred == labels))
    evidence = f"validation accuracy {acc:.1%} (chance {1 / k:.1%}), {len(wrong)} wrong"
    if len(wrong):
        evidence += f", the most confident at {probs[worst[0]]:.0%}"
    hint = ("look at the confusion matrix and the confidently wrong examples: label noise, confused classes, "
            "a preprocessing mismatch")  # fmt: skip
    return Finding("results", "warn" if acc <= 1.5 / k else "pass", evidence, hint), confusion, worst
