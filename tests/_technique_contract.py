"""The contract every technique passes (DESIGN.md): one compiled program, vmapped over targets.

``check_technique_contract(run, targets_a, targets_b)`` takes ``run(targets, key) -> images``
(or a tuple whose first element is the images), where ``targets`` is a pytree of arrays with a
leading target axis, and checks that

* the images are float32, finite, in [0, 1], one per target;
* a second call with new targets of the same shapes compiles nothing;
* the same key gives the same images, bit for bit;
* (``independent=True``) changing one target leaves the other targets' images unchanged,
  so the batch really is a vmap over independent targets;
* (``random=True``) another key gives other images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax._src.testing import count_compiles


def _images(out):
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def check_technique_contract(run, targets_a, targets_b, *, independent=True, random=True, atol=1e-5):
    key0, key1 = jax.random.key(0), jax.random.key(1)
    n = len(jax.tree.leaves(targets_a)[0])
    a = _images(run(targets_a, key0))
    assert a.dtype == np.float32, a.dtype
    assert a.shape[0] == n, (a.shape, n)
    assert np.all(np.isfinite(a)), "non-finite images"
    assert a.min() >= 0.0 and a.max() <= 1.0, (a.min(), a.max())

    # New target values, same shapes: nothing compiles (inputs are built before counting).
    targets_b = jax.tree.map(jnp.asarray, targets_b)
    jax.block_until_ready(targets_b)
    with count_compiles() as compiles:
        b = _images(run(targets_b, key0))
    assert compiles.n == 0, f"a new target recompiled ({compiles.n} compilations)"
    assert not np.array_equal(a, b), "the targets do not change the result"

    again = _images(run(targets_a, key0))
    np.testing.assert_array_equal(a, again, err_msg="same key, different images")

    if random:
        other = _images(run(targets_a, key1))
        assert not np.array_equal(a, other), "the key does not change the result"

    if independent and n > 1:
        mixed = jax.tree.map(lambda x, y: jnp.asarray(x).at[0].set(jnp.asarray(y)[0]), targets_a, targets_b)
        m = _images(run(mixed, key0))
        np.testing.assert_allclose(m[1:], a[1:], atol=atol, err_msg="targets are coupled")
    return a
