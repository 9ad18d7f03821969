"""Chapter 8: SFT, RL, rejection sampling, OPD and OPSD as one policy-gradient estimator.

The meta-algorithm (Chapter 8) has three dials::

    grad J = E_{x, y ~ mu_alpha}[ sum_t A_t grad log pi_theta(y_t | x, y_<t) ]
    mu_alpha = alpha pi_theta + (1 - alpha) pi_data
    A_t = lam [log pi_T(y_t | c_T) - log pi_theta(y_t | x, y_<t)] + (1 - lam) [R(y) - b(x)]

``alpha`` is the probability that a sequence is the student's own sample (otherwise the dataset's
completion), ``lam`` blends a per-token teacher signal with a sequence-level reward, and ``pi_T``
(with its context ``c_T``) is the teacher. :func:`meta_loss` implements this once; every method is
an entry of :data:`METHOD_DIALS` run through the same code by :func:`preset_loss`. The advantage
(:func:`advantages`) and the teacher and reward helpers are in :mod:`opd_lib.meta_advantage`
(re-exported here).

How SFT fits: with ``alpha = 0`` every sequence is the data's, and with ``lam = 0``, ``R = 1`` and
``b = 0`` every data token gets advantage 1, so the surrogate is the token-mean negative
log-likelihood, i.e. cross-entropy. (A common error files SFT under ``lam = 1`` with a point-mass
teacher on the label; that gives ``A_t = -log pi_theta(y_t)``, a *re-weighted* cross-entropy, not
SFT.)

Normalisation: the surrogate is ``-(1/N) sum_{(b, t) in mask} A_t log pi_theta(y_t)`` with ``N``
the number of completion tokens in the batch, the token mean of ``opd_lib.pg.reinforce_loss`` and
of ``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from opd_lib import validate
from opd_lib.lm import Batch, completion_logits, token_logprobs
from opd_lib.meta_advantage import (
    RewardFn,
    TeacherFn,
    _per_sequence,
    advantages,
    constant_reward,
    hinted_teacher,
    teacher_logits,
)
from opd_lib.sampling import completion_mask, sample_completions, special_token_ids

__all__ = [
    "METHOD_DIALS",
    "MetaLossResult",
    "Preset",
    "TeacherFn",
    "advantages",
    "constant_reward",
    "hinted_teacher",
    "meta_loss",
    "preset_loss",
    "preset_table",
    "teacher_logits",
]


@dataclass(frozen=True)
class MetaLossResult:
    """What :func:`meta_loss` computed.

    loss: the surrogate (scalar, graph to the student); completion_ids ``[B, C]``: the sequences
    trained on; from_student ``[B]``: True where the row is the student's sample; mask ``[B, C]``:
    the tokens that count; logp_student / logp_teacher ``[B, C]`` (teacher ``None`` when
    ``lam == 0``); reward ``[B]``; advantage ``[B, C]`` (detached); n_tokens.
    """

    loss: torch.Tensor
    completion_ids: torch.Tensor
    from_student: torch.Tensor
    mask: torch.Tensor
    logp_student: torch.Tensor
    logp_teacher: torch.Tensor | None
    reward: torch.Tensor
    advantage: torch.Tensor
    n_tokens: int


def meta_loss(
    student: torch.nn.Module,
    batch: Batch,
    *,
    alpha: float,
    lam: float,
    teacher: torch.nn.Module | TeacherFn | None = None,
    reward_fn: RewardFn | None = None,
    baseline: float | torch.Tensor | str = 0.0,
    samples: torch.Tensor | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> MetaLossResult:
    """The meta-algorithm's surrogate loss; its gradient is the estimator of the module docstring.

    1. **Sequences** (``alpha``): row ``b`` is the student's own sample if ``u_b < alpha`` (one
       uniform draw per row from ``generator``; ``alpha = 1`` always, ``alpha = 0`` never), else
       the data's completion ``batch.completion_ids``. Student samples are ``samples`` if given
       (``[B, N]``, drawn beforehand, e.g. to share them between presets), else drawn with
       ``opd_lib.sampling.sample_completions`` (``max_new_tokens`` defaults to the data's width).
    2. **Advantage** (``lam``): :func:`advantages` with the teacher's log-prob of each token
       (``teacher``: a causal LM reading the same prompt, or a :data:`TeacherFn` with its own
       context, e.g. :func:`hinted_teacher`; evaluated without gradient), the sequence reward
       ``reward_fn(completion_ids, batch)`` (required when ``lam < 1``) and ``baseline``: a number,
       ``[B]`` values, or ``"mean"`` for the batch-mean reward.
    3. **Loss** ``-(1/N) sum_{(b,t) in mask} A_t log pi_theta(y_t)``, the token mean over completion
       tokens up to and including the first EOS.

    No optimizer step: call ``result.loss.backward()``.
    """
    validate.module(student, "student")
    if not isinstance(batch, Batch):
        raise ValueError(f"batch must be a Batch, got {type(batch).__name__}")
    alpha, lam = validate.unit(alpha, "alpha"), validate.unit(lam, "lam")
    temperature = validate.positive(temperature, "temperature")
    if max_new_tokens is not None:
        max_new_tokens = validate.integer(max_new_tokens, "max_new_tokens")
    if teacher is not None and not callable(teacher):
        raise validate.ArgumentTypeError(f"teacher must be a model or a TeacherFn, got {teacher!r}")
    if reward_fn is not None and not callable(reward_fn):
        raise validate.ArgumentTypeError(f"reward_fn must be callable, got {reward_fn!r}")
    if not isinstance(baseline, str):
        _per_sequence(baseline, batch.prompt_ids.float(), "baseline")
    if lam > 0 and teacher is None:
        raise ValueError("lam > 0 needs a teacher (the per-token term has weight lam)")
    if lam < 1 and reward_fn is None:
        raise ValueError("lam < 1 needs reward_fn (the sequence reward has weight 1 - lam)")
    if isinstance(baseline, str) and baseline != "mean":
        raise ValueError(f"baseline must be a number, a [B] tensor or 'mean', got {baseline!r}")
    eos_token_id, pad_token_id = special_token_ids(student, eos_token_id, pad_token_id)
    pad = eos_token_id if pad_token_id is None else pad_token_id

    n_rows = batch.prompt_ids.shape[0]
    data = batch.completion_ids
    if alpha == 1.0:
        from_student = torch.ones(n_rows, dtype=torch.bool)
    elif alpha == 0.0:
        from_student = torch.zeros(n_rows, dtype=torch.bool)
    else:
        from_student = torch.rand(n_rows, generator=generator) < alpha
    if from_student.any():
        if samples is None:
            with validate.sampling_from("student"):
                samples = sample_completions(
                    student,
                    batch.prompt_ids,
                    batch.prompt_mask,
                    max_new_tokens or data.shape[1],
                    temperature=temperature,
                    generator=generator,
                    eos_token_id=eos_token_id,
                    pad_token_id=pad,
                )
        if samples.ndim != 2 or samples.shape[0] != n_rows:
            raise ValueError(
                f"samples must be [{n_rows}, N] token ids, got shape {tuple(samples.shape)}"
            )
        width = max(samples.shape[1], data.shape[1])
        samples = _pad_right(samples, width, pad)
        data = _pad_right(data, width, pad)
        completion = torch.where(from_student.unsqueeze(-1), samples, data)
    else:
        completion = data
    mask = completion_mask(completion, eos_token_id)

    logits = completion_logits(student, batch.prompt_ids, batch.prompt_mask, completion)
    logp_student = token_logprobs(logits, completion)
    if not torch.isfinite(logp_student[mask]).all():
        raise ValueError(
            "student gave non-finite logits at the completion tokens (NaN/inf weights?)"
        )
    logp_teacher = None
    if lam > 0:
        with torch.no_grad():
            t_logits = teacher_logits(teacher, batch, completion)
        if t_logits.shape != logits.shape:
            raise ValueError(
                f"teacher logits {tuple(t_logits.shape)} do not match the student's "
                f"{tuple(logits.shape)} (same vocabulary and completion positions needed)"
            )
        logp_teacher = token_logprobs(t_logits, completion)
        if not torch.isfinite(logp_teacher[mask]).all():
            raise ValueError(
                "teacher gave non-finite log-probs at the completion tokens (NaN/inf logits, or "
                "probability 0 on a completion token)"
            )
    if lam < 1:
        reward = torch.as_tensor(reward_fn(completion, batch), dtype=logp_student.dtype)
    else:
        reward = torch.zeros(n_rows, dtype=logp_student.dtype)
    b = reward.mean() if isinstance(baseline, str) else baseline
    adv = advantages(logp_student.detach(), logp_teacher, reward, b, lam)
    zero = torch.zeros((), dtype=logp_student.dtype)
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        raise ValueError("the batch has no completion tokens")
    loss = -torch.where(mask, adv * logp_student, zero).sum() / n_tokens
    return MetaLossResult(
        loss, completion, from_student, mask, logp_student, logp_teacher, reward, adv, n_tokens
    )


def _pad_right(ids: torch.Tensor, width: int, pad: int) -> torch.Tensor:
    if ids.shape[1] == width:
        return ids
    out = torch.full((ids.shape[0], width), pad, dtype=ids.dtype, device=ids.device)
    out[:, : ids.shape[1]] = ids
    return out


@dataclass(frozen=True)
class Preset:
    """One method as a setting of the three dials.

    alpha: P(sequence is the student's sample); lam: weight of the teacher term; teacher: who
    ``pi_T`` is (``"none"``, ``"external"``: a same-family model with the student's context,
    ``"hinted self"``: the student reading a privileged hint); reward: ``"one"`` (R = 1 on every
    sequence), ``"verifier"`` or ``"none"``; baseline: ``0.0`` or ``"mean"``.
    """

    name: str
    alpha: float
    lam: float
    teacher: str
    reward: str
    baseline: float | str
    note: str


METHOD_DIALS: dict[str, Preset] = {
    "sft": Preset(
        "SFT", 0.0, 0.0, "none", "one", 0.0, "data sequences, advantage 1: cross-entropy"
    ),
    "rft": Preset(
        "rejection-sampling FT",
        1.0,
        0.0,
        "none",
        "verifier",
        0.0,
        "own samples, advantage R in {0, 1}: cross-entropy on the accepted ones",
    ),
    "rl": Preset(
        "RL (verifier)",
        1.0,
        0.0,
        "none",
        "verifier",
        "mean",
        "own samples, advantage R - mean(R) broadcast to every token",
    ),
    "opd": Preset(
        "OPD",
        1.0,
        1.0,
        "external",
        "none",
        0.0,
        "own samples, advantage log pi_T - log pi_theta per token",
    ),
    "opsd": Preset(
        "OPSD",
        1.0,
        1.0,
        "hinted self",
        "none",
        0.0,
        "as OPD, the teacher is the student reading a hint",
    ),
}


def preset_table() -> list[dict[str, object]]:
    """One row per preset (key, name, alpha, lam, teacher, reward, baseline, note)."""
    return [{"key": k, **p.__dict__} for k, p in METHOD_DIALS.items()]


def preset_loss(
    name: str,
    student: torch.nn.Module,
    batch: Batch,
    *,
    teacher: torch.nn.Module | TeacherFn | None = None,
    verifier: RewardFn | None = None,
    **kwargs,
) -> MetaLossResult:
    """:func:`meta_loss` at the dials of ``METHOD_DIALS[name]``.

    SFT gets ``reward_fn = constant_reward(1.0)``; RL and rejection sampling need ``verifier``;
    OPD and OPSD need ``teacher`` (for OPSD build it with :func:`hinted_teacher`). Other keyword
    arguments (``samples``, ``generator``, ``max_new_tokens``, ...) go to :func:`meta_loss`.
    """
    if not isinstance(name, str) or name not in METHOD_DIALS:
        raise ValueError(
            f"unknown preset name {name!r}; name must be one of {sorted(METHOD_DIALS)}"
        )
    validate.module(student, "student")
    p = METHOD_DIALS[name]
    if p.reward == "verifier" and verifier is None:
        raise ValueError(f"preset {name!r} needs a verifier (reward function)")
    if p.lam > 0 and teacher is None:
        raise ValueError(f"preset {name!r} needs a teacher")
    reward_fn = constant_reward(1.0) if p.reward == "one" else verifier
    return meta_loss(
        student,
        batch,
        alpha=p.alpha,
        lam=p.lam,
        teacher=teacher if p.lam > 0 else None,
        reward_fn=reward_fn if p.lam < 1 else None,
        baseline=p.baseline,
        **kwargs,
    )
