"""The pieces of input synthesis: losses (against numerical gradients and direct formulas),
parameterizations, transforms (against independent implementations), priors and objectives
(each rises under gradient ascent on a tiny CNN; bad targets are refused before any work)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _arrays import normal
from jax.scipy.ndimage import map_coordinates
from jax.test_util import check_grads

from cnnjax import losses, objectives, param, priors, transforms
from cnnjax.testing import tiny_cnn
from cnnjax.transforms import _affine

RNG = np.random.default_rng(0)


def rand(*shape):
    return jnp.asarray(RNG.uniform(0.05, 0.95, shape), jnp.float32)


# -- losses ----------------------------------------------------------------------------------


def test_losses_match_direct_formulas():
    x = np.asarray(rand(2, 5, 6, 3), np.float64)
    tv = (
        sum(
            ((x[:, i, j + 1] - x[:, i, j]) ** 2 + (x[:, i + 1, j] - x[:, i, j]) ** 2).sum(-1)
            for i in range(4)
            for j in range(5)
        )
        / 30
    )
    np.testing.assert_allclose(losses.total_variation(jnp.asarray(x, jnp.float32)), tv, rtol=1e-5)
    np.testing.assert_allclose(
        losses.alpha_norm(jnp.asarray(x, jnp.float32), 6.0),
        (np.abs(x - 0.5) ** 6).sum((1, 2, 3)) / 30,
        rtol=1e-4,
    )
    v = x.reshape(2, 30, 3)
    g = np.stack([v[i].T @ v[i] / 30 for i in range(2)])
    np.testing.assert_allclose(losses.gram(jnp.asarray(x, jnp.float32)), g, rtol=1e-5)
    np.testing.assert_allclose(
        losses.style(jnp.asarray(x, jnp.float32), jnp.zeros((3, 3))), (g**2).mean((1, 2)), rtol=1e-5
    )
    f = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(losses.inversion(f, f), 0.0, atol=1e-7)
    np.testing.assert_allclose(losses.inversion(jnp.zeros_like(f), f), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        losses.content(f, f[0]), [0.0, np.mean((x[1] - x[0]) ** 2)], rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: losses.total_variation(x, 2.0),
        lambda x: losses.total_variation(x, 1.5),
        lambda x: losses.alpha_norm(x, 6.0),
        lambda x: losses.gram(x),
        lambda x: losses.style(x, jnp.eye(3) * 0.3),
        lambda x: losses.content(x, jnp.full((4, 5, 3), 0.4)),
        lambda x: losses.inversion(x, jnp.full((4, 5, 3), 0.4)),
        lambda x: losses.softmax_smoothing(x, 0.7),
    ],
    ids=["tv2", "tv1.5", "alpha", "gram", "style", "content", "inversion", "smoothing"],
)
def test_loss_gradients_match_finite_differences(fn):
    x = rand(2, 4, 5, 3)
    check_grads(jax.jit(fn), (x,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_softmax_smoothing_raises_entropy_of_peaky_features():
    f = np.zeros((1, 4, 4, 8), np.float32)
    f[0, :, :, 0] = 0.1
    f[0, 1, 2, 3] = 50.0  # one huge peak dominates the raw map

    def entropy(a):
        p = np.abs(a).ravel() / np.abs(a).sum()
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    s = np.asarray(losses.softmax_smoothing(jnp.asarray(f)))
    assert entropy(s) > entropy(f) + 1.0
    np.testing.assert_allclose(s.sum(-1), 8.0, rtol=1e-5)


# -- parameterizations -----------------------------------------------------------------------


def test_fft_parameterization_is_a_scaled_inverse_fourier_transform():
    p = param.fft((8, 10), channels=1, decay_power=1.0)
    z = np.zeros((1, 1, 8, 6, 2), np.float32)
    z[0, 0, 2, 3, 0] = 1.0  # one cosine at frequency (2/8, 3/10)
    img = np.asarray(p.to_image(jnp.asarray(z)))[0, :, :, 0]
    spectrum = np.zeros((8, 6), complex)
    spectrum[2, 3] = 0.25 / np.hypot(2 / 8, 3 / 10)
    np.testing.assert_allclose(img, np.fft.irfft2(spectrum, s=(8, 10), norm="ortho"), atol=1e-6)


def test_image_parameterization_is_in_range_and_cached():
    p = param.image(16, batch=2)
    assert p is param.image(16, batch=2)  # same settings, same functions: no recompiles
    x = jax.jit(lambda k: p.to_image(p.init(k)))(jax.random.key(0))
    assert x.shape == (2, 16, 16, 3) and float(x.min()) > 0 and float(x.max()) < 1
    m = np.asarray(param.COLOR_CORRELATION_SQRT)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(param.decorrelate(jnp.eye(3))), axis=1).max(), 1.0, rtol=1e-6
    )
    assert m.shape == (3, 3)
    with pytest.raises(ValueError, match="decorrelation needs 3 channels"):
        param.image(16, channels=1)
    with pytest.raises(ValueError, match="height must be an integer >= 1"):
        param.pixel(0)


# -- transforms ------------------------------------------------------------------------------


def test_affine_resampling_equals_map_coordinates():
    x = rand(2, 11, 13, 3)
    a = 0.4
    m = jnp.asarray([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], jnp.float32) / 1.1
    h, w = 11, 13
    yy, xx = np.meshgrid(np.arange(h) - 5.0, np.arange(w) - 6.0, indexing="ij")
    sy, sx = m[0, 0] * yy + m[0, 1] * xx + 5.0, m[1, 0] * yy + m[1, 1] * xx + 6.0
    one = jax.vmap(jax.vmap(lambda plane: map_coordinates(plane, [sy, sx], order=1, mode="nearest"), 2, 2))
    np.testing.assert_allclose(jax.jit(_affine)(x, m), jax.jit(one)(x), atol=1e-5)


def test_rotation_by_90_degrees_is_rot90_and_scale_1_is_identity():
    x = rand(1, 9, 9, 2)
    np.testing.assert_allclose(
        jax.jit(transforms.random_rotate((90,)))(jax.random.key(0), x), np.rot90(x, -1, (1, 2)), atol=1e-5
    )
    np.testing.assert_allclose(jax.jit(transforms.random_scale((1.0,)))(jax.random.key(0), x), x, atol=1e-6)


def test_jitter_and_roll_move_pixels_without_changing_them():
    x = rand(1, 12, 12, 3)
    out = np.asarray(transforms.jitter(4)(jax.random.key(3), x))
    assert out.shape == (1, 8, 8, 3)
    assert any(
        np.array_equal(out, np.asarray(x)[:, i : i + 8, j : j + 8]) for i in range(5) for j in range(5)
    )
    rolled = np.asarray(transforms.roll(5)(jax.random.key(1), x))
    assert any(
        np.array_equal(rolled, np.roll(np.asarray(x), (i, j), (1, 2)))
        for i in range(-5, 6)
        for j in range(-5, 6)
    )


def test_blur_equals_direct_gaussian_convolution():
    x = rand(1, 10, 12, 1)
    k = transforms.gaussian_kernel(1.0)
    r = len(k) // 2
    xp = np.pad(np.asarray(x)[0, :, :, 0], r, mode="reflect")
    ref = np.array(
        [
            [np.sum(xp[i : i + 2 * r + 1, j : j + 2 * r + 1] * np.outer(k, k)) for j in range(12)]
            for i in range(10)
        ]
    )
    np.testing.assert_allclose(transforms.gaussian_blur(1.0)(None, x)[0, :, :, 0], ref, atol=1e-5)


def test_vmapped_transforms_draw_their_own_randomness():
    t = transforms.compose(transforms.pad(4), transforms.jitter(4), transforms.random_rotate())
    x = jnp.broadcast_to(rand(1, 1, 16, 16, 3), (6, 1, 16, 16, 3))
    run = jax.jit(jax.vmap(t))
    out = np.asarray(run(jax.random.split(jax.random.key(0), 6), x))
    assert out.shape == (6, 1, 20, 20, 3)
    assert len({o.tobytes() for o in out}) > 1
    np.testing.assert_array_equal(out, np.asarray(run(jax.random.split(jax.random.key(0), 6), x)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: transforms.pad(-1), "must be an integer >= 0"),
        (lambda: transforms.pad(2, mode="wrap"), "pad mode"),
        (lambda: transforms.random_scale((1.0, 0.0)), "scales must be > 0"),
        (lambda: transforms.gaussian_blur(0.0), "sigma must be a finite number > 0"),
        (lambda: transforms.jitter(20)(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), "not smaller than"),
    ],
)
def test_bad_transform_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- priors ----------------------------------------------------------------------------------


def test_priors_apply_their_operator_after_the_step():
    p = rand(2, 6, 6, 3) - 0.5
    g = rand(2, 6, 6, 3) - 0.5
    opt = optax.chain(optax.sgd(0.1), priors.l2_decay(0.2), priors.blur_every(2, 0.8))
    state = opt.init(p)
    u1, state = opt.update(g, state, p)
    np.testing.assert_allclose(p + u1, 0.8 * (p - 0.1 * g), atol=1e-6)  # step 1: decay, no blur
    p1 = p + u1
    u2, state = opt.update(g, state, p1)
    expected = transforms.blur(0.8 * (p1 - 0.1 * g), 0.8)  # step 2: decay, then blur
    np.testing.assert_allclose(p1 + u2, expected, atol=1e-6)


def test_clipping_priors_zero_the_smallest_pixels():
    p = jnp.zeros((1, 4, 5, 3))
    g = rand(1, 4, 5, 3) - 0.5
    new = p + optax.sgd(1.0).update(g, optax.sgd(1.0).init(p), p)[0]
    for prior, score in [
        (priors.clip_small_norm(40), np.linalg.norm(np.asarray(new), axis=-1)),
        (priors.clip_small_contribution(40), np.abs(np.sum(np.asarray(new * -g), -1))),
    ]:
        opt = optax.chain(optax.sgd(1.0), prior)
        out = np.asarray(p + opt.update(g, opt.init(p), p)[0])
        zeroed = np.all(out == 0, axis=-1)[0]
        assert zeroed.sum() == 8  # 40% of 20 pixels
        assert score[0][zeroed].max() <= score[0][~zeroed].min()
        np.testing.assert_array_equal(out[0][~zeroed], np.asarray(new)[0][~zeroed])


# -- objectives ------------------------------------------------------------------------------

MODEL = tiny_cnn()
SHAPES = {
    k: tuple(v.shape[1:])
    for k, v in jax.eval_shape(
        MODEL.apply, MODEL.params, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    ).items()
}

OBJECTIVES = {
    "neuron": objectives.neuron("conv3", 8),
    "neuron_at": objectives.neuron("conv1", 3, y=3, x=30),
    "channel": objectives.channel("conv3", 8),
    "class_logit": objectives.class_logit(3),
    "direction": objectives.direction("conv2", np.linspace(-1, 1, 16)),
    "deepdream": objectives.deepdream("conv2"),
    "diversity": objectives.diversity("conv2"),
    "algebra": objectives.channel("conv3", 8)
    - 0.5 * objectives.channel("conv3", 9)
    + 2.0 * objectives.class_logit(4)
    - 1e-3 * objectives.total_variation(),
}


def test_every_objective_rises_under_gradient_ascent():
    resolved = {name: o.resolve(MODEL.spec, SHAPES) for name, o in OBJECTIVES.items()}
    x0 = jnp.clip(0.5 + 0.1 * normal(1, (3, 32, 32, 3)), 0, 1)

    @jax.jit
    def before_after(x0):  # all objectives in one compiled program: one compilation
        out = {}
        for name, obj in resolved.items():

            def step(x, _, obj=obj):
                g = jax.grad(lambda x: obj(MODEL.apply(MODEL.params, x)).sum())(x)
                return jnp.clip(x + 0.02 * g / (jnp.abs(g).mean() + 1e-12), 0, 1), None

            x = jax.lax.scan(step, x0, None, length=10)[0]
            out[name] = (obj(MODEL.apply(MODEL.params, x0)).sum(), obj(MODEL.apply(MODEL.params, x)).sum())
        return out

    for name, (before, after) in before_after(x0).items():
        before, after = float(before), float(after)
        assert after > before + 1e-4 * max(1.0, abs(before)), (name, before, after)


def test_objective_values_are_what_they_say():
    x = rand(2, 32, 32, 3)
    acts = jax.jit(MODEL.apply)(MODEL.params, x)

    evaluate = jax.jit(lambda o, a: o(a))

    def r(o):  # resolved, evaluated under jit
        return lambda a: evaluate(o.resolve(MODEL.spec, SHAPES), a)

    np.testing.assert_allclose(r(objectives.neuron("conv3", 5))(acts), acts["conv3"][:, 8, 8, 5])
    np.testing.assert_allclose(r(objectives.neuron("conv1", 2, y=3, x=30))(acts), acts["conv1"][:, 3, 30, 2])
    np.testing.assert_allclose(
        r(objectives.channel("conv2", 4))(acts), acts["conv2"][..., 4].mean((1, 2)), rtol=1e-6
    )
    np.testing.assert_allclose(r(objectives.class_logit("class_7"))(acts), acts["logits"][:, 7])
    np.testing.assert_allclose(
        r(objectives.deepdream("conv2"))(acts), (acts["conv2"] ** 2).mean((1, 2, 3)), rtol=1e-6
    )
    v = np.arange(16.0)
    np.testing.assert_allclose(
        r(objectives.direction("conv2", v))(acts),
        (np.asarray(acts["conv2"]) @ (v / np.linalg.norm(v))).mean((1, 2)),
        rtol=1e-5,
    )


def test_diversity_rewards_different_images():
    same = MODEL(jnp.broadcast_to(rand(1, 32, 32, 3), (3, 32, 32, 3)))
    different = MODEL(rand(3, 32, 32, 3))
    d = objectives.diversity("conv2")
    np.testing.assert_allclose(d(same), -1.0, rtol=1e-5)
    assert float(d(different).mean()) > -1.0 + 1e-4


@pytest.mark.parametrize(
    "obj, message",
    [
        (objectives.channel("conv9", 0), "unknown layer 'conv9'.*Valid layers: input, conv1"),
        (objectives.channel("conv3", 16), "channel 16 is out of range for layer 'conv3': it has 16 channels"),
        (objectives.neuron("conv2", 0, y=16), "row 16 is out of range for layer 'conv2'"),
        (objectives.neuron("pooled", 0), "neuron needs a spatial layer"),
        (objectives.class_logit(10), "class 10 is out of range"),
        (objectives.class_logit("clas_3"), "did you mean 'class_3'"),
        (objectives.direction("conv2", np.ones(8)), r"must have shape \(16,\)"),
        (objectives.direction("conv2", np.zeros(16)), "non-zero"),
    ],
)
def test_bad_targets_are_refused_naming_what_is_valid(obj, message):
    with pytest.raises(ValueError, match=message):
        obj.resolve(MODEL.spec, SHAPES)


def test_stack_batches_objectives_of_one_kind_only():
    batch = objectives.stack([objectives.channel("conv3", c) for c in range(5)])
    assert batch.channel.shape == (5,)
    with pytest.raises(ValueError, match="same kind, on the same layers"):
        objectives.stack([objectives.channel("conv3", 0), objectives.channel("conv2", 0)])


@pytest.mark.parametrize("steps", [1, 7, 300])
def test_inversions_traced_schedule_is_optax_piecewise_constant(steps):
    """``invert``'s steps are traced, so its learning-rate drops (10x at 60% and 85% of the run)
    take traced boundaries: the updates equal those of ``optax.piecewise_constant_schedule``
    with the boundaries as Python ints, bit for bit (1 step: the two boundaries meet)."""
    from cnnjax.synthesis._engine import normalize_by_mean_abs
    from cnnjax.synthesis._invert import _boundaries, _optimizer

    lr, momentum = 0.01, 0.9
    ours = _optimizer({"learning_rate": jnp.float32(lr), "momentum": jnp.float32(momentum),
                       "boundaries": jnp.asarray(_boundaries(steps))})  # fmt: skip
    schedule = optax.piecewise_constant_schedule(lr, {int(0.6 * steps): 0.1, int(0.85 * steps): 0.1})
    reference = optax.chain(
        normalize_by_mean_abs(), optax.sgd(schedule, momentum=momentum), priors.box(-0.5, 0.5)
    )
    grads = normal(0, (steps, 4, 5), scale=1.0)

    def run(opt):
        def body(carry, g):
            x, state = carry
            updates, state = opt.update(g, state, x)
            return (optax.apply_updates(x, updates), state), None

        x = jnp.zeros((4, 5))
        return jax.lax.scan(body, (x, opt.init(x)), grads)[0][0]

    np.testing.assert_array_equal(jax.jit(lambda: run(ours))(), jax.jit(lambda: run(reference))())
