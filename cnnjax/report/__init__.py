"""Pictures and the HTML report: what people would rather look at than read.

Everything here draws with NumPy and Pillow and returns RGB images ``[h, w, 3]`` in [0, 1]
(save them with :func:`cnnjax.save_image`), or writes self-contained HTML.

* :func:`overlay`, :func:`heatmap`, :func:`segmentation_overlay`: saliency maps and segments
  over photos.
* :func:`captioned_grid`, :func:`adversarial_figure`: image grids with captions; the classic
  adversarial-example figure.
* :func:`line_plot`, :func:`training_curves`, :func:`robustness_plot`: curves.
* :class:`Report`, :class:`Section`, :func:`figure`, :func:`table`, :func:`bars`: the HTML.
* :func:`unit_gallery`, :func:`dissection_report`, :func:`unit_figure`, :func:`units_page`,
  :func:`selectivity_table`, :func:`type_chart`: what units mean (top images and segments,
  class selectivity, semantic types per layer).
* :func:`doctor_report`: the page of ``cnnjax doctor``.
* :func:`run_demo`, :class:`DemoContext`, :data:`SECTIONS`: ``cnnjax demo``.
"""

from cnnjax.report._context import DemoContext as DemoContext
from cnnjax.report._demo import SECTIONS as SECTIONS
from cnnjax.report._demo import run_demo as run_demo
from cnnjax.report._doctor import doctor_report as doctor_report
from cnnjax.report._figures import adversarial_figure as adversarial_figure
from cnnjax.report._figures import captioned_grid as captioned_grid
from cnnjax.report._gallery import dissection_report as dissection_report
from cnnjax.report._gallery import unit_gallery as unit_gallery
from cnnjax.report._html import Report as Report
from cnnjax.report._html import Section as Section
from cnnjax.report._html import bars as bars
from cnnjax.report._html import figure as figure
from cnnjax.report._html import png_data_uri as png_data_uri
from cnnjax.report._html import table as table
from cnnjax.report._overlay import heatmap as heatmap
from cnnjax.report._overlay import overlay as overlay
from cnnjax.report._overlay import segmentation_overlay as segmentation_overlay
from cnnjax.report._plots import line_plot as line_plot
from cnnjax.report._plots import robustness_plot as robustness_plot
from cnnjax.report._plots import training_curves as training_curves
from cnnjax.report._units import TYPE_COLOURS as TYPE_COLOURS
from cnnjax.report._units import selectivity_table as selectivity_table
from cnnjax.report._units import type_chart as type_chart
from cnnjax.report._units import unit_figure as unit_figure
from cnnjax.report._units import units_page as units_page

__all__ = [
    "SECTIONS",
    "TYPE_COLOURS",
    "DemoContext",
    "Report",
    "Section",
    "adversarial_figure",
    "bars",
    "captioned_grid",
    "dissection_report",
    "doctor_report",
    "figure",
    "heatmap",
    "line_plot",
    "overlay",
    "png_data_uri",
    "robustness_plot",
    "run_demo",
    "segmentation_overlay",
    "selectivity_table",
    "table",
    "training_curves",
    "type_chart",
    "unit_figure",
    "unit_gallery",
    "units_page",
]
