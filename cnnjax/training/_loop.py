"""``fit``: mini-batch training with validation, early stopping and resumable checkpoints.

The course-notes recipe: initialise the weights randomly; while the validation loss still
decreases, shuffle the training data (a full permutation per epoch from an explicit key),
take mini-batch gradient steps, and check the validation loss. The test set is never looked
at during training.

Speed and determinism: the steps of an epoch run in chunks, each one compiled ``lax.scan``
that gathers its batches from the device-resident training set, so the host syncs once per
chunk. The compiled chunk depends only on the model, the optimizer's form, the batch size and
the chunk length: the learning rate and the L2 weight are array arguments, so a second run
with other values compiles nothing. Every random draw (the permutation, augmentation,
dropout) is derived from ``(key, epoch, step)``, and a checkpoint is written atomically after
every chunk, so a run killed at any moment and started again with the same arguments resumes
from the last chunk and ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from cnnjax._src.atomic import atomic_write_bytes
from cnnjax._src.checkpoint import load_checkpoint, save_checkpoint
from cnnjax._src.checks import (
    DivergedError,
    as_key,
    check_float,
    check_int,
    check_positive_int,
    split_pair,
    wait,
)
from cnnjax._src.contract import Model
from cnnjax._src.layers import dead_fractions, layer_norms
from cnnjax._src.paths import check_output_dir
from cnnjax._src.sharding import on_mesh, rows_sharding
from cnnjax.training._optim import cross_entropy, l2_penalty, momentum_sgd

__all__ = ["EvaluateResult", "FitResult", "TrainState", "evaluate", "fit", "make_train_step", "train_step"]

#: The optimizer's default learning rate when ``fit`` picks the optimizer.
DEFAULT_LEARNING_RATE = 0.05

#: The per-layer measurements ``train_step(..., instruments=True)`` adds to its metrics.
_INSTRUMENTS = ("grad_norm", "update_ratio", "dead_fraction")


class TrainState(NamedTuple):
    """What a training step updates: the parameters and the optimizer state."""

    params: Any
    opt_state: Any


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      model: the model with the best parameters (lowest validation loss).
      params: those parameters; ``last_params`` are the final ones.
      last_params: the parameters after the last step.
      history: one dict per epoch (train/validation loss and accuracy, seconds).
      best_epoch: the epoch of ``params`` (0-based), or None if no epoch finished.
      stopped: ``"completed"``, ``"early_stopping"`` or ``"diverged"`` (then raised, inside
        a :class:`~cnnjax.DivergedError`).
      message: a sentence saying why training stopped.
    """

    model: Model
    params: Any
    last_params: Any
    history: list[dict]
    best_epoch: int | None
    stopped: str
    message: str


class EvaluateResult(NamedTuple):
    """What :func:`evaluate` returns (unpacks as ``loss, accuracy = evaluate(...)``)."""

    loss: float
    accuracy: float


def _optimizer_for(optimizer, learning_rate) -> optax.GradientTransformation:
    """The transformation: ``optimizer`` itself, or ``optimizer(learning_rate)`` for a factory."""
    return optimizer if isinstance(optimizer, optax.GradientTransformation) else optimizer(learning_rate)


def train_step(state: TrainState, images, labels, key, hyper, *, apply, train_apply, optimizer,
               l2_exclude=("bias", "scale"), augment=None, mesh=None, instruments=False):  # fmt: skip
    """One training step: ``(state, metrics)`` after one gradient step on one batch.

    The loss is ``cross_entropy(train_logits) + l2_penalty(params, hyper["l2"])``; ``metrics``
    holds the batch loss (without the penalty) and the number of correct predictions. With a
    ``mesh``, the batch is sharded over its first axis (data parallelism; parameters are
    replicated and XLA inserts the gradient all-reduce). ``hyper`` holds the traced
    hyperparameters ``learning_rate`` (for an optimizer given as a function of it) and ``l2``.

    With ``instruments``, ``metrics`` also holds three dicts computed in the same step (the
    parameters and the loss are the same as without). A layer of the parameters is a leaf's
    path without the parameter's own name: ``params["conv1"]["w"]`` and ``["conv1"]["b"]`` are
    ``"conv1"``, an NNX module's ``["convs"][0]["kernel"].value`` is ``"convs/0"``, a leaf at
    the top of the pytree is a layer of its own.

    * ``grad_norm``: layer -> the L2 norm of that layer's gradient (all its leaves together;
      the gradient the optimizer receives, L2 penalty included);
    * ``update_ratio``: layer -> ``||update|| / ||params||``, the optimizer's step against the
      parameters before it (about 1e-3 is the usual healthy order of magnitude; inf for a
      layer whose parameters are all zero);
    * ``dead_fraction``: spatial layer -> the fraction of its channels that are zero at every
      position of every example of the batch (dead ReLU units; every 4-D activation except
      ``"input"``, and only units exactly zero count, so a layer without a ReLU reads about 0).
      Without ``train_apply`` the activations are those of the loss's own forward pass. With
      it (it returns only logits), they are ``apply``'s (evaluation mode) on the same batch
      and parameters: the same values as in training mode in every layer before the first
      one that behaves otherwise in training (dropout, batch statistics; all of FashionNet's
      spatial layers), and the same computation, which XLA's common-subexpression elimination
      shares with the training forward instead of running it twice.
    """
    if mesh is not None:
        images, labels = _shard_batch(images, mesh), _shard_batch(labels, mesh)
    aug_key, dropout_key = jax.random.split(key)
    if augment is not None:
        with jax.named_scope("augment"):
            images = augment(aug_key, images)

    def loss_fn(params):
        dead = None
        if train_apply is not None:
            logits = train_apply(params, images, dropout_key)
        else:
            acts = apply(params, images)
            logits = acts["logits"]
            if instruments:
                dead = dead_fractions(acts)
        data_loss = cross_entropy(logits, labels)
        with jax.named_scope("l2_penalty"):
            total = data_loss + l2_penalty(params, hyper["l2"], exclude=l2_exclude)
        return total, (data_loss, jnp.sum(jnp.argmax(logits, -1) == labels), dead)

    grads, (loss, correct, dead) = jax.grad(loss_fn, has_aux=True)(state.params)
    tx = _optimizer_for(optimizer, hyper.get("learning_rate"))
    with jax.named_scope("update"):
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "correct": correct}
    if instruments:
        if dead is None:  # train_apply gives only logits: apply's activations, see above
            dead = dead_fractions(apply(state.params, images))
        grad_norm = layer_norms(grads)
        update_norm, param_norm = layer_norms(updates), layer_norms(state.params)
        metrics["grad_norm"] = grad_norm
        zero = jnp.float32(0.0)  # a layer the optimizer leaves out (an optax mask) has no update
        metrics["update_ratio"] = {k: update_norm.get(k, zero) / param_norm[k] for k in grad_norm}
        metrics["dead_fraction"] = dead
    return TrainState(params, opt_state), metrics


def make_train_step(
    model: Model,
    optimizer: Any,
    *,
    learning_rate: float | None = None,
    l2: float = 0.0,
    l2_exclude: tuple[str, ...] = ("bias", "scale"),
    augment: Callable | None = None,
    mesh: jax.sharding.Mesh | None = None,
    instruments: bool = False,
) -> Callable:
    """One training step as a pure function ``step(state, images, labels, key) -> (state, metrics)``.

    :func:`train_step` with the model, the optimizer and the hyperparameters bound (see there);
    ``instruments`` adds per-layer gradient norms, update-to-parameter ratios and dead-unit
    fractions to ``metrics``.
    """
    hyper = {"l2": jnp.float32(l2)}
    if not isinstance(optimizer, optax.GradientTransformation):
        hyper["learning_rate"] = jnp.float32(learning_rate)
    return functools.partial(
        _bound_step, hyper=hyper, apply=model.apply, train_apply=model.train_apply, optimizer=optimizer,
        l2_exclude=tuple(l2_exclude), augment=augment, mesh=mesh, instruments=bool(instruments),
    )  # fmt: skip


def _bound_step(state, images, labels, key, *, hyper, **static):
    return train_step(state, images, labels, key, hyper, **static)


def _shard_batch(x: jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
    """Split ``x`` over its first axis along the mesh's first axis (``_src/sharding.py``)."""
    return jax.lax.with_sharding_constraint(x, rows_sharding(mesh))


def evaluate(model: Model, params: Any, images, labels, *, chunk_size: int = 1000) -> EvaluateResult:
    """Mean cross-entropy and accuracy of ``params`` on a labelled set (evaluation mode).

    Args:
      model: the model (its ``apply`` is used: evaluation mode, no dropout).
      params: the parameters to score (``model.params`` for the model's own).
      images: float32 ``[n, h, w, c]`` in [0, 1].
      labels: int ``[n]``.
      chunk_size: images per compiled chunk (memory only).

    Returns:
      An :class:`EvaluateResult` ``(loss, accuracy)``.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> model = tiny_cnn()
      >>> images = np.full((4, 32, 32, 3), 0.5, np.float32)
      >>> loss, accuracy = evaluate(model, model.params, images, [0, 1, 2, 3])
      >>> 0.0 <= accuracy <= 1.0
      True
    """
    labels = np.asarray(labels)
    n = len(labels)
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), n)
    nb = math.ceil(n / chunk_size)
    pad = nb * chunk_size - n
    x = jnp.concatenate([jnp.asarray(images), jnp.zeros((pad,) + tuple(np.shape(images)[1:]), jnp.float32)])
    y = jnp.concatenate([jnp.asarray(labels, jnp.int32), jnp.zeros((pad,), jnp.int32)])
    mask = jnp.arange(nb * chunk_size) < n
    loss_sum, correct = _eval_sums(model.apply, params, x.reshape((nb, chunk_size) + x.shape[1:]),
                                   y.reshape(nb, chunk_size), mask.reshape(nb, chunk_size))  # fmt: skip
    return EvaluateResult(float(loss_sum) / n, float(correct) / n)


@functools.partial(jax.jit, static_argnames=("apply",))
def _eval_sums(apply, params, xs, ys, masks):
    def body(carry, batch):
        x, y, m = batch
        logits = apply(params, x)["logits"]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        right = (jnp.argmax(logits, -1) == y) & m
        return (carry[0] + jnp.sum(jnp.where(m, losses, 0.0)), carry[1] + jnp.sum(right)), None

    (loss_sum, correct), _ = jax.lax.scan(body, (jnp.float32(0.0), jnp.int32(0)), (xs, ys, masks))
    return loss_sum, correct


@functools.partial(
    jax.jit,
    static_argnames=(
        "apply",
        "train_apply",
        "optimizer",
        "l2_exclude",
        "augment",
        "mesh",
        "batch_size",
        "length",
        "instruments",
    ),
)
def _run_chunk(state, images, labels, perm, epoch_key, start, hyper, *, apply, train_apply, optimizer,
               l2_exclude, augment, mesh, batch_size, length, instruments=False):  # fmt: skip
    """``length`` steps over the batches ``perm[start * batch_size :]``, one ``lax.scan``.

    Returns the state, the sums of the losses and correct counts, whether every loss was finite,
    and with ``instruments`` a fifth output: the sums over the steps of ``grad_norm`` and
    ``update_ratio`` and the last step's ``dead_fraction``.
    """

    def body(state, i):
        with jax.named_scope("gather_batch"):
            idx = jax.lax.dynamic_slice(perm, ((start + i) * batch_size,), (batch_size,))
            batch_images, batch_labels = images[idx], labels[idx]
        key = jax.random.fold_in(epoch_key, start + i)
        state, m = train_step(state, batch_images, batch_labels, key, hyper, apply=apply,
                              train_apply=train_apply, optimizer=optimizer, l2_exclude=l2_exclude,
                              augment=augment, mesh=mesh, instruments=instruments)  # fmt: skip
        extra = {k: m[k] for k in _INSTRUMENTS} if instruments else None
        return state, (m["loss"], m["correct"], extra)

    state, (losses, correct, extra) = jax.lax.scan(body, state, jnp.arange(length))
    out = (state, jnp.sum(losses), jnp.sum(correct), jnp.all(jnp.isfinite(losses)))
    if instruments:
        out += ({"grad_norm": jax.tree.map(lambda v: jnp.sum(v, 0), extra["grad_norm"]),
                 "update_ratio": jax.tree.map(lambda v: jnp.sum(v, 0), extra["update_ratio"]),
                 "dead_fraction": jax.tree.map(lambda v: v[-1], extra["dead_fraction"])},)  # fmt: skip
    return out


@on_mesh
def fit(
    model: Model,
    train: tuple[Any, Any],
    val: tuple[Any, Any],
    *,
    optimizer: Any = None,
    learning_rate: float | None = None,
    epochs: int = 20,
    batch_size: int = 128,
    key: int | jax.Array = 0,
    l2: float = 0.0,
    l2_exclude: tuple[str, ...] = ("bias", "scale"),
    augment: Callable | None = None,
    patience: int | None = 5,
    checkpoint_dir: str | Path | None = None,
    steps_per_checkpoint: int = 100,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    restart: bool = False,
    settings: dict | None = None,
    instruments: bool = False,
) -> FitResult:
    """Train ``model.params`` with mini-batch gradient steps; keep the best by validation loss.

    Each epoch: a fresh permutation of the training set from ``fold_in(key, epoch)``, then
    ``len(train) // batch_size`` steps (the remainder of the permutation waits for the next
    epoch), then the validation loss and accuracy. Training stops after ``epochs``, or when the
    validation loss has not improved for ``patience`` epochs; a loss that stops being finite
    raises :class:`~cnnjax.DivergedError` carrying the last good state.

    Args:
      model: the model to train; ``model.train_apply`` (dropout etc.) is used if present.
      train: ``(images, labels)`` (a ``Dataset`` works), images float32 NHWC in [0, 1].
      val: the validation set, same form.
      optimizer: a function of the learning rate returning an optax transformation (default
        :func:`~cnnjax.training.momentum_sgd`, the notes' momentum 0.9), or an optax
        transformation used as it is.
      learning_rate: the learning rate of an optimizer given as a function (default 0.05); an
        array argument of the compiled steps, so another value compiles nothing.
      epochs: the most epochs to run.
      batch_size: examples per step.
      key: an int seed or a JAX key; every random draw derives from it.
      l2: the L2 penalty weight lambda (``C = C0 + lambda sum w^2``), excluding leaves named
        in ``l2_exclude`` (traced, like ``learning_rate``).
      l2_exclude: parameter names the penalty leaves out (matched as in
        :func:`~cnnjax.training.l2_mask`).
      augment: a transform ``(key, images) -> images`` applied to each training batch (e.g.
        :func:`cnnjax.transforms.augmentation`).
      patience: stop after this many epochs in a row without improvement (1: at the first
        epoch that does not improve; None: never stop early).
      checkpoint_dir: where ``last.ckpt``, ``best.ckpt`` and ``metrics.jsonl`` go; a run
        started again with the same arguments resumes from ``last.ckpt``. The checkpoint
        records the run's settings (batch size, learning rate, L2, key, optimizer, augmentation,
        data size, ``settings``); resuming with others is refused, naming the differences
        (``epochs`` and ``patience`` may change: a finished run can be continued).
      steps_per_checkpoint: steps per compiled chunk and per checkpoint.
      progress: show a progress bar.
      mesh: shard each batch over the mesh's first axis (data parallelism).
      restart: start afresh even if ``checkpoint_dir`` holds a run (its files are replaced as
        the new run goes).
      settings: further JSON-able settings of the caller's own (e.g. a recipe's
        configuration), recorded and compared on resume like the rest.
      instruments: measure each step's per-layer gradient norms, update-to-parameter ratios
        and dead-unit fractions inside the compiled steps (:func:`train_step`) and log them per
        epoch in ``history`` and ``metrics.jsonl`` under ``"instruments"``: ``grad_norm`` and
        ``update_ratio`` are means over the epoch's steps, ``dead_fraction`` is the epoch's
        last step's, ``steps`` the number of steps averaged (all of the epoch's, unless a run
        without instruments did some of them before a resume). The parameters are the same
        as without; a resumed run may switch them on or off.

    Returns:
      A :class:`FitResult`; its ``history`` (one dict per epoch: ``train_loss`` and
      ``train_accuracy``, running means over the epoch's steps in training mode;
      ``train_eval_loss`` and ``train_eval_accuracy``, measured after the epoch in evaluation
      mode on the first ``min(len(train), len(val))`` training examples; ``val_loss``,
      ``val_accuracy``; ``seconds``; with ``instruments``, ``instruments``) is what
      ``cnnjax.report.training_curves`` draws and :mod:`cnnjax.diagnose` reads.

    Raises:
      ValueError: bad data (shapes, label range, empty sets), a batch larger than the training
        set, bad hyperparameters, a corrupted checkpoint (named; it is not overwritten), or a
        checkpoint of a run with other settings.
      DivergedError: the loss became non-finite; ``error.result`` is the :class:`FitResult`
        with the last good state.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> rng = np.random.default_rng(0)
      >>> images, labels = rng.random((16, 32, 32, 3), np.float32), rng.integers(0, 10, 16)
      >>> result = fit(tiny_cnn(), (images, labels), (images[:8], labels[:8]), epochs=2, batch_size=8,
      ...              progress=False)
      >>> result.stopped, len(result.history), result.best_epoch in (0, 1)
      ('completed', 2, True)
    """
    images, labels = _check_split(model, *split_pair(train), "training set")
    val_images, val_labels = _check_split(model, *split_pair(val), "validation set")
    batch_size = check_positive_int(batch_size, "batch_size")
    epochs = check_positive_int(epochs, "epochs")
    steps_per_checkpoint = check_positive_int(steps_per_checkpoint, "steps_per_checkpoint")
    patience = None if patience is None else check_int(patience, "patience", lo=1)
    if batch_size > len(labels):
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(labels)} examples)")
    if mesh is not None and batch_size % mesh.devices.shape[0]:
        raise ValueError(f"batch_size {batch_size} must divide over {mesh.devices.shape[0]} devices")
    if optimizer is None:
        optimizer = momentum_sgd
        learning_rate = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
    hyper = {"l2": jnp.float32(check_float(l2, "l2", lo=0.0))}
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError("learning_rate applies to an optimizer given as a function of it; "
                             "an optax transformation carries its own")  # fmt: skip
    elif callable(optimizer):
        if learning_rate is None:
            raise ValueError("an optimizer given as a function of the learning rate needs learning_rate")
        hyper["learning_rate"] = jnp.float32(
            check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
        )
    else:
        raise ValueError(f"optimizer must be an optax transformation or a function of the learning rate, "
                         f"got {type(optimizer).__name__}")  # fmt: skip
    key = as_key(key)
    ckpt_dir = None if checkpoint_dir is None else check_output_dir(checkpoint_dir, what="checkpoint folder")
    run_settings = {
        "batch_size": batch_size, "l2": float(hyper["l2"]), "l2_exclude": sorted(l2_exclude),
        "learning_rate": None if "learning_rate" not in hyper else float(hyper["learning_rate"]),
        "key": [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()],
        "optimizer": _describe(optimizer), "augment": _describe(augment),
        "train_examples": int(len(labels)), "validation_examples": int(len(val_labels)),
        "model": model.spec.name, **(dict(settings) if settings else {}),
    }  # fmt: skip
    static = dict(apply=model.apply, train_apply=model.train_apply, optimizer=optimizer,
                  l2_exclude=tuple(l2_exclude), augment=augment, mesh=mesh,
                  batch_size=batch_size, instruments=bool(instruments))  # fmt: skip
    steps_per_epoch = len(labels) // batch_size
    chunk = max(1, min(steps_per_checkpoint, steps_per_epoch))

    state = TrainState(model.params, _optimizer_for(optimizer, hyper.get("learning_rate")).init(model.params))
    best = {"epoch": None, "val_loss": math.inf, "params": model.params}
    history: list[dict] = []
    epoch, start = 0, 0
    if ckpt_dir is not None and (ckpt_dir / "last.ckpt").exists() and not restart:
        (state, best_params), record = load_checkpoint(
            ckpt_dir / "last.ckpt", (state, model.params), settings=run_settings
        )
        epoch, start, history = record["epoch"], record["step"], record["history"]
        best = {"epoch": record["best_epoch"], "val_loss": record["best_val_loss"], "params": best_params}
        sums = record["sums"]
        inst = record.get("instrument_sums") or _no_instruments()
    else:
        sums = [0.0, 0]  # the epoch's training loss sum and correct count so far
        inst = _no_instruments()  # the epoch's instrument sums so far (with instruments)

    def save_last():
        if ckpt_dir is not None:
            record = {"epoch": epoch, "step": start, "history": history, "sums": sums,
                      "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
                      "settings": run_settings}  # fmt: skip
            if instruments:
                record["instrument_sums"] = inst
            save_checkpoint(ckpt_dir / "last.ckpt", (state, best["params"]), record)

    def result(stopped: str, message: str) -> FitResult:
        best_model = dataclasses.replace(model, params=best["params"])
        return FitResult(best_model, best["params"], state.params, history, best["epoch"], stopped, message)

    images_dev, labels_dev = jnp.asarray(images), jnp.asarray(labels)
    n_train_eval = min(len(labels), len(val_labels))
    bad_epochs = _epochs_since_best(history, best["epoch"])
    while epoch < epochs:
        if patience is not None and bad_epochs >= patience:
            break
        t0 = time.perf_counter()
        perm_key, epoch_key = jax.random.split(jax.random.fold_in(key, epoch))
        perm = jax.random.permutation(perm_key, len(labels))
        bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                   unit="step", disable=not progress, leave=False, file=sys.stderr)  # fmt: skip
        while start < steps_per_epoch:
            length = min(chunk, steps_per_epoch - start)
            new_state, l_sum, c_sum, finite, *extra = _run_chunk(
                state, images_dev, labels_dev, perm, epoch_key, start, hyper, length=length, **static
            )
            if not bool(wait(finite)):
                bar.close()
                kept = f" ({ckpt_dir / 'last.ckpt'})" if ckpt_dir is not None and start + epoch > 0 else ""
                message = (f"training diverged in epoch {epoch + 1} (steps {start}-{start + length}): "
                           "the loss is not finite; lower the learning rate. The last good state is "
                           f"kept{kept}")  # fmt: skip
                raise DivergedError(message, result("diverged", message))
            state, start = new_state, start + length
            sums = [sums[0] + float(l_sum), sums[1] + int(c_sum)]
            if instruments:
                inst = _add_instruments(inst, jax.device_get(extra[0]), length)
            bar.update(length)
            bar.set_postfix(loss=f"{float(l_sum) / length:.4f}")
            save_last()
        bar.close()
        val_loss, val_acc = evaluate(model, state.params, val_images, val_labels)
        # The training error as the bias/variance analysis needs it: in evaluation mode (no
        # dropout, no augmentation), on a fixed sample of training examples as large as the
        # validation set.
        train_eval_loss, train_eval_acc = evaluate(model, state.params, images[:n_train_eval],
                                                   labels[:n_train_eval])  # fmt: skip
        history.append({
            "epoch": epoch + 1, "train_loss": sums[0] / steps_per_epoch,
            "train_accuracy": sums[1] / (steps_per_epoch * batch_size),
            "train_eval_loss": train_eval_loss, "train_eval_accuracy": train_eval_acc,
            "val_loss": val_loss, "val_accuracy": val_acc,
            "seconds": round(time.perf_counter() - t0, 3),
        })  # fmt: skip
        if instruments and inst["steps"]:
            history[-1]["instruments"] = _mean_instruments(inst)
        if val_loss < best["val_loss"]:
            best = {"epoch": epoch, "val_loss": val_loss, "params": state.params}
            bad_epochs = 0
            if ckpt_dir is not None:
                save_checkpoint(ckpt_dir / "best.ckpt", state.params, history[-1])
        else:
            bad_epochs += 1
        epoch, start, sums, inst = epoch + 1, 0, [0.0, 0], _no_instruments()
        save_last()
        if ckpt_dir is not None:
            lines = "".join(json.dumps(h) + "\n" for h in history)
            atomic_write_bytes(ckpt_dir / "metrics.jsonl", lines.encode())
        if progress:
            h = history[-1]
            tqdm.write(f"epoch {h['epoch']}: train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f}"
                       f" | val loss {h['val_loss']:.4f} acc {h['val_accuracy']:.4f} ({h['seconds']:.1f} s)",
                       file=sys.stderr)  # fmt: skip
    if patience is not None and bad_epochs >= patience and epoch < epochs:
        return result(
            "early_stopping",
            f"stopped early after epoch {epoch}: the validation loss did not "
            f"improve for {bad_epochs} epochs (patience {patience}); best epoch {best['epoch'] + 1}",
        )
    return result("completed", f"completed {epochs} epochs")


def _no_instruments() -> dict:
    return {"steps": 0, "grad_norm": {}, "update_ratio": {}, "dead_fraction": {}}


def _add_instruments(inst: dict, chunk: dict, length: int) -> dict:
    """The epoch's instrument sums after one more chunk of ``length`` steps (host floats)."""
    return {
        "steps": inst["steps"] + length,
        **{kind: {layer: inst[kind].get(layer, 0.0) + float(v) for layer, v in chunk[kind].items()}
           for kind in ("grad_norm", "update_ratio")},
        "dead_fraction": {layer: float(v) for layer, v in chunk["dead_fraction"].items()},
    }  # fmt: skip


def _mean_instruments(inst: dict) -> dict:
    n = inst["steps"]
    return {
        "grad_norm": {layer: v / n for layer, v in inst["grad_norm"].items()},
        "update_ratio": {layer: v / n for layer, v in inst["update_ratio"].items()},
        "dead_fraction": dict(inst["dead_fraction"]),
        "steps": n,
    }


def _describe(fn: Any) -> str | None:
    """A name for an optimizer or an augmentation, to compare the settings of two runs."""
    if fn is None:
        return None
    if isinstance(fn, optax.GradientTransformation):
        return "an optax transformation"  # its hyperparameters live in closures: not comparable
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{getattr(fn, '__module__', '?')}.{name}"


def _epochs_since_best(history: list[dict], best_epoch: int | None) -> int:
    return len(history) - (best_epoch + 1) if best_epoch is not None else len(history)


def _check_split(model: Model, images, labels, what: str):
    images = model.spec.check_images(np.asarray(images), exact_size=True)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != images.shape[0]:
        raise ValueError(f"{what}: labels must be [n] with n = {images.shape[0]}, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    k = model.spec.num_classes
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"{what}: labels must be in 0..{k - 1}, got {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int32)
