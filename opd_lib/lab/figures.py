"""The report's figures (PNG): accuracy against steps and FLOPs, and per chain length."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

__all__ = ["accuracy_label", "report_figures"]


def accuracy_label(runs: list[dict]) -> str:
    """What the runs' accuracy is: greedy (eval temperature 0) or sampled at the temperature,
    with the execution noise if any (from each run's ``config.json``; review: never call sampled
    accuracy greedy)."""
    temps = {r.get("eval_temperature") for r in runs}
    noises = {r.get("eval_noise") or 0.0 for r in runs}
    if len(temps) != 1 or None in temps:
        what = "accuracy (evaluation temperature differs or unknown)"
    else:
        t = temps.pop()
        what = "greedy accuracy" if t == 0 else f"accuracy sampled at temperature {t:g}"
    if noises != {0.0}:
        what += f", noise {'/'.join(f'{n:g}' for n in sorted(noises))}"
    return what


def report_figures(runs: list[dict], out: Path) -> list[str]:
    """Draw ``report_acc_steps.png``, ``report_acc_flops.png`` and ``report_acc_length.png``
    into ``out`` from the run summaries of :func:`opd_lib.lab.analysis.report`; returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in runs})
    colors = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    label_y = accuracy_label(runs)
    paths = []
    for xkey, fname, xlabel in (
        ("step", "report_acc_steps.png", "optimizer step"),
        ("flops", "report_acc_flops.png", "FLOPs (estimate)"),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        seen = set()
        for r in runs:
            xs = [e.get(xkey, 0.0) for e in r["evals"]]
            ys = [e["acc"] for e in r["evals"]]
            label = None if r["group"] in seen else r["group"]
            seen.add(r["group"])
            ax.plot(xs, ys, marker="o", ms=3, color=colors[r["group"]], label=label, alpha=0.8)
        if xkey == "flops":
            ax.set_xscale("symlog")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{label_y}\n(mean over chain lengths)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    # accuracy per chain length at the end of each run
    found = (re.fullmatch(r"acc_len(\d+)", k) for r in runs for k in r["final"])
    lengths = sorted({int(m.group(1)) for m in found if m})
    if lengths:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for g in groups:
            members = [r for r in runs if r["group"] == g]
            means = [
                statistics.fmean(m["final"].get(f"acc_len{k}", 0.0) for m in members)
                for k in lengths
            ]
            ax.plot(lengths, means, marker="o", color=colors[g], label=g)
        ax.set_xlabel("chain length (digits)")
        ax.set_ylabel(f"final {label_y}", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "report_acc_length.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths
