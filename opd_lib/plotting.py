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
        label = f"{mode} (two-state chain, exact expectation)"
        ax.plot(steps, curve, color=color, lw=2, label=label)
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


FUSED_COLORS = {"trl": "#7f7f7f", "ours": ON_POLICY, "liger": "#8e6bb8", "naive": OFF_POLICY}


def plot_fused_cost(ax_time: Axes, ax_memory: Axes, data: dict) -> None:
    """Bars of forward+backward time and extra memory per method, from
    ``opd_lib.sim.fused_cost.cost_figure_data``; the memory panel (log scale) marks the floor
    (hidden-state gradient + a few floats per token) and one float32 logits array."""
    cells, methods = data["cells"], data["methods"]
    x, width = np.arange(len(cells)), 0.8 / len(methods)
    for j, method in enumerate(methods):
        offset = x + (j - (len(methods) - 1) / 2) * width
        color = FUSED_COLORS.get(method)
        ax_time.bar(offset, data["time_s"][:, j], width, color=color, label=method)
        memory = np.maximum(data["extra_mib"][:, j], 1.0)  # log scale: under 1 MiB drawn as 1
        ax_memory.bar(offset, memory, width, color=color)
        for i, status in enumerate(row[j] for row in data["status"]):
            if status not in ("ok", "missing"):
                ax_memory.annotate(f"{method}: {status}", (offset[i], 0.03), rotation=90,
                                   xycoords=("data", "axes fraction"), fontsize=7,
                                   ha="center", va="bottom")  # fmt: skip
    for i in x:
        span = [i - 0.45, i + 0.45]
        floor_label = "floor: grad of hidden states [N, H]" if i == 0 else None
        logits_label = "one float32 logits array [N, V]" if i == 0 else None
        ax_memory.plot(span, [data["floor_mib"][i]] * 2, "k-", lw=2, label=floor_label)
        ax_memory.plot(span, [data["logits_mib"][i]] * 2, "k:", lw=1.5, label=logits_label)
    ax_time.set(ylabel="forward + backward, CPU s", xticks=x, xticklabels=cells)
    ax_memory.set(ylabel="peak extra memory (MiB)", yscale="log", xticks=x, xticklabels=cells)
    highest = np.nanmax([np.nanmax(data["extra_mib"], initial=1.0), *data["logits_mib"]])
    ax_memory.set_ylim(top=30 * highest)  # room for the legend above the bars
    ax_memory.tick_params(axis="x", labelsize=8)
    ax_time.legend(fontsize=8)
    ax_memory.legend(fontsize=8, loc="upper left", ncols=2)
