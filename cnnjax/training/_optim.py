"""Optimisers, regularisation and the classification loss for training, as optax pieces.

* :func:`momentum_sgd` -- the course notes' momentum, ``theta <- theta - gamma (alpha g_{t-1} + g_t)``.
* :func:`sgd` -- plain stochastic gradient descent.
* :func:`l2_penalty` / :func:`l2_mask` -- L2 regularisation as a loss term, and the same
  selection of weights as an optax mask.
* :func:`decoupled_weight_decay` -- SGD with momentum and decoupled weight decay (SGDW).
* :func:`cross_entropy` / :func:`accuracy` -- loss and metric for integer class labels.

Every factory validates its hyperparameters eagerly (a ``ValueError`` at construction, not a
NaN a thousand steps later). Values that are traced (e.g. under ``optax.inject_hyperparams``
inside ``jit``) cannot be checked and are accepted as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnnjax._src.checks import check_float, check_labels, is_concrete
from cnnjax.losses import softmax_cross_entropy

__all__ = [
    "NotesMomentumState",
    "accuracy",
    "cross_entropy",
    "decoupled_weight_decay",
    "l2_mask",
    "l2_penalty",
    "momentum_sgd",
    "sgd",
]

DEFAULT_EXCLUDE = ("bias", "scale")


# ----------------------------------------------------------------------------- validation


def _check_learning_rate(learning_rate) -> None:
    # An optax schedule is checked by whoever wrote it; a traced value cannot be checked.
    if not callable(learning_rate) and is_concrete(learning_rate):
        check_float(learning_rate, "learning_rate", lo=0.0)


def _check_momentum(momentum) -> None:
    if is_concrete(momentum):
        check_float(momentum, "momentum", lo=0.0, hi=1.0, hi_open=True)


def _check_weight(name: str, weight) -> None:
    if is_concrete(weight):
        check_float(weight, name, lo=0.0)


# ----------------------------------------------------------------------------- optimisers


class NotesMomentumState(NamedTuple):
    """State of :func:`momentum_sgd`.

    Attributes:
      prev_grad: the previous step's gradient g_{t-1}, a pytree like the params (zeros at t=0).
      count: number of updates done so far (int32 scalar); the learning-rate schedule is
        evaluated at it, as in ``optax.scale_by_learning_rate``.
    """

    prev_grad: optax.Updates
    count: jax.Array


def momentum_sgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9
) -> optax.GradientTransformation:
    r"""SGD with the course notes' momentum: one step back along the previous gradient.

    .. math::

        \theta_{t+1} = \theta_t - \gamma_t\,(\alpha\, g_{t-1} + g_t), \qquad g_{-1} = 0,

    with :math:`g_t = \nabla C(\theta_t)`, :math:`\gamma_t` the learning rate (a schedule is
    evaluated at the step count t = 0, 1, ...) and :math:`\alpha` the momentum.

    How it differs from optax's momentum:

    * heavy ball, ``optax.sgd(lr, momentum)``: keeps a velocity
      :math:`v_t = \alpha v_{t-1} + g_t = \sum_{k \le t} \alpha^{t-k} g_k`, an exponentially
      weighted sum of *all* past gradients, and steps :math:`-\gamma v_t`;
    * Nesterov, ``optax.sgd(lr, momentum, nesterov=True)``: same velocity, steps
      :math:`-\gamma(\alpha v_t + g_t)`;
    * the notes' form: uses only the *single* previous gradient, :math:`-\gamma(\alpha g_{t-1} + g_t)`.

    The first two steps of the notes' form and heavy ball coincide (:math:`v_0 = g_0`,
    :math:`v_1 = \alpha g_0 + g_1`); from the third step on they differ. In practice the
    notes' form damps step-to-step ping-pong across a narrow valley (a gradient that flips
    sign is partly cancelled by its predecessor), but it has no long memory: along a
    constant gradient g its step is :math:`\gamma(1+\alpha) g` (1.9 gamma g at alpha = 0.9)
    instead of heavy ball's :math:`\gamma g / (1-\alpha)` (10 gamma g), so it accelerates
    little along shallow, consistent directions. Its step-size limit is also *tighter*: on a
    quadratic with curvature :math:`\lambda` the error obeys
    :math:`e_{t+1} = (1-\gamma\lambda) e_t - \alpha\gamma\lambda\, e_{t-1}`, stable iff
    :math:`\gamma\lambda < \min(1/\alpha,\, 2/(1-\alpha))` -- :math:`\gamma\lambda < 1.11` at
    alpha = 0.9, versus 2 for plain SGD and :math:`2(1+\alpha) = 3.8` for heavy ball.

    Args:
      learning_rate: gamma >= 0, a float or an optax schedule ``step -> gamma_t``.
      momentum: alpha in [0, 1); 0 gives plain SGD.

    Returns:
      An ``optax.GradientTransformation`` whose state is a :class:`NotesMomentumState`.

    Raises:
      ValueError: negative learning rate or momentum outside [0, 1).

    Example:
      >>> params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 0.5])}
      >>> tx = momentum_sgd(0.1, momentum=0.9)
      >>> state = tx.init(params)
      >>> for _ in range(2):  # the same gradient twice: steps 0.1 g, then 0.1 (0.9 g + g)
      ...     updates, state = tx.update(grads, state)
      ...     params = optax.apply_updates(params, updates)
      >>> [round(float(v), 3) for v in params["w"]]
      [0.855, -2.145]

    Reference: the course notes' momentum rule (see above); for contrast, Polyak (1964) heavy
    ball and Sutskever et al. (2013), "On the importance of initialization and momentum in
    deep learning", for the Nesterov form used by optax.
    """
    _check_learning_rate(learning_rate)
    _check_momentum(momentum)

    def init_fn(params):
        return NotesMomentumState(
            prev_grad=jax.tree.map(jnp.zeros_like, params), count=jnp.zeros([], jnp.int32)
        )

    def update_fn(updates, state, params=None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def step(g, g_prev):
            return (-lr * (momentum * g_prev + g)).astype(g.dtype)

        new_updates = jax.tree.map(step, updates, state.prev_grad)
        return new_updates, NotesMomentumState(
            prev_grad=updates, count=optax.safe_int32_increment(state.count)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    r"""Plain stochastic gradient descent, ``optax.sgd`` without momentum.

    .. math:: \theta_{t+1} = \theta_t - \gamma_t\, g_t

    Args:
      learning_rate: gamma >= 0, a float or an optax schedule.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: negative learning rate.

    Example:
      >>> params, grads = {"w": jnp.array([1.0])}, {"w": jnp.array([0.5])}
      >>> tx = sgd(0.01)
      >>> updates, state = tx.update(grads, tx.init(params))
      >>> [round(float(v), 3) for v in optax.apply_updates(params, updates)["w"]]
      [0.995]

    Reference: Robbins & Monro (1951), "A stochastic approximation method".
    """
    _check_learning_rate(learning_rate)
    return optax.sgd(learning_rate)


# ----------------------------------------------------------------------------- regularisation


def _leaf_name(path) -> str | None:
    """Name of a leaf: the innermost dict key or attribute name of its path.

    A trailing ``.value`` attribute is skipped (that is how a flax nnx ``Variable`` such as
    ``nnx.Param`` flattens: ``['lin']['bias'].value`` is named ``'bias'``), and so are
    sequence / flattened indices (``['bias'][0]`` is named ``'bias'``). None if no key names it.
    """
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys.pop()
    for key in reversed(keys):
        if isinstance(key, jax.tree_util.DictKey):
            return str(key.key)
        if isinstance(key, jax.tree_util.GetAttrKey):
            return key.name
    return None


def _normalise_exclude(exclude) -> frozenset[str]:
    return frozenset((exclude,) if isinstance(exclude, str) else exclude)


def _selected(path, leaf, exclude: frozenset[str]) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and _leaf_name(path) not in exclude


def l2_mask(params: Any, exclude: str | Sequence[str] = DEFAULT_EXCLUDE) -> Any:
    """Which leaves L2 regularisation / weight decay applies to, as a pytree of bools.

    A leaf is selected (True) iff it is a floating-point array and its *name* is not in
    ``exclude``. The name is the innermost dict key or attribute name on the leaf's path
    (``jax.tree_util.tree_flatten_with_path``), skipping a trailing ``.value`` (flax nnx
    Variables) and sequence indices; names are compared exactly. So with the default
    ``("bias", "scale")``:

    * ``{'conv': {'kernel': w, 'bias': b}}``: ``kernel`` selected, ``bias`` not;
    * nnx state ``['bn']['scale'].value``: named ``'scale'``, not selected;
    * ``{'bias': {'kernel': w}}``: named ``'kernel'``, selected (only the last name counts);
    * ``{'bias_scale': w}``: selected (no substring matching).

    Non-floating leaves (integer counters, PRNG keys) are never selected. Pass only the
    trainable parameters (e.g. ``nnx.split(model, nnx.Param, ...)``): BatchNorm's running
    ``mean`` / ``var`` are floating arrays and would otherwise be selected.

    Args:
      params: a pytree of arrays: nested dicts (flax linen ``params``), an ``nnx.State``, ...
      exclude: parameter names to leave out (a single string is one name).

    Returns:
      A pytree with the structure of ``params`` and a Python bool per leaf; it can be given
      as ``mask=`` to ``optax.add_decayed_weights`` or ``optax.masked``.

    Example:
      >>> l2_mask({'w': jnp.ones(3), 'bias': jnp.ones(3)})
      {'bias': False, 'w': True}

    Reference: excluding biases and normalisation scales from weight decay is common
    practice, e.g. Goyal et al. (2017), "Accurate, Large Minibatch SGD", section 5.1.
    """
    names = _normalise_exclude(exclude)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    return jax.tree_util.tree_unflatten(treedef, [_selected(p, x, names) for p, x in leaves])


def l2_penalty(params: Any, weight: float, *, exclude: str | Sequence[str] = DEFAULT_EXCLUDE) -> jax.Array:
    r"""The L2 regularisation term lambda * sum w^2, to add to the loss.

    .. math::

        C = C_0 + \lambda \sum_{w} w^2, \qquad
        \partial C / \partial w = \partial C_0 / \partial w + 2 \lambda w

    The sum runs over every element of the leaves selected by :func:`l2_mask` (floating
    leaves whose name is not in ``exclude``); excluded leaves get zero gradient from it.

    Args:
      params: a pytree of arrays (nested dicts, ``nnx.State`` of ``nnx.Param``, ...).
      weight: lambda >= 0.
      exclude: parameter names to leave out, matched as in :func:`l2_mask`.

    Returns:
      A float scalar, ``weight * sum of squares`` (0.0 when nothing is selected).

    Raises:
      ValueError: negative weight.

    Example:
      >>> params = {"dense": {"kernel": jnp.array([[1.0, 2.0]]), "bias": jnp.array([3.0])}}
      >>> float(l2_penalty(params, 0.5))  # 0.5 * (1 + 4): the bias is left out
      2.5
      >>> grads = jax.grad(l2_penalty)(params, 0.5)  # 2 lambda w, and 0 for the bias
      >>> grads["dense"]["kernel"].tolist(), grads["dense"]["bias"].tolist()
      ([[1.0, 2.0]], [0.0])

    Reference: Krogh & Hertz (1992), "A simple weight decay can improve generalization".
    """
    _check_weight("weight", weight)
    names = _normalise_exclude(exclude)
    total = jnp.zeros([], jnp.float32)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _selected(path, leaf, names):
            total = total + jnp.sum(jnp.square(leaf))
    return weight * total


def decoupled_weight_decay(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float,
    momentum: float = 0.9,
    exclude: str | Sequence[str] = DEFAULT_EXCLUDE,
) -> optax.GradientTransformation:
    r"""SGD with heavy-ball momentum and decoupled weight decay (SGDW).

    .. math::

        v_t = \alpha v_{t-1} + g_t, \qquad
        \theta_{t+1} = \theta_t - \gamma_t\,(v_t + \mu\, \theta_t)

    for the leaves selected by :func:`l2_mask` (others get no decay). The decay
    :math:`\mu\theta` never enters the velocity; with a zero gradient each step shrinks a
    selected weight by exactly :math:`(1 - \gamma\mu)`. It follows the learning-rate
    schedule, as in the paper (:math:`\eta_t` multiplies both terms).

    Versus the L2 loss term :func:`l2_penalty` with coefficient :math:`\lambda`:

    * plain SGD (``momentum=0``): the L2 gradient :math:`2\lambda\theta` gives the step
      :math:`-\gamma \cdot 2\lambda\theta`, the decay gives :math:`-\gamma\mu\theta`, so
      they are the same algorithm for :math:`\mu = 2\lambda`;
    * with momentum the L2 gradient is accumulated in the velocity (amplified up to
      :math:`1/(1-\alpha)` and delayed) while the decoupled decay is applied once per step;
    * with adaptive methods (Adam) the L2 gradient is divided by the per-weight gradient
      scale, so weights with large gradients are barely regularised; decoupled decay
      shrinks all selected weights at the same rate (that is AdamW, ``optax.adamw``).

    Args:
      learning_rate: gamma >= 0, a float or an optax schedule.
      weight_decay: mu >= 0, the decay rate per unit learning rate.
      momentum: alpha in [0, 1); 0 gives plain SGD with weight decay.
      exclude: parameter names not decayed, matched as in :func:`l2_mask`.

    Returns:
      An ``optax.GradientTransformation`` (an ``optax.chain`` of ``trace``,
      ``add_decayed_weights`` and ``scale_by_learning_rate``). Its ``update`` needs
      ``params``.

    Raises:
      ValueError: negative learning rate or weight decay, momentum outside [0, 1).

    Example:
      >>> params = {"kernel": jnp.array([1.0]), "bias": jnp.array([1.0])}
      >>> zero = {"kernel": jnp.array([0.0]), "bias": jnp.array([0.0])}
      >>> tx = decoupled_weight_decay(0.1, 0.5, momentum=0.9)
      >>> updates, state = tx.update(zero, tx.init(params), params)
      >>> new = optax.apply_updates(params, updates)  # the kernel shrinks by 1 - 0.1 * 0.5
      >>> {name: round(float(v[0]), 4) for name, v in new.items()}
      {'bias': 1.0, 'kernel': 0.95}

    Reference: Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization", ICLR.
    """
    _check_learning_rate(learning_rate)
    _check_weight("weight_decay", weight_decay)
    _check_momentum(momentum)
    names = _normalise_exclude(exclude)
    return optax.chain(
        optax.trace(decay=momentum),
        optax.add_decayed_weights(weight_decay, mask=lambda p: l2_mask(p, names)),
        optax.scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- loss and metric


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Mean softmax cross-entropy for integer class labels.

    .. math:: C_0 = -\frac{1}{N} \sum_{n} \log \operatorname{softmax}(z_n)_{y_n}
              = \frac{1}{N} \sum_{n} \Big(\log \sum_k e^{z_{nk}} - z_{n y_n}\Big)

    Args:
      logits: ``[..., K]`` unnormalised scores z.
      labels: ``[...]`` integer classes y in [0, K).

    Returns:
      A float scalar, the mean over all leading positions.

    Raises:
      ValueError: ``labels.shape != logits.shape[:-1]``.

    Example:
      >>> round(float(cross_entropy(jnp.array([[2.0, 0.0]]), jnp.array([0]))), 4)  # log(1 + e^-2)
      0.1269

    Reference: the mean of :func:`cnnjax.losses.softmax_cross_entropy`; Goodfellow, Bengio &
    Courville (2016), "Deep Learning", section 6.2.2.3.
    """
    return jnp.mean(softmax_cross_entropy(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Fraction of positions whose highest-scoring class is the label.

    .. math:: \text{acc} = \frac{1}{N} \sum_n [\arg\max_k z_{nk} = y_n]

    Ties go to the lowest class index (``jnp.argmax``).

    Args:
      logits: ``[..., K]`` scores.
      labels: ``[...]`` integer classes.

    Returns:
      A float32 scalar in [0, 1].

    Raises:
      ValueError: ``labels.shape != logits.shape[:-1]``.

    Example:
      >>> float(accuracy(jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0])))
      0.5

    Reference: top-1 accuracy, as reported e.g. for ImageNet (Russakovsky et al., 2015).
    """
    check_labels(logits, labels)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.float32)
