"""The teacher/student pair a run starts from: built, trained in cached SFT stages, or swapped for
another run's student."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch

from opd_lib import lm
from opd_lib.lab.checkpoint import load_checkpoint, save_checkpoint
from opd_lib.lab.config import Config, stage_fields
from opd_lib.lab.data import encode
from opd_lib.lab.tasks import ALPHABET, Example, Reverse, RunningSum
from opd_lib.models import ModelPair, load_qwen3_pair, tiny_qwen3_pair
from opd_lib.tokenizers import char_tokenizer

__all__ = [
    "build_pair",
    "cache_key",
    "growing_lengths",
    "prepare_pair",
    "teacher_from_run",
    "train_supervised",
]


def build_pair(config: Config) -> ModelPair:
    """Fresh (untrained) tiny pair, or the hub pair."""
    if config.model == "hub":
        return load_qwen3_pair(
            config.teacher_name,
            config.student_name,
            dtype=getattr(torch, config.dtype),
            teacher_dtype=getattr(torch, config.teacher_dtype),
            device=config.device,
        )
    c = config
    return tiny_qwen3_pair(
        char_tokenizer(ALPHABET),
        teacher=dict(layers=c.teacher_layers, hidden=c.teacher_hidden, heads=c.teacher_heads),
        student=dict(layers=c.student_layers, hidden=c.student_hidden, heads=c.student_heads),
        seed=c.model_seed,
        device=c.device,
    )


def train_supervised(
    model: torch.nn.Module,
    tokenizer,
    sample: Callable[[random.Random, float], Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
    desc: str = "sft",
    warmup: int = 20,
    cosine: bool = False,
) -> list[float]:
    """Plain SFT (:func:`opd_lib.lm.sft`) on ``batch_size`` examples per step from
    ``sample(rng, done)`` (``done`` in [0, 1) is the share of training already done, for
    curricula); returns the losses. Trains the tiny teacher and warms up the student. Touches no
    global RNG (its own ``random.Random(seed)``)."""
    rng = random.Random(seed)
    device = next(model.parameters()).device

    def next_batch(step: int) -> lm.Batch:
        return encode(tokenizer, [sample(rng, step / steps) for _ in range(batch_size)], device)

    return lm.sft(
        model, next_batch, steps=steps, lr=lr, warmup=warmup, cosine=cosine, progress=progress,
        desc=desc,
    )  # fmt: skip


def growing_lengths(task: RunningSum, grow: float) -> Callable[[random.Random, float], Example]:
    """``task.sample`` with a length curriculum: while ``done < grow`` the longest chain rises
    linearly from ``min_len + 1`` to ``max_len``; afterwards the task's full range."""
    lo, span = task.min_len, task.max_len - task.min_len

    def sample(rng: random.Random, done: float) -> Example:
        if done >= grow or span < 2:
            return task.sample(rng)
        return task.sample(rng, rng.randint(lo, lo + max(1, int(done / grow * span))))

    return sample


def cache_key(config: Config, stage: str) -> str:
    """Hash of the settings that determine a prepared model: ``stage`` is ``"teacher-clean"``
    (after stage 1), ``"teacher"`` or ``"student"``; its cache file is ``<stage>-<hash>.pt``.
    The settings are the Config fields tagged with the stage (and ``"shared"``), plus the
    teacher's stages for a stage built on the teacher."""
    if stage not in ("teacher-clean", "teacher", "student"):
        raise ValueError(f"stage must be 'teacher-clean', 'teacher' or 'student', got {stage!r}")
    stages = ["shared", stage]
    if stage == "teacher" or (stage == "student" and config.student_from_teacher):
        stages.append("teacher-clean")
    if stage == "student" and config.student_from_teacher:
        stages.append("teacher")
    keys = [k for s in stages for k in stage_fields(s)]
    blob = json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def prepare_pair(config: Config, cache_dir: str | Path | None = None) -> ModelPair:
    """The pair a run starts from.

    Hub: the pretrained Qwen3 pair as loaded. Tiny, in three SFT stages (each with warm-up, and
    cosine decay if ``init_cosine``), each cached in ``cache_dir/<stage>-<hash>.pt`` so every
    method and seed starts from the same pair and a change to one stage retrains only what
    depends on it:

    1. ``teacher-clean``: the teacher learns clean traces from scratch (``teacher_steps``; the
       longest chain grows over the first ``init_curriculum`` share of them);
    2. ``teacher``: it learns to recover (``teacher_recovery_steps`` at a third of the learning
       rate, a ``teacher_perturb`` share of perturbed traces whose broken prefix is context);
    3. ``student``: from scratch, or from the finished teacher (``student_from_teacher``), the
       student warms up for ``student_init_steps`` on chains up to ``student_init_max_len``
       written with a ``student_noise`` step error rate (``RunningSum.sloppy``), or, for a
       ``student_init_hint_frac`` share, clean traces of every length (no curriculum) with the
       hint (the same trace) in the prompt (a ``student_init_hint_perturb`` share of them with
       one step broken and recovered after), so that its hinted self can teach in OPSD; mixed
       with the retention task (the rest of ``student_init_task_frac``).
    """
    pair = build_pair(config)
    if config.model == "hub":
        return pair
    c = config
    if c.student_from_teacher and (
        (c.student_layers, c.student_hidden, c.student_heads)
        != (c.teacher_layers, c.teacher_hidden, c.teacher_heads)
    ):
        raise ValueError("student_from_teacher needs the student and teacher sizes to be equal")
    task = RunningSum(c.min_len, c.max_len, hint=c.hint, style=c.trace_style)
    warm_max = max(2, min(c.student_init_max_len, c.max_len))
    warm = RunningSum(2, warm_max, hint=c.hint, style=c.trace_style)
    clean = growing_lengths(task, c.init_curriculum)
    warm_chain = growing_lengths(warm, c.init_curriculum)
    retention = Reverse(c.retention_min_len, c.retention_max_len)

    def recovery_sample(rng: random.Random, done: float) -> Example:
        ex = task.sample(rng)
        return task.perturbed(ex, rng) if rng.random() < c.teacher_perturb else ex

    def student_sample(rng: random.Random, done: float) -> Example:
        if rng.random() >= c.student_init_task_frac:
            return retention.sample(rng)
        if rng.random() < c.student_init_hint_frac:  # the hint shows the clean trace: copy it
            ex = warm.sample(rng)  # at every length from the start: copying is not learnt short
            hinted = dataclasses.replace(ex, prompt=ex.hinted_prompt())
            if rng.random() < c.student_init_hint_perturb:
                return warm.perturbed(hinted, rng)  # the hint shows how to recover, too
            return hinted
        return warm.sloppy(warm_chain(rng, done), rng, c.student_noise)

    def stage(name, model, start, sample, steps, lr, seed_offset) -> dict:
        """Load ``model`` from the stage's cache file, or train it from ``start`` and save it;
        returns a copy of its weights."""
        path = Path(cache_dir) / f"{name}-{cache_key(c, name)}.pt" if cache_dir else None
        if path is not None and path.is_file():
            model.load_state_dict(load_checkpoint(path)["model"])
            return copy.deepcopy(model.state_dict())
        if start is not None:
            model.load_state_dict(start)
        if steps:
            train_supervised(
                model, pair.tokenizer, sample, steps=steps, batch_size=c.init_batch_size,
                lr=lr, seed=c.model_seed + seed_offset, progress=c.progress, desc=name,
                warmup=c.init_warmup, cosine=c.init_cosine,
            )  # fmt: skip
        state = copy.deepcopy(model.state_dict())
        if path is not None:
            save_checkpoint(path, {"model": state})
        return state

    first = stage("teacher-clean", pair.teacher, None, clean, c.teacher_steps, c.init_lr, 100)
    teacher = stage("teacher", pair.teacher, first, recovery_sample, c.teacher_recovery_steps,
                    c.init_lr / 3, 200)  # fmt: skip
    student_start = teacher if c.student_from_teacher else None
    stage("student", pair.student, student_start, student_sample, c.student_init_steps,
          c.init_lr, 300)  # fmt: skip
    return pair


def teacher_from_run(pair: ModelPair, run_dir: str | Path) -> ModelPair:
    """``pair`` with its teacher replaced by the final student of the run in ``run_dir``
    (``student.pt``): for distilling from a student that another method changed (Chapter 10's
    degraded-teacher claim: OPD from a teacher made worse by stress SFT)."""
    path = Path(run_dir) / "student.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: finish the run in {run_dir} first")
    teacher = copy.deepcopy(pair.student).requires_grad_(False)
    teacher.load_state_dict(load_checkpoint(path)["student"])
    return dataclasses.replace(pair, teacher=teacher)
