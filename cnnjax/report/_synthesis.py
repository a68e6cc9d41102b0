"""Demo sections for input synthesis: class visualisations, DeepDream, inversion, style.

The quick settings (:data:`QUICK`) are also what the test suite checks on the bundled model,
so the report shows exactly what the tests measure; ``full=True`` uses the published settings.
"""

from __future__ import annotations

from html import escape

import jax
import numpy as np

from cnnjax import objectives
from cnnjax._src.samples import sample_photos, sample_styles
from cnnjax.attacks import fooling_images
from cnnjax.models import probabilities
from cnnjax.report._context import DemoContext
from cnnjax.report._figures import captioned_grid
from cnnjax.report._html import Section, figure, table
from cnnjax.synthesis import dream, invert, style_transfer, visualize

__all__ = [
    "QUICK",
    "FULL",
    "CLASSES",
    "visualize_section",
    "dream_section",
    "invert_section",
    "style_section",
    "fooling_section",
]

#: Ten ImageNet classes with distinctive shapes, colours or textures.
CLASSES = (
    "goldfish",
    "flamingo",
    "jellyfish",
    "strawberry",
    "lemon",
    "pizza",
    "volcano",
    "daisy",
    "zebra",
    "espresso",
)

INVERT_LAYERS = ("stem", "block_3", "block_10", "logits")

QUICK = {
    "visualize": {"steps": 32, "size": 128},
    "dream": {"photo": "chelsea.png", "max_side": 300, "layers": ("block_6",), "octaves": 3, "steps": 10},
    "invert": {"photo": "coffee.png", "size": 128, "layers": INVERT_LAYERS, "steps": 100},
    "style": {"photo": "chelsea.png", "style": "ihc.png", "size": 160, "steps": 100},
    "fool": {"size": 128, "steps": 30, "generations": 0, "evolved_classes": 0},  # evolution: --full
}
FULL = {
    "visualize": {"steps": 512, "size": 128},
    "dream": {"photo": "chelsea.png", "max_side": 451, "layers": ("block_6",), "octaves": 4, "steps": 10},
    "invert": {"photo": "coffee.png", "size": 224, "layers": INVERT_LAYERS, "steps": 300},
    "style": {"photo": "chelsea.png", "style": "ihc.png", "size": 224, "steps": 200},
    "fool": {"size": 224, "steps": 100, "generations": 1000, "evolved_classes": 10},
}


def _settings(ctx: DemoContext, name: str) -> dict:
    return (FULL if ctx.full else QUICK)[name]


def class_visualizations(model, settings):
    """The CLASSES visualised with the lucid preset, and their own-class probabilities."""
    targets = [model.spec.class_index(c) for c in CLASSES]
    vis = visualize(model, [objectives.class_logit(i) for i in targets], **settings)
    probs = np.asarray(probabilities(model, vis.images))
    return vis, probs[np.arange(len(targets)), targets]


def visualize_section(ctx: DemoContext) -> Section:
    s = _settings(ctx, "visualize")
    vis, p = class_visualizations(ctx.model, s)
    ctx.results["visualize"] = {
        **s,
        "classes": list(CLASSES),
        "own_class_probability": [round(float(q), 4) for q in p],
    }
    captions = [f"{c} {q:.0%}" for c, q in zip(CLASSES, p)]
    body = (
        f"<p>Activation maximisation (<code>cnnjax.visualize</code>, preset <code>lucid</code>: Fourier "
        f"parameterization with decorrelated colour, Adam 0.05, random pad/jitter/scale/rotate): the input "
        f"that maximises each class logit, {s['size']} px, {s['steps']} steps, all ten classes in one "
        f"compiled program. Under each image: the probability the model gives its class for it "
        f"({int(np.sum(p > 0.9))} of {len(p)} above 90%).</p>"
        + figure(
            captioned_grid(vis.images, captions, cols=5), "Class visualisations", width=5 * s["size"] + 20
        )
    )
    return Section("Activation maximisation", body)


def dream_section(ctx: DemoContext) -> Section:
    s = _settings(ctx, "dream")
    photo = sample_photos(size=None)[s["photo"]]
    h, w = photo.shape[1:3]
    scale = min(1.0, s["max_side"] / max(h, w))
    photo = np.asarray(jax.image.resize(photo, (1, round(h * scale), round(w * scale), 3), "linear")).clip(
        0, 1
    )
    out = dream(ctx.model, photo, s["layers"], octaves=s["octaves"], steps=s["steps"])
    h = np.asarray(out.history)[0]
    ctx.results["dream"] = {
        **s,
        "size": list(photo.shape[1:3]),
        "objective_first_step": round(float(h[0]), 4),
        "objective_last_step": round(float(h[-1]), 4),
    }
    body = (
        f"<p>DeepDream (<code>cnnjax.dream</code>) of {escape(s['photo'])} at "
        f"{photo.shape[2]}x{photo.shape[1]}: "
        f"gradient ascent on the mean squared activation of <code>{', '.join(s['layers'])}</code>, "
        f"{s['octaves']} octaves of {s['steps']} steps (scale 1.4, step 1.5 grey levels over the mean "
        f"absolute gradient, random shifts of up to 32 px), the detail carried from octave to octave.</p>"
        + figure(
            np.concatenate([photo[0], np.asarray(out.images[0])], axis=1),
            "The photo and its dream",
            width=2 * photo.shape[2],
        )
    )
    return Section("DeepDream", body)


def photo_inversion(model, settings):
    photo = sample_photos(settings["size"], settings["size"])[settings["photo"]]
    return photo, invert(model, photo, settings["layers"], steps=settings["steps"])


def invert_section(ctx: DemoContext) -> Section:
    s = _settings(ctx, "invert")
    photo, inv = photo_inversion(ctx.model, s)
    probs = np.asarray(probabilities(ctx.model, np.concatenate([photo, inv.images])))
    top = probs.argmax(-1)
    ctx.results["invert"] = {
        **s,
        "error": [round(float(e), 5) for e in inv.error],
        "photo_top1": int(top[0]),
        "top1": [int(t) for t in top[1:]],
    }
    name = ctx.model.spec.class_name
    captions = [f"photo: {name(int(top[0]))}"] + [
        f"{layer}: {float(e):.3f}" for layer, e in zip(inv.layers, inv.error)
    ]
    rows = [
        (layer, f"{float(e):.4f}", f"{name(int(t))} ({p[t]:.0%})")
        for layer, e, t, p in zip(inv.layers, inv.error, top[1:], probs[1:])
    ]
    body = (
        f"<p>Inversion (<code>cnnjax.invert</code>, Mahendran &amp; Vedaldi 2015): from noise, the image "
        f"whose "
        f"code at each layer matches the photo's, with an alpha-norm (alpha 6) and a total-variation prior "
        f"that grows with depth; {s['steps']} steps of momentum, all layers in one compiled program. Under "
        f"each reconstruction: its normalised error ||Phi(x) - Phi0||^2 / ||Phi0||^2.</p>"
        + figure(
            captioned_grid(np.concatenate([photo, np.asarray(inv.images)]), captions, cols=len(captions)),
            "The photo and its reconstructions",
            width=230 * len(captions),
        )
        + table(["layer", "normalised error", "top-1 of the reconstruction"], rows)
    )
    return Section("Inversion", body)


def photo_stylized(model, settings, **kwargs):
    size = settings["size"]
    content = sample_photos(size, size)[settings["photo"]]
    style = sample_styles(size)[settings["style"]]
    return content, style, style_transfer(model, content, style, steps=settings["steps"], **kwargs)


def style_section(ctx: DemoContext) -> Section:
    s = _settings(ctx, "style")
    content, style, out = photo_stylized(ctx.model, s)
    ctx.results["style"] = {
        **s,
        "initial_style_loss": round(float(out.initial_style_loss[0]), 5),
        "style_loss": round(float(out.style_loss[0]), 5),
        "content_loss": round(float(out.content_loss[0]), 5),
    }
    body = (
        f"<p>Style transfer (<code>cnnjax.style_transfer</code>, Gatys et al.): the content of "
        f"{escape(s['photo'])} at <code>block_10</code>, the Gram matrices of {escape(s['style'])} at "
        f"<code>block_0, block_2, block_4, block_10</code>, activations smoothed by a softmax (after Wang et "
        f"al. 2021, which makes non-VGG networks transfer style), Adam, {s['steps']} steps, {s['size']} px. "
        f"Style loss {float(out.initial_style_loss[0]):.3f} &rarr; {float(out.style_loss[0]):.4f} "
        f"({float(out.initial_style_loss[0] / out.style_loss[0]):.1f}x lower), content loss "
        f"{float(out.content_loss[0]):.3f} (both relative to their targets).</p>"
        + figure(
            captioned_grid(
                np.concatenate([content, style, np.asarray(out.images)]),
                ["content", "style", "result"],
                cols=3,
            ),
            "Content, style and result",
            width=3 * s["size"] + 20,
        )
    )
    return Section("Style transfer", body)


def fooling_section(ctx: DemoContext) -> Section:
    s = _settings(ctx, "fool")
    grad = fooling_images(ctx.model, CLASSES, method="gradient", steps=s["steps"], size=s["size"])
    g = np.asarray(grad.confidence)
    ctx.results["fool"] = {
        **s,
        "classes": list(CLASSES),
        "gradient_confidence": [round(float(q), 5) for q in g],
    }
    body = (
        f"<p>Fooling images (<code>cnnjax.attacks.fooling_images</code>, Nguyen et al. 2015): images no "
        f"person would call a goldfish or a volcano that the model classifies as one. Gradient ascent "
        f"on the log-probability from noise, {s['steps']} Adam steps in pixel space with no prior, "
        f"{int(np.sum(g >= 0.99))} of {len(g)} at 99% confidence or more.</p>"
        + figure(
            captioned_grid(grad.images, [f"{c} {q:.1%}" for c, q in zip(CLASSES, g)], cols=5),
            "Gradient ascent from noise",
            width=5 * s["size"] + 20,
        )
    )
    if not s["generations"]:
        body += "<p>With <code>--full</code>: the classes evolved by MAP-Elites with CPPN-encoded images.</p>"
        return Section("Fooling images", body)
    evolved_classes = CLASSES[: s["evolved_classes"]]
    evo = fooling_images(
        ctx.model, evolved_classes, method="evolution", steps=s["generations"], size=s["size"]
    )
    e = np.asarray(evo.confidence)
    ctx.results["fool"].update(
        evolved_classes=list(evolved_classes), evolution_confidence=[round(float(c), 5) for c in e]
    )
    body += (
        f"<p>MAP-Elites with CPPN-encoded images (smooth patterns drawn by a small network of the pixel "
        f"coordinates), {s['generations']} generations of 32 offspring, the evolution of all classes one "
        f"compiled program; Nguyen et al. ran thousands of generations.</p>"
        + figure(
            captioned_grid(
                evo.images, [f"{c} {q:.1%}" for c, q in zip(evolved_classes, e)], cols=len(evolved_classes)
            ),
            "Evolved (CPPN)",
            width=len(evolved_classes) * s["size"] + 20,
        )
    )
    return Section("Fooling images", body)
