"""cnnjax.transforms as training augmentation: random crops and flips, one draw per image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import transforms


def _images(n=16, h=6, w=5, c=2):
    return jnp.asarray(np.random.default_rng(1).random((n, h, w, c), dtype=np.float32))


def test_random_flip_per_image():
    x, key = _images(), jax.random.key(0)
    flip = transforms.per_image(transforms.random_flip())
    y = flip(key, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(flip(key, y), x)  # flipping twice is the identity
    np.testing.assert_array_equal(flip(key, x), y)  # same key, same output
    flipped = [bool(jnp.all(y[i] == x[i, :, ::-1])) for i in range(len(x))]
    kept = [bool(jnp.all(y[i] == x[i])) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    np.testing.assert_array_equal(jax.jit(flip)(key, x), y)
    one = transforms.random_flip()(key, x)  # without per_image: one coin for the batch
    assert bool(jnp.all(one == x)) or bool(jnp.all(one == x[:, :, ::-1]))


def test_random_crop_per_image():
    x, key = _images(), jax.random.key(1)
    crop = transforms.per_image(transforms.random_crop(2))
    y = crop(key, x)
    assert y.shape == x.shape
    np.testing.assert_array_equal(crop(key, x), y)
    assert not np.array_equal(crop(jax.random.key(2), x), y)
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for i in range(len(x)):  # each output is one 6 x 5 window of its zero-padded image
        windows = {(t, s): padded[i, t : t + 6, s : s + 5] for t in range(5) for s in range(5)}
        hits = [o for o, win in windows.items() if np.array_equal(np.asarray(y[i]), win)]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 1  # the images drew their own offsets
    np.testing.assert_array_equal(transforms.random_crop(0)(key, x), x)
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        transforms.random_crop(-1)


def test_augmentation():
    x, key = _images(8, 28, 28, 1), jax.random.key(3)
    aug = transforms.augmentation(flip=True, crop_pad=4)
    assert aug is transforms.augmentation(flip=True, crop_pad=4)  # cached: one compiled step
    y = aug(key, x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    np.testing.assert_array_equal(aug(key, x), y)
    np.testing.assert_array_equal(jax.jit(aug)(key, x), y)
    assert not np.array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(transforms.augmentation(flip=False, crop_pad=0)(key, x), x)
    assert bool(jnp.all((y >= 0) & (y <= 1)))
