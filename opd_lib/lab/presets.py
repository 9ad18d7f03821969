"""Named configurations: ``tiny`` (CI and the book build: seconds), ``small`` (the chapter's
committed results: a 2-layer teacher that learns the tagged running sum in under two minutes on
one CPU thread, using a chain-length curriculum and warm-up + cosine decay, then short runs per
method), ``full`` (the chapter's tables
on a laptop CPU), ``gpu`` (bigger tiny-Qwen3 pairs, longer chains, one GPU) and ``hub``
(``Qwen/Qwen3-0.6B`` distilled from ``Qwen/Qwen3-1.7B`` on GSM8K, e.g. in Colab)."""

from __future__ import annotations

from typing import Any

from opd_lib.lab.trainer import Config

__all__ = ["PRESETS", "preset"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        trace_style="tagged",
        steps=8,
        min_len=2,
        max_len=4,
        eval_lengths=(2, 4),
        eval_size=8,
        teacher_layers=2,
        teacher_hidden=64,
        student_layers=1,
        student_hidden=32,
        teacher_steps=60,
        student_init_steps=20,
        init_batch_size=16,
        batch_size=8,
        micro_batch_size=4,
        group_size=4,
        lr=3e-3,
        eval_every=4,
        checkpoint_every=4,
        threads=1,
    ),
    "small": dict(
        trace_style="tagged",
        steps=60,
        min_len=2,
        max_len=6,
        eval_lengths=(2, 4, 6),
        eval_size=32,
        teacher_layers=2,
        teacher_hidden=64,
        student_layers=1,
        student_hidden=48,
        teacher_steps=1200,
        teacher_perturb=0.0,
        init_curriculum=0.3,
        init_cosine=True,
        init_warmup=100,
        student_init_steps=200,
        student_init_max_len=6,
        init_batch_size=32,
        batch_size=16,
        micro_batch_size=16,
        group_size=4,
        lr=2e-3,
        eval_every=10,
        checkpoint_every=20,
        threads=1,
    ),
    "full": dict(
        trace_style="tagged",
        steps=150,
        min_len=2,
        max_len=8,
        eval_lengths=(2, 4, 6, 8),
        eval_size=32,
        teacher_layers=3,
        teacher_hidden=96,
        student_layers=1,
        student_hidden=48,
        teacher_steps=1200,
        student_init_steps=300,
        student_init_max_len=4,
        init_batch_size=32,
        batch_size=16,
        micro_batch_size=16,
        lr=2e-3,
        eval_every=25,
        checkpoint_every=25,
        threads=1,
    ),
    "gpu": dict(
        trace_style="tagged",
        device="cuda",
        steps=1000,
        min_len=2,
        max_len=16,
        eval_lengths=(2, 4, 8, 12, 16),
        eval_size=128,
        teacher_layers=6,
        teacher_hidden=256,
        teacher_heads=8,
        student_layers=2,
        student_hidden=128,
        student_heads=4,
        teacher_steps=6000,
        student_init_steps=1000,
        student_init_max_len=6,
        init_batch_size=128,
        batch_size=64,
        micro_batch_size=64,
        lr=1e-3,
        eval_every=100,
        checkpoint_every=100,
    ),
    "hub": dict(
        model="hub",
        task="gsm8k",
        device="cuda",
        dtype="bfloat16",
        retention=False,
        hint="trace",
        steps=100,
        eval_size=128,
        batch_size=8,
        micro_batch_size=2,
        group_size=4,
        max_new_tokens=256,
        lr=1e-6,
        eval_every=25,
        checkpoint_every=25,
    ),
}


def preset(name: str, **overrides: Any) -> Config:
    """The :class:`Config` of preset ``name`` with ``overrides`` applied (validated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return Config(**{**PRESETS[name], **overrides})
