"""``doctor``: automated checks for the usual reasons a network "isn't working" (D. Holden,
"My neural network isn't working! What should I do?", 2017; A. Karpathy, "A recipe for
training neural networks", 2019), each with pass, warn or fail, its evidence and a suggestion.

Four compiled programs do the work, whatever the number of checks:

* a probe at the given parameters: the activations, the loss, the per-layer gradient norms and
  the gradients of 8 micro-batches, from which the gradient noise scale is estimated
  (McCandlish et al., "An empirical model of large-batch training", 2018, appendix A.1);
* one step of full-batch SGD with momentum 0.9 on a fixed batch, vmapped over rows of
  (learning rate, input scale): the learning-rate range test (Smith, "Cyclical learning rates",
  2017) over 1e-3 .. 3, plus one row at the best rate with the inputs zeroed (Karpathy's
  input-independent baseline). The steps run from Python: XLA on the CPU runs the weight
  gradient of ``lax.conv`` inside a loop body about 20x slower than outside one;
* the evaluation of every row on the batch and on held-out examples (vmapped);
* the predictions on the validation set (and on as many training examples, for the gap).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from cnnjax._src.checks import check_float, check_positive_int, split_pair
from cnnjax._src.chunks import pad_rows
from cnnjax._src.contract import Model
from cnnjax._src.layers import layer_norms
from cnnjax.data import channel_stats
from cnnjax.training import cross_entropy

__all__ = ["DoctorResult", "Finding", "doctor"]

RANGE = np.logspace(-3, 0.5, 8).astype(np.float32)  # the range test's learning rates: 1e-3 .. 3
_MICRO = 8  # micro-batches of the gradient noise scale's estimate
_STATUSES = ("pass", "warn", "fail")  # in order of severity
_CHUNK = 256  # images per prediction call (the last chunk is padded: one compile)
_PROBE = 256  # training examples of the probe (gradient norms, noise scale, activations)
_HELD_OUT = 512  # validation examples the short runs are scored on
ADAM_RATES = (1e-3, 3e-3)  # Adam on the fixed batch: overfitting it (the first: the baseline, variants)
ADAM_RATE = ADAM_RATES[0]
_SMOOTH = 5  # steps whose mini-batch losses are averaged into a range-test run's final loss


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
      confusion: int ``[classes, classes]``: the validation images' confusion matrix (rows: the
        true class).
      predictions: int ``[n]``: the predicted class of each validation image checked.
      confidence: float ``[n]``: the probability of that prediction.
      confident_wrong: int ``[<= 8]``: indices of the validation images misclassified with
        the highest confidence.
      learning_rates: float32 ``[r]``: the range test's rates.
      range_losses: float32 ``[r, steps]``: the loss on the fixed batch before each step, at
        each rate.
      grad_norms: layer -> the gradient's norm at the given parameters.
      activation_std: spatial layer -> the standard deviation of its activations.
      noise_scale: the simple gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` (examples).
    """

    findings: list[Finding]
    confusion: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray
    confident_wrong: np.ndarray
    learning_rates: np.ndarray
    range_losses: np.ndarray
    grad_norms: dict[str, float]
    activation_std: dict[str, float]
    noise_scale: float

    def summary(self) -> str:
        """One line per check, the suggestion after an arrow where the check did not pass."""
        lines = []
        for f in self.findings:
            advice = f" -> {f.suggestion}" if f.suggestion and f.status != "pass" else ""
            lines.append(f"{f.status.upper():4} {f.check}: {f.evidence}{advice}")
        return "\n".join(lines)

    @property
    def status(self) -> str:
        """The worst status of the findings."""
        return max((f.status for f in self.findings), key=_STATUSES.index, default="pass")


def doctor(
    model: Model,
    train: Any,
    val: Any = None,
    *,
    learning_rate: float = 0.05,
    batch_size: int = 128,
    l2: float = 0.0,
    augment: Callable | bool | None = None,
    examples: int = 32,
    steps: int = 50,
    variants: Mapping[str, Model] | None = None,
    progress: bool = True,
) -> DoctorResult:
    """Check a model and its data for the usual reasons a network "isn't working".

    The checks, one per item of Holden's list and two of Karpathy's recipe:

    * ``inputs`` (normalisation, preprocessing): value range, per-channel statistics, label
      range and balance against the model's spec; a layout that does not fit is an error.
    * ``final layer``: logits that are already probabilities (fed to a loss that applies its
      own softmax); the loss at the given parameters against log(classes).
    * ``gradients``: non-finite, or per-layer norms (relative to the parameters') spanning
      over 1e4.
    * ``initialisation``: activation standard deviations per layer that grow or shrink over
      100x from the first layer.
    * ``learning rate``: a range test over 1e-3 .. 3 (half decades) (``steps`` full-batch steps on
      ``examples`` training examples): the given rate diverges, or is 100x below the best.
    * ``overfit one batch``: at the best rate of the range test the network must fit those
      examples (90%); else it is too small, or the model or the loss has a bug.
    * ``input-independent baseline``: the model trained on the batch must beat, on held-out
      examples, the same training with the inputs zeroed; else the labels do not follow the
      inputs (shuffled, misaligned) or the network cannot use them.
    * ``depth and width``: each of ``variants`` (say a shallower or narrower network) trained
      the same way; a smaller one that does as well on held-out examples says the model is
      larger than the data needs (and one that does better, that it trains worse).
    * ``batch size``: the gradient noise scale at the given parameters against
      ``batch_size``: batches past 10x the noise scale buy little per example.
    * ``regularisation``: the training-validation accuracy gap of the given parameters with
      no regularisation (``l2 == 0``, no ``augment``, no training-mode forward such as dropout).
    * ``results``: validation accuracy against chance, the confusion matrix, the most
      confidently wrong examples.

    Args:
      model: a :class:`~cnnjax.Model` with the parameters to check (fresh or trained).
      train: ``(images, labels)`` or a ``Dataset``: images float NHWC in [0, 1].
      val: the same for validation (default: the last 20% of ``train``).
      learning_rate: the rate the model trains with (SGD with momentum 0.9).
      batch_size: examples per training step the model trains with.
      l2: the L2 penalty the model trains with.
      augment: the augmentation the model trains with (``fit``'s ``augment``), or True.
      examples: training examples of the fixed batch the short runs fit (and of the probe).
      steps: steps of each short run.
      variants: name -> a smaller model (same inputs and classes), for ``depth and width``.
      progress: show a progress bar over the short runs.

    Returns:
      A :class:`DoctorResult`; ``result.summary()`` is one line per check.

    Raises:
      ValueError: images or labels that do not fit the model (layout, channels, size, count),
        or bad numbers.

    Example:
      >>> import numpy as np
      >>> from cnnjax.testing import tiny_cnn
      >>> x = np.random.default_rng(0).uniform(size=(40, 32, 32, 3)).astype(np.float32)
      >>> r = doctor(tiny_cnn(), (x, np.arange(40) % 10), examples=16, steps=2, progress=False)
      >>> [f.check for f in r.findings][:3]
      ['inputs', 'final layer', 'gradients']
    """
    spec = model.spec
    images, labels = _pair(train, "train")
    if val is None:
        if len(labels) < 2:
            raise ValueError(f"{len(labels)} training examples: the doctor needs at least 2 (or a val set)")
        cut = max(1, len(labels) // 5)
        images, labels, val_images, val_labels = images[:-cut], labels[:-cut], images[-cut:], labels[-cut:]
    else:
        val_images, val_labels = _pair(val, "val")
    learning_rate = check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
    batch_size = check_positive_int(batch_size, "batch_size")
    l2 = check_float(l2, "l2", lo=0.0)
    examples = min(check_positive_int(examples, "examples"), len(labels))
    steps = check_positive_int(steps, "steps")
    for name, variant in (variants or {}).items():
        if variant.spec.num_classes != spec.num_classes or variant.spec.channels != spec.channels:
            raise ValueError(f"variant {name!r} takes {variant.spec.channels} channels and "
                             f"{variant.spec.num_classes} classes; the model {spec.channels} and "
                             f"{spec.num_classes}")  # fmt: skip
    checked = [_inputs(spec, images, labels, "train"), _inputs(spec, val_images, val_labels, "val")]
    findings = [max(checked, key=lambda f: _STATUSES.index(f.status))]  # the worse; train's if equal
    data = _Data(_finite(images[:examples]), jnp.asarray(labels[:examples], jnp.int32), images, labels,
                 _finite(val_images[:_HELD_OUT]), jnp.asarray(val_labels[:_HELD_OUT], jnp.int32))  # fmt: skip

    n_probe = min(len(labels), _PROBE)
    probe_x, probe_y = _finite(images[:n_probe]), jnp.asarray(labels[:n_probe], jnp.int32)
    probe = _probe(model.apply, model.params, probe_x, probe_y, micro=_micro(n_probe))
    probe = jax.tree.map(np.asarray, probe)
    findings.append(_final_layer(spec, probe))
    findings.append(_gradients_finding(probe))
    findings.append(_initialisation(probe))

    bar = tqdm(total=steps * (1 + len(variants or {})), desc="doctor", unit="step", disable=not progress)
    lrs = np.unique(np.concatenate([RANGE, [learning_rate]])).astype(np.float32)
    # one program: the range test's rows (SGD with momentum), then Adam on the inputs and on zeros
    rows = _concat(
        _rows(lrs, fixed=0.0), _rows(ADAM_RATES, adam=1.0), _rows(ADAM_RATES[:1], scale=0.0, adam=1.0)
    )
    curves, evals = _short_runs(model, data, rows, steps, bar)
    r, a = len(lrs), len(ADAM_RATES)
    adam, blind = ({k: v[i] for k, v in evals.items()} for i in (r, r + a))
    curves = curves[:r]
    after = np.mean(curves[:, -_SMOOTH:], 1)  # the mini-batch loss at the end, smoothed
    ok = np.isfinite(after)
    best = int(np.nanargmin(np.where(ok, after, np.nan))) if ok.any() else None
    findings.append(_learning_rate(lrs, curves, after, best, learning_rate, steps, spec.num_classes))
    findings.append(_overfit({k: v[r : r + a] for k, v in evals.items()}, examples, steps))
    findings.append(_baseline(adam, blind, spec.num_classes))
    findings.append(_capacity(variants or {}, adam, data, steps, bar))
    bar.close()

    findings.append(_batch_size(probe, batch_size))
    pred_val, conf_val = _predict_all(model, val_images)
    pred_train, _ = _predict_all(model, images[: len(val_labels)])
    findings.append(_regularisation(model, l2, augment, pred_train, labels[: len(val_labels)], pred_val,
                                    val_labels))  # fmt: skip
    result_finding, confusion, wrong = _results(spec.num_classes, pred_val, conf_val, val_labels)
    findings.append(result_finding)
    return DoctorResult(
        findings, confusion, pred_val, conf_val, wrong, lrs, curves,
        {k: float(v) for k, v in probe["grad_norms"].items()},
        {k: float(v) for k, v in probe["act_std"].items()},
        float(probe["noise_scale"]),
    )  # fmt: skip


# ---------------------------------------------------------------- data


def _pair(data, what: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split_pair(data, what)
    return np.asarray(images), np.asarray(labels)


def _inputs(spec, images: np.ndarray, labels: np.ndarray, what: str) -> Finding:
    h, w = spec.input_size
    if images.ndim != 4 or images.shape[-1] != spec.channels:
        hint = " (NCHW? transpose to NHWC)" if images.ndim == 4 and images.shape[1] == spec.channels else ""
        raise ValueError(f"{what} images shaped {images.shape}: the model takes NHWC images "
                         f"[n, {h}, {w}, {spec.channels}]{hint}")  # fmt: skip
    if images.shape[1:3] != (h, w):
        raise ValueError(f"{what} images are {images.shape[1]}x{images.shape[2]}: the model takes {h}x{w}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what}: {labels.size} labels shaped {labels.shape} for {len(images)} images: give "
                         "one integer label per image")  # fmt: skip
    if len(labels) == 0:
        raise ValueError(f"{what} holds no examples")
    if not np.issubdtype(images.dtype, np.floating):
        return Finding(
            "inputs",
            "fail",
            f"{what} images are {images.dtype}, not float",
            "convert to float32 and divide by 255: cnnjax models take images in [0, 1]",
        )
    if not np.isfinite(images).all():
        return Finding("inputs", "fail", f"{what} images hold {int((~np.isfinite(images)).sum())} NaN or "
                       "infinite values", "find the preprocessing step that makes them")  # fmt: skip
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        guess = (" (0-255 pixel values?)" if hi > 1.5 else
                 " (already normalised to zero mean?)" if lo < 0 else "")  # fmt: skip
        return Finding(
            "inputs",
            "fail",
            f"{what} values in [{lo:.3g}, {hi:.3g}], not [0, 1]{guess}",
            "give images in [0, 1] (divide by 255): cnnjax models normalise them themselves",
        )
    k = spec.num_classes
    if not np.issubdtype(labels.dtype, np.integer):
        return Finding("inputs", "fail", f"{what} labels are {labels.dtype}, not integers",
                       f"labels are class indices 0 .. {k - 1}")  # fmt: skip
    bad = labels[(labels < 0) | (labels >= k)]
    if len(bad):
        return Finding("inputs", "fail", f"{what} labels outside [0, {k}): {bad[:3].tolist()}",
                       f"labels are class indices 0 .. {k - 1}")  # fmt: skip
    mean, std = channel_stats(images)
    counts = np.bincount(labels, minlength=k)
    evidence = (
        f"{what} values in [{lo:.3g}, {hi:.3g}]; per-channel mean {[round(float(v), 3) for v in mean]}, "
        f"std {[round(float(v), 3) for v in std]}; {len(labels)} labels in [0, {k}), "
        f"{int((counts == 0).sum())} classes absent"
    )
    if (std < 0.01).any():
        return Finding("inputs", "warn", evidence, "a channel is (nearly) constant: check the preprocessing")
    if hi <= 1 / 255 + 1e-6 and hi > 0:
        return Finding("inputs", "warn", evidence, "values divided by 255 twice?")
    present = counts[counts > 0]
    if len(labels) >= 10 * k and ((counts == 0).any() or present.max() > 10 * present.min()):
        return Finding("inputs", "warn", evidence, "classes missing or very unbalanced: stratify the split")
    return Finding("inputs", "pass", evidence, "")


# ---------------------------------------------------------------- the probe


def _finite(images) -> jax.Array:
    """A finite, clipped float32 copy for the runs (the inputs check reports what was wrong)."""
    return jnp.asarray(np.clip(np.nan_to_num(np.asarray(images, np.float32)), -1e3, 1e3))


def _micro(examples: int) -> int:
    return _MICRO if examples >= 2 * _MICRO else 1


def _loss(apply, params, x, y):
    return cross_entropy(apply(params, x)["logits"], y)


@functools.partial(jax.jit, static_argnames=("apply", "micro"))
def _probe(apply, params, x, y, *, micro):
    """Activations, loss, gradient norms and the gradient noise scale at ``params``."""

    def loss_and_activations(p):
        acts = apply(p, x)
        return cross_entropy(acts["logits"], y), acts

    # one forward pass gives the loss, its gradient and the activations
    (loss, acts), grads = jax.value_and_grad(loss_and_activations, has_aux=True)(params)
    logits = acts["logits"]
    out = {
        "logits": logits,
        "loss": loss,
        "grad_norms": layer_norms(grads),
        "param_norms": layer_norms(params),
        "act_std": {k: jnp.std(a) for k, a in acts.items() if a.ndim == 4 and k != "input"},
        "noise_scale": jnp.float32(jnp.nan),
    }
    if micro > 1:
        # McCandlish et al. (2018), A.1: |g_b|^2 and |G_B|^2 of two batch sizes give unbiased
        # estimates of |G|^2 and tr(Sigma); b = B / micro.
        n = (x.shape[0] // micro) * micro
        xs = x[:n].reshape(micro, n // micro, *x.shape[1:])
        ys = y[:n].reshape(micro, n // micro)
        g_small = jax.vmap(jax.grad(functools.partial(_loss, apply)), in_axes=(None, 0, 0))(params, xs, ys)
        sq_small = sum(jnp.sum(jnp.square(g).reshape(micro, -1), 1) for g in jax.tree.leaves(g_small))
        g_big = jax.tree.map(lambda g: jnp.mean(g, 0), g_small)
        sq_big = sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(g_big))
        b, big = n // micro, n
        trace = (jnp.mean(sq_small) - sq_big) / (1 / b - 1 / big)
        g2 = sq_big - trace / big
        out["noise_scale"] = jnp.where(g2 > 0, trace / jnp.maximum(g2, 1e-30), jnp.inf)
    return out


def _final_layer(spec, probe) -> Finding:
    logits, loss = probe["logits"], float(probe["loss"])
    chance = math.log(spec.num_classes)
    if logits.min() >= 0 and np.allclose(logits.sum(-1), 1.0, atol=1e-3):
        return Finding("final layer", "fail",
                       f"the logits are probabilities (non-negative, rows sum to 1); loss {loss:.3g}",
                       "remove the softmax at the end of the model: the loss applies its own")  # fmt: skip
    evidence = f"loss {loss:.3g} at these parameters; log(classes) = {chance:.3g}"
    if not math.isfinite(loss) or loss > 3 * chance:
        return Finding("final layer", "warn", evidence,
                       "far above log(classes): over-confident outputs; initialise the last layer smaller "
                       "(or check the labels)")  # fmt: skip
    return Finding("final layer", "pass", evidence, "")


def _gradients_finding(probe) -> Finding:
    g = probe["grad_norms"]
    p = probe["param_norms"]
    bad = [k for k, v in g.items() if not np.isfinite(v)]
    if bad or not np.isfinite(probe["loss"]):
        return Finding("gradients", "fail", f"non-finite gradients in {', '.join(bad) or 'the loss'}",
                       "look for log(0), division by zero, or inputs far out of range")  # fmt: skip
    ratio = {k: float(g[k]) / max(float(p[k]), 1e-12) for k in g}
    nz = {k: v for k, v in ratio.items() if v > 0}
    if not nz:
        return Finding("gradients", "fail", "every gradient is zero",
                       "a dead network: check the activations (all ReLUs off?) and the loss")  # fmt: skip
    lo, hi = min(nz, key=nz.get), max(nz, key=nz.get)
    evidence = (f"|grad| / |param| per layer from {nz[lo]:.2g} ({lo}) to {nz[hi]:.2g} ({hi}); "
                f"{len(ratio) - len(nz)} layers with zero gradient")  # fmt: skip
    if nz[hi] / nz[lo] > 1e4 or len(nz) < len(ratio):
        return Finding(
            "gradients",
            "warn",
            evidence,
            "vanishing or exploding gradients: check the "
            "initialisation, add normalisation or residual connections, or use fewer layers",
        )
    return Finding("gradients", "pass", evidence, "")


def _initialisation(probe) -> Finding:
    stds = {k: float(v) for k, v in probe["act_std"].items()}
    if not stds:
        return Finding("initialisation", "pass", "no spatial layers to compare", "")
    first = next(iter(stds.values()))
    ratios = [v / max(first, 1e-12) for v in stds.values()]
    evidence = "activation std per layer: " + ", ".join(f"{k} {v:.3g}" for k, v in stds.items())
    if max(ratios) > 100 or min(ratios) < 0.01 or max(stds.values()) > 100 or not np.isfinite(max(ratios)):
        return Finding("initialisation", "warn", evidence, "activations grow or vanish with depth, or are "
                       "far from unit scale: use He initialisation (variance 2 / fan-in) or normalisation "
                       "layers")  # fmt: skip
    return Finding("initialisation", "pass", evidence, "")


# ---------------------------------------------------------------- the short runs


class _Rows(NamedTuple):
    """One short run per row: its learning rate, input scale (0: the inputs zeroed), optimizer
    (1: Adam, 0: SGD with momentum 0.9) and data (1: the fixed batch every step, 0: the next
    mini-batch of the training set each step)."""

    rate: np.ndarray
    scale: np.ndarray
    adam: np.ndarray
    fixed: np.ndarray


def _rows(rates, scale: float = 1.0, adam: float = 0.0, fixed: float = 1.0) -> _Rows:
    rates = np.asarray(rates, np.float32).reshape(-1)
    return _Rows(rates, *(np.full_like(rates, v) for v in (scale, adam, fixed)))


class _Data(NamedTuple):
    """The short runs' data: the fixed batch, the training set streamed in mini-batches of the
    same size, the held-out examples."""

    x: jax.Array
    y: jax.Array
    train_images: np.ndarray
    train_labels: np.ndarray
    hx: jax.Array
    hy: jax.Array

    def batch(self, step: int) -> tuple[jax.Array, jax.Array]:
        n = len(self.x)
        idx = (step * n + np.arange(n)) % len(self.train_labels)
        return _finite(self.train_images[idx]), jnp.asarray(self.train_labels[idx], jnp.int32)


def _concat(*rows: _Rows) -> _Rows:
    return _Rows(*(np.concatenate(parts) for parts in zip(*rows)))


_MOMENTUM = optax.trace(decay=0.9)
_ADAM = optax.scale_by_adam()


@functools.partial(jax.jit, static_argnames=("apply",))
def _steps(apply, params, state, x, y, bx, by, rows):
    """One step per row (vmapped): SGD with momentum 0.9 or Adam at the row's rate, on the fixed
    batch ``x, y`` or on this step's mini-batch ``bx, by``."""

    def one(p, s, rate, scale, adam, fixed):
        xs, ys = jnp.where(fixed > 0, x, bx), jnp.where(fixed > 0, y, by)
        loss, g = jax.value_and_grad(functools.partial(_loss, apply))(p, xs * scale, ys)
        momentum, s_momentum = _MOMENTUM.update(g, s[0])
        moments, s_adam = _ADAM.update(g, s[1])
        p = jax.tree.map(lambda p, a, m: p - rate * jnp.where(adam > 0, a, m), p, moments, momentum)
        return p, (s_momentum, s_adam), loss

    return jax.vmap(one)(params, state, *rows)


@functools.partial(jax.jit, static_argnames=("apply",))
def _evaluate_rows(apply, params, x, y, hx, hy, scales):
    def one(p, scale):
        logits, held = apply(p, x * scale)["logits"], apply(p, hx * scale)["logits"]
        return {
            "batch_loss": cross_entropy(logits, y),
            "batch_accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
            "held_loss": cross_entropy(held, hy),
            "held_accuracy": jnp.mean(jnp.argmax(held, -1) == hy),
        }

    # one row at a time: the rows' activations of the held-out examples together would not fit
    return jax.lax.map(lambda args: one(*args), (params, scales))


def _short_runs(model, data: _Data, rows: _Rows, steps, bar):
    """``steps`` steps for each row from ``model.params``; the loss before each step
    ``[rows, steps]`` (on the row's batch) and each row's final evaluation on the fixed batch
    and the held-out examples (non-finite rows stay non-finite)."""
    n = len(rows.rate)
    params = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), model.params)
    state = jax.vmap(lambda p: (_MOMENTUM.init(p), _ADAM.init(p)))(params)
    rows = _Rows(*(jnp.asarray(r) for r in rows))
    losses = []
    for step in range(steps):
        params, state, loss = _steps(model.apply, params, state, data.x, data.y, *data.batch(step), rows)
        losses.append(loss)
        if bar is not None:
            bar.update(1)
    evals = jax.tree.map(
        np.asarray, _evaluate_rows(model.apply, params, data.x, data.y, data.hx, data.hy, rows.scale)
    )
    curves = np.stack([np.asarray(v) for v in losses], 1) if losses else np.zeros((n, 0), np.float32)
    return curves, evals


def _learning_rate(lrs, curves, after, best, learning_rate, steps, num_classes) -> Finding:
    start = float(curves[0, 0]) if curves.size else math.nan
    i = int(np.nonzero(lrs == np.float32(learning_rate))[0][0])
    mine = float(after[i])
    if best is None:
        return Finding(
            "learning rate",
            "fail",
            f"every rate from {lrs[0]:g} to {lrs[-1]:g} diverged",
            "the loss or the model is broken before the rate matters: see the other checks",
        )
    evidence = (
        f"training loss after {steps} mini-batch steps of SGD with momentum 0.9: {mine:.3g} at the given "
        f"rate {learning_rate:g}, lowest {after[best]:.3g} at {lrs[best]:g} (start {start:.3g})"
    )
    chance = math.log(num_classes)
    if start < 0.5 * chance:  # trained parameters: any step raises the loss; ask only for stability
        evidence += "; the parameters are trained, so the test measures fine-tuning"
        if not math.isfinite(mine) or mine > chance:
            hint = f"the rate undoes the training (the loss rises above log(classes)): try {lrs[best]:.2g}"
            return Finding("learning rate", "fail", evidence, hint)
        return Finding("learning rate", "pass", evidence, "")
    if not math.isfinite(mine) or mine > 1.1 * start:
        return Finding("learning rate", "fail", evidence, f"the rate diverges: try about {lrs[best]:.2g}")
    if after[best] > 0.9 * start:
        return Finding(
            "learning rate",
            "warn",
            evidence,
            "the loss barely falls at any rate: look at the "
            "checks of the final layer, the gradients and overfitting one batch",
        )
    if learning_rate > 3 * lrs[best]:
        return Finding("learning rate", "warn", evidence,
                       f"the rate is over 3x the range test's best: try about {lrs[best]:.2g}")  # fmt: skip
    if learning_rate < lrs[best] / 30:
        return Finding(
            "learning rate",
            "warn",
            evidence,
            f"the rate is far below the range test's best: try about {lrs[best] / 3:.2g}",
        )
    return Finding("learning rate", "pass", evidence, "")


def _overfit(evals, examples, steps) -> Finding:
    """The best fit of the fixed batch by the Adam rows."""
    fitted = np.where(np.isfinite(evals["batch_loss"]), evals["batch_accuracy"], -1.0)
    i = int(np.argmax(fitted))
    acc, loss = float(fitted[i]), float(evals["batch_loss"][i])
    evidence = (
        f"{max(acc, 0):.0%} of {examples} examples fitted after {steps} full-batch Adam steps at rate "
        f"{ADAM_RATES[i]:g} (loss {loss:.3g})"
    )
    if not acc >= 0.9:
        return Finding(
            "overfit one batch",
            "fail",
            evidence,
            "the network cannot fit a small subset: it is too "
            "small (more units or layers), or the model, the labels or the loss has a bug",
        )
    return Finding("overfit one batch", "pass", evidence, "")


def _baseline(adam, blind, num_classes) -> Finding:
    real, zero = float(adam["held_accuracy"]), float(blind["held_accuracy"])
    evidence = (f"held-out accuracy {real:.1%} trained on the inputs, {zero:.1%} trained the same with the "
                f"inputs zeroed (chance {1 / num_classes:.1%})")  # fmt: skip
    if not real >= zero + 0.5 / num_classes:
        return Finding("input-independent baseline", "fail", evidence,
                       "the inputs do not help on held-out examples: labels shuffled or not matching the "
                       "images, or inputs the network cannot use")  # fmt: skip
    return Finding("input-independent baseline", "pass", evidence, "")


def _capacity(variants, adam, data, steps, bar) -> Finding:
    name = "depth and width"
    if not variants:
        return Finding(name, "pass", "no shallower or narrower variant given to compare",
                       "pass variants={'narrower': ...} to compare")  # fmt: skip
    mine = float(adam["held_accuracy"])
    parts, smaller = [f"the model: held-out accuracy {mine:.1%}"], []
    for vname, variant in variants.items():
        _, ev = _short_runs(variant, data, _rows([ADAM_RATE], adam=1.0), steps, bar)
        acc = float(ev["held_accuracy"][0])
        parts.append(f"{vname}: {acc:.1%}")
        if acc >= mine - 0.02:
            smaller.append(vname)
    evidence = f"after {steps} Adam steps at rate {ADAM_RATE:g} on the same batch: " + "; ".join(parts)
    if smaller:
        return Finding(
            name,
            "warn",
            evidence,
            f"{', '.join(smaller)} does as well: the model may be deeper or "
            "wider than the data needs (slower, more to regularise), or trains worse (too deep)",
        )
    return Finding(name, "pass", evidence, "")


# ---------------------------------------------------------------- batch size, regularisation, results


def _batch_size(probe, batch_size) -> Finding:
    noise = float(probe["noise_scale"])
    if not math.isfinite(noise):
        return Finding(
            "batch size",
            "pass",
            "the gradient noise scale is beyond what the probe's examples can "
            f"measure (noise dominates the gradient): batch size {batch_size} is not too large",
            "",
        )
    evidence = (f"gradient noise scale B_simple ~ {noise:.3g} examples at these parameters; batch size "
                f"{batch_size}")  # fmt: skip
    if batch_size > 10 * max(noise, 1.0):
        return Finding("batch size", "warn", evidence, "batches far above the noise scale cost more per "
                       "example for little more progress per step: use a smaller batch (and more steps); the "
                       "noise scale grows as training goes on, so measure again later")  # fmt: skip
    return Finding("batch size", "pass", evidence, "")


@functools.partial(jax.jit, static_argnames=("apply",))
def _predict(apply, params, x):
    p = jax.nn.softmax(apply(params, x)["logits"], -1)
    return jnp.argmax(p, -1), jnp.max(p, -1)


def _predict_all(model, images):
    preds, confs = [], []
    for i in range(0, len(images), _CHUNK):
        chunk = np.asarray(images[i : i + _CHUNK], np.float32)
        n = len(chunk)
        if len(images) > _CHUNK:  # one shape for every chunk
            chunk = pad_rows(chunk, _CHUNK)
        c, p = _predict(model.apply, model.params, _finite(chunk))
        preds.append(np.asarray(c)[:n])
        confs.append(np.asarray(p)[:n])
    return np.concatenate(preds), np.concatenate(confs)


def _regularisation(model, l2, augment, pred_train, y_train, pred_val, y_val) -> Finding:
    gap = float(np.mean(pred_train == y_train) - np.mean(pred_val == y_val))
    used = [
        s
        for s, on in (
            ("L2", l2 > 0),
            ("augmentation", bool(augment)),
            ("a training-mode forward (dropout)", model.train_apply is not None),
        )
        if on
    ]
    evidence = (f"training accuracy {np.mean(pred_train == y_train):.1%}, validation "
                f"{np.mean(pred_val == y_val):.1%} (gap {gap:+.1%}); regularisation: "
                f"{', '.join(used) or 'none'}")  # fmt: skip
    if gap > 0.05 and not used:
        return Finding("regularisation", "warn", evidence, "high variance and no regularisation: add L2 "
                       "(l2=1e-4 .. 1e-3), dropout or augmentation, or more data")  # fmt: skip
    return Finding("regularisation", "pass", evidence, "")


def _results(k, pred, conf, labels):
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    wrong = np.nonzero(pred != labels)[0]
    worst = wrong[np.argsort(-conf[wrong], kind="stable")[:8]]
    acc = float(np.mean(pred == labels))
    evidence = (
        f"validation accuracy {acc:.1%} (chance {1 / k:.1%}) on {len(labels)} images, {len(wrong)} wrong"
    )
    if len(wrong):
        evidence += f", the most confident wrong at {conf[worst[0]]:.0%}"
    majority = float(np.bincount(labels, minlength=k).max() / len(labels))
    if acc <= max(majority, 1 / k) + 0.02:
        return Finding("results", "warn", evidence, "no better than always predicting the most common class: "
                       "train the model (or look at the checks above)"), confusion, worst  # fmt: skip
    return (
        Finding(
            "results",
            "pass",
            evidence,
            "look at the confusion matrix and the confidently wrong "
            "examples: label noise, confused classes, a preprocessing mismatch",
        ),
        confusion,
        worst,
    )
