"""Data-parallel training over 8 simulated CPU devices equals training on one device."""

import textwrap

from _devices import run_on_8_devices

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from _training_task import splits, tiny_cnn
    from cnnjax.training import TrainState, fit, make_train_step, momentum_sgd

    (x, y), val, _ = splits()
    model, opt = tiny_cnn(), momentum_sgd(0.05, 0.9)
    mesh = jax.make_mesh((8,), ("data",))
    single = jax.jit(make_train_step(model, opt))
    sharded = jax.jit(make_train_step(model, opt, mesh=mesh))
    s1 = s8 = TrainState(model.params, opt.init(model.params))
    for i in range(5):
        xb, yb, key = x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32], jax.random.key(i)
        s1, m1 = single(s1, xb, yb, key)
        data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        s8, m8 = sharded(s8, jax.device_put(xb, data), jax.device_put(yb, data), key)
        assert abs(float(m1["loss"]) - float(m8["loss"])) < 1e-5
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(model.params))]
    assert any(moved)
    # The whole fit loop runs sharded too, and gives the same parameters.
    kw = dict(epochs=1, batch_size=32, key=0, progress=False)
    r1 = fit(model, (x, y), val, **kw)
    r8 = fit(model, (x, y), val, mesh=mesh, **kw)
    for a, b in zip(jax.tree.leaves(r1.last_params), jax.tree.leaves(r8.last_params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    print("ok")
    """
)


def test_sharded_steps_equal_single_device_steps():
    run_on_8_devices(SCRIPT)
