"""Named configurations.

* ``full``  the lab chapter's committed results on a laptop CPU (one thread per run): a 2-layer
  teacher learns the tagged running sum from scratch and then to recover from broken steps; the
  student starts from that teacher and is made *sloppy* (SFT on traces with a 10 % step error
  that it carries forward), so it has a steady per-step error, the habit of building on its own
  mistakes (its recovery is unlearned), and a retention task (string reversal) to forget. Runs
  are 100 steps, evaluated on the policy's own samples (temperature 1).
* ``tiny``  the same recipe shrunk to seconds: CI, tests and the book's smoke run.
* ``gpu``   ``full`` scaled up for one GPU: wider and deeper models, longer chains, more steps.
* ``hub``   ``Qwen/Qwen3-0.6B`` distilled from ``Qwen/Qwen3-1.7B`` on GSM8K (e.g. in Colab).

``tiny`` and ``gpu`` are written as differences from ``full``, so what changes is visible.
"""

from __future__ import annotations

from typing import Any

from opd_lib.lab.config import Config

__all__ = ["PRESETS", "preset"]

_FULL: dict[str, Any] = dict(
    # task and evaluation
    trace_style="tagged",
    min_len=2,
    max_len=6,
    eval_lengths=(2, 4, 6),
    eval_size=48,
    eval_temperature=1.0,
    retention_min_len=2,
    retention_max_len=4,
    # the pair: teacher from scratch (curriculum, warm-up + cosine), then recovery; sloppy student
    teacher_layers=2,
    teacher_hidden=64,
    student_layers=2,
    student_hidden=64,
    teacher_steps=1200,
    teacher_recovery_steps=1000,
    teacher_perturb=0.5,
    init_curriculum=0.3,
    init_cosine=True,
    init_warmup=100,
    init_batch_size=32,
    student_from_teacher=True,
    student_noise=0.1,
    student_init_steps=600,
    student_init_max_len=6,
    student_init_task_frac=0.5,
    student_init_hint_frac=0.2,
    # the runs
    steps=100,
    batch_size=16,
    micro_batch_size=16,
    group_size=4,
    lr=1e-3,
    eval_every=20,
    checkpoint_every=20,
    threads=1,
)

PRESETS: dict[str, dict[str, Any]] = {
    "full": _FULL,
    "tiny": _FULL
    | dict(
        eval_lengths=(2, 4),
        max_len=4,
        student_init_max_len=4,
        eval_size=8,
        teacher_layers=1,
        teacher_hidden=32,
        student_layers=1,
        student_hidden=32,
        teacher_steps=40,
        teacher_recovery_steps=10,
        student_init_steps=20,
        init_warmup=10,
        init_batch_size=16,
        steps=8,
        batch_size=8,
        micro_batch_size=4,
        eval_every=4,
        checkpoint_every=4,
    ),
    "gpu": _FULL
    | dict(
        device="cuda",
        threads=0,
        max_len=12,
        eval_lengths=(2, 4, 8, 12),
        eval_size=128,
        teacher_layers=4,
        teacher_hidden=128,
        student_layers=4,
        student_hidden=128,
        teacher_steps=4000,
        teacher_recovery_steps=2000,
        student_init_steps=1000,
        student_init_max_len=12,
        init_batch_size=128,
        steps=500,
        batch_size=64,
        micro_batch_size=64,
        eval_every=50,
        checkpoint_every=50,
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
