"""Synthesis: the input a network wants to see.

Four techniques optimise an image on one engine: a parameterization (:mod:`cnnjax.param`),
random transforms (:mod:`cnnjax.transforms`), priors (:mod:`cnnjax.priors`,
:mod:`cnnjax.losses`), an optax optimizer and a ``lax.scan`` loop, under one jit. A batch of
targets is one compiled program: every target (and restart) has its own optimizer state and
random transforms, and the network runs once per step on all of them. Learning rates and loss
weights are array arguments: new values never recompile, and a sweep is one program.

* :func:`visualize`: activation maximisation (presets ``"lucid"``, ``"yosinski"``, ``"plain"``);
  :func:`bytes_per_target` is what a target counts against its ``memory_budget``.
* :func:`dream`: DeepDream with octaves.
* :func:`invert`: reconstruct an image from its code (Mahendran & Vedaldi 2015).
* :func:`style_transfer`: Gram-matrix style transfer (Gatys et al.).
"""

from cnnjax.synthesis._dream import DreamResult as DreamResult
from cnnjax.synthesis._dream import dream as dream
from cnnjax.synthesis._invert import InvertResult as InvertResult
from cnnjax.synthesis._invert import invert as invert
from cnnjax.synthesis._invert import tv_weight as tv_weight
from cnnjax.synthesis._style import StyleTransferResult as StyleTransferResult
from cnnjax.synthesis._style import default_layers as default_layers
from cnnjax.synthesis._style import luminance as luminance
from cnnjax.synthesis._style import style_transfer as style_transfer
from cnnjax.synthesis._visualize import PRESETS as PRESETS
from cnnjax.synthesis._visualize import Preset as Preset
from cnnjax.synthesis._visualize import VisualizeResult as VisualizeResult
from cnnjax.synthesis._visualize import bytes_per_target as bytes_per_target
from cnnjax.synthesis._visualize import get_preset as get_preset
from cnnjax.synthesis._visualize import visualize as visualize

__all__ = [
    "PRESETS",
    "DreamResult",
    "InvertResult",
    "Preset",
    "StyleTransferResult",
    "VisualizeResult",
    "bytes_per_target",
    "default_layers",
    "dream",
    "get_preset",
    "invert",
    "luminance",
    "style_transfer",
    "tv_weight",
    "visualize",
]
