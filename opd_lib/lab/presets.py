"""Named configurations.

* ``full``  the lab chapter's committed results on a laptop CPU (one thread per run): a 2-layer
  teacher learns the tagged running sum from scratch and then to recover from broken steps; the
  student starts from that teacher and is made *sloppy* (SFT on traces with a 10 % step error
  that it carries forward, so its recovery is unlearned), learns a retention task (string
  reversal) to forget, and half its warm-up chains come with the hint (the clean trace in the
  prompt; half of those broken at one step and recovered after) so that its hinted self can
  teach in OPSD. Runs are short; evaluation is greedy under execution noise (a written digit
  replaced with probability 0.1, :mod:`opd_lib.lab.noise`), 96 prompts per chain length 2-6.
  Sized so that ``python -m opd_lib.lab experiments --preset full`` regenerates everything,
  pair included, in about 15-20 minutes on two CPU cores (``results/lab/full/README.md``).
* ``tiny``  the same recipe shrunk to seconds: CI, tests and the book's smoke run.
* ``gpu``   ``full`` scaled up for one GPU: wider and deeper models, longer chains, more steps.
* ``colab-t4``, ``a100``, ``h100``: ``Qwen/Qwen3-0.6B`` distilled from ``Qwen/Qwen3-1.7B`` on
  GSM8K, each sized by :func:`opd_lib.lab.memory.estimate_for_settings` to fit its card (``hub``
  is an alias of ``colab-t4``, the free Colab GPU):

  - ``colab-t4`` (16 GB card, 14.7 GiB usable; budget 14.5 GiB): no bf16 hardware on sm_75, so
    fp16: the student's frozen base and the teacher in fp16, LoRA adapters (rank 16 on every
    linear layer, through ``peft``) in float32 under fp16 autocast with a gradient scaler,
    gradient checkpointing. A full fine-tune with float32 master weights does not fit next to
    the teacher. LoRA's learning rate is about 10x a full fine-tune's ("LoRA Without Regret",
    Schulman et al., Thinking Machines, 2025): 1e-5 against 1e-6.
  - ``a100`` (40 GB, budget 38 GiB): full fine-tune, float32 master weights and AdamW state,
    bf16 autocast, the teacher in bf16. ``h100`` (80 GB, budget 76 GiB): the same, twice the
    micro-batch.

  Each uses the fused (logits-free) divergence, evaluates in micro-batches of
  ``eval_micro_batch_size`` prompts, prompts GSM8K with an explicit ``\\boxed{}`` answer format
  and allows ``max_new_tokens = 512`` (:mod:`opd_lib.lab.gsm8k`).

``tiny`` and ``gpu`` are written as differences from ``full``, so what changes is visible.
"""

from __future__ import annotations

from typing import Any

from opd_lib.lab.config import Config
from opd_lib.lab.gsm8k import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS

__all__ = ["ALIASES", "HUB_PRESETS", "PRESETS", "preset"]

_FULL: dict[str, Any] = dict(
    # task and evaluation: greedy, under execution noise, 96 prompts per chain length
    trace_style="tagged",
    min_len=2,
    max_len=6,
    eval_lengths=(2, 3, 4, 5, 6),
    eval_size=96,
    eval_temperature=0.0,
    eval_noise=0.1,
    eval_micro_batch_size=512,  # the main sets in one batch: fewer, larger forwards on a CPU
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
    student_init_steps=800,
    student_init_max_len=6,
    student_init_task_frac=0.5,
    student_init_hint_frac=0.5,
    student_init_hint_perturb=0.5,
    # the runs
    steps=40,
    batch_size=16,
    micro_batch_size=16,
    group_size=4,
    lr=1e-3,
    eval_every=10,
    checkpoint_every=20,
    threads=1,
)

_HUB: dict[str, Any] = dict(
    model="hub",
    task="gsm8k",
    device="cuda",
    retention=False,
    hint="trace",
    steps=100,
    eval_size=128,
    eval_temperature=0.0,  # greedy: GSM8K accuracy as usually reported
    batch_size=8,
    group_size=4,
    max_new_tokens=MAX_NEW_TOKENS,
    max_prompt_tokens=MAX_PROMPT_TOKENS,
    eval_every=25,
    checkpoint_every=25,
    fused_divergence="on",  # every divergence from hidden states: no [tokens, 151936] logits
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
    # Qwen/Qwen3-0.6B from Qwen/Qwen3-1.7B on GSM8K, sized by opd_lib.lab.memory for each card
    "colab-t4": _HUB
    | dict(
        dtype="float16",  # the frozen base; the LoRA adapters are float32
        precision="fp16-amp",  # a T4 (sm_75) has no bf16 hardware
        teacher_dtype="float16",
        lora_rank=16,
        gradient_checkpointing=True,
        micro_batch_size=2,
        eval_micro_batch_size=8,
        lr=1e-5,  # LoRA: about 10x a full fine-tune's rate
        memory_budget_gib=14.5,  # a T4 reports 14.7 GiB
    ),
    "a100": _HUB
    | dict(
        dtype="float32",  # master weights
        precision="bf16-amp",
        teacher_dtype="bfloat16",
        micro_batch_size=2,  # rl: x group_size = 8 sequences per forward
        eval_micro_batch_size=16,
        lr=1e-6,
        memory_budget_gib=38.0,
    ),
    "h100": _HUB
    | dict(
        dtype="float32",
        precision="bf16-amp",
        teacher_dtype="bfloat16",
        micro_batch_size=4,
        eval_micro_batch_size=32,
        lr=1e-6,
        memory_budget_gib=76.0,
    ),
}


HUB_PRESETS = {name: PRESETS[name] for name in ("colab-t4", "a100", "h100")}
ALIASES = {"hub": "colab-t4"}  # the free Colab GPU is the default hub card


def preset(name: str, **overrides: Any) -> Config:
    """The :class:`Config` of preset ``name`` (or an alias in :data:`ALIASES`) with
    ``overrides`` applied (validated)."""
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        known = sorted(PRESETS) + sorted(ALIASES)
        raise ValueError(f"unknown preset {name!r}; expected one of {known}")
    return Config(**{**PRESETS[name], **overrides})
