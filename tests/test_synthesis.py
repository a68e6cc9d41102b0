"""The synthesis techniques: the shared contract suite on a tiny CNN, what each one promises,
bad input refused before any work, and the quality checks on the bundled model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax
from cnnjax import objectives
from cnnjax.synthesis._style import to_yiq
from cnnjax.testing import check_technique_contract, count_compiles, tiny_cnn

TINY = tiny_cnn()
# The same network with a 30x sharper classifier: random weights give logits too flat for a
# confident class otherwise (the same apply, so the same compiled programs).
SHARP = dataclasses.replace(
    TINY, params={**TINY.params, "dense": jax.tree.map(lambda w: 30 * w, TINY.params["dense"])}
)


def photos(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (n, size // 4, size // 4, 3)).astype(np.float32)
    return np.asarray(jax.image.resize(base, (n, size, size, 3), "linear")).clip(0, 1)


# -- the contract: one program vmapped over targets ------------------------------------------


def test_visualize_contract():
    def run(channels, key):
        objs = [objectives.channel("conv3", int(c)) for c in channels]
        return cnnjax.visualize(TINY, objs, size=32, steps=24, restarts=3, key=key).images  # shared program

    check_technique_contract(run, jnp.array([8, 10, 11]), jnp.array([5, 14, 15]))


def test_dream_contract():
    def run(images, key):
        return cnnjax.dream(TINY, images, "conv2", octaves=2, steps=3, jitter=4, key=key).images

    check_technique_contract(run, photos(3, 40), photos(3, 40, seed=1))


def test_invert_contract():
    def run(images, key):
        return cnnjax.invert(TINY, images, "conv2", steps=5, key=key).images

    check_technique_contract(run, photos(2), photos(2, seed=1))


def test_style_transfer_contract():
    style = photos(1, seed=5)

    def run(content, key):
        return cnnjax.style_transfer(
            TINY, content, style, content_layer="conv3", style_layers=("conv1", "conv2"), steps=5, key=key
        ).images

    check_technique_contract(run, photos(3), photos(3, seed=1), random=False)


# -- what each technique promises ------------------------------------------------------------


def test_visualize_raises_its_objectives_and_keeps_the_best_restart():
    objs = [objectives.channel("conv3", c) for c in (8, 10, 11)]
    vis = cnnjax.visualize(TINY, objs, size=32, steps=24, restarts=3, key=1)  # as in the contract test
    history = np.asarray(vis.history)
    assert np.all(history[:, -4:].mean(1) > 1.05 * history[:, :4].mean(1)), history[:, [0, -1]]
    np.testing.assert_allclose(vis.scores.sum(1), vis.restart_scores.max(1), rtol=1e-6)
    np.testing.assert_array_equal(vis.restart, vis.restart_scores.argmax(1))


def test_visualize_presets_and_diversity():
    for preset in ("yosinski", "plain"):
        vis = cnnjax.visualize(TINY, 1.0 * objectives.channel("conv3", 8), preset=preset, size=32, steps=12)
        assert float(vis.history[0, -1]) > float(vis.history[0, 0])
    # With a diversity term the batch's Gram matrices are less alike (the weight is a leaf:
    # both runs are one compiled program).
    sims = []
    for weight in (0.0, 10.0):
        obj = objectives.channel("conv2", 3) + weight * objectives.diversity("conv2")
        vis = cnnjax.visualize(TINY, obj, size=32, steps=20, batch=3, key=2, transform=None)
        sims.append(-float(jnp.mean(objectives.diversity("conv2")(TINY(vis.images)))))
    assert sims[1] < sims[0], sims


def test_dream_amplifies_the_layer_and_keeps_the_size():
    image = photos(1, 48)
    out = cnnjax.dream(
        TINY, image, {"conv2": 1.0, "conv3": 0.5}, octaves=3, octave_scale=1.3, steps=6, jitter=4
    )
    assert out.images.shape == image.shape
    score = jax.jit(lambda x: sum(w * (TINY(x)[n] ** 2).mean() for n, w in (("conv2", 1.0), ("conv3", 0.5))))
    assert float(score(out.images)) > 1.5 * float(score(jnp.asarray(image)))
    h = np.asarray(out.history)[0]
    assert h[17] > h[12]  # rises within the last octave (steps 12..17)


def test_invert_reduces_the_error_and_a_code_inverts_like_its_image():
    image = photos(1)
    inv = cnnjax.invert(TINY, image, ["conv1", "logits"], steps=60)
    assert inv.layers == ("conv1", "logits") and inv.images.shape == (2, 32, 32, 3)
    assert float(inv.error[0]) < 0.05, inv.error
    assert np.all(np.asarray(inv.history)[:, -1] < np.asarray(inv.history)[:, 0])
    code = jax.jit(TINY.apply)(TINY.params, jnp.asarray(image))["logits"]
    from_code = cnnjax.invert(TINY, code, "logits", steps=60)
    from_image = cnnjax.invert(TINY, image, "logits", steps=60)
    np.testing.assert_allclose(from_code.images, from_image.images, atol=1e-6)


def test_style_transfer_lowers_the_style_loss_blends_and_keeps_colours():
    content, styles = photos(1), photos(2, seed=7)
    kw = dict(content_layer="conv3", style_layers=("conv1", "conv2"), steps=30)
    out = cnnjax.style_transfer(TINY, content, styles, blend=[[1, 0], [0, 1], [0.5, 0.5]], **kw)
    assert out.images.shape == (3, 32, 32, 3)
    assert np.all(np.asarray(out.style_loss) < 0.5 * np.asarray(out.initial_style_loss))
    lbfgs = cnnjax.style_transfer(TINY, content, styles[:1], optimizer="lbfgs", **dict(kw, steps=8))
    assert float(lbfgs.style_loss[0]) < 0.5 * float(lbfgs.initial_style_loss[0])
    kept = cnnjax.style_transfer(TINY, content, styles[:1], preserve_color=True, **kw)
    inside = np.all((np.asarray(kept.images) > 0.01) & (np.asarray(kept.images) < 0.99), axis=-1)
    chroma = np.asarray(to_yiq(kept.images))[..., 1:] - np.asarray(to_yiq(jnp.asarray(content)))[..., 1:]
    assert np.abs(chroma[inside]).max() < 1e-4


def test_fooling_images_by_gradient_and_by_evolution():
    fool = cnnjax.attacks.fooling_images(SHARP, [1, "class_4"], steps=80, size=32, learning_rate=0.05)
    assert np.all(np.asarray(fool.confidence) > 0.9), fool.confidence
    evo = cnnjax.attacks.fooling_images(
        SHARP, [1, 4, 7], method="evolution", steps=30, size=32, population=16
    )
    h = np.asarray(evo.history)
    assert np.all(h[:, -1] > h[:, 0]), h[:, [0, -1]]  # the champions improve
    probs = jax.nn.softmax(SHARP(evo.images)["logits"], axis=-1)
    np.testing.assert_allclose(evo.confidence, probs[np.arange(3), [1, 4, 7]], rtol=1e-5)


def test_fooling_evolution_contract():
    def run(classes, key):
        return cnnjax.attacks.fooling_images(
            SHARP, [int(c) for c in classes], method="evolution", steps=30, size=32, population=16, key=key
        ).images

    # MAP-Elites shares one population between the classes, so they are not independent.
    check_technique_contract(run, jnp.array([1, 4, 7]), jnp.array([2, 5, 8]), independent=False)


# -- hyperparameters are traced: new values compile nothing, a sweep is one program ---------


def test_style_transfer_sweeps_weights_and_learning_rates_in_one_program():
    content, style = photos(1), photos(1, seed=7)
    kw = dict(content_layer="conv3", style_layers=("conv1", "conv2"), steps=6)
    jax.random.key(0)  # the int seed's key, made once per process
    with count_compiles() as first:
        a = cnnjax.style_transfer(
            TINY, content, style, style_weight=[10.0, 30.0], learning_rate=[0.01, 0.05], **kw
        )
    with count_compiles() as second:
        b = cnnjax.style_transfer(
            TINY, content, style, style_weight=[3.0, 100.0], learning_rate=[0.03, 0.002], **kw
        )
    # One set of programs (setup, the chunked loop, finish; compiled now, or already by another
    # test) serves both sweeps.
    assert first.n <= 3 and second.n == 0, (first.names, second.names)
    assert a.images.shape == b.images.shape == (2, 32, 32, 3)
    assert not np.allclose(a.images[0], a.images[1]) and not np.allclose(a.images, b.images)
    # Problem 1 of the sweep is exactly the run of its settings alone (a scalar setting).
    alone = cnnjax.style_transfer(TINY, content, style, style_weight=30.0, learning_rate=0.05, **kw)
    np.testing.assert_allclose(alone.images[0], a.images[1], atol=1e-5)


def test_visualize_sweeps_learning_rates_in_one_program():
    objs = [objectives.channel("conv3", 4)] * 3
    kw = dict(preset="plain", size=32, steps=12)
    jax.random.key(0)  # the int seed's key, made once per process
    with count_compiles() as first:
        a = cnnjax.visualize(TINY, objs, learning_rate=[0.3, 3.0, 30.0], **kw)
    with count_compiles() as second:
        b = cnnjax.visualize(TINY, objs, learning_rate=[0.3, 0.03, 0.003], **kw)
    assert first.n <= 3 and second.n == 0, (first.names, second.names)
    # The same objective from similar starts: a larger learning rate climbs faster.
    gain = np.asarray(a.history)[:, -1] - np.asarray(a.history)[:, 0]
    assert 0 < gain[0] < gain[1] < gain[2], gain
    assert not np.allclose(a.images, b.images)


def test_another_number_of_steps_compiles_nothing():
    """Steps are traced (issue 14): the loop's length is rounded up to a power of two and the
    iterations past a run's end do nothing, so 9 and 13 steps are one program (inversion's
    schedule with traced boundaries: tests/test_synthesis_pieces.py)."""
    objs = [objectives.channel("conv3", 4)] * 2
    kw = dict(preset="plain", size=32)
    short = cnnjax.visualize(TINY, objs, steps=9, **kw)
    content, style = photos(1), photos(1, seed=7)
    st = dict(content_layer="conv3", style_layers=("conv1", "conv2"))
    cnnjax.style_transfer(TINY, content, style, steps=5, **st)
    cnnjax.dream(TINY, content, "conv2", octaves=1, steps=5, jitter=4)
    cnnjax.invert(TINY, content, "conv3", steps=9)
    with count_compiles() as c:
        long = cnnjax.visualize(TINY, objs, steps=13, **kw)
        cnnjax.style_transfer(TINY, content, style, steps=7, **st)
        cnnjax.dream(TINY, content, "conv2", octaves=1, steps=6, jitter=4)
        cnnjax.invert(TINY, content, "conv3", steps=14)  # its schedule's boundaries are traced too
    assert c.n == 0, c.names
    # The same first steps: the longer run's history starts with the shorter run's.
    assert short.history.shape == (2, 9) and long.history.shape == (2, 13)
    np.testing.assert_allclose(np.asarray(long.history)[:, :9], np.asarray(short.history), rtol=1e-6)
    assert not np.allclose(short.images, long.images)


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_is_refused_before_any_work():
    good = photos(1)
    cases = [
        (lambda: cnnjax.visualize(TINY, objectives.channel("nope", 0)), "unknown layer 'nope'"),
        (lambda: cnnjax.visualize(TINY, objectives.channel("conv3", 99)), "it has 16 channels"),
        (lambda: cnnjax.visualize(TINY, objectives.class_logit("clas_1")), "did you mean 'class_1'"),
        (
            lambda: cnnjax.visualize(TINY, [objectives.channel("conv3", 1), objectives.channel("conv2", 1)]),
            "same kind",
        ),
        (lambda: cnnjax.visualize(TINY, objectives.channel("conv3", 1), size=4, transform=None), "smallest"),
        (
            lambda: cnnjax.visualize(TINY, objectives.channel("conv3", 1), steps=0),
            "steps must be an integer in",
        ),
        (
            lambda: cnnjax.dream(TINY, good * np.nan, "conv2"),
            "non-finite",
        ),
        (lambda: cnnjax.dream(TINY, good[0], "conv2"), "NHWC"),
        (lambda: cnnjax.dream(TINY, good, "conv2", octaves=4, octave_scale=2.0), "smallest octave"),
        (lambda: cnnjax.invert(TINY, good * 2, "conv2"), r"values in \[0, 1\]"),
        (lambda: cnnjax.invert(TINY, np.zeros((1, 7)), "logits"), r"code of layer 'logits' shaped \[n, 10\]"),
        (lambda: cnnjax.style_transfer(TINY, good, good, style_layers=("pooled",)), "not spatial"),
        (lambda: cnnjax.style_transfer(TINY, good, good, blend=[1, 2]), "blend must be"),
        (lambda: cnnjax.style_transfer(TINY, good, good, optimizer="sgd"), "optimizer must be"),
        (lambda: cnnjax.attacks.fooling_images(TINY, ["nope"]), "unknown class 'nope'"),
        (lambda: cnnjax.attacks.fooling_images(TINY, [1], method="magic"), "method must be"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


def test_a_diverging_run_says_so():
    # The same program as the "plain" preset run above, with an infinite objective scale.
    with pytest.raises(cnnjax.DivergedError, match="visualize diverged"):
        cnnjax.visualize(TINY, np.inf * objectives.channel("conv3", 8), preset="plain", size=32, steps=12)
