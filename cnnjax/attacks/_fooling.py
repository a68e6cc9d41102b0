"""Fooling images (Nguyen, Yosinski & Clune, "Deep Neural Networks are Easily Fooled", CVPR
2015): images no human would recognise that the network classifies with high confidence.

Two searches, each one compiled program for any list of classes:

* ``method="gradient"``: gradient ascent on ``log p(class)`` from random noise, in pixel space
  with no prior, so the image stays noise to a human eye (Nguyen et al., section 3.4; the
  same engine as :func:`cnnjax.visualize`, one target per class).
* ``method="evolution"``: MAP-Elites over the classes with a CPPN encoding, as Nguyen et al.
  evolve their ImageNet fooling images: each image is drawn by a small compositional network
  of the pixel coordinates (sines, Gaussians, tanh), so it is smooth, regular pattern rather
  than a photo; the archive keeps the best genome per class; every generation mutates a
  population of champions and lets each offspring replace the champion of any class it
  scores higher on. The whole evolution is one ``lax.scan``, the population one batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cnnjax import param as _param
from cnnjax import priors as _priors
from cnnjax._src.checks import MAX_STEPS, as_key, check_finite_run, check_float, check_int, check_positive_int
from cnnjax._src.contract import Model
from cnnjax._src.targets import class_indices
from cnnjax.objectives import class_log_probability
from cnnjax.synthesis import visualize

__all__ = ["CPPN_WIDTH", "FoolingImagesResult", "cppn_images", "fooling_images"]

#: Hidden units per CPPN layer, and the activation of each layer (Nguyen et al. use sine,
#: Gaussian, sigmoid and linear nodes).
CPPN_WIDTH = 16
_CPPN_ACTIVATIONS = (jnp.sin, lambda h: jnp.exp(-h * h), jnp.tanh, jnp.sin)


class FoolingImagesResult(NamedTuple):
    """What :func:`fooling_images` returns.

    Attributes:
      images: float32 ``[classes, h, w, c]`` in [0, 1], one per class.
      confidence: ``[classes]``, the model's probability for each image's class.
      history: ``[classes, steps]``: the class's probability before each step (gradient) or
        the champion's probability after each generation (evolution).
    """

    images: jax.Array
    confidence: jax.Array
    history: jax.Array


def _cppn_shapes(channels: int) -> list[tuple[int, ...]]:
    dims = [4] + [CPPN_WIDTH] * len(_CPPN_ACTIVATIONS) + [channels]
    return [(a, b) for a, b in zip(dims, dims[1:])]


def _genome_size(channels: int) -> int:
    return sum(a * b + b for a, b in _cppn_shapes(channels))


def cppn_images(genomes: jax.Array, size: tuple[int, int], channels: int = 3) -> jax.Array:
    """Render CPPN genomes ``[p, genome]`` as images ``[p, h, w, channels]`` in (0, 1).

    Each pixel's colour is a fixed-topology network of ``(x, y, r, 1)`` (coordinates in
    [-1, 1], ``r`` the distance from the centre) with sine, Gaussian and tanh layers and a
    sigmoid output; the genome is its weights and biases.
    """
    h, w = size
    ys, xs = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
    coords = jnp.stack([xs, ys, jnp.sqrt(xs * xs + ys * ys), jnp.ones_like(xs)], -1).reshape(-1, 4)

    def one(genome):
        h_ = coords
        offset = 0
        shapes = _cppn_shapes(channels)
        for i, (a, b) in enumerate(shapes):
            weights = genome[offset : offset + a * b].reshape(a, b)
            bias = genome[offset + a * b : offset + a * b + b]
            offset += a * b + b
            h_ = h_ @ weights + bias[None]
            h_ = _CPPN_ACTIVATIONS[i](h_) if i < len(shapes) - 1 else jax.nn.sigmoid(h_)
        return h_.reshape(h, w, channels)

    return jax.vmap(one)(genomes)


@functools.partial(jax.jit, static_argnames=("apply", "size", "channels", "generations", "population"))
def _evolve(apply, params, classes, key, sigma, *, size, channels, generations, population):
    k = classes.shape[0]
    g = _genome_size(channels)

    def fitness(genomes):
        probs = jax.nn.softmax(apply(params, cppn_images(genomes, size, channels))["logits"], axis=-1)
        return probs[:, classes]  # [p, k]

    k_init, k_run = jax.random.split(key)
    genomes = jax.random.normal(k_init, (population, g)) * 1.0
    f = fitness(genomes)
    best = jnp.argmax(f, axis=0)
    archive, scores = genomes[best], f[best, jnp.arange(k)]

    def generation(carry, key):
        archive, scores = carry
        k_parent, k_mask, k_noise = jax.random.split(key, 3)
        parents = archive[jax.random.randint(k_parent, (population,), 0, k)]
        mask = jax.random.bernoulli(k_mask, 0.2, parents.shape)
        children = parents + mask * sigma * jax.random.normal(k_noise, parents.shape)
        f = fitness(children)
        best = jnp.argmax(f, axis=0)
        challenger = f[best, jnp.arange(k)]
        better = challenger > scores
        archive = jnp.where(better[:, None], children[best], archive)
        scores = jnp.where(better, challenger, scores)
        return (archive, scores), scores

    (archive, scores), history = jax.lax.scan(
        generation, (archive, scores), jax.random.split(k_run, generations)
    )
    return cppn_images(archive, size, channels), scores, history.T


def _gradient_optimizer(learning_rate) -> optax.GradientTransformation:
    return optax.chain(optax.adam(learning_rate), _priors.box(-0.5, 0.5))


def fooling_images(
    model: Model,
    classes: Sequence[int | str],
    *,
    method: str = "gradient",
    steps: int | None = None,
    size: int | None = None,
    population: int = 32,
    sigma: float = 0.5,
    learning_rate: float = 0.01,
    key: Any = 0,
    mesh=None,
    dtype=None,
) -> FoolingImagesResult:
    """Images the model classifies as ``classes`` with high confidence that humans would not.

    Args:
      model: a :class:`~cnnjax.Model`.
      classes: class indices or names (names are checked, close matches suggested).
      method: ``"gradient"`` (ascent on log-probability from noise) or ``"evolution"``
        (MAP-Elites over the classes with CPPN-encoded images).
      steps: gradient steps (default 100) or generations (default 200).
      size: image side (default: the model's input size).
      population: offspring per generation (evolution).
      sigma: mutation scale of the genomes (evolution; 20% of genes mutate per child).
      learning_rate: Adam's learning rate in pixel units (gradient; traced, as ``sigma``).
      key: an int seed or a PRNG key.
      mesh: a ``jax.sharding.Mesh`` over whose first axis the classes are split (the gradient
        method, as :func:`~cnnjax.synthesis.visualize`); the evolution does not take one yet.
      dtype: the model's arithmetic (:meth:`cnnjax.Model.astype`): None (float32) or
        ``jnp.bfloat16`` on a GPU or TPU; the images and the optimiser's state stay float32.

    Returns:
      :class:`FoolingImagesResult` ``(images, confidence, history)``.

    Example:
      >>> from cnnjax.testing import tiny_cnn
      >>> fool = fooling_images(tiny_cnn(), [3, 7], steps=8)
      >>> fool.images.shape, fool.confidence.shape, fool.history.shape
      ((2, 32, 32, 3), (2,), (2, 8))
    """
    model = model if dtype is None else model.astype(dtype)
    spec = model.spec
    indices = class_indices(spec, classes).reshape(-1)
    size = check_int(spec.input_size[0] if size is None else size, "size", lo=spec.min_input_size)
    if mesh is not None and method != "gradient":
        raise ValueError(f"mesh: only method='gradient' runs sharded, got method={method!r}")
    if method == "gradient":
        steps = check_positive_int(100 if steps is None else steps, "steps", hi=MAX_STEPS)
        # Uniform-looking noise: a wide Gaussian around grey, clipped. The objective is
        # log p(class) of the untransformed image, so its final value is the confidence.
        vis = visualize(
            model,
            [class_log_probability(int(i)) for i in indices],
            preset="plain",
            steps=steps,
            param=_param.pixel(size, 1, spec.channels, sd=0.25),
            transform=None,
            optimizer=_gradient_optimizer,
            learning_rate=learning_rate,
            key=key,
            mesh=mesh,
        )
        return FoolingImagesResult(vis.images, jnp.exp(vis.scores[:, 0]), jnp.exp(vis.history))
    if method == "evolution":
        steps = check_positive_int(200 if steps is None else steps, "steps", hi=MAX_STEPS)
        population = check_positive_int(population, "population")
        sigma = check_float(sigma, "sigma", lo=0.0, lo_open=True)
        images, confidence, history = _evolve(
            model.apply,
            model.params,
            jnp.asarray(indices, jnp.int32),
            as_key(key),
            jnp.float32(sigma),
            size=(size, size),
            channels=spec.channels,
            generations=steps,
            population=population,
        )
        check_finite_run("fooling_images", images, history)
        return FoolingImagesResult(images, confidence, history)
    raise ValueError(f"method must be 'gradient' or 'evolution', got {method!r}")
