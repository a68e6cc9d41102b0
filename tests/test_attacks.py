"""Attacks on small models: closed forms on a linear model, the epsilon ball and the box for
random inputs (property tests), early stopping, restarts, sweeps, minimal perturbations, the
technique contract, evaluation, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax
from cnnjax.attacks import (
    bim,
    carlini_wagner,
    fgm,
    fgsm,
    lbfgs,
    perturbation_norms,
    pgd,
    robustness_curve,
)
from cnnjax.report import robustness_plot
from cnnjax.testing import check_technique_contract, count_compiles, tiny_cnn

SIZE = 8  # linear model: 8 x 8 x 3 = 192 inputs


def linear_model(num_classes=5, seed=0, scale=0.3):
    """logits = vec(x) W + b: its input gradients have a closed form."""
    rng = np.random.default_rng(seed)
    params = {
        "w": jnp.asarray(rng.normal(size=(SIZE * SIZE * 3, num_classes)) * scale, jnp.float32),
        "b": jnp.asarray(rng.normal(size=(num_classes,)) * 0.1, jnp.float32),
    }

    def forward(p, x, tap):
        return x.reshape(x.shape[0], -1) @ p["w"] + p["b"][None]

    return cnnjax.from_function(forward, params, name="linear", input_size=SIZE)


def ce_input_gradient(model, x, classes):
    """d CE(vec(x) W + b, c) / dx = W (softmax(z) - onehot(c)), in NumPy."""
    w, b = np.asarray(model.params["w"], np.float64), np.asarray(model.params["b"], np.float64)
    z = x.reshape(len(x), -1).astype(np.float64) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), classes] -= 1.0
    return (p @ w.T).reshape(x.shape)


@pytest.fixture(scope="module")
def lin():
    return linear_model()


@pytest.fixture(scope="module")
def tiny():
    return tiny_cnn(0, size=16)


def _images(n, size, seed, boundary=True):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    if boundary:  # many pixels exactly at 0 and 1, where the box binds
        x = np.clip(1.4 * x - 0.2, 0.0, 1.0)
    return x


# ------------------------------------------------------------------------------ closed forms


def test_fgsm_and_fgm_equal_their_closed_forms_on_a_linear_model(lin):
    """Targeted and untargeted, at several radii (sweeps), against W (softmax - onehot)."""
    x = _images(6, SIZE, 0)
    labels = np.array([0, 1, 2, 3, 4, 0])
    targets = np.array([1, 2, 3, 4, 0, 2])
    g_y, g_t = ce_input_gradient(lin, x, labels), ce_input_gradient(lin, x, targets)
    eps_inf, eps_2 = np.array([1 / 255, 3 / 255]), np.array([0.1, 0.4, 1.0])

    def sweep(e, step):  # the closed form at each radius, a leading [E] axis
        return np.clip(x[None] + e[:, None, None, None, None] * step[None], 0, 1)

    out = fgsm(lin, x, labels, eps=eps_inf)
    np.testing.assert_allclose(out.images, sweep(eps_inf, np.sign(g_y)), atol=1e-6)
    out = fgsm(lin, x, targets=targets, eps=eps_inf)
    np.testing.assert_allclose(out.images, sweep(eps_inf, -np.sign(g_t)), atol=1e-6)

    def unit(g):
        return g / np.sqrt((g**2).sum(axis=(1, 2, 3), keepdims=True))

    out = fgm(lin, x, labels, eps=eps_2)
    np.testing.assert_allclose(out.images, sweep(eps_2, unit(g_y)), atol=1e-5)
    out = fgm(lin, x, targets=targets, eps=eps_2)
    np.testing.assert_allclose(out.images, sweep(eps_2, -unit(g_t)), atol=1e-5)
    assert out.steps.shape == (3, 6) and np.all(np.asarray(out.steps) == 1)
    # New radii, same shapes: the same compiled program.
    with count_compiles() as compiles:
        fgm(lin, x, labels, eps=[0.2, 0.3, 0.7])
    assert compiles.n == 0


@pytest.fixture(scope="module")
def two_class():
    """A two-class linear model and 6 images inside the box (the box does not bind)."""
    return linear_model(num_classes=2, seed=3), _images(6, SIZE, 1, boundary=False) * 0.4 + 0.3


def test_lbfgs_and_carlini_wagner_find_the_minimal_perturbation_of_a_linear_model(two_class):
    """Two classes: the smallest L2 change that flips the decision is |margin| / |w_1 - w_0|."""
    model, x = two_class
    w, b = np.asarray(model.params["w"]), np.asarray(model.params["b"])
    z = x.reshape(6, -1) @ w + b[None]
    targets = 1 - z.argmax(1)
    d_min = np.abs(z[:, 1] - z[:, 0]) / np.linalg.norm(w[:, 1] - w[:, 0])

    cw = carlini_wagner(model, x, targets=targets, steps=100, search_steps=6)
    assert cw.success.all() and (np.asarray(cw.predictions) == targets).all()
    d_cw = perturbation_norms(x, cw.images).l2
    # Within 1% (plus the granularity of Adam's 0.01 steps in tanh space) of the optimum.
    assert np.all(d_cw >= d_min * (1 - 1e-4)) and np.all(d_cw <= 1.01 * d_min + 1e-3), d_cw / d_min

    lb = lbfgs(model, x, targets=targets, steps=10, search_steps=9)
    assert lb.success.all() and (np.asarray(lb.predictions) == targets).all()
    d_lb = perturbation_norms(x, lb.images).l2
    assert np.all(d_lb >= d_min * (1 - 1e-4)) and np.all(d_lb <= 1.1 * d_min), d_lb / d_min
    assert np.all(np.isfinite(lb.c)) and np.all(np.asarray(lb.c) > 0)


def test_lbfgs_and_carlini_wagner_compile_once_for_any_number_of_steps(two_class):
    """Their steps and search steps are traced (issue 14): other counts reuse the program."""
    model, x = two_class
    targets = 1 - np.asarray(model(x)["logits"]).argmax(1)
    cw = carlini_wagner(model, x, targets=targets, steps=100, search_steps=6)  # the test above's program
    lb = lbfgs(model, x, targets=targets, steps=10, search_steps=9)
    with count_compiles() as c:
        cw_short = carlini_wagner(model, x, targets=targets, steps=30, search_steps=2)
        lb_short = lbfgs(model, x, targets=targets, steps=2, search_steps=3)
    assert c.n == 0, c.names
    assert np.all(np.asarray(cw.steps) == 600) and np.all(np.asarray(cw_short.steps) == 60)
    assert np.all(np.asarray(lb.steps) == 90) and np.all(np.asarray(lb_short.steps) == 6)
    # Fewer steps and constants: a larger perturbation wherever both found one.
    both = np.asarray(cw.success & cw_short.success)
    d, d_short = perturbation_norms(x, cw.images).l2, perturbation_norms(x, cw_short.images).l2
    assert (
        both.any()
        and np.all(d_short[both] >= d[both] * (1 - 1e-4))
        and np.any(d_short[both] > d[both] * 1.01)
    )


# ------------------------------------------------------------------------------ property tests


# Random cases: seeds, radii (zero, tiny and large included), step sizes and norms drawn at
# random; shapes are fixed, so each norm compiles once and the cases are new array values.
_RNG = np.random.default_rng(2024)
PGD_CASES = [
    (
        int(_RNG.integers(2**31)),
        norm,
        _RNG.choice([0.0, 1e-37, 1e-4, *_RNG.uniform(0, 0.5, 5)], 2),
        _RNG.uniform(1e-3, 0.5),
    )
    for norm in ("inf", 2)
    for _ in range(6)
]


def test_pgd_stays_in_the_ball_and_the_box(tiny):
    for seed, norm, eps, step in PGD_CASES:
        x = _images(3, 16, seed)
        scale = 1.0 if norm == "inf" else 8.0  # L2 radii up to 4 (of at most sqrt(768) = 27.7)
        eps = [float(e) * scale for e in eps]
        out = pgd(tiny, x, eps=eps, norm=norm, steps=3, learning_rate=step * scale, key=seed)
        adv = np.asarray(out.images)
        assert adv.shape == (2, 3, 16, 16, 3) and adv.dtype == np.float32
        assert adv.min() >= 0.0 and adv.max() <= 1.0, (seed, norm, eps)
        norms = perturbation_norms(x, adv)
        size = norms.linf if norm == "inf" else norms.l2
        assert np.all(size <= np.asarray(eps)[:, None] * (1 + 1e-5) + 1e-6), (seed, norm, eps, size)


def test_fgsm_stays_in_the_ball_and_the_box(tiny):
    radii = [0.0, 1e-37, 1e-3, *_RNG.uniform(0, 1, 5)]
    for seed, eps in zip(_RNG.integers(2**31, size=4), np.reshape(_RNG.permutation(radii), (4, 2))):
        x = _images(3, 16, int(seed))
        adv = np.asarray(fgsm(tiny, x, eps=eps).images)
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert np.all(perturbation_norms(x, adv).linf <= eps[:, None] + 1e-6), (seed, eps)


# ------------------------------------------------------------------------------ PGD mechanics
# These tests use 3 images, a 2-epsilon sweep and 3 steps where they can, like the ball test
# above, so they reuse its compiled program (targeted, random start and early stopping are
# array arguments, not static ones).


def test_early_stopping_freezes_each_image_at_its_first_success(tiny):
    x = _images(3, 16, 8)  # a seed whose images stop after 1, 2 and 3 updates
    kw = dict(eps=[2 / 255, 6 / 255], learning_rate=2 / 255)
    stopped = bim(tiny, x, steps=3, early_stop=True, **kw)
    free = bim(tiny, x, steps=3, early_stop=False, **kw)
    counts = np.asarray(stopped.steps).ravel()
    # A success is never lost at a later step.
    assert np.all(np.asarray(stopped.success) >= np.asarray(free.success))
    # An image stopped after one update is the one-step image of the unstopped trajectory
    # (a one-step BIM: the FGSM test's program).
    first = counts == 1
    assert first.any() and (counts == 3).any(), counts
    short = bim(tiny, x, steps=1, early_stop=False, **kw)
    flat = lambda r: np.asarray(r.images).reshape(6, 16, 16, 3)  # noqa: E731
    np.testing.assert_array_equal(flat(stopped)[first], flat(short)[first])
    never = counts == 3
    np.testing.assert_array_equal(flat(stopped)[never], flat(free)[never])


def test_restarts_keep_the_best_of_independent_runs(tiny):
    x = _images(3, 16, 7)
    key = jax.random.key(11)
    kw = dict(eps=[1 / 255, 2 / 255], steps=3, early_stop=False)
    best = pgd(tiny, x, restarts=3, key=key, **kw)
    logits = jax.jit(lambda x: tiny(x.reshape(-1, 16, 16, 3))["logits"].reshape(2, 3, -1))
    labels = np.asarray(cnnjax.classify(tiny, x)[1])[:, 0]  # what the attack defaults to
    runs = [pgd(tiny, x, key=k, **kw) for k in jax.random.split(key, 3)]
    success = np.stack([np.asarray(r.success) for r in runs])  # [restart, eps, image]

    def cross_entropy(z):  # of the labels, in NumPy
        z = np.asarray(z, np.float64)
        lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        return lse - np.take_along_axis(z, np.broadcast_to(labels, z.shape[:-1])[..., None], -1)[..., 0]

    loss = np.stack([cross_entropy(logits(r.images)) for r in runs])
    choice = np.where(success.any(0), np.where(success, loss, -np.inf).argmax(0), loss.argmax(0))
    images = np.stack([np.asarray(r.images) for r in runs])
    expected = np.take_along_axis(images, choice[None, ..., None, None, None], axis=0)[0]
    np.testing.assert_allclose(best.images, expected, atol=1e-6)
    np.testing.assert_array_equal(best.success, success.any(0))


def test_another_number_of_steps_compiles_nothing(tiny):
    """Steps are traced (issue 14): the loop's trip count is, so 5 and 7 steps are one program;
    the count of updates follows steps."""
    x = _images(2, 16, 5)
    kw = dict(eps=[2 / 255], early_stop=False)
    five = pgd(tiny, x, steps=5, **kw)
    with count_compiles() as c:
        seven = pgd(tiny, x, steps=7, **kw)
    assert c.n == 0, c.names
    assert np.all(np.asarray(five.steps) == 5) and np.all(np.asarray(seven.steps) == 7)
    assert not np.array_equal(np.asarray(five.images), np.asarray(seven.images))


def test_bim_starts_at_the_image_and_is_deterministic(tiny):
    x = _images(3, 16, 2)
    a, b = bim(tiny, x, eps=[2 / 255, 4 / 255], steps=3), bim(tiny, x, eps=[2 / 255, 4 / 255], steps=3)
    np.testing.assert_array_equal(a.images, b.images)
    # From x itself, a one-step BIM of size eps is FGSM.
    np.testing.assert_allclose(bim(tiny, x, eps=[2 / 255, 4 / 255], steps=1, early_stop=False).images,
                               fgsm(tiny, x, eps=[2 / 255, 4 / 255]).images, atol=1e-7)  # fmt: skip


def test_technique_contract_pgd(tiny):
    x = _images(3, 16, 4)

    def run(targets, key):  # the second epsilon of a sweep: the ball test's program
        return pgd(tiny, x, targets=targets, eps=[4 / 255, 8 / 255], steps=3, key=key).images[1]

    check_technique_contract(run, jnp.asarray([1, 2, 3]), jnp.asarray([4, 5, 6]))


def test_technique_contract_carlini_wagner(two_class):
    model, x = two_class  # the minimal-perturbation test's model and shapes: its program

    def run(targets, key):
        return carlini_wagner(model, x, targets=targets, steps=100, search_steps=6)

    a, b = jnp.asarray([1, 0, 1, 0, 1, 0]), jnp.asarray([0, 1, 0, 1, 0, 1])
    check_technique_contract(run, a, b, random=False)


# ------------------------------------------------------------------------------ evaluation


def test_perturbation_norms_on_a_known_change():
    x = np.full((1, 8, 8, 3), 0.5, np.float32)
    adv = x.copy()
    adv[0, 1, 1, 0] += 0.1
    adv[0, 2, 3, :2] -= 0.2  # one pixel, two channels
    adv[0, 7, 7, 2] += 0.3
    norms = perturbation_norms(x, adv[None])  # a leading sweep axis is kept
    assert norms.l0.tolist() == [[3]]
    np.testing.assert_allclose(norms.l2, [[np.sqrt(0.01 + 2 * 0.04 + 0.09)]], rtol=1e-5)
    np.testing.assert_allclose(norms.linf, [[0.3]], rtol=1e-5)
    assert perturbation_norms(x, adv, tol=0.15).l0.tolist() == [2]


def test_robustness_curve(tiny):
    x = _images(3, 16, 8)
    labels = np.array(cnnjax.classify(tiny, x)[1][:, 0])  # the program robustness_curve uses
    labels[0] = (labels[0] + 1) % 10  # one image misclassified before any attack
    curve = robustness_curve(tiny, x, labels, [0.0, 8 / 255], steps=3)
    assert curve.clean_accuracy == pytest.approx(2 / 3)
    # At eps = 0 the projection allows no change at all: the clean accuracy, no success.
    assert curve.accuracy[0] == pytest.approx(2 / 3) and curve.success_rate[0] == 0.0
    assert np.isnan(curve.l2[0])
    pred = np.asarray(curve.result.predictions)
    np.testing.assert_allclose(curve.accuracy, (pred == labels).mean(1))
    np.testing.assert_allclose(curve.success_rate, ((pred != labels) & (np.arange(3) > 0)).sum(1) / 2)
    assert curve.success_rate[1] > 0 and curve.linf[1] <= 8 / 255 + 1e-6
    img = robustness_plot({"PGD": curve, "again": curve})
    assert img.ndim == 3 and img.shape[-1] == 3 and (img < 0.5).any()
    with pytest.raises(ValueError, match="share their epsilons"):
        robustness_plot({"a": curve, "b": curve._replace(eps=curve.eps * 2)})


# ------------------------------------------------------------------------------ bad input


class _Untouchable:
    """A model whose forward pass fails loudly: bad input must be refused before any work."""

    def __init__(self, model):
        self.spec, self.params = model.spec, model.params

    def apply(self, params, images, *, perturb=None):
        raise AssertionError("the model ran before the input was checked")


GOOD = np.full((2, 16, 16, 3), 0.5, np.float32)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: pgd(m, GOOD, eps=-0.01), r"eps must be finite and in \[0, 1\]"),
        (lambda m: pgd(m, GOOD, eps=1.5), r"eps must be finite and in \[0, 1\]"),
        (lambda m: pgd(m, GOOD, eps=float("nan")), "eps must be finite"),
        (lambda m: pgd(m, GOOD, eps=30.0, norm=2), r"in \[0, 27.71"),
        (lambda m: fgsm(m, GOOD, eps=[[0.1]]), "non-empty 1-D"),
        (lambda m: fgsm(m, GOOD, eps=[]), "non-empty 1-D"),
        (lambda m: fgsm(m, GOOD, eps="big"), "eps must be a number"),
        (lambda m: pgd(m, GOOD, eps=0.1, targets=10), r"out of range.*0\.\.9"),
        (lambda m: pgd(m, GOOD, eps=0.1, targets=[1, -1]), "out of range"),
        (lambda m: pgd(m, GOOD, eps=0.1, targets="nope"), "unknown class 'nope'"),
        (lambda m: pgd(m, GOOD, eps=0.1, targets=[1, 2, 3]), r"one class per image: got shape \(3,\) for 2"),
        (lambda m: fgsm(m, GOOD, [1], eps=0.1), r"one class per image: got shape \(1,\) for 2"),
        (lambda m: fgsm(m, GOOD, eps=0.1, targets=[0.5, 1.0]), "class indices"),
        (lambda m: fgsm(m, GOOD * 3, eps=0.1), r"values in \[0, 1\]"),
        (lambda m: fgsm(m, GOOD * np.nan, eps=0.1), "non-finite"),
        (lambda m: fgsm(m, (GOOD * 255).astype(np.uint8), eps=0.1), "floating point"),
        (lambda m: fgsm(m, GOOD[0], eps=0.1), "add a batch axis"),
        (lambda m: pgd(m, GOOD, eps=0.1, steps=0), r"steps must be an integer in \[1, 100000\]"),
        (lambda m: pgd(m, GOOD, eps=0.1, steps=2.5), "steps must be an int"),
        (lambda m: pgd(m, GOOD, eps=0.1, restarts=0), "restarts must be"),
        (lambda m: pgd(m, GOOD, eps=0.1, learning_rate=-1.0), "learning_rate must be a finite number > 0"),
        (lambda m: pgd(m, GOOD, eps=0.1, norm="l1"), "norm must be 'inf'"),
        (lambda m: pgd(m, GOOD, eps=0.1, key="seed"), "key must be an int seed"),
        (lambda m: lbfgs(m, GOOD, targets=1, c=0.0), "c must be a finite number > 0"),
        (lambda m: lbfgs(m, GOOD, targets=1, search_steps=0), "search_steps must be"),
        (lambda m: carlini_wagner(m, GOOD, targets=1, kappa=-1.0), "kappa must be a finite number >= 0"),
        (lambda m: carlini_wagner(m, GOOD, targets=1, learning_rate=float("inf")), "learning_rate"),
    ],
)
def test_bad_input_is_refused_before_any_work(tiny, call, message):
    with pytest.raises(ValueError, match=message):
        call(_Untouchable(tiny))


def test_a_run_that_goes_non_finite_says_so():
    """A model whose logits are -inf at a black image: the gradient is NaN, and the attack
    raises instead of returning NaN images."""

    def forward(p, x, tap):
        m = jnp.log(x.mean(axis=(1, 2, 3)))  # -inf for a black image
        return jnp.stack([m, -m], axis=-1) * p

    model = cnnjax.from_function(forward, jnp.float32(1.0), name="broken", input_size=SIZE)
    images = np.zeros((2, SIZE, SIZE, 3), np.float32)
    with pytest.raises(cnnjax.DivergedError, match="fgsm diverged: .* non-finite values"):
        fgsm(model, images, [0, 0], eps=0.1)
