"""cnnjax.training.optim: notes' momentum, L2 penalty / mask, decoupled weight decay, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnnjax.training._optim import (
    NotesMomentumState,
    accuracy,
    cross_entropy,
    decoupled_weight_decay,
    l2_mask,
    l2_penalty,
    momentum_sgd,
    sgd,
)

# f(theta) = 0.5 theta^T A theta - b^T theta, A SPD with eigenvalues in about [0.6, 3.9].
A = np.array([[3.0, 1.0, 0.5], [1.0, 2.0, 0.3], [0.5, 0.3, 1.0]])
B = np.array([1.0, -2.0, 0.5])
THETA0 = np.array([0.5, 0.5, -1.0])


def _grad(theta):
    return jnp.asarray(A, jnp.float32) @ theta - jnp.asarray(B, jnp.float32)


def _notes_reference(lr, alpha, steps):
    """The notes' formula in float64 numpy: theta <- theta - lr(t) (alpha g_{t-1} + g_t)."""
    theta, g_prev = THETA0.copy(), np.zeros(3)
    for t in range(steps):
        g = A @ theta - B
        theta = theta - (lr(t) if callable(lr) else lr) * (alpha * g_prev + g)
        g_prev = g
    return theta


def _run(tx, steps, theta=THETA0):
    """``steps`` updates of ``tx`` on the quadratic, jitted as one lax.scan."""

    @jax.jit
    def loop(theta):
        def body(carry, _):
            theta, state = carry
            updates, state = tx.update(_grad(theta), state, theta)
            return (optax.apply_updates(theta, updates), state), None

        (theta, state), _ = jax.lax.scan(body, (theta, tx.init(theta)), None, length=steps)
        return theta, state

    return loop(jnp.asarray(theta, jnp.float32))


def test_momentum_sgd_matches_the_notes_formula():
    theta, state = _run(momentum_sgd(0.1, momentum=0.9), 20)
    np.testing.assert_allclose(theta, _notes_reference(0.1, 0.9, 20), atol=1e-6)
    assert isinstance(state, NotesMomentumState)
    assert int(state.count) == 20


def test_momentum_sgd_step_by_step_without_jit():
    tx = momentum_sgd(0.1, momentum=0.5)
    theta = jnp.asarray(THETA0, jnp.float32)
    state = tx.init(theta)
    np.testing.assert_array_equal(state.prev_grad, np.zeros(3))
    for _ in range(3):
        updates, state = tx.update(_grad(theta), state)
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_allclose(theta, _notes_reference(0.1, 0.5, 3), atol=1e-6)


def test_momentum_sgd_converges_to_the_minimiser():
    # Stable iff lr * lambda_max < 1 / alpha (about 1.11); lambda_max(A) is about 3.9.
    theta, _ = _run(momentum_sgd(0.2, momentum=0.9), 300)
    np.testing.assert_allclose(theta, np.linalg.solve(A, B), atol=1e-5)


def test_momentum_sgd_is_not_heavy_ball():
    lr, alpha = 0.1, 0.9
    ref = _notes_reference(lr, alpha, 20)
    for steps in (1, 2):  # v_0 = g_0 and v_1 = alpha g_0 + g_1: the first two steps agree
        a, _ = _run(momentum_sgd(lr, alpha), steps)
        b, _ = _run(optax.sgd(lr, momentum=alpha), steps)
        np.testing.assert_allclose(a, b, atol=1e-6)
    notes, _ = _run(momentum_sgd(lr, alpha), 20)
    heavy, _ = _run(optax.sgd(lr, momentum=alpha), 20)
    nesterov, _ = _run(optax.sgd(lr, momentum=alpha, nesterov=True), 20)
    np.testing.assert_allclose(notes, ref, atol=1e-6)
    assert np.abs(heavy - ref).max() > 1e-2
    assert np.abs(nesterov - ref).max() > 1e-2


def test_momentum_sgd_with_a_schedule():
    schedule = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.9)
    theta, _ = _run(momentum_sgd(schedule, momentum=0.8), 20)
    np.testing.assert_allclose(theta, _notes_reference(lambda t: 0.2 * 0.9**t, 0.8, 20), atol=1e-6)


def test_momentum_sgd_on_a_nested_pytree():
    params = {"a": {"w": jnp.ones((2, 2))}, "b": [jnp.arange(3.0), (jnp.zeros(()),)]}
    grads1 = jax.tree.map(lambda x: x + 1.0, params)
    grads2 = jax.tree.map(lambda x: 2.0 * x - 1.0, params)
    tx = momentum_sgd(0.5, momentum=0.25)
    state = tx.init(params)
    u1, state = tx.update(grads1, state)
    u2, state = tx.update(grads2, state)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -0.5 * g), u1, grads1)
    jax.tree.map(lambda u, g1, g2: np.testing.assert_allclose(u, -0.5 * (0.25 * g1 + g2)), u2, grads1, grads2)
    assert jax.tree.structure(u2) == jax.tree.structure(params)


def test_sgd_is_plain_gradient_descent():
    theta, _ = _run(sgd(0.1), 20)
    np.testing.assert_allclose(theta, _notes_reference(0.1, 0.0, 20), atol=1e-6)


def _nnx_params():
    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.lin = nnx.Linear(3, 4, rngs=rngs)

    _, params, _ = nnx.split(Tiny(nnx.Rngs(0)), nnx.Param, ...)
    # Non-trivial values everywhere (nnx initialises biases to 0 and scales to 1).
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)


def _dict_params():
    rng = np.random.default_rng(2)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {
        "dense": {"kernel": normal(3, 2), "bias": normal(2)},
        "norm": {"scale": normal(2), "bias": jnp.ones(2)},
        "embed": [normal(4)],
    }


def _names(params):
    """{keystr(path): leaf} -- e.g. "['conv']['kernel'].value" for nnx state."""
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize("make", [_dict_params, _nnx_params], ids=["dict", "nnx"])
def test_l2_penalty_gradient_and_mask(make):
    params, lam = make(), 0.3
    value, grads = jax.jit(jax.value_and_grad(lambda p: l2_penalty(p, lam)))(params)
    mask = l2_mask(params)
    leaves, grad_leaves, mask_leaves = _names(params), _names(grads), _names(mask)
    excluded = {p for p in leaves if "['bias']" in p or "['scale']" in p}
    assert excluded and excluded != set(leaves)
    expected = 0.0
    for path, w in leaves.items():
        if path in excluded:
            np.testing.assert_array_equal(grad_leaves[path], np.zeros(w.shape))
            assert mask_leaves[path] is False
        else:
            np.testing.assert_allclose(grad_leaves[path], 2 * lam * w, rtol=1e-6)
            assert mask_leaves[path] is True
            expected += lam * float(np.sum(np.square(w)))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_nnx_paths_are_named_by_the_parameter_not_value():
    paths = set(_names(_nnx_params()))
    assert "['conv']['kernel'].value" in paths and "['bn']['scale'].value" in paths
    mask = _names(l2_mask(_nnx_params()))
    assert mask["['conv']['kernel'].value"] and not mask["['bn']['scale'].value"]


def test_l2_mask_exclude_rules():
    params = {"bias": {"kernel": jnp.ones(2)}, "bias_scale": jnp.ones(2), "w": jnp.ones(2)}
    params["n"] = jnp.arange(2)  # integer leaf: never selected
    assert l2_mask(params) == {"bias": {"kernel": True}, "bias_scale": True, "w": True, "n": False}
    assert l2_mask(params, exclude="w")["w"] is False
    assert l2_mask(params, exclude=())["bias_scale"] is True
    assert float(l2_penalty(params, 1.0, exclude=("kernel", "bias_scale"))) == 2.0


@pytest.mark.parametrize("make", [_dict_params, _nnx_params], ids=["dict", "nnx"])
def test_decoupled_weight_decay_shrinks_selected_weights(make):
    params, lr, wd = make(), 0.1, 0.05
    tx = decoupled_weight_decay(lr, wd, momentum=0.9)
    state = tx.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = params
    for _ in range(3):
        updates, state = tx.update(zeros, state, new)
        new = optax.apply_updates(new, updates)
    before, after, mask = _names(params), _names(new), _names(l2_mask(params))
    for path, w in before.items():
        factor = (1 - lr * wd) ** 3 if mask[path] else 1.0
        np.testing.assert_allclose(after[path], factor * w, rtol=1e-6)


def test_decoupled_decay_equals_l2_with_plain_sgd_at_twice_lambda():
    params, lam, lr = _dict_params(), 0.05, 0.1
    grads = jax.tree.map(lambda x: 0.5 * x + 0.1, params)
    l2_grads = jax.tree.map(jnp.add, grads, jax.grad(lambda p: l2_penalty(p, lam))(params))
    u_l2, _ = sgd(lr).update(l2_grads, sgd(lr).init(params))
    tx = decoupled_weight_decay(lr, 2 * lam, momentum=0.0)
    u_dw, _ = tx.update(grads, tx.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u_l2, u_dw)


def test_cross_entropy_and_accuracy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 2, 1, 3])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(6), labels])
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-6)
    hits = logits.argmax(axis=1) == labels
    assert float(accuracy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(hits.mean())
    assert float(accuracy(jnp.asarray(logits), jnp.asarray(logits.argmax(axis=1)))) == 1.0
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(jnp.asarray(logits), jnp.asarray(labels[:5]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: momentum_sgd(-0.1),
        lambda: momentum_sgd(float("nan")),
        lambda: momentum_sgd(0.1, momentum=1.0),
        lambda: momentum_sgd(0.1, momentum=-0.1),
        lambda: sgd(-1.0),
        lambda: l2_penalty({"w": jnp.ones(2)}, -0.1),
        lambda: decoupled_weight_decay(-0.1, 1e-4),
        lambda: decoupled_weight_decay(0.1, -1e-4),
        lambda: decoupled_weight_decay(0.1, 1e-4, momentum=1.5),
    ],
)
def test_bad_hyperparameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_traced_hyperparameters_are_accepted():
    tx = optax.inject_hyperparams(momentum_sgd)(learning_rate=0.1, momentum=0.9)
    theta, _ = _run(tx, 20)
    np.testing.assert_allclose(theta, _notes_reference(0.1, 0.9, 20), atol=1e-6)
    value = jax.jit(l2_penalty)({"w": jnp.ones(2)}, 0.5)
    assert float(value) == 1.0
