"""On-policy self-distillation (OPSD): a hinted self-teacher, and the two things called "clipping".

OPSD (Zhao et al. 2026, "Self-Distilled Reasoner: On-Policy Self-Distillation for Large Language
Models", arXiv:2601.18734; code: github.com/siyan-zhao/OPSD) has no separate teacher. One model
plays both roles on the student's own rollout ``y``:

* student ``p_theta(. | x, y_<t)``: sees only the prompt ``x``;
* teacher ``p_theta(. | x, h, y_<t)``: the same weights, also shown a privileged hint ``h`` (the
  reference solution or answer) that the student will never see at test time.

The loss is a per-token divergence between the two next-token distributions, summed over the
vocabulary and averaged over the completion's tokens (``opd_lib.divergences.token_divergence``).

Clipping. A few "pivot" tokens, where the hint changes the answer, carry most of that loss. Two
different operations go by the name "per-token clipping"; both are here:

* :func:`clip_per_token`: cap each token's vocabulary-summed divergence, ``min(D_t, c)``. The
  result lies in ``[0, c]``; a capped token contributes exactly ``c`` and no gradient.
* :func:`clip_pointwise`: cap every vocabulary entry's summand at ``c`` *before* summing over the
  vocabulary. This is what the official OPSD code does (``OPSDTrainer.generalized_jsd_loss``,
  argument ``token_clip``, flag ``--jsd_token_clip``, default 0.05: ``jsd.clamp(max=token_clip)``
  on the ``[B, T, V]`` element-wise terms, then the vocabulary sum), although its docstring calls
  it per-token clipping. KL summands can be negative, so a point-wise clipped token can be
  negative too: it is a different objective, not a bound on the old one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from opd_lib.divergences import check_mask, pointwise_terms

__all__ = [
    "TeacherInputs",
    "clip_per_token",
    "clip_pointwise",
    "gather_positions",
    "hinted_teacher_inputs",
    "opsd_loss",
    "top_k_share",
]


class TeacherInputs(NamedTuple):
    """What :func:`hinted_teacher_inputs` returns.

    input_ids, attention_mask: ``[B, L]``, left padded (1 on real tokens).
    positions: ``[B, N]`` long; ``positions[b, j]`` is the index into row ``b`` of the teacher's
        sequence whose logits predict completion token ``j``. Use :func:`gather_positions`.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _completion_rows(completion, batch: int, vocab: int) -> list[list[int]]:
    if isinstance(completion, torch.Tensor):
        if completion.dim() != 2:
            raise ValueError(
                f"completion must be [batch, N] token ids, got {tuple(completion.shape)}"
            )
        if completion.is_floating_point() or completion.dtype == torch.bool:
            raise ValueError(f"completion must hold integer token ids, got {completion.dtype}")
        rows = completion.tolist()
    else:
        rows = [list(r) for r in completion]
    if len(rows) != batch:
        raise ValueError(f"got {batch} prompts but {len(rows)} completions")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(
            f"completions have different lengths {sorted(lengths)}: pad them to one length "
            "(sample_completions does) and mask the tail with completion_mask"
        )
    if 0 in lengths:
        raise ValueError("completions are empty: there is no token to distil")
    for r in rows:
        for t in r:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab:
                raise ValueError(f"completion token {t!r} is not a token id in [0, {vocab})")
    return rows


def hinted_teacher_inputs(
    tokenizer,
    prompt: Sequence[str],
    hint: Sequence[str],
    completion: torch.Tensor | Sequence[Sequence[int]],
) -> TeacherInputs:
    """Build the self-teacher's inputs ``prompt + hint + completion`` for a batch.

    One design, batched: ``prompt`` and ``hint`` are lists of ``B`` strings (a single example is a
    list of one), ``completion`` is the student's sampled token ids, ``[B, N]`` (a tensor or a
    list of equal-length lists; mask anything after EOS with ``sampling.completion_mask``). Ids,
    not text: decoding and re-encoding a sample need not give back the same tokens.

    Prompt and hint are encoded separately without special tokens and concatenated as ids, so the
    hint's own text carries any separator you want (``"(answer: 42)"``). With ``hint = [""] * B``
    the result is exactly the student's input, which is how the student side is built too.

    Off by one: the logits at sequence position ``i`` predict the token at ``i + 1``. Rows are
    left padded, so every completion fills the last ``N`` columns of the ``L``-wide batch, and the
    logits predicting completion token ``j`` sit at ``positions[b, j] = L - N - 1 + j`` (the first
    one is the last hint token, or the last prompt token when the hint is empty). For the same
    completion, ``gather_positions(student_logits, student.positions)`` and
    ``gather_positions(teacher_logits, teacher.positions)`` are aligned token for token.

    Left padding shifts absolute positions; Qwen3's rotary attention depends only on relative
    positions, so a padded row gives the same logits (pass ``position_ids`` if your model differs).
    """
    if isinstance(prompt, str) or isinstance(hint, str):
        raise ValueError("prompt and hint must be lists of strings (wrap a single example: [text])")
    prompt, hint = list(prompt), list(hint)
    if len(prompt) == 0:
        raise ValueError("empty batch: no prompt given")
    if len(hint) != len(prompt):
        raise ValueError(f"got {len(prompt)} prompts but {len(hint)} hints")
    for name, texts in (("prompt", prompt), ("hint", hint)):
        if not all(isinstance(t, str) for t in texts):
            raise ValueError(f"every {name} must be a string")
    rows = _completion_rows(completion, len(prompt), len(tokenizer))
    n = len(rows[0])
    contexts = [
        _encode(tokenizer, p) + _encode(tokenizer, h) for p, h in zip(prompt, hint, strict=True)
    ]
    if any(len(c) == 0 for c in contexts):
        raise ValueError("a prompt + hint is empty: no position can predict the first token")
    width = max(len(c) for c in contexts) + n
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (ctx, comp) in enumerate(zip(contexts, rows, strict=True)):
        seq = ctx + comp
        ids[b, width - len(seq) :] = torch.tensor(seq)
        mask[b, width - len(seq) :] = 1
    positions = torch.arange(width - n - 1, width - 1).expand(len(rows), n).clone()
    return TeacherInputs(ids, mask, positions)


def gather_positions(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``[B, L, V]`` logits at ``positions`` ``[B, N]`` -> ``[B, N, V]`` (differentiable)."""
    if logits.dim() != 3 or positions.dim() != 2 or positions.shape[0] != logits.shape[0]:
        raise ValueError(
            f"expected logits [B, L, V] and positions [B, N], got {tuple(logits.shape)} and "
            f"{tuple(positions.shape)}"
        )
    if positions.min() < 0 or positions.max() >= logits.shape[1]:
        raise ValueError(f"positions out of range [0, {logits.shape[1]})")
    index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)


def _check_cap(max_value: float) -> None:
    if not (isinstance(max_value, (int, float)) and math.isfinite(max_value) and max_value > 0):
        raise ValueError(f"max_value must be a finite number > 0, got {max_value!r}")


def clip_per_token(
    token_divergence: torch.Tensor,
    max_value: float,
    mode: Literal["clamp", "rescale"] = "clamp",
) -> torch.Tensor:
    """Cap each token's vocabulary-summed divergence at ``max_value``: ``min(D_t, c)``.

    ``token_divergence`` is any-shape (usually ``[B, T]`` from ``token_divergence(...,
    reduction="none")``). Values lie in ``[0, c]`` for a non-negative divergence.

    * ``mode="clamp"``: a token above the cap contributes exactly ``c`` and its gradient is
      **zero**: the tokens the teacher disagrees with most stop teaching anything.
    * ``mode="rescale"``: the same values, but a capped token keeps its gradient direction scaled
      by ``c / D_t`` (``D_t * stopgrad(min(1, c / D_t))``): its pull is capped, not removed.
    """
    _check_cap(max_value)
    if mode not in ("clamp", "rescale"):
        raise ValueError(f"mode must be 'clamp' or 'rescale', got {mode!r}")
    if torch.isnan(token_divergence).any():
        raise ValueError("token_divergence contains NaN")
    if mode == "clamp":
        return token_divergence.clamp(max=max_value)
    d = token_divergence.detach()
    scale = torch.where(d > max_value, max_value / d.clamp_min(1e-30), torch.ones_like(d))
    return token_divergence * scale


def clip_pointwise(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "fkl",
    max_value: float = 0.05,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Point-wise clipped divergence per token ``[B, T]``: ``sum_v min(term_v, c)``; 0 where masked.

    The official OPSD code's clip (see the module docstring): each vocabulary entry's summand of
    the divergence (``divergences.pointwise_terms``: ``kind`` "fkl" ``p log(p/q)``, "rkl", "jsd"
    with ``beta``, "tv") is clamped from above at ``max_value`` before the vocabulary sum.
    Negative KL summands are untouched, so the result can be **negative**; entries above the cap
    get zero gradient while the others keep theirs. ``kind="fkl"`` is the official scripts'
    ``--beta 0``. Gradients flow to both logits (detach the teacher).
    """
    _check_cap(max_value)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 2:
        raise ValueError(
            f"shape mismatch: student logits {tuple(student_logits.shape)} vs teacher logits "
            f"{tuple(teacher_logits.shape)} (need the same [..., V])"
        )
    for name, t in (("student", student_logits), ("teacher", teacher_logits)):
        if torch.isnan(t).any():
            raise ValueError(f"{name} logits contain NaN")
    if mask is not None:
        check_mask(mask, student_logits.shape[:-1])
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    per_token = pointwise_terms(log_q, log_p, kind, beta).clamp(max=max_value).sum(-1)
    if mask is not None:
        per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    return per_token


def opsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "fkl",
    clip: Literal["none", "token", "pointwise"] = "none",
    max_value: float = 0.05,
    beta: float = 0.5,
) -> torch.Tensor:
    """Batch OPSD loss: the mean over selected tokens of the (clipped) per-token divergence.

    The teacher's logits are detached (the self-teacher is not trained through this term).
    ``clip``: ``"none"``, ``"token"`` (:func:`clip_per_token`) or ``"pointwise"``
    (:func:`clip_pointwise`).
    """
    from opd_lib.divergences import token_divergence

    teacher_logits = teacher_logits.detach()
    if clip == "pointwise":
        per_token = clip_pointwise(student_logits, teacher_logits, mask, kind, max_value, beta)
    elif clip in ("none", "token"):
        per_token = token_divergence(student_logits, teacher_logits, kind, beta, mask=mask)
        if clip == "token":
            per_token = clip_per_token(per_token, max_value)
    else:
        raise ValueError(f"clip must be 'none', 'token' or 'pointwise', got {clip!r}")
    if mask is None:
        return per_token.mean()
    if not mask.any():
        raise ValueError("mask selects no token")
    return per_token[mask].mean()


def top_k_share(token_divergence: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> float:
    """Share of the total divergence carried by the ``k`` largest tokens (selected ones only).

    ``sum(top k values) / sum(all values)`` over the tokens selected by ``mask`` (all if None),
    pooled over the whole batch. Values must be non-negative (an unclipped divergence).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    values = token_divergence.detach().reshape(-1)
    if mask is not None:
        if mask.shape != token_divergence.shape or mask.dtype != torch.bool:
            raise ValueError("mask must be a boolean tensor of the divergence's shape")
        values = values[mask.reshape(-1)]
    if values.numel() == 0:
        raise ValueError("no token selected")
    if torch.isnan(values).any() or (values < 0).any():
        raise ValueError("divergences must be non-negative numbers")
    total = values.sum()
    if total <= 0:
        raise ValueError("total divergence is 0: the share is undefined")
    top = values.topk(min(k, values.numel())).values.sum()
    return float(top / total)
