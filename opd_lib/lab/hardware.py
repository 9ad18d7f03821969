"""Which hub preset this machine's GPU can run, and the memory it is estimated to need.

``plan()`` reads the first CUDA device (name, total memory, compute capability), picks among
``presets.HUB_PRESETS`` the largest preset whose estimated peak (``opd_lib.lab.memory``, for the
given method) fits the card and whose precision the card supports, and returns both with the
estimate. A card of compute capability below 8 (a T4 is 7.5) has no bf16 hardware, so only fp16
presets (``colab-t4``) are offered to it. Without a GPU, ``plan()`` says so and picks nothing;
:func:`estimate_table` then shows what each preset would need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opd_lib.lab.config import Config
from opd_lib.lab.memory import GIB, MemoryEstimate, estimate_for_settings
from opd_lib.lab.presets import HUB_PRESETS

__all__ = ["GPU", "Plan", "detect_gpu", "estimate_table", "pick_preset", "plan"]


@dataclass(frozen=True)
class GPU:
    """A CUDA device: its name, total memory in GiB and compute capability ``(major, minor)``."""

    name: str
    memory_gib: float
    capability: tuple[int, int]

    @property
    def has_bf16(self) -> bool:
        """bf16 tensor cores: Ampere (8.0) and newer."""
        return self.capability >= (8, 0)


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` found: the GPU (``None``: none), the preset picked (``None``: none fits)
    and its estimate."""

    gpu: GPU | None
    preset: str | None
    estimate: MemoryEstimate | None

    def __str__(self) -> str:
        if self.gpu is None:
            return "no GPU found: the hub presets need one (estimates below)"
        head = f"{self.gpu.name}, {self.gpu.memory_gib:.1f} GiB, compute {self.gpu.capability}"
        if self.preset is None:
            return f"{head}: no hub preset fits"
        return f"{head}: preset {self.preset!r}, estimated peak {self.estimate.gib()['total']} GiB"


def detect_gpu(properties: Any = None) -> GPU | None:
    """The first CUDA device, or ``None`` without one. ``properties``: an object with ``name``,
    ``total_memory`` (bytes), ``major`` and ``minor`` (as ``torch.cuda.get_device_properties``
    returns; pass one to test without a GPU)."""
    if properties is None:
        import torch

        if not torch.cuda.is_available():
            return None
        properties = torch.cuda.get_device_properties(0)
    return GPU(properties.name, properties.total_memory / GIB,
               (properties.major, properties.minor))  # fmt: skip


def _usable(settings: dict[str, Any], gpu: GPU) -> bool:
    return gpu.has_bf16 or not settings["precision"].startswith("bf16")


def _estimate(settings: dict[str, Any], method: str) -> MemoryEstimate:
    overhead = settings.get("memory_overhead_gib", Config().memory_overhead_gib)
    return estimate_for_settings(settings | {"method": method, "memory_overhead_gib": overhead})


def pick_preset(
    gpu: GPU, method: str = "opd", presets: dict[str, dict] = HUB_PRESETS
) -> tuple[str | None, MemoryEstimate | None]:
    """The preset for ``gpu`` and its estimate for ``method``: among the presets whose precision
    the card supports and whose estimate (with the CUDA context's overhead) fits its memory, the
    one with the largest ``memory_budget_gib`` within the card's memory, else (a card a little
    smaller than every budget: a T4 reports 14.7 GiB) the smallest budget; ``(None, None)`` if
    none fits."""
    fitting = []
    for name, settings in presets.items():
        estimate = _estimate(settings, method)
        if _usable(settings, gpu) and estimate.total <= gpu.memory_gib * GIB:
            fitting.append((settings["memory_budget_gib"], name, estimate))
    if not fitting:
        return None, None
    within = [f for f in fitting if f[0] <= gpu.memory_gib]
    _, name, estimate = max(within) if within else min(fitting)
    return name, estimate


def plan(method: str = "opd", properties: Any = None) -> Plan:
    """Detect the GPU (:func:`detect_gpu`) and pick its preset (:func:`pick_preset`)."""
    gpu = detect_gpu(properties)
    if gpu is None:
        return Plan(None, None, None)
    return Plan(gpu, *pick_preset(gpu, method))


def estimate_table(method: str = "opd", presets: dict[str, dict] = HUB_PRESETS) -> str:
    """A text table: the estimated components (GiB, with the CUDA context's overhead) of every
    preset for ``method``, the peak and the budget."""
    estimates = {n: _estimate(s, method) for n, s in presets.items()}
    rows = list(next(iter(estimates.values())).gib())
    lines = [f"{method:18}" + "".join(f"{n:>10}" for n in estimates)]
    for row in rows:
        lines.append(f"{row:18}" + "".join(f"{e.gib()[row]:10.2f}" for e in estimates.values()))
    lines.append(f"{'budget':18}" + "".join(f"{presets[n]['memory_budget_gib']:10.1f}"
                                              for n in estimates))  # fmt: skip
    return "\n".join(lines)
