"""Picking the hub preset from the GPU, with fake device properties (no GPU needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from opd_lib.lab.hardware import GPU, detect_gpu, estimate_table, pick_preset, plan
from opd_lib.lab.memory import GIB
from opd_lib.lab.presets import HUB_PRESETS

# total_memory as torch reports it (a 16 GB T4 shows 14.7 GiB, an A100-40GB 39.4 GiB)
T4 = SimpleNamespace(name="Tesla T4", total_memory=15_828_320_256, major=7, minor=5)
A100_40 = SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=42_298_834_944, major=8,
                          minor=0)  # fmt: skip
H100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=85_045_395_456, major=9, minor=0)
SMALL = SimpleNamespace(name="a 4 GB card", total_memory=4 * GIB, major=8, minor=6)


@pytest.mark.parametrize(
    "props, name", [(T4, "colab-t4"), (A100_40, "a100"), (H100, "h100"), (SMALL, None)]
)
def test_each_card_gets_its_preset(props, name):
    found = plan("opd", props)
    assert found.gpu == detect_gpu(props) and found.preset == name
    if name is None:
        assert found.estimate is None and "no hub preset fits" in str(found)
    else:  # the estimate fits the card and the preset's own budget
        total = found.estimate.total
        assert (
            total <= found.gpu.memory_gib * GIB
            and total <= HUB_PRESETS[name]["memory_budget_gib"] * GIB
        )
        assert name in str(found) and f"{found.gpu.memory_gib:.1f} GiB" in str(found)


def test_a_card_without_bf16_is_only_offered_fp16():
    """A 40 GB card of compute capability 7.0 (V100-like) fits the a100 estimate but has no bf16
    hardware: it gets the fp16 preset."""
    volta = GPU("V100-like", 39.4, (7, 0))
    assert not volta.has_bf16 and GPU("A100", 39.4, (8, 0)).has_bf16
    name, estimate = pick_preset(volta)
    assert name == "colab-t4" and HUB_PRESETS[name]["precision"] == "fp16-amp"


def test_rl_needs_more_and_the_table_shows_every_preset():
    for gpu in (detect_gpu(A100_40), detect_gpu(H100)):
        assert pick_preset(gpu, "rl")[1].total > pick_preset(gpu, "opd")[1].total
    table = estimate_table("opd").splitlines()
    assert table[0].split() == ["opd", *HUB_PRESETS]
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in table[1:]}
    assert rows["budget"] == [p["memory_budget_gib"] for p in HUB_PRESETS.values()]
    assert all(t <= b for t, b in zip(rows["total"], rows["budget"], strict=True))
    parts = [k for k in rows if k not in ("total", "budget")]
    for i in range(len(HUB_PRESETS)):  # the peak: static parts + the largest phase's parts
        assert rows["total"][i] <= sum(rows[k][i] for k in parts) + 0.05


def test_no_gpu_here_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    found = plan()
    assert found.gpu is None and found.preset is None and "no GPU" in str(found)
