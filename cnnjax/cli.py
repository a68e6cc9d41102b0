"""The ``cnnjax`` command.

    cnnjax classify IMAGE... [--model NAME] [--top-k K]
    cnnjax models [--layers]
    cnnjax train --data fashion-mnist --model fashionnet [--epochs N] ...
    cnnjax evaluate --model fashionnet
    cnnjax visualize (--layer L --units U... | --classes NAME...) [--preset P] [--out FILE]
    cnnjax dream IMAGE [--layers L...] [--out FILE]
    cnnjax invert IMAGE [--layers L...] [--out FILE]
    cnnjax style CONTENT STYLE... [--blend W...] [--preserve-color] [--out FILE]
    cnnjax fool --classes NAME... [--method gradient|evolution] [--out FILE]
    cnnjax attack IMAGE --method fgsm|fgm|bim|pgd|lbfgs|cw [--eps 2/255] [--target CLASS]
    cnnjax demo --out DIR [--full]
    cnnjax cam IMAGE [--classes C... | --top-k K] [--method cam|gradcam|gradcam++|scorecam|layercam]
    cnnjax rf --layer L [--unit U --images DIR]

Flags follow the vocabulary of the library's arguments (README, "Vocabulary"): ``--classes``,
``--layer``/``--layers``, ``--units``, ``--learning-rate``, ``--steps``, ``--key``, ``--top-k``,
``--out``. Bad arguments print a usage message and exit with status 2; a bad file or value
exits with status 1 and a one-line message (never a traceback).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

_CLASSIFY_BATCH = 32  # images per compiled call (bounded memory for long lists)
MAX_PIXELS = 64_000_000  # as cnnjax._src.image_io.MAX_PIXELS (the command line imports nothing heavy)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr and exit 2 (argparse prints the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _model_names():
    from cnnjax.models import list_models

    return list(list_models())


def _cmd_classify(args) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from cnnjax.models import classify, load_model

    model = load_model(args.model)
    spec = model.spec
    k = min(args.top_k, spec.num_classes)
    # Check every file before any model work.
    images = [_load_for(spec, p, args) for p in args.images]
    chunks = range(0, len(images), _CLASSIFY_BATCH)
    for start in tqdm(chunks, desc="classify", unit="batch", disable=len(chunks) < 2, leave=False):
        batch = images[start : start + _CLASSIFY_BATCH]
        probs, idx = classify(model, np.concatenate(batch), top_k=k)
        for path, p_row, i_row in zip(args.images[start:], np.asarray(probs), np.asarray(idx)):
            print(path)
            for p, i in zip(p_row, i_row):
                print(f"  {p:7.2%}  {spec.class_name(int(i))} ({int(i)})")
    return 0


def _cmd_models(args) -> int:
    from cnnjax.models import list_models, load_model

    for name, desc in list_models().items():
        print(f"{name}: {desc}")
        try:
            spec = load_model(name).spec
        except (ValueError, OSError) as e:  # one broken model does not hide the others
            print(f"  unavailable: {e}")
            continue
        if args.layers:
            for layer in spec.layers:
                shape = "x".join(map(str, layer.shape))
                extra = f"  stride {layer.stride}" if layer.stride else ""
                extra += f"  rf {layer.receptive_field}" if layer.receptive_field else ""
                print(f"  {layer.name:<10} {shape:<12}{extra}")
        else:
            print(f"  layers: {', '.join(spec.layer_names)}")
    return 0


def _data_not_found(error) -> ValueError:
    """The command line's one-line version of a data set that was found nowhere."""
    return ValueError(
        f"{error.display} not found (looked in: {'; '.join(error.searched)}); give --data-dir DIR, a "
        "folder holding its IDX files, or --download to fetch it from the official address"
    )


def _cmd_train(args) -> int:
    from cnnjax._src.image_io import save_image
    from cnnjax.report import training_curves
    from cnnjax.training import FashionConfig, train_fashionnet

    drops = tuple(e for e in FashionConfig.lr_drop_epochs if e < args.epochs)
    config = FashionConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.key, optimizer=args.optimizer, lr_drop_epochs=drops)  # fmt: skip
    from cnnjax.data import DataNotFoundError

    try:
        result, manifest = train_fashionnet(args.data_dir, args.out, config, checkpoint_dir=args.checkpoints,
                                            download=args.download, progress=not args.quiet,
                                            overwrite=args.overwrite, restart=args.restart,
                                            instruments=args.instruments)  # fmt: skip
    except DataNotFoundError as e:
        raise _data_not_found(e) from None
    save_image(args.out / "curves.png", training_curves(result.history))
    print(result.message)
    print(f"validation accuracy {manifest['validation_accuracy']:.4f}, "
          f"test accuracy {manifest['test_accuracy']:.4f}")  # fmt: skip
    print(f"wrote {args.out / manifest['file']}, {args.out / 'fashionnet.json'} and the curves "
          f"{args.out / 'curves.png'}; load it with "
          f"cnnjax.load_model('fashionnet', weights_dir='{args.out}')")  # fmt: skip
    return 0


def _cmd_evaluate(args) -> int:
    import numpy as np

    from cnnjax import data
    from cnnjax.models import classify, load_model
    from cnnjax.training import evaluate

    model = load_model(args.model, weights_dir=args.weights)
    try:
        _, test = data.load_fashion_mnist(args.data_dir, download=args.download)
    except data.DataNotFoundError as e:
        raise _data_not_found(e) from None
    loss, acc = evaluate(model, model.params, test.images, test.labels)
    print(f"{args.model} on the Fashion-MNIST test set ({len(test.labels)} images): "
          f"accuracy {acc:.4f}, loss {loss:.4f}")  # fmt: skip
    pred = np.concatenate([np.asarray(classify(model, test.images[i : i + 1000], top_k=1).classes[:, 0])
                           for i in range(0, len(test.labels), 1000)])  # fmt: skip
    for c, name in enumerate(model.spec.class_names):
        mask = test.labels == c
        print(f"  {name:<12} {np.mean(pred[mask] == c):.4f}")
    return 0


def _cmd_doctor(args) -> int:
    from flax import nnx

    from cnnjax import data
    from cnnjax.diagnose import doctor
    from cnnjax.models import FashionNet, fashionnet_model, load_model
    from cnnjax.report import doctor_report

    try:
        train_all, _ = data.load_fashion_mnist(args.data_dir, download=args.download)
    except data.DataNotFoundError as e:
        raise _data_not_found(e) from None
    train, val = data.split_train_val(train_all, 0.1, key=args.key)
    train = (train.images[: args.limit], train.labels[: args.limit])
    val = (val.images[: args.limit // 4 or 1], val.labels[: args.limit // 4 or 1])
    if args.fresh:
        model = fashionnet_model(FashionNet(rngs=nnx.Rngs(args.key)))
    else:
        model = load_model(args.model, weights_dir=args.weights)
    narrower = fashionnet_model(FashionNet(rngs=nnx.Rngs(args.key), widths=(8, 8, 16, 16, 32)))
    what = "a freshly initialised" if args.fresh else "the trained"
    _note(f"doctor: {what} {args.model}, {len(train[1])} training and {len(val[1])} validation images")
    result = doctor(model, train, val, learning_rate=args.learning_rate, batch_size=args.batch_size,
                    l2=args.l2, augment=args.augment, examples=args.examples, steps=args.steps,
                    variants={"4x narrower": narrower}, progress=not args.quiet)  # fmt: skip
    print(result.summary())
    index = doctor_report(args.out, result, val[0], val[1], model.spec.class_names,
                          title=f"cnnjax doctor: {what} {args.model}")  # fmt: skip
    print(f"wrote {index}")
    return 1 if result.status == "fail" else 0


def _note(message: str) -> None:
    """One line on stderr about the long work that starts now."""
    print(message, file=sys.stderr, flush=True)


def _cmd_visualize(args) -> int:
    from cnnjax import objectives
    from cnnjax._src.image_io import save_image
    from cnnjax.models import load_model, probabilities
    from cnnjax.report import captioned_grid
    from cnnjax.synthesis import visualize

    model = load_model(args.model)
    spec = model.spec
    if args.classes:
        targets = [spec.class_index(c) for c in args.classes]  # names checked before any work
        objs = [objectives.class_logit(i) for i in targets]
        captions = [f"{spec.class_name(i)} ({i})" for i in targets]
    else:
        if args.layer is None or not args.units:
            raise ValueError("give --classes, or --layer with --units")
        make = objectives.neuron if args.neuron else objectives.channel
        objs = [make(args.layer, u) for u in args.units]
        captions = [f"{args.layer}:{u}" for u in args.units]
    _note(f"visualize: {len(objs)} targets, preset {args.preset} (minutes on a CPU; Ctrl-C stops it)")
    vis = visualize(model, objs, preset=args.preset, steps=args.steps, size=args.size, restarts=args.restarts,
                    learning_rate=args.learning_rate, key=args.key)  # fmt: skip
    if args.classes:
        probs = probabilities(model, vis.images)
        captions = [f"{c} {float(probs[i, t]):.0%}" for i, (c, t) in enumerate(zip(captions, targets))]
    scale = 2 if vis.images.shape[1] < 100 else 1
    path = save_image(args.out, captioned_grid(vis.images, captions, scale=scale))
    print(f"wrote {path}")
    return 0


def _cmd_dream(args) -> int:
    from cnnjax._src.image_io import save_image
    from cnnjax.models import load_model
    from cnnjax.synthesis import dream

    model = load_model(args.model)
    image = _load_for(model.spec, args.image, args, max_side=args.max_size)
    size = f"{image.shape[2]}x{image.shape[1]}"
    _note(f"dream: {size}, layers {', '.join(args.layers)}, {args.octaves} octaves")
    out = dream(model, image, args.layers, octaves=args.octaves, steps=args.steps,
                learning_rate=args.learning_rate, key=args.key)  # fmt: skip
    print(f"wrote {save_image(args.out, out.images[0])}")
    return 0


def _cmd_invert(args) -> int:
    import numpy as np

    from cnnjax._src.image_io import save_image
    from cnnjax.models import load_model
    from cnnjax.report import captioned_grid
    from cnnjax.synthesis import invert

    model = load_model(args.model)
    image = _load_for(model.spec, args.image, args)
    _note(f"invert: layers {', '.join(args.layers)}, {args.steps} steps")
    inv = invert(model, image, args.layers, steps=args.steps, key=args.key)
    tiles = np.concatenate([image, np.asarray(inv.images)])
    captions = ["photo"] + [f"{name}: error {float(e):.3f}" for name, e in zip(inv.layers, inv.error)]
    print(f"wrote {save_image(args.out, captioned_grid(tiles, captions, cols=len(tiles)))}")
    return 0


def _cmd_style(args) -> int:
    import numpy as np

    from cnnjax._src.image_io import save_image
    from cnnjax.models import load_model
    from cnnjax.synthesis import style_transfer

    model = load_model(args.model)
    content = _load_for(model.spec, args.content, args, size=args.size)
    styles = np.concatenate(
        [_load_for(model.spec, _style_path(p), args, size=args.size) for p in args.styles]
    )
    _note(f"style: {len(args.styles)} style image(s), {args.steps} steps with {args.optimizer}")
    out = style_transfer(model, content, styles, blend=args.blend, steps=args.steps, optimizer=args.optimizer,
                         preserve_color=args.preserve_color, style_weight=args.style_weight,
                         learning_rate=args.learning_rate, key=args.key)  # fmt: skip
    print(f"wrote {save_image(args.out, out.images[0])}")
    print(f"style loss {float(out.initial_style_loss[0]):.4f} -> {float(out.style_loss[0]):.4f}, "
          f"content loss {float(out.content_loss[0]):.4f}")  # fmt: skip
    return 0


def _cmd_fool(args) -> int:
    from cnnjax._src.image_io import save_image
    from cnnjax.attacks import fooling_images
    from cnnjax.models import load_model
    from cnnjax.report import captioned_grid

    model = load_model(args.model)
    spec = model.spec
    classes = [spec.class_index(c) for c in args.classes]  # names checked before any work
    _note(f"fool: {len(classes)} classes by {args.method} (one compiled program)")
    fool = fooling_images(model, classes, method=args.method, steps=args.steps, size=args.size, key=args.key)
    captions = [f"{spec.class_name(c)} {float(p):.1%}" for c, p in zip(classes, fool.confidence)]
    scale = 2 if fool.images.shape[1] < 100 else 1
    path = save_image(args.out, captioned_grid(fool.images, captions, scale=scale))
    for caption in captions:
        print(f"  {caption}")
    print(f"wrote {path}")
    return 0


def _style_path(name: str):
    """A file, or the name of a bundled style image ("ihc", "hubble_deep_field")."""
    from importlib import resources

    from cnnjax._src.samples import SAMPLE_STYLES

    if Path(name).exists():
        return name
    for file in SAMPLE_STYLES:
        if name in (file, file.rsplit(".", 1)[0]):
            with resources.as_file(resources.files("cnnjax").joinpath("assets/styles", file)) as path:
                return path
    return name  # load_image reports the missing file


def _load_for(spec, path, args, *, size=None, max_side: int | None = None):
    """One image file as a batch for the model: the model's evaluation crop (or a square of
    ``size``, or the whole image scaled down to at most ``max_side``), greyscale models getting
    the mean of R, G and B. The file is checked before any model work: one rule for every
    command, an image at least as large as the model's smallest input
    (``spec.min_input_size``) and at most ``--max-pixels``."""
    import jax
    import numpy as np

    from cnnjax._src.image_io import load_image

    load_image = functools.partial(load_image, min_side=spec.min_input_size, max_pixels=args.max_pixels)
    if max_side is not None:
        image = load_image(path)
        h, w = image.shape[1:3]
        if max(h, w) > max_side:
            s = max_side / max(h, w)
            shape = (1, max(1, round(h * s)), max(1, round(w * s)), image.shape[-1])
            image = np.asarray(jax.image.resize(image, shape, "linear")).clip(0.0, 1.0)
    elif size is not None:
        image = load_image(path, size, resize=size)
    else:
        image = load_image(path, spec.input_size, resize=spec.resize_size)
    return image.mean(axis=-1, keepdims=True) if spec.channels == 1 else image


_ATTACKS = {"fgsm": "FGSM", "fgm": "FGM", "bim": "BIM", "pgd": "PGD", "lbfgs": "L-BFGS",
            "cw": "Carlini-Wagner L2"}  # fmt: skip


def _cmd_attack(args) -> int:
    import numpy as np

    from cnnjax import attacks
    from cnnjax._src.image_io import save_image
    from cnnjax.models import classify, load_model
    from cnnjax.report import adversarial_figure

    method = args.method
    minimal = method in ("lbfgs", "cw")  # these minimise the perturbation: no epsilon
    if args.norm != "inf" and method not in ("bim", "pgd"):
        raise ValueError(f"--norm applies to bim and pgd only, not to {method}")
    model = load_model(args.model)
    spec = model.spec
    image = _load_for(spec, args.image, args)
    target = None if args.target is None else spec.class_index(args.target)
    l2 = method == "fgm" or args.norm == "2"
    kwargs = {} if args.steps is None else {"steps": args.steps}
    if minimal:
        about = "minimal L2 perturbation"
        if args.eps is not None:
            raise ValueError(f"{method} minimises the perturbation and takes no --eps")
    else:
        kwargs["eps"] = args.eps if args.eps is not None else (0.5 if l2 else 2 / 255)
        about = f"L2 eps {kwargs['eps']:.4g}" if l2 else f"L-inf eps {kwargs['eps'] * 255:.4g}/255"
    if method in ("bim", "pgd"):
        kwargs["norm"] = args.norm
    if method == "pgd":
        kwargs["key"] = args.key
    about += f", target {spec.class_name(target)} ({target})" if target is not None else ", untargeted"
    fn = {"fgsm": attacks.fgsm, "fgm": attacks.fgm, "bim": attacks.bim, "pgd": attacks.pgd,
          "lbfgs": attacks.lbfgs, "cw": attacks.carlini_wagner}[method]  # fmt: skip

    # The attack checks every argument before any work, and labels the image itself.
    result = fn(model, image, targets=None if target is None else [target], **kwargs)
    probs, idx = classify(model, image)  # the attack's own compiled program for the labels
    label, p0 = int(idx[0, 0]), float(probs[0, 0])
    adv = np.asarray(result.images)
    new, p1 = int(result.predictions[0]), float(result.confidence[0])
    norms = attacks.perturbation_norms(image, adv)
    name0, name1 = f"{spec.class_name(label)} ({label})", f"{spec.class_name(new)} ({new})"
    print(f"original:     {name0} {p0:.2%}")
    print(f"adversarial:  {name1} {p1:.2%} ({'success' if bool(result.success[0]) else 'failed'})")
    print(f"perturbation: L-inf {float(norms.linf[0]) * 255:.3f}/255, L2 {float(norms.l2[0]):.4f}, "
          f"L0 {int(norms.l0[0])} of {image.shape[1] * image.shape[2]} pixels")  # fmt: skip
    fig = adversarial_figure(image[0], adv[0], original_label=name0, original_prob=p0,
                             adversarial_label=name1, adversarial_prob=p1,
                             title=f"{_ATTACKS[method]}, {about}")  # fmt: skip
    print(f"wrote {save_image(args.out, fig)}")
    return 0


def _cmd_demo(args) -> int:
    from cnnjax.report import run_demo

    try:  # the annotation app's section, when its extra is installed
        from cnnjax.app import annotation_section

        extra = [annotation_section]
    except ImportError:
        extra = []
    path = run_demo(
        args.out, model_name=args.model, full=args.full, progress=not args.quiet, extra_sections=extra
    )
    print(f"wrote {path}\nopen it in a browser: file://{path.resolve()}")
    return 0


_CAM_METHODS = ("cam", "gradcam", "gradcam++", "scorecam", "layercam")


def _cmd_cam(args) -> int:
    import numpy as np

    from cnnjax import saliency
    from cnnjax._src.image_io import image_grid, save_image
    from cnnjax._src.targets import check_spatial_layer
    from cnnjax.models import load_model, probabilities
    from cnnjax.report import overlay

    model = load_model(args.model)
    spec = model.spec
    image = _load_for(spec, args.image, args)  # the file is checked before any model work
    layer = check_spatial_layer(spec, args.layer)
    chosen = [spec.class_index(c) for c in args.classes] if args.classes else None
    p = np.asarray(probabilities(model, image))[0]
    top = [int(c) for c in np.argsort(-p, kind="stable")[: min(args.top_k, spec.num_classes)]]
    classes = chosen if chosen is not None else top
    method = {"cam": saliency.cam, "gradcam": saliency.grad_cam, "gradcam++": saliency.grad_cam_plus_plus,
              "scorecam": saliency.score_cam, "layercam": saliency.layer_cam}[args.method]  # fmt: skip
    if args.method == "scorecam":
        n = spec.layer(layer).channels
        print(f"score-cam: {n} masked forward passes at {layer!r}, in one compiled call", file=sys.stderr)
    maps = np.asarray(method(model, image, [classes], layer=layer, upsample=True))[0]
    print(f"{args.image}  ({args.method} at {layer!r})")
    tiles = []
    for c, m in zip(classes, maps):
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        print(f"  {p[c]:7.2%}  {spec.class_name(c)} ({c})  peak at (y={y}, x={x})")
        tiles.append(overlay(image[0], m))
    save_image(args.out, image_grid(np.stack(tiles), cols=min(4, len(tiles))))
    print(f"wrote {args.out}")
    return 0


def _cmd_rf(args) -> int:
    import numpy as np

    from cnnjax import receptive_field as rf
    from cnnjax._src.image_io import save_image
    from cnnjax._src.samples import sample_photos
    from cnnjax._src.targets import check_spatial_layer, check_units
    from cnnjax.data import image_collection
    from cnnjax.models import load_model
    from cnnjax.report import heatmap

    model = load_model(args.model)
    spec = model.spec
    layer = check_spatial_layer(spec, args.layer)
    images = None
    if args.unit is not None:
        check_units(spec, layer, args.unit)
        if args.images is not None:
            collection = image_collection(args.images, max_pixels=args.max_pixels)
            images = collection.read(range(len(collection)), spec)
        else:
            images = np.concatenate(list(sample_photos(spec.input_size[0], spec.resize_size).values()))
            if spec.channels == 1:
                images = images.mean(axis=-1, keepdims=True)
        if args.patch > min(spec.input_size):
            h, w = spec.input_size
            raise ValueError(f"occlusion patch {args.patch}x{args.patch} is larger than the images ({h}x{w})")
    field = rf.theoretical(model)[layer]
    (cy, cx), (h, w) = field.centres, field.shape
    hand = spec.layer(layer).receptive_field
    print(f"{spec.name} {layer} ({h}x{w} positions): theoretical receptive field "
          f"{field.size[0]}x{field.size[1]} pixels, stride {field.stride[0]}x{field.stride[1]}, padding "
          f"{field.padding[0]} top / {field.padding[1]} left"
          + (f" (the spec's hand-derived size: {hand})" if hand else ""))  # fmt: skip
    print(
        f"  position (0, 0): centre ({cy[0]:g}, {cx[0]:g}), pixels {field.box(0, 0)}; "
        f"position ({h - 1}, {w - 1}): centre ({cy[-1]:g}, {cx[-1]:g}), pixels {field.box(h - 1, w - 1)}"
    )
    if images is None:
        return 0
    k = min(args.top_k, len(images))
    emp = rf.empirical(model, layer, args.unit, images, top_k=k, patch=args.patch, stride=args.stride,
                       progress=not args.quiet)  # fmt: skip
    eff = rf.effective(model, layer, images, units=args.unit)
    print(f"  unit {args.unit}: empirical receptive field {emp.sizes[0]:.1f} px (occlusion, top {k} of "
          f"{len(images)} images, {emp.copies[0]} occluded copies); effective {eff.sizes[0]:.1f} px "
          f"(gradient at position {tuple(int(v) for v in eff.positions[0])}); theoretical "
          f"{field.size[0]} px")  # fmt: skip
    save_image(args.out, heatmap(emp.maps[0]))
    print(f"wrote {args.out}")
    return 0


def _collection_for(args, spec):
    """``--data``: the Fashion-MNIST test set, or a folder of images (streamed)."""
    from cnnjax import data

    if args.data == "fashion-mnist":
        try:
            _, test = data.load_fashion_mnist(args.data_dir, download=args.download)
        except data.DataNotFoundError as e:
            raise _data_not_found(e) from None
        return data.image_collection(test)
    folder = Path(args.data)
    if not folder.is_dir():
        raise ValueError(f"--data {args.data} is neither 'fashion-mnist' nor a folder of images")
    return data.image_collection(folder, max_pixels=args.max_pixels)


def _cmd_units(args) -> int:
    from cnnjax._src.targets import check_spatial_layer, check_units
    from cnnjax.models import load_model
    from cnnjax.report import unit_gallery
    from cnnjax.units import top_images

    model = load_model(args.model)
    spec = model.spec
    layers = [check_spatial_layer(spec, layer) for layer in args.layers]
    if args.units is not None:
        for layer in layers:
            check_units(spec, layer, args.units)
    collection = _collection_for(args, spec)
    _note(f"units: {len(collection)} images, layers {', '.join(layers)}, top {args.top_k} per unit")
    top = top_images(model, collection, layers, top_k=args.top_k, reduce=args.reduce, checkpoint_dir=args.out,
                     restart=args.restart, progress=not args.quiet)  # fmt: skip
    index = unit_gallery(args.out, model, collection, top, units=args.units, progress=not args.quiet)
    print(f"wrote {index}, a page and a figure per unit for each layer, top_images.json and top_images.csv")
    return 0


def _cmd_dissect(args) -> int:
    from cnnjax._src.targets import check_spatial_layer
    from cnnjax.data import load_broden
    from cnnjax.models import load_model
    from cnnjax.report import dissection_report
    from cnnjax.units import dissect

    model = load_model(args.model)
    layers = [check_spatial_layer(model.spec, layer) for layer in args.layers]
    concepts = load_broden(args.concepts, split=args.split)  # checked before any work
    _note(f"dissect: {len(concepts)} images, {len(concepts.names) - 1} concepts, layers {', '.join(layers)}")
    result = dissect(model, concepts, layers, quantile=args.quantile, iou_threshold=args.iou_threshold,
                     progress=not args.quiet)  # fmt: skip
    for layer in layers:
        found, units = int(result.detectors[layer].sum()), len(result.detectors[layer])
        print(f"{layer}: {found} of {units} units are detectors")
    index = dissection_report(args.out, result, model_name=model.spec.name)
    print(f"wrote {index}, dissect.json, dissect.csv and types.png")
    return 0


def _cmd_annotate(args) -> int:
    try:
        from cnnjax.app import AnnotationStore, check_port, export_results, prepare_crops, serve
    except ImportError as e:
        raise ValueError(f"the annotation app needs its extra: pip install 'cnnjax[app]' ({e})") from None
    from cnnjax._src.targets import check_spatial_layer, check_units
    from cnnjax.models import load_model

    if args.export is not None:
        if not Path(args.db).is_file():
            raise ValueError(f"no annotation database at {args.db}")
        store = AnnotationStore(args.db)  # another tool's or a newer file is refused, untouched
        print(f"wrote {export_results(store, args.export)}, results.csv and results.html")
        return 0
    if args.layer is None or args.data is None:
        raise ValueError("give --layer and --data (or --export DIR to write the results)")
    check_port(args.host, args.port)
    model = load_model(args.model)
    layer = check_spatial_layer(model.spec, args.layer)
    units = list(range(model.spec.layer(layer).shape[-1])) if args.units is None else args.units
    check_units(model.spec, layer, units)
    collection = _collection_for(args, model.spec)
    store = AnnotationStore(args.db)  # checked before the long work; refused files are left as they are
    crops = prepare_crops(model, collection, layer, units, Path(args.db).parent / "crops", top_k=args.top_k,
                          progress=not args.quiet)  # fmt: skip
    store.add_units(layer, units, args.top_k)
    print(f"annotate {len(units)} units of {model.spec.name} {layer} at http://{args.host}:{args.port}/ "
          "(Ctrl-C stops the server; answers are saved as they come)", flush=True)  # fmt: skip
    serve(store, crops, host=args.host, port=args.port, about=f"{model.spec.name}, layer {layer}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnjax", description="Train CNNs and understand what they learned.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("classify", help="print the top classes of images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="classes per image (5)")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_classify)

    p = sub.add_parser("models", help="list the bundled models and their layers")
    p.add_argument("--layers", action="store_true", help="shapes, strides and receptive fields")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("train", help="train a network (FashionNet on Fashion-MNIST)")
    p.add_argument("--data", choices=["fashion-mnist"], default="fashion-mnist", help="the data set")
    p.add_argument("--model", choices=["fashionnet"], default="fashionnet", help="the architecture")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the data set's files")
    p.add_argument("--download", action="store_true", help="download the data set if it is missing")
    p.add_argument("--epochs", type=_positive_int, default=24)
    p.add_argument(
        "--optimizer",
        choices=["heavy_ball", "notes"],
        default="heavy_ball",
        help="momentum form: optax's heavy ball (default) or the course notes'",
    )
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--learning-rate", type=_positive_float, default=0.05, help="learning rate (0.05)")
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--out", type=Path, default=Path("cnnjax-train"), help="where the weights go")
    p.add_argument("--checkpoints", type=Path, default=None, help="resumable checkpoints here")
    p.add_argument("--restart", action="store_true", help="start afresh even if --checkpoints holds a run")
    p.add_argument("--instruments", action="store_true", help="log gradient norms, update ratios, dead units")
    p.add_argument("--overwrite", action="store_true", help="replace weights already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a trained network")
    p.add_argument("--model", choices=["fashionnet"], default="fashionnet")
    p.add_argument("--weights", type=Path, default=None, help="folder with weights (default: bundled)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the data set's files")
    p.add_argument("--download", action="store_true", help="download the data set if it is missing")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("doctor", help="check a network and its data for the usual reasons it isn't working")
    p.add_argument("--model", choices=["fashionnet"], default="fashionnet", help="the architecture")
    p.add_argument("--weights", type=Path, default=None, help="folder with weights (default: bundled)")
    p.add_argument("--fresh", action="store_true", help="check a freshly initialised network instead")
    p.add_argument("--data", choices=["fashion-mnist"], default="fashion-mnist", help="the data set")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the data set's files")
    p.add_argument("--download", action="store_true", help="download the data set if it is missing")
    p.add_argument("--limit", type=_positive_int, default=4000, help="training images checked (4000)")
    p.add_argument("--learning-rate", type=_positive_float, default=0.05, help="the rate you train with")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="the batch size you train with")
    p.add_argument("--l2", type=_nonnegative_float, default=0.0, help="the L2 penalty you train with")
    p.add_argument("--augment", action="store_true", help="you train with augmentation")
    p.add_argument("--examples", type=_positive_int, default=32, help="examples the short runs fit (32)")
    p.add_argument("--steps", type=_positive_int, default=50, help="steps of each short run (50)")
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--out", type=Path, default=Path("cnnjax-doctor"), help="where the page goes")
    p.add_argument("--overwrite", action="store_true", help="replace a page already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_doctor)

    p = sub.add_parser("visualize", help="images that maximise channels, neurons or classes (a PNG grid)")
    p.add_argument("--layer", help="the layer of --units (see cnnjax models --layers)")
    p.add_argument("--units", type=_nonnegative_int, nargs="+", metavar="U", help="channel indices")
    p.add_argument("--neuron", action="store_true", help="the centre neuron of each unit, not its mean")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names or indices (logits)")
    p.add_argument("--preset", choices=["lucid", "yosinski", "plain"], default="lucid")
    p.add_argument("--steps", type=_positive_int, default=None, help="optimiser steps (preset's)")
    p.add_argument("--size", type=_positive_int, default=None, help="image size (preset's)")
    p.add_argument("--restarts", type=_positive_int, default=1, help="best of R runs per target")
    p.add_argument("--learning-rate", type=_positive_float, default=None, help="the preset's optimiser's")
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("visualize.png"), help="the PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(run=_cmd_visualize)

    p = sub.add_parser("dream", help="DeepDream a photo")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument(
        "--layers", nargs="+", default=["block_6"], metavar="L", help="layers to amplify (block_6)"
    )
    p.add_argument("--octaves", type=_positive_int, default=4)
    p.add_argument("--steps", type=_positive_int, default=10, help="steps per octave (10)")
    p.add_argument("--learning-rate", type=_positive_float, default=1.5, help="grey levels per step (1.5)")
    p.add_argument("--max-size", type=_positive_int, default=512, help="downscale larger photos to this")
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("dream.png"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_dream)

    p = sub.add_parser("invert", help="reconstruct a photo from its code at several layers")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", nargs="+", default=["stem", "block_3", "block_10", "logits"], metavar="L")
    p.add_argument("--steps", type=_positive_int, default=300)
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("invert.png"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_invert)

    p = sub.add_parser("style", help="paint a photo in the style of others")
    p.add_argument("content", metavar="CONTENT")
    p.add_argument(
        "styles", nargs="+", metavar="STYLE", help="style images, or the bundled 'ihc', 'hubble_deep_field'"
    )
    p.add_argument(
        "--blend",
        type=_nonnegative_float,
        nargs="+",
        default=None,
        metavar="W",
        help="one weight per style image",
    )
    p.add_argument("--style-weight", type=_nonnegative_float, default=30.0)
    p.add_argument("--preserve-color", action="store_true", help="transfer luminance only, keep the colours")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam")
    p.add_argument("--learning-rate", type=_positive_float, default=None, help="Adam's (0.01)")
    p.add_argument("--steps", type=_positive_int, default=200)
    p.add_argument("--size", type=_positive_int, default=224)
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("style.png"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_style)

    p = sub.add_parser("fool", help="fooling images: unrecognisable images classified with high confidence")
    p.add_argument("--classes", nargs="+", required=True, metavar="NAME", help="class names or indices")
    p.add_argument("--method", choices=["gradient", "evolution"], default="gradient")
    p.add_argument("--steps", type=_positive_int, default=None, help="steps or generations (100 / 200)")
    p.add_argument("--size", type=_positive_int, default=None, help="image size (the model's)")
    p.add_argument("--key", type=int, default=0, help="random seed (0)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("fool.png"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(run=_cmd_fool)
    p = sub.add_parser("attack", help="fool the model: an adversarial example and its figure")
    p.add_argument("image", metavar="IMAGE", help="an image file (any format Pillow reads)")
    p.add_argument("--method", choices=list(_ATTACKS), default="pgd", help="the attack (pgd)")
    p.add_argument(
        "--eps",
        type=_fraction,
        default=None,
        help="radius in [0, 1] pixel units, fractions allowed: 2/255 (default; L2: 0.5)",
    )
    p.add_argument("--norm", choices=["inf", "2"], default="inf", help="bim and pgd: L-inf or L2 ball")
    p.add_argument("--target", default=None, metavar="CLASS", help="class index or name: a targeted attack")
    p.add_argument("--steps", type=_positive_int, default=None, help="iterations (the attack's default)")
    p.add_argument("--key", type=int, default=0, help="random seed of pgd's random start (0)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=None, help="the figure (default: IMAGE-METHOD.png here)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_attack)

    p = sub.add_parser("demo", help="write an HTML report of what cnnjax can do")
    p.add_argument("--out", type=Path, default=Path("cnnjax-report"), help="output folder")
    # The report is about ImageNet photos: the ImageNet model is the one it works with.
    p.add_argument("--model", default="efficientnet_lite0", choices=["efficientnet_lite0"])
    p.add_argument("--full", action="store_true", help="published settings (slower)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("cam", help="class activation maps of an image, as a heat-map overlay")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--classes", nargs="+", default=None, metavar="C", help="class indices or names")
    which.add_argument("--top-k", type=_positive_int, default=1, metavar="K", help="the top K classes (1)")
    p.add_argument("--method", choices=_CAM_METHODS, default="cam", help="cam (default), gradcam, ...")
    p.add_argument("--layer", default=None, help="the feature layer (default: the last spatial one)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=None, help="the PNG to write (IMAGE_METHOD.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_cam)

    p = sub.add_parser("rf", help="receptive fields of a layer: theoretical, and a unit's empirical one")
    p.add_argument("--layer", required=True, help="a spatial layer")
    p.add_argument("--unit", type=_nonnegative_int, default=None, help="a channel: its empirical field")
    p.add_argument("--images", type=Path, default=None, metavar="DIR", help="candidate images (samples)")
    p.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="images averaged (5)")
    p.add_argument("--patch", type=_positive_int, default=11, help="occluder side in pixels (11)")
    p.add_argument("--stride", type=_positive_int, default=3, help="occluder grid step (3)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=None, help="the empirical field's PNG (rf_LAYER_UNIT.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_rf)

    p = sub.add_parser("units", help="the top images of every unit of layers, segmented (a gallery)")
    p.add_argument("--layers", "--layer", nargs="+", required=True, metavar="L", help="spatial layers")
    p.add_argument("--data", required=True, help="'fashion-mnist' (its test set) or a folder of images")
    p.add_argument("--data-dir", type=Path, default=None, help="where Fashion-MNIST's files are")
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if it is missing")
    p.add_argument("--units", type=_nonnegative_int, nargs="+", default=None, metavar="U",
                   help="units to draw (default: all; every unit is tallied)")  # fmt: skip
    p.add_argument("--top-k", type=_positive_int, default=9, metavar="K", help="images per unit (9)")
    p.add_argument("--reduce", choices=["max", "mean"], default="max", help="a unit's score over positions")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("cnnjax-units"), help="output folder")
    p.add_argument("--restart", action="store_true", help="start afresh instead of resuming --out's tally")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_units)

    p = sub.add_parser("dissect", help="Network Dissection: label units with concepts (Broden layout)")
    p.add_argument("--layers", "--layer", nargs="+", required=True, metavar="L", help="spatial layers")
    p.add_argument("--concepts", type=Path, required=True, metavar="DIR", help="a Broden-layout data set")
    p.add_argument("--split", default=None, help="only the index's rows of this split (e.g. val)")
    p.add_argument("--quantile", type=_positive_float, default=0.005, help="share above a unit's threshold")
    p.add_argument("--iou-threshold", type=_positive_float, default=0.04, help="IoU of a detector (0.04)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--out", type=Path, default=Path("cnnjax-dissect"), help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_cmd_dissect)

    p = sub.add_parser("annotate", help="a local web app where people label units (Zhou et al.'s tasks)")
    p.add_argument("--layer", default=None, help="a spatial layer")
    p.add_argument("--data", default=None, help="'fashion-mnist' (its test set) or a folder of images")
    p.add_argument("--data-dir", type=Path, default=None, help="where Fashion-MNIST's files are")
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if it is missing")
    p.add_argument(
        "--units", type=_nonnegative_int, nargs="+", default=None, metavar="U", help="(default: all)"
    )
    p.add_argument("--top-k", type=_positive_int, default=9, metavar="K", help="images per unit (9)")
    p.add_argument("--model", default="efficientnet_lite0", choices=_model_names())
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1: this machine)")
    p.add_argument("--port", type=_positive_int, default=8000, help="the port (8000)")
    p.add_argument("--db", type=Path, default=Path("cnnjax-annotate/annotations.sqlite"), help="the answers")
    p.add_argument("--export", type=Path, default=None, metavar="DIR", help="write the results here and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _max_pixels_option(p)
    p.set_defaults(run=_cmd_annotate)
    return parser


def _max_pixels_option(p: argparse.ArgumentParser) -> None:
    """``--max-pixels``, for every command that reads image files."""
    p.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse image files with more pixels ({MAX_PIXELS})")  # fmt: skip


def _positive(kind: type, what: str, zero: bool = False):
    """An argparse type: a ``kind`` (int or float) greater than zero (or >= 0 with ``zero``)."""
    adjective = (
        ("non-negative" if zero else "positive")
        if kind is int
        else ("finite non-negative" if zero else "finite positive")
    )

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {adjective} {what}, got {text!r}") from None
        if not (value >= 0 if zero else value > 0) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a {adjective} {what}, got {text!r}")
        return value

    return parse


_positive_int = _positive(int, "integer")
_positive_float = _positive(float, "number")
_nonnegative_int = _positive(int, "integer", zero=True)
_nonnegative_float = _positive(float, "number", zero=True)


def _fraction(text: str) -> float:
    """An argparse type: a non-negative number, written as a decimal or a fraction (``2/255``)."""
    import fractions

    try:
        value = float(fractions.Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction (2/255), got {text!r}") from None
    if value < 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text!r}")
    return value


def _check_outputs(args) -> None:
    """Every path the command will write, checked before any work (``_src/paths.py``): the
    defaults that depend on other arguments are filled in here too."""
    from cnnjax._src.image_io import SAVE_SUFFIXES
    from cnnjax._src.paths import check_output_dir, check_output_file

    overwrite = getattr(args, "overwrite", False)
    if args.command in ("visualize", "dream", "invert", "style", "fool", "attack", "cam", "rf"):
        if args.out is None:
            args.out = _default_out(args)
        if args.out is not None:
            check_output_file(args.out, suffixes=SAVE_SUFFIXES, overwrite=overwrite, what="image")
    elif args.command == "train":
        results = ("fashionnet.json", "curves.png")
        check_output_dir(args.out, results=results, overwrite=overwrite, what="weights folder")
        if args.checkpoints is not None:
            check_output_dir(args.checkpoints, what="checkpoint folder")
    elif args.command == "units":
        results = ("index.html", "top_images.json", "top_images.csv")
        check_output_dir(args.out, results=results, overwrite=overwrite, what="units folder")
    elif args.command == "dissect":
        results = ("index.html", "dissect.json", "dissect.csv", "types.png")
        check_output_dir(args.out, results=results, overwrite=overwrite, what="dissection folder")
    elif args.command == "annotate":
        check_output_file(args.db, suffixes=(".sqlite", ".sqlite3", ".db"), what="annotation database")
        if args.export is not None:
            results = ("results.json", "results.csv", "results.html")
            check_output_dir(args.export, results=results, overwrite=overwrite, what="results folder")
    elif args.command == "doctor":
        check_output_dir(args.out, results=("index.html",), overwrite=overwrite, what="doctor folder")
    elif args.command == "demo":
        results = ("index.html", "results.json")
        check_output_dir(args.out, results=results, overwrite=overwrite, what="report folder")


def _default_out(args):
    stem = Path(getattr(args, "image", "") or "").stem
    if args.command == "attack":
        return Path(f"{stem}-{args.method}.png")
    if args.command == "cam":
        return Path(f"{stem}_{args.method.replace('+', 'p')}.png")
    if args.command == "rf":  # only a unit's empirical field is drawn
        return Path(f"rf_{args.layer}_{args.unit}.png") if args.unit is not None else None
    return Path(f"{args.command}.png")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_outputs(args)
        return args.run(args)
    except BrokenPipeError:  # the reader went away (cnnjax models | head -1): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing at exit raises nothing more
        return 141
    except (ValueError, OSError) as e:
        print(f"cnnjax {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cnnjax {args.command}: interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The ``cnnjax`` command: :func:`main`, then exit. After Ctrl-C it exits at once, without
    waiting for compiled work still running in the background."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
