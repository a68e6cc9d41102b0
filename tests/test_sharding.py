"""Techniques sharded over 8 simulated CPU devices equal the single-device results (issue 15).

One process, one case per code path: ``pgd`` stands for ``fgsm``, ``fgm`` and ``bim`` (the same
program, other traced settings), ``grad_cam`` for ``grad_cam_plus_plus`` and ``layer_cam`` (the
same function, another static method), ``deletion`` for ``insertion`` (likewise), ``visualize``
for ``fooling_images``' gradient method (which calls it); each case compiles twice, so the suite
pays for every one.
"""

import textwrap

import jax
import numpy as np
import pytest
from _devices import run_on_8_devices

from cnnjax.attacks import fooling_images, pgd
from cnnjax.testing import tiny_cnn

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from cnnjax.attacks import carlini_wagner, lbfgs, pgd
    from cnnjax.saliency import cam, deletion, grad_cam, score_cam
    from cnnjax.testing import tiny_cnn

    model = tiny_cnn()
    images = np.random.default_rng(0).random((5, 32, 32, 3), np.float32)  # 5 images: 3 rows of padding
    mesh = jax.make_mesh((8,), ("data",))
    cases = {
        "pgd": lambda **kw: pgd(model, images, eps=[2 / 255, 8 / 255], steps=3, restarts=2, **kw),
        "lbfgs": lambda **kw: lbfgs(model, images, targets=3, steps=4, search_steps=2, **kw),
        "carlini_wagner": lambda **kw: carlini_wagner(model, images, targets=[3, 7, 1, 0, 2], steps=5,
                                                      search_steps=2, **kw),
        "cam": lambda **kw: (cam(model, images, [1, 4], upsample=True, **kw),),
        "grad_cam": lambda **kw: (grad_cam(model, images, layer="conv2", **kw),),
        "score_cam": lambda **kw: (score_cam(model, images, 2, layer="conv2", **kw),),
    }
    maps = np.asarray(grad_cam(model, images, 2, layer="conv2", upsample=True))
    cases["deletion"] = lambda **kw: deletion(model, images, maps, 2, steps=4, **kw)
    for name, run in cases.items():
        one, many = run(), run(mesh=mesh)
        assert any(np.abs(np.asarray(a)).max() > 0 for a in one if a is not None), name
        for a, b in zip(one, many):
            if a is not None:
                assert a.shape == b.shape, (name, a.shape, b.shape)
                np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                           rtol=1e-5, atol=1e-6, err_msg=name)
        if hasattr(one, "images"):
            assert np.abs(np.asarray(one.images) - images).max() > 1e-3, name  # it attacked
    # The mesh in context (jax.make_mesh's explicit axes) is used as if given.
    with jax.set_mesh(mesh):
        in_context = pgd(model, images, eps=[2 / 255, 8 / 255], steps=3, restarts=2)
        assert float((in_context.images[1] - in_context.images[0]).max()) > 0  # the caller goes on with it
    assert len(in_context.images.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(in_context.images), np.asarray(cases["pgd"]().images), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    # Receptive fields: the effective one splits the images (5, padded to 8, weight 0 in the mean),
    # the empirical one each image's occluded copies (25 for 6x6 patches at stride 6 plus the
    # unoccluded one: 26, padded to 32 over the 8 devices).
    from cnnjax import receptive_field as rf
    for one, many in [(rf.effective(model, ["conv2", "conv3"], images, mesh=m) for m in (None, mesh)),
                      (rf.empirical(model, ["conv2", "conv3"], [1, 4], images, top_k=2, patch=6, stride=6,
                                    restrict=False, mesh=m) for m in (None, mesh))]:  # fmt: skip
        assert one.maps.max() > 0 and one.layers == many.layers
        for field in ("maps", "sizes"):
            np.testing.assert_allclose(getattr(one, field), getattr(many, field), rtol=1e-5, atol=1e-6,
                                       err_msg=field)  # fmt: skip
    # Feature visualisation: 3 targets (padded to 8) x 2 restarts, one learning rate each.
    from cnnjax import objectives
    from cnnjax.synthesis import visualize
    channels = [objectives.channel("conv3", c) for c in (0, 5, 9)]
    one, many = (visualize(model, channels, preset="plain", size=32, steps=6, restarts=2,
                           learning_rate=[0.1, 0.2, 0.3], mesh=m) for m in (None, mesh))
    for a, b in zip(one, many):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg="visualize")
    assert one.images.shape == (3, 32, 32, 3) and one.history.shape == (3, 6)
    # The top-images tally: 21 images in chunks of 6 (rounded up to 8 over the mesh).
    from cnnjax.units import top_images
    many_images = np.random.default_rng(1).random((21, 32, 32, 3), np.float32)
    tallies = [top_images(model, many_images, ["conv2", "conv3"], top_k=4, chunk_size=6, progress=False,
                          mesh=m) for m in (None, mesh)]  # fmt: skip
    for layer in ("conv2", "conv3"):
        np.testing.assert_array_equal(tallies[0].indices[layer], tallies[1].indices[layer])
        np.testing.assert_array_equal(tallies[0].positions[layer], tallies[1].positions[layer])
        np.testing.assert_allclose(tallies[0].scores[layer], tallies[1].scores[layer], rtol=1e-5)
    # Network Dissection on a small Broden-layout set (6 images in chunks of 4, rounded up to 8).
    import tempfile
    from cnnjax.testing import write_broden
    from cnnjax.units import dissect
    data = write_broden(tempfile.mkdtemp(), n=6)
    one, many = (dissect(model, data, ["conv2", "conv3"], quantile=0.05, chunk_size=4, progress=False, mesh=m)
                 for m in (None, mesh))  # fmt: skip
    for layer in ("conv2", "conv3"):
        np.testing.assert_allclose(one.thresholds[layer], many.thresholds[layer], rtol=1e-6)
        np.testing.assert_allclose(one.iou[layer], many.iou[layer], rtol=1e-5, atol=1e-7)
        assert one.iou[layer].max() > 0
    print("ok")
    """
)


def test_attacks_and_saliency_maps_sharded_over_8_devices_equal_one_device():
    run_on_8_devices(SCRIPT)


def test_a_mesh_that_is_not_a_mesh_is_refused_before_any_work():
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        pgd(tiny_cnn(), np.full((1, 32, 32, 3), 0.5, np.float32), eps=2 / 255, mesh=8)
    with pytest.raises(ValueError, match="only method='gradient' runs sharded"):
        fooling_images(tiny_cnn(), [3], method="evolution", mesh=jax.make_mesh((1,), ("data",)))
