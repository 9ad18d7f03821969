"""Generalized Knowledge Distillation (GKD; Agarwal et al. 2024, arXiv:2306.13649).

GKD makes two choices independent of each other:

* **whose sequences** the student trains on: with probability ``lam`` the student's own samples
  (on-policy), otherwise a fixed sequence: the dataset's completion, or, with ``seq_kd=True``, a
  completion the teacher generates (sequence-level KD, Kim & Rush 2016);
* **which divergence** compares teacher and student next-token distributions at every position of
  that sequence: the generalized JSD with ``beta`` (TRL's convention: ``beta=0`` forward KL
  ``KL(teacher || student)``, ``beta=1`` reverse KL ``KL(student || teacher)``).

``gkd_step`` does one step of this (it returns the loss; the caller owns the optimizer), with the
same order of choices as TRL's ``GKDTrainer.training_step``. ``lambda_schedule`` gives a warm-up ->
mixed -> on-policy schedule for ``lam``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from opd_lib import validate
from opd_lib.divergences import token_divergence
from opd_lib.lm import Batch, completion_logits
from opd_lib.sampling import completion_mask, sample_completions, special_token_ids

__all__ = [
    "GKDBatch",
    "GKDHistory",
    "GKDStepResult",
    "choose_source",
    "completion_logits",
    "gkd_loss",
    "gkd_step",
    "lambda_schedule",
    "on_policy_loss",
    "train_gkd",
]

Source = Literal["student", "teacher", "data"]


GKDBatch = Batch  # the general batch type lives in opd_lib.lm; the old name stays


@dataclass(frozen=True)
class GKDStepResult:
    """What ``gkd_step`` did: the loss (with a graph to the student), the sequence source
    (``"student"``, ``"teacher"`` or ``"data"``), the completion trained on ``[B, C]``, its mask and
    the number of tokens that counted."""

    loss: torch.Tensor
    source: Source
    completion_ids: torch.Tensor
    mask: torch.Tensor
    n_tokens: int


def gkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Generalized JSD per token, summed over the vocabulary and averaged over masked tokens.

    ``[B, T, V]`` logits and a ``[B, T]`` mask (bool or 0/1) of the positions that count. Equals
    TRL's ``GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta, temperature)`` with
    ``labels = -100`` where the mask is off (its ``"batchmean"`` reduction). Built on
    ``opd_lib.divergences.token_divergence(kind="jsd")``. TRL's labels themselves (token ids
    with ``-100``) are refused as a mask: pass ``labels != -100``.
    """
    if mask is None:
        raise ValueError("mask is required (use torch.ones(B, T, dtype=bool) for every token)")
    return token_divergence(
        student_logits,
        teacher_logits,
        kind="jsd",
        beta=beta,
        temperature=temperature,
        mask=mask,
        reduction="mean",
    )


def choose_source(lam: float, seq_kd: bool, generator: torch.Generator | None) -> Source:
    """GKD's mixture choice for one step: draw ``u ~ U[0, 1)`` from ``generator``; ``"student"`` if
    ``u < lam``, else ``"teacher"`` if ``seq_kd`` else ``"data"``. (``lam=0`` never and
    ``lam=1`` always samples the student.)"""
    lam = validate.unit(lam, "lam")
    validate.flag(seq_kd, "seq_kd")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise validate.ArgumentTypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    u = torch.rand((), generator=generator).item()
    if u < lam:
        return "student"
    return "teacher" if seq_kd else "data"


def gkd_step(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: GKDBatch,
    *,
    lam: float,
    beta: float,
    seq_kd: bool = False,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None,
    loss_temperature: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> GKDStepResult:
    """One GKD step: choose whose sequence to train on, score it with both models, return the loss.

    1. ``choose_source(lam, seq_kd, generator)``: the student's samples, the teacher's samples
       (sequence-level KD) or the data's completion.
    2. Sampled completions (``max_new_tokens`` long, sampling ``temperature``, drawn from
       ``generator``) come from ``opd_lib.sampling.sample_completions`` without gradients.
    3. Teacher logits on prompt + completion under ``torch.no_grad``; student logits with grad.
    4. ``gkd_loss`` with ``beta`` (at ``loss_temperature``, 1 as in TRL) over completion tokens up
       to and including the first EOS; prompt and padding never count.

    No optimizer step happens here: call ``result.loss.backward()`` and step yourself.
    ``eos_token_id``/``pad_token_id`` default to the student's config.
    """
    validate.module(student, "student")
    validate.module(teacher, "teacher")
    if not isinstance(batch, GKDBatch):
        raise ValueError(f"batch must be a Batch (GKDBatch), got {type(batch).__name__}")
    beta = validate.unit(beta, "beta")
    max_new_tokens = validate.integer(max_new_tokens, "max_new_tokens")
    temperature = validate.positive(temperature, "temperature")
    loss_temperature = validate.positive(loss_temperature, "loss_temperature")
    eos_token_id, pad_token_id = special_token_ids(student, eos_token_id, pad_token_id)

    source = choose_source(lam, seq_kd, generator)
    if source == "data":
        completion = batch.completion_ids
    else:
        with validate.sampling_from(source):
            completion = sample_completions(
                student if source == "student" else teacher,
                batch.prompt_ids,
                batch.prompt_mask,
                max_new_tokens,
                temperature=temperature,
                generator=generator,
                eos_token_id=eos_token_id,
                pad_token_id=pad_token_id,
            )
    mask = completion_mask(completion, eos_token_id)
    with torch.no_grad():
        teacher_logits = completion_logits(teacher, batch.prompt_ids, batch.prompt_mask, completion)
    student_logits = completion_logits(student, batch.prompt_ids, batch.prompt_mask, completion)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"vocabulary sizes differ: student {student_logits.shape[-1]}, teacher "
            f"{teacher_logits.shape[-1]}"
        )
    loss = gkd_loss(student_logits, teacher_logits, mask, beta=beta, temperature=loss_temperature)
    return GKDStepResult(loss, source, completion, mask, int(mask.sum()))


def lambda_schedule(step: int, total_steps: int, warmup: float = 0.2, mixed: float = 0.4) -> float:
    """The on-policy fraction ``lam`` at ``step`` of ``total_steps`` (0-based).

    Three phases, given as fractions of the run:

    * warm-up (the first ``warmup``): ``lam = 0``, plain supervised KD on fixed sequences, so the
      student's own samples are worth scoring by the time it starts producing them;
    * mixed (the next ``mixed``): ``lam`` rises linearly from 0 to 1;
    * on-policy (the rest): ``lam = 1``.

    We ramp all the way to 1 (rather than stopping at 0.5) so the schedule is continuous; with
    ``mixed=0`` it jumps from off-policy to on-policy. This is a common recipe, not the paper's:
    GKD's experiments start from a supervised-fine-tuned student and keep ``lam`` fixed.
    """
    total_steps = validate.integer(total_steps, "total_steps")
    step = validate.integer(step, "step", minimum=0)
    warmup, mixed = validate.unit(warmup, "warmup"), validate.unit(mixed, "mixed")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, total_steps={total_steps}], got {step}")
    if warmup < 0 or mixed < 0 or warmup + mixed > 1:
        raise ValueError(
            f"warmup and mixed must be fractions >= 0 with warmup + mixed <= 1, got "
            f"warmup={warmup}, mixed={mixed}"
        )
    # Phase boundaries in steps, rounded so that e.g. 0.2 + 0.4 of 100 steps is exactly 60.
    warm_end = round(warmup * total_steps, 9)
    mixed_end = round((warmup + mixed) * total_steps, 9)
    if step < warm_end:
        return 0.0
    if step < mixed_end:
        return (step - warm_end) / (mixed_end - warm_end)
    return 1.0


@dataclass(frozen=True)
class GKDHistory:
    """What ``train_gkd`` recorded: per step the ``lam`` used, the source drawn, the training loss
    and its token count; every ``eval_every`` steps (and at step 0) the on-policy loss
    ``eval_loss`` of the student at ``eval_steps`` (``gkd_loss`` on fresh student samples from a
    fixed generator, so successive values compare the same draw procedure)."""

    lam: list[float]
    source: list[str]
    loss: list[float]
    n_tokens: list[int]
    eval_steps: list[int]
    eval_loss: list[float]


def on_policy_loss(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: GKDBatch,
    *,
    beta: float,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
) -> float:
    """``gkd_loss`` of the student on its own samples (drawn from a generator seeded with
    ``seed``), without gradients: how far it is from the teacher where it actually goes."""
    seed = validate.integer(seed, "seed", minimum=0)
    with torch.no_grad():
        result = gkd_step(
            student,
            teacher,
            batch,
            lam=1.0,
            beta=beta,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            generator=torch.Generator().manual_seed(seed),
        )
    return float(result.loss)


def train_gkd(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: GKDBatch,
    *,
    steps: int,
    lam: float | None = None,
    beta: float = 0.5,
    lr: float = 3e-3,
    max_new_tokens: int = 8,
    seq_kd: bool = False,
    eval_every: int = 5,
    seed: int = 0,
) -> GKDHistory:
    """A minimal GKD training loop: ``steps`` calls of ``gkd_step`` on ``batch`` with AdamW.

    ``lam=None`` follows ``lambda_schedule(step, steps)``; a number keeps it fixed. All sampling
    (the source choice and the completions) uses one ``torch.Generator`` seeded with ``seed``, so a
    run is reproducible given the models' initial weights. The student is updated in place; the
    teacher is never touched.
    """
    steps, eval_every = validate.integer(steps, "steps"), validate.integer(eval_every, "eval_every")
    validate.module(student, "student")
    lam = None if lam is None else validate.unit(lam, "lam")
    beta, lr = validate.unit(beta, "beta"), validate.positive(lr, "lr")
    max_new_tokens = validate.integer(max_new_tokens, "max_new_tokens")
    validate.flag(seq_kd, "seq_kd")
    seed = validate.integer(seed, "seed", minimum=0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = GKDHistory([], [], [], [], [], [])

    def evaluate(step: int) -> None:
        history.eval_steps.append(step)
        history.eval_loss.append(
            on_policy_loss(
                student, teacher, batch, beta=beta, max_new_tokens=max_new_tokens, seed=seed + 1
            )
        )

    evaluate(0)
    for step in range(steps):
        lam_now = lambda_schedule(step, steps) if lam is None else float(lam)
        result = gkd_step(
            student,
            teacher,
            batch,
            lam=lam_now,
            beta=beta,
            seq_kd=seq_kd,
            max_new_tokens=max_new_tokens,
            generator=generator,
        )
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        history.lam.append(lam_now)
        history.source.append(result.source)
        history.loss.append(result.loss.item())
        history.n_tokens.append(result.n_tokens)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
    return history
