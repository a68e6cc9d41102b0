"""The course notes' claims about training, measured: momentum against the ping-pong across a
narrow valley, the noise of mini-batch steps, and what L2 and dropout do to the gap between
training and validation.

* :func:`momentum_paths`: plain gradient descent, the notes' momentum and heavy-ball momentum on
  an ill-conditioned two-dimensional quadratic, one program vmapped over the three methods.
* :func:`sgd_vs_full_batch`: the per-step training loss of mini-batch SGD against full-batch
  gradient descent, same start, learning rate and number of steps.
* :func:`regularisation_ablation`: FashionNet trained four ways (no regularisation, L2,
  dropout, both) as one program vmapped over the settings, with each setting's
  training-validation gap.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax._src.checks import (
    DivergedError,
    as_key,
    check_float,
    check_images,
    check_positive_int,
    numpy_seed,
    split_pair,
    wait,
)
from cnnjax._src.contract import Model, ValueMapping
from cnnjax.data import channel_stats
from cnnjax.losses import softmax_cross_entropy
from cnnjax.training import TrainState, cross_entropy, train_step

__all__ = [
    "ABLATION_SETTINGS",
    "MOMENTUM_METHODS",
    "MomentumPathsResult",
    "RegularisationAblationResult",
    "SgdVsFullBatchResult",
    "momentum_paths",
    "regularisation_ablation",
    "sgd_vs_full_batch",
]

#: The methods of :func:`momentum_paths`, in the order of its results' leading axis.
MOMENTUM_METHODS = ("gradient descent", "notes' momentum", "heavy ball")

#: The settings of :func:`regularisation_ablation`, in the order of its results' leading axis.
ABLATION_SETTINGS = ("none", "L2", "dropout", "both")

_SGD_METHODS = ("mini-batch SGD", "full-batch gradient descent")
_EVAL_CHUNK = 256  # images per evaluation step (memory only)


def _check_labelled(images, labels, what: str, num_classes: int, **image_checks):
    images = np.asarray(check_images(np.asarray(images), what=f"{what} images", **image_checks))
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what}: labels must be [n] with n = {len(images)}, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= num_classes:
        lo, hi = (labels.min(), labels.max()) if len(labels) else ("none", "none")
        raise ValueError(f"{what}: labels must be in 0..{num_classes - 1}, got {lo}..{hi}")
    return images, labels.astype(np.int32)


# ----------------------------------------------------------------------------- momentum on a quadratic


class MomentumPathsResult(NamedTuple):
    """Result of :func:`momentum_paths`; the leading axis is :data:`MOMENTUM_METHODS`.

    Attributes:
      methods: the methods' names, :data:`MOMENTUM_METHODS`.
      paths: float32 ``[3, steps + 1, 2]``: the iterates ``(x, y)``, the start first.
      losses: float32 ``[3, steps + 1]``: ``f`` at each iterate.
      pingpong: float32 ``[3]``: the distance travelled along the steep coordinate, in units of
        the start's offset along it, ``sum_t |y_{t+1} - y_t| / |y_0|``: 1 for a path that
        walks straight down the valley's side, more for every overshoot across the valley.
      rates: float32 ``[3, 2]``: the asymptotic factor by which each coordinate's error
        shrinks per step (the spectral radius of the method's recursion along the shallow
        ``x`` and the steep ``y``); 1 or more does not converge.
      learning_rate: the step size used.
      momentum: the momentum coefficient used by both momentum methods.
      condition: the condition number, the steep curvature over the shallow one.
    """

    methods: tuple[str, ...]
    paths: jax.Array
    losses: jax.Array
    pingpong: jax.Array
    rates: jax.Array
    learning_rate: float
    momentum: float
    condition: float


@functools.partial(jax.jit, static_argnames=("steps",))
def _quadratic_paths(start, curvature, learning_rate, alpha, beta, *, steps):
    """The iterates of ``x' = x - lr (g + alpha g_prev) + beta (x - x_prev)``, one row per
    ``(alpha, beta)``: ``(0, 0)`` plain descent, ``(mu, 0)`` the notes' momentum, ``(0, mu)``
    heavy ball (``v = mu v - lr g; x += v`` is ``x' - x = mu (x - x_prev) - lr g``)."""

    def one(a, b):
        def body(carry, _):
            x, x_prev, g_prev = carry
            g = curvature * x
            x_next = x - learning_rate * (g + a * g_prev) + b * (x - x_prev)
            return (x_next, x, g), x_next

        _, xs = jax.lax.scan(body, (start, start, jnp.zeros_like(start)), None, length=steps)
        return jnp.concatenate([start[None], xs])

    paths = jax.vmap(one)(alpha, beta)
    losses = 0.5 * jnp.sum(curvature[None, None, :] * paths**2, axis=-1)
    steep = paths[..., 1]
    pingpong = jnp.sum(jnp.abs(jnp.diff(steep, axis=-1)), axis=-1) / jnp.abs(start[1])
    # Along a coordinate of curvature c, with h = lr c, the error obeys
    # e' = (1 + beta - h) e - (beta + alpha h) e_prev: its roots' largest modulus is the rate.
    h = learning_rate * curvature[None, :]
    trace = 1.0 + beta[:, None] - h
    det = beta[:, None] + alpha[:, None] * h
    root = jnp.sqrt((trace**2 - 4.0 * det).astype(jnp.complex64))
    rates = jnp.maximum(jnp.abs(0.5 * (trace + root)), jnp.abs(0.5 * (trace - root)))
    return paths, losses, pingpong, rates


def momentum_paths(
    *,
    learning_rate: float = 0.038,
    momentum: float = 0.3,
    steps: int = 40,
    condition: float = 50.0,
    start: tuple[float, float] = (-1.0, 0.1),
) -> MomentumPathsResult:
    r"""Plain gradient descent, the notes' momentum and heavy ball on a narrow valley.

    .. math::

        f(x, y) = \tfrac12 (x^2 + \kappa y^2), \qquad \kappa = \text{condition}

    From the same ``start``, with the same learning rate :math:`\gamma` and momentum
    :math:`\mu`, the three methods' iterates (:math:`g_t = \nabla f(\theta_t)`):

    * gradient descent: :math:`\theta_{t+1} = \theta_t - \gamma g_t`;
    * the notes' momentum (:func:`cnnjax.training.momentum_sgd`): one step back along the
      previous gradient, :math:`\theta_{t+1} = \theta_t - \gamma (g_t + \mu g_{t-1})`,
      :math:`g_{-1} = 0`;
    * heavy ball (Polyak; ``optax.sgd(lr, momentum)``): :math:`v_{t+1} = \mu v_t - \gamma g_t`,
      :math:`\theta_{t+1} = \theta_t + v_{t+1}`, :math:`v_0 = 0`.

    All three are one ``lax.scan`` of the recursion
    :math:`\theta_{t+1} = \theta_t - \gamma (g_t + a g_{t-1}) + b (\theta_t - \theta_{t-1})`
    vmapped over :math:`(a, b) \in \{(0, 0), (\mu, 0), (0, \mu)\}`; the learning rate and the
    momentum are traced (another value compiles nothing).

    The defaults show the ping-pong: with :math:`\kappa = 50` and :math:`\gamma = 0.038`,
    :math:`\gamma\kappa = 1.9`, so plain descent overshoots the valley's floor at every step
    and the steep coordinate shrinks only by a factor :math:`|1 - 1.9| = 0.9` per step, the
    shallow one by 0.962. At momentum 0.3, the notes' form cancels part of each flipped
    gradient with its predecessor (steep factor 0.75) and takes slightly longer steps along
    the valley (0.95); heavy ball does both better (0.55 and 0.94). The notes' form is stable
    only for :math:`\gamma\lambda < \min(1/\mu, 2/(1-\mu))` at every curvature
    :math:`\lambda`: at this learning rate, a momentum of 0.5 already makes it ping-pong
    more than plain descent (steep factor 0.97), and 0.9 diverges.

    Args:
      learning_rate: :math:`\gamma > 0`, the step size of all three methods.
      momentum: :math:`\mu \in [0, 1)`, shared by both momentum methods.
      steps: iterations.
      condition: :math:`\kappa \ge 1`, the steep curvature (the shallow one is 1).
      start: the starting point ``(x, y)``; ``y`` (the steep coordinate) must not be 0.

    Returns:
      A :class:`MomentumPathsResult`: the paths, the losses, the ping-pong measure and the
      per-coordinate rates, one row per method of :data:`MOMENTUM_METHODS`, with the settings.
      A method that diverges at the settings given keeps its growing iterates: here that is a
      finding (its rate is 1 or more), not an error.

    Raises:
      ValueError: a bad number, or a start on the valley's floor (``y = 0``).

    Example:
      >>> result = momentum_paths()
      >>> result.paths.shape, result.methods[1]
      ((3, 41, 2), "notes' momentum")
      >>> [round(float(v), 1) for v in result.pingpong]  # across the valley, in units of |y0|
      [18.7, 5.5, 3.8]
      >>> bool(result.losses[1, -1] < result.losses[0, -1])  # momentum ends lower
      True

    Reference: Polyak (1964), "Some methods of speeding up the convergence of iteration
    methods"; Goh (2017), "Why momentum really works", Distill; the course notes' momentum.
    """
    learning_rate = check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
    momentum = check_float(momentum, "momentum", lo=0.0, hi=1.0, hi_open=True)
    steps = check_positive_int(steps, "steps", hi=100_000)
    condition = check_float(condition, "condition", lo=1.0)
    if np.shape(start) != (2,):
        raise ValueError(f"start must be a point (x, y), got {start!r}")
    x0, y0 = (check_float(v, f"start[{i}]") for i, v in enumerate(start))
    if y0 == 0.0:
        raise ValueError("start must be off the valley's floor (its steep coordinate y != 0), got y = 0")
    alpha = np.array([0.0, momentum, 0.0], np.float32)
    beta = np.array([0.0, 0.0, momentum], np.float32)
    paths, losses, pingpong, rates = _quadratic_paths(
        np.array([x0, y0], np.float32), np.array([1.0, condition], np.float32),
        np.float32(learning_rate), alpha, beta, steps=steps,
    )  # fmt: skip
    return MomentumPathsResult(
        MOMENTUM_METHODS, paths, losses, pingpong, rates, learning_rate, momentum, condition
    )


# ----------------------------------------------------------------------------- mini-batch against full batch


class SgdVsFullBatchResult(NamedTuple):
    """Result of :func:`sgd_vs_full_batch`; the leading axis is the method.

    Attributes:
      methods: ``("mini-batch SGD", "full-batch gradient descent")``.
      losses: float32 ``[2, steps]``: the loss each step's gradient was taken on, before the
        step: the mini-batch's own loss (what a training log shows) and the whole set's.
      final_loss: float32 ``[2]``: the loss on the whole training set after the last step.
      noise: float32 ``[2]``: the standard deviation of the step-to-step changes of
        ``losses`` over the last half of the steps (after the first descent, where a smooth
        curve's changes are small and alike), the curve's jitter.
      rises: float32 ``[2]``: the fraction of steps whose loss is higher than the step's
        before (0 for a curve that only goes down).
      learning_rate: the step size of both.
      batch_size: the mini-batch size.
      examples: the training examples (the full batch).
    """

    methods: tuple[str, ...]
    losses: np.ndarray
    final_loss: np.ndarray
    noise: np.ndarray
    rises: np.ndarray
    learning_rate: float
    batch_size: int
    examples: int


@functools.partial(jax.jit, static_argnames=("apply",))
def _descend(apply, params, images, labels, batches, learning_rate):
    """Plain gradient steps, one per row of ``batches`` (indices into the set); the loss
    before each step, and the whole set's loss after the last."""

    def loss_fn(p, x, y):
        return cross_entropy(apply(p, x)["logits"], y)

    def body(p, idx):
        loss, g = jax.value_and_grad(loss_fn)(p, images[idx], labels[idx])
        return jax.tree.map(lambda w, d: w - learning_rate * d, p, g), loss

    params, losses = jax.lax.scan(body, params, batches)
    return losses, loss_fn(params, images, labels)


def sgd_vs_full_batch(
    model: Model,
    train: Any,
    *,
    learning_rate: float = 0.05,
    steps: int = 100,
    batch_size: int = 64,
    key: int | jax.Array = 0,
) -> SgdVsFullBatchResult:
    r"""The per-step training loss of mini-batch SGD against full-batch gradient descent.

    .. math::

        \theta_{t+1} = \theta_t - \gamma \nabla C_{B_t}(\theta_t),
        \qquad B_t = \text{a mini-batch (SGD)} \text{ or the whole set (gradient descent)}

    Both start from ``model.params`` and take ``steps`` plain steps (no momentum, no
    regularisation) with the same learning rate on the same training set, in evaluation mode
    (no dropout), so the only difference is which examples each gradient sees. The
    mini-batches are drawn as in ``fit``: a fresh permutation of the set every epoch (drawn
    with NumPy from ``key``), ``len(train) // batch_size`` batches per epoch. Each method is
    one compiled ``lax.scan``. The mini-batch curve jitters (each step sees other examples, and
    its loss is measured on them) but still goes down; a full-batch step costs
    ``len(train) / batch_size`` times as much.

    Args:
      model: the model; ``model.apply`` is trained (evaluation mode).
      train: ``(images, labels)`` or a ``Dataset``: the training set, the full batch.
      learning_rate: :math:`\gamma > 0` for both.
      steps: steps of each method.
      batch_size: the mini-batch size, at most ``len(train)``.
      key: an int seed or a JAX key for the mini-batches' order.

    Returns:
      A :class:`SgdVsFullBatchResult`: both loss curves, the final losses on the whole set and
      each curve's noise and share of rising steps.

    Raises:
      ValueError: bad data or numbers, a batch larger than the set.
      DivergedError: a loss became non-finite (lower the learning rate).

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> rng = np.random.default_rng(0)
      >>> images, labels = rng.random((32, 16, 16, 3), np.float32), rng.integers(0, 10, 32)
      >>> result = sgd_vs_full_batch(tiny_cnn(size=16), (images, labels), steps=8, batch_size=8)
      >>> result.losses.shape, result.methods[0]
      ((2, 8), 'mini-batch SGD')

    Reference: Robbins & Monro (1951), "A stochastic approximation method"; Bottou, Curtis &
    Nocedal (2018), "Optimization methods for large-scale machine learning", section 3.
    """
    spec = model.spec
    images, labels = _check_labelled(*split_pair(train), "training set", spec.num_classes,
                                     channels=spec.channels, min_size=spec.min_input_size)  # fmt: skip
    learning_rate = check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
    steps = check_positive_int(steps, "steps", hi=100_000)
    batch_size = check_positive_int(batch_size, "batch_size")
    n = len(labels)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n} examples)")
    # The batches are drawn on the host (NumPy): eager jax.random calls would compile programs.
    rng = np.random.default_rng(numpy_seed(key))
    per_epoch = n // batch_size
    epochs = math.ceil(steps / per_epoch)
    order = np.concatenate([rng.permutation(n)[: per_epoch * batch_size] for _ in range(epochs)])
    batches = order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)
    full = np.broadcast_to(np.arange(n, dtype=np.int32), (steps, n))
    x, y, lr = jnp.asarray(images), jnp.asarray(labels), np.float32(learning_rate)
    runs = [_descend(model.apply, model.params, x, y, b, lr) for b in (batches, full)]
    losses = np.stack([np.asarray(wait(r[0])) for r in runs])
    final = np.array([float(r[1]) for r in runs], np.float32)
    if not (np.isfinite(losses).all() and np.isfinite(final).all()):
        raise DivergedError(f"sgd_vs_full_batch diverged at learning rate {learning_rate:g}: the loss "
                            "became non-finite; lower the learning rate")  # fmt: skip
    changes = np.diff(losses, axis=1)
    noise = np.std(changes[:, changes.shape[1] // 2 :], axis=1) if steps > 2 else np.zeros(2)
    rises = np.mean(changes > 0, axis=1) if steps > 1 else np.zeros(2)
    return SgdVsFullBatchResult(_SGD_METHODS, losses, final, noise.astype(np.float32),
                                rises.astype(np.float32), learning_rate, batch_size, n)  # fmt: skip


# ----------------------------------------------------------------------------- L2 and dropout ablation


class RegularisationAblationResult(NamedTuple):
    """Result of :func:`regularisation_ablation`; the leading axis is :data:`ABLATION_SETTINGS`.

    Attributes:
      settings: the settings' names, :data:`ABLATION_SETTINGS`.
      l2: float32 ``[4]``: each setting's L2 weight lambda.
      dropout_rate: float32 ``[4]``: each setting's dropout rate.
      train_loss: float32 ``[4]``: cross-entropy on the whole training set after training, in
        evaluation mode (no dropout, no penalty).
      train_accuracy: float32 ``[4]``: accuracy on it, likewise.
      val_loss: float32 ``[4]``: cross-entropy on the validation set.
      val_accuracy: float32 ``[4]``: accuracy on it.
      gap: float32 ``[4]``: validation error minus training error, ``train_accuracy -
        val_accuracy`` (Ng's variance, as :func:`~cnnjax.diagnose.bias_variance` names it).
      params: the trained FashionNet parameters (an ``nnx.State``), each leaf with a leading
        axis of 4.
      epochs: the epochs each setting was trained.
      learning_rate: the learning rate.
    """

    settings: tuple[str, ...]
    l2: np.ndarray
    dropout_rate: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    gap: np.ndarray
    params: Any
    epochs: int
    learning_rate: float


def _dropout(key: jax.Array, h: jax.Array, rate: jax.Array) -> jax.Array:
    """Inverted dropout whose rate may be traced (and 0, which keeps every unit): the draw is
    FashionNet's own (``bernoulli(key, 1 - rate)``, kept units scaled by ``1 / (1 - rate)``)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0)


def _fashion_logits(graphdef, mapping, params, images, dropout=None):
    """FashionNet's logits; ``dropout=(key, rate)`` drops units where FashionNet has its
    dropout, on the pooled features before the classifier (FashionNet's own dropout, with a
    static rate, stays off: it needs a key)."""
    from flax import nnx

    def tap(name, h):
        if dropout is None or name != "pooled":
            return h
        key, rate = dropout
        return _dropout(key, h, rate)

    return nnx.merge(graphdef, params).forward(mapping(images), tap)


def _heavy_ball(learning_rate):
    """The FashionNet recipe's optimizer: ``optax.sgd`` with heavy-ball momentum 0.9."""
    return optax.sgd(learning_rate, momentum=0.9)


@functools.partial(jax.jit, static_argnames=("graphdef", "mapping", "batch_size", "length"))
def _ablation_epoch(states, images, labels, key, epoch, learning_rate, l2, rate, *, graphdef, mapping,
                    batch_size, length):  # fmt: skip
    """One epoch of every setting: ``fit``'s permutation and keys (shared by the settings),
    ``fit``'s ``train_step``, vmapped over the states, L2 weights and dropout rates."""
    perm_key, epoch_key = jax.random.split(jax.random.fold_in(key, epoch))
    perm = jax.random.permutation(perm_key, labels.shape[0])

    def one(state, l2, rate):
        def train_apply(params, x, dropout_key):
            return _fashion_logits(graphdef, mapping, params, x, (dropout_key, rate))

        def body(state, i):
            idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
            state, metrics = train_step(
                state, images[idx], labels[idx], jax.random.fold_in(epoch_key, i),
                {"l2": l2, "learning_rate": learning_rate}, apply=None, train_apply=train_apply,
                optimizer=_heavy_ball,
            )  # fmt: skip
            return state, metrics["loss"]

        return jax.lax.scan(body, state, jnp.arange(length))

    return jax.vmap(one)(states, l2, rate)


@functools.partial(jax.jit, static_argnames=("graphdef", "mapping"))
def _ablation_eval(params, xs, ys, parts, *, graphdef, mapping):
    """Loss sums and correct counts per setting and part (0 training, 1 validation; -1 is
    padding), over chunks ``xs [chunks, chunk, h, w, c]``, in evaluation mode."""

    def one(p):
        def body(carry, batch):
            x, y, part = batch
            logits = _fashion_logits(graphdef, mapping, p, x)
            onehot = (part[:, None] == jnp.arange(2)[None, :]).astype(jnp.float32)
            losses = softmax_cross_entropy(logits, y)
            right = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
            return (carry[0] + losses @ onehot, carry[1] + right @ onehot), None

        zeros = jnp.zeros(2, jnp.float32)
        return jax.lax.scan(body, (zeros, zeros), (xs, ys, parts))[0]

    return jax.vmap(one)(params)


def regularisation_ablation(
    train: Any,
    val: Any,
    *,
    l2: float = 1e-3,
    dropout_rate: float = 0.5,
    learning_rate: float = 0.05,
    epochs: int = 5,
    batch_size: int = 64,
    key: int | jax.Array = 0,
) -> RegularisationAblationResult:
    r"""FashionNet trained with no regularisation, L2, dropout and both: one program, four runs.

    .. math::

        C = C_0 + \lambda \sum_w w^2 \quad\text{(L2)}, \qquad
        \tilde h = h \odot m / (1 - p),\ m_i \sim \text{Bernoulli}(1 - p) \quad\text{(dropout)}

    The settings :data:`ABLATION_SETTINGS` are ``(lambda, p)`` = ``(0, 0)``, ``(l2, 0)``,
    ``(0, dropout_rate)`` and ``(l2, dropout_rate)``; both are traced, so the four runs are one
    compiled epoch vmapped over the settings (the network runs once per step on the four
    parameter sets). Every run starts from the same FashionNet initialisation (drawn from
    ``key``) and sees the same batches in the same order: ``fit``'s recipe (a permutation per
    epoch, ``len(train) // batch_size`` steps, its ``train_step``; heavy-ball momentum 0.9 as
    in the FashionNet recipe; no augmentation, no early stopping). Dropout acts where
    FashionNet has it, on the pooled features before the classifier. Each setting equals
    ``fit`` on ``FashionNet(dropout_rate=p)`` with ``l2=lambda`` and the same key. The input
    normalisation is the training set's mean and standard deviation.

    After the last epoch every setting is scored in evaluation mode (no dropout, no penalty) on
    the whole training set and on the validation set; the gap is validation error minus
    training error.

    Args:
      train: ``(images, labels)`` or a ``Dataset``: greyscale (or ``c``-channel) images of any
        size >= 8, labels in 0..9.
      val: the validation set, same form.
      l2: lambda > 0 of the L2 settings (biases left out, as in ``fit``).
      dropout_rate: p in (0, 1) of the dropout settings.
      learning_rate: > 0.
      epochs: epochs of every setting.
      batch_size: examples per step, at most ``len(train)``.
      key: an int seed or a JAX key: the initialisation, the batches' order and the dropout.

    Returns:
      A :class:`RegularisationAblationResult`, one row per setting.

    Raises:
      ValueError: bad data or numbers, a batch larger than the training set.
      DivergedError: a setting's loss became non-finite (lower the learning rate).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> images, labels = rng.random((16, 8, 8, 1), np.float32), np.arange(16) % 10
      >>> result = regularisation_ablation((images, labels), (images[:4], labels[:4]), epochs=1,
      ...                                  batch_size=8)
      >>> result.settings, result.gap.shape
      (('none', 'L2', 'dropout', 'both'), (4,))

    Reference: Krogh & Hertz (1992), "A simple weight decay can improve generalization";
    Srivastava et al. (2014), "Dropout: a simple way to prevent neural networks from
    overfitting", JMLR; the course notes' regularisation.
    """
    from flax import nnx

    from cnnjax.models import FashionNet

    images, labels = _check_labelled(*split_pair(train), "training set", 10)
    channels = images.shape[-1]
    val_images, val_labels = _check_labelled(*split_pair(val), "validation set", 10, channels=channels)
    l2 = check_float(l2, "l2", lo=0.0, lo_open=True)
    dropout_rate = check_float(dropout_rate, "dropout_rate", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    learning_rate = check_float(learning_rate, "learning_rate", lo=0.0, lo_open=True)
    epochs = check_positive_int(epochs, "epochs", hi=100_000)
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size > len(labels):
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(labels)} examples)")
    key = as_key(key)

    mean, std = channel_stats(images)
    mapping = ValueMapping(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    module = FashionNet(rngs=nnx.Rngs(key), value_mapping=mapping, channels=channels, dropout_rate=0.0)
    graphdef, params = nnx.split(module)
    settings = len(ABLATION_SETTINGS)
    l2s = np.array([0.0, l2, 0.0, l2], np.float32)
    rates = np.array([0.0, 0.0, dropout_rate, dropout_rate], np.float32)
    state = TrainState(params, _heavy_ball(learning_rate).init(params))
    # Stacked on the host: an eager jnp.broadcast_to would compile a program per leaf shape.
    states = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (settings,) + np.shape(a)), state)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    static = dict(graphdef=graphdef, mapping=mapping, batch_size=batch_size, length=len(labels) // batch_size)
    for epoch in range(epochs):  # one compiled epoch per call: Ctrl-C stops between epochs
        states, losses = _ablation_epoch(states, x, y, key, np.int32(epoch), np.float32(learning_rate),
                                         l2s, rates, **static)  # fmt: skip
        finite = np.isfinite(np.asarray(wait(losses))).all(axis=1)
        if not finite.all():
            names = ", ".join(s for s, ok in zip(ABLATION_SETTINGS, finite) if not ok)
            raise DivergedError(f"regularisation_ablation diverged in epoch {epoch + 1} ({names}): the loss "
                                "became non-finite; lower the learning rate")  # fmt: skip

    # Both sets in one evaluation program, in chunks; padding belongs to neither part.
    all_x = np.concatenate([images, val_images])
    all_y = np.concatenate([labels, val_labels])
    parts = np.concatenate([np.zeros(len(labels), np.int32), np.ones(len(val_labels), np.int32)])
    chunk = min(_EVAL_CHUNK, len(all_y))
    pad = -len(all_y) % chunk
    all_x = np.concatenate([all_x, np.zeros((pad,) + all_x.shape[1:], np.float32)])
    all_y, parts = np.pad(all_y, (0, pad)), np.pad(parts, (0, pad), constant_values=-1)
    nb = len(all_y) // chunk
    loss_sums, correct = _ablation_eval(
        states.params, all_x.reshape((nb, chunk) + all_x.shape[1:]), all_y.reshape(nb, chunk),
        parts.reshape(nb, chunk), graphdef=graphdef, mapping=mapping,
    )  # fmt: skip
    counts = np.array([len(labels), len(val_labels)], np.float32)
    loss = np.asarray(loss_sums) / counts
    acc = np.asarray(correct) / counts
    if not np.isfinite(loss).all():
        raise DivergedError("regularisation_ablation diverged: non-finite evaluation losses; lower the "
                            "learning rate")  # fmt: skip
    return RegularisationAblationResult(
        ABLATION_SETTINGS, l2s, rates, loss[:, 0].astype(np.float32), acc[:, 0].astype(np.float32),
        loss[:, 1].astype(np.float32), acc[:, 1].astype(np.float32),
        (acc[:, 0] - acc[:, 1]).astype(np.float32), states.params, epochs, learning_rate,
    )  # fmt: skip
