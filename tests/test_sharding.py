"""Techniques sharded over 8 simulated CPU devices equal the single-device results (issue 15)."""

import textwrap

import numpy as np
import pytest
from _devices import run_on_8_devices

from cnnjax.attacks import pgd
from cnnjax.testing import tiny_cnn

ATTACKS = textwrap.dedent(
    """
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from cnnjax.attacks import bim, fgsm, pgd
    from cnnjax.testing import tiny_cnn

    model = tiny_cnn()
    images = np.random.default_rng(0).random((5, 32, 32, 3), np.float32)  # 5 images: 3 rows of padding
    mesh = jax.make_mesh((8,), ("data",))
    cases = {
        "pgd": lambda **kw: pgd(model, images, eps=[2 / 255, 8 / 255], steps=3, restarts=2, **kw),
        "bim": lambda **kw: bim(model, images, [1, 2, 3, 4, 5], eps=4 / 255, steps=3, early_stop=False, **kw),
        "fgsm": lambda **kw: fgsm(model, images, targets=7, eps=8 / 255, **kw),
    }
    for name, run in cases.items():
        one, many = run(), run(mesh=mesh)
        for a, b in zip(one, many):
            if a is not None:
                assert a.shape == b.shape, (name, a.shape, b.shape)
                np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                           rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(np.asarray(one.images) - images).max() > 1e-3, name  # it attacked
    print("ok")
    """
)


def test_attacks_sharded_over_8_devices_equal_one_device():
    run_on_8_devices(ATTACKS)


def test_a_mesh_that_is_not_a_mesh_is_refused_before_any_work():
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        pgd(tiny_cnn(), np.full((1, 32, 32, 3), 0.5, np.float32), eps=2 / 255, mesh=8)
