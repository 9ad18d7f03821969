"""Kernel-free figures with several controls, and a play button: Chapters 1, 5 and 8.

The name the chapters import. The machinery (:class:`Knob`, :func:`grid_figure`,
:func:`rounded_line`) is in :mod:`opd_lib.slider_grid`, which explains how the controls combine;
the builders (:func:`drift_figure` for Chapter 1, :func:`reward_extrapolation_figure` for
Chapter 5, :func:`pipeline_figure` for Chapter 8) are in :mod:`opd_lib.live_figures`.
"""

from opd_lib.live_figures import drift_figure, pipeline_figure, reward_extrapolation_figure
from opd_lib.slider_grid import Knob, grid_figure, rounded_line

__all__ = [
    "drift_figure",
    "grid_figure",
    "Knob",
    "pipeline_figure",
    "reward_extrapolation_figure",
    "rounded_line",
]
