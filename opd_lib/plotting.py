"""Matplotlib drawing shared by the chapters and their Colab widgets.

Functions here only draw what ``opd_lib.sim`` (or another computing module) returns; they never
compute the data themselves. Each takes the ``Axes`` to draw on, so a page can lay out a grid.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap

from opd_lib import bounds
from opd_lib.sim import error_propagation

CORRECT, WRONG = "#4c9f70", "#d9822b"
OFF_POLICY, ON_POLICY = "#c0392b", "#2471a3"


def style() -> None:
    """The book's figure defaults (call once per notebook)."""
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
        }
    )


def plot_rollouts(ax: Axes, wrong: np.ndarray, title: str) -> None:
    """A raster of sampled generations: one row per rollout, orange where a step was a mistake."""
    ax.imshow(
        wrong,
        aspect="auto",
        cmap=ListedColormap([CORRECT, WRONG]),
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set(title=title, xlabel="step t", ylabel="rollout")
    ax.grid(False)


def plot_mistake_curves(ax: Axes, eps: float, T: int, lost_error_rate: float) -> None:
    """Expected cumulative mistakes of the copying and the practising student, with the bounds."""
    steps = np.arange(1, T + 1)
    for mode, color in (("copy", OFF_POLICY), ("practice", ON_POLICY)):
        curve = error_propagation.expected_mistakes(eps, T, mode, lost_error_rate)
        ax.plot(steps, curve, color=color, lw=2, label=f"{mode} (simulated chain, exact)")
    ax.plot(
        steps,
        bounds.dagger_bound_off_policy(eps, steps),
        color=OFF_POLICY,
        ls=":",
        label=r"$\epsilon T(T+1)/2$ bound",
    )
    ax.plot(
        steps,
        bounds.dagger_bound_on_policy(eps, steps),
        color=ON_POLICY,
        ls=":",
        label=r"$\epsilon T$",
    )
    ax.set(
        xlabel="sequence length T",
        ylabel="expected mistakes",
        title=f"eps = {eps:g}, error rate once lost = {lost_error_rate:g}",
    )
    ax.legend(fontsize=8)
