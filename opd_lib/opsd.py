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

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from opd_lib import validate
from opd_lib.divergences import check_mask, pointwise_terms
from opd_lib.lm import forward_logits

__all__ = [
    "TeacherInputs",
    "clip_per_token",
    "clip_pointwise",
    "gather_positions",
    "hinted_teacher_inputs",
    "hinted_teacher_logits",
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
    the result is exactly the student's input (how ``opd_lib.sim.self_distill`` builds the student
    side; the lab trainer builds it with ``opd_lib.lm.completion_logits`` instead).

    Off by one: the logits at sequence position ``i`` predict the token at ``i + 1``. Rows are
    left padded, so every completion fills the last ``N`` columns of the ``L``-wide batch, and the
    logits predicting completion token ``j`` sit at ``positions[b, j] = L - N - 1 + j`` (the first
    one is the last hint token, or the last prompt token when the hint is empty). For the same
    completion, ``gather_positions(student_logits, student.positions)`` and
    ``gather_positions(teacher_logits, teacher.positions)`` are aligned token for token.

    Left padding shifts absolute positions; Qwen3's rotary attention depends only on relative
    positions, so a padded row gives the same logits (pass ``position_ids`` if your model differs).
    """
    if not callable(tokenizer):
        raise validate.ArgumentTypeError(
            f"tokenizer must be a (callable) tokenizer, got {type(tokenizer).__name__}"
        )
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
    logits = validate.float_tensor(logits, "logits", ndim=3, dims="[B, L, V]")
    if not isinstance(positions, torch.Tensor) or positions.is_floating_point() or (
        positions.dtype == torch.bool
    ):
        raise validate.ArgumentTypeError("positions must be an integer (long) tensor [B, N]")
    if logits.dim() != 3 or positions.dim() != 2 or positions.shape[0] != logits.shape[0]:
        raise ValueError(
            f"expected logits [B, L, V] and positions [B, N], got {tuple(logits.shape)} and "
            f"{tuple(positions.shape)}"
        )
    if positions.min() < 0 or positions.max() >= logits.shape[1]:
        raise ValueError(f"positions out of range [0, {logits.shape[1]})")
    index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    out = logits.gather(1, index)
    validate.no_nan(out, "logits", inf="+")  # at the gathered positions only
    return out


def hinted_teacher_logits(
    model: torch.nn.Module,
    tokenizer,
    prompt: Sequence[str],
    hint: Sequence[str],
    completion: torch.Tensor | Sequence[Sequence[int]],
    *,
    skip_padding: bool = False,
) -> torch.Tensor:
    """The self-teacher's logits ``[B, N, V]``: ``model`` reading ``prompt + hint`` predicts each
    completion token (:func:`hinted_teacher_inputs`, one forward pass, :func:`gather_positions`).

    ``skip_padding=True`` passes position ids that skip the left padding
    (``opd_lib.lm.position_ids``, as the lab trainer does); otherwise positions count from the
    first column (Qwen3's rotary attention is relative, so both agree up to rounding)."""
    inputs = hinted_teacher_inputs(tokenizer, prompt, hint, completion)
    device = next(model.parameters()).device
    ids, attn = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    if skip_padding:
        logits = forward_logits(model, ids, attn)
    else:
        logits = model(input_ids=ids, attention_mask=attn).logits
    return gather_positions(logits, inputs.positions.to(device))


def _check_cap(max_value: float) -> float:
    return validate.positive(max_value, "max_value")


def _divergences(x: torch.Tensor, name: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token divergences: a real tensor, finite and >= 0 (float32 rounding tolerated)."""
    x = validate.float_tensor(x, name, allow_int=True)
    validate.no_nan(x, name, where=mask, inf="both")
    if ((x if mask is None else x[mask]) < -1e-5).any():
        raise ValueError(f"{name} must be >= 0 (an unclipped divergence)")
    return x


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
    max_value = _check_cap(max_value)
    validate.choice(mode, "mode", ("clamp", "rescale"))
    token_divergence = _divergences(token_divergence, "token_divergence")
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
    max_value = _check_cap(max_value)
    temperature = validate.positive(temperature, "temperature")
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        validate.float_tensor(x, name, min_ndim=2, dims="[..., V]")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 2:
        raise ValueError(
            f"shape mismatch: student_logits {tuple(student_logits.shape)} vs teacher_logits "
            f"{tuple(teacher_logits.shape)} (need the same [..., V])"
        )
    if mask is not None:
        mask = check_mask(mask, student_logits.shape[:-1], nonempty=True)
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        validate.no_nan(t, name, where=mask, inf="+")
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

    validate.choice(clip, "clip", ("none", "token", "pointwise"))
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        validate.float_tensor(x, name, min_ndim=2, dims="[..., V]")
    validate.same_shape(student_logits=student_logits, teacher_logits=teacher_logits)
    if mask is not None:
        mask = check_mask(mask, student_logits.shape[:-1], nonempty=True)
    max_value = _check_cap(max_value)
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
    k = validate.integer(k, "k")
    token_divergence = validate.float_tensor(token_divergence, "token_divergence", allow_int=True)
    values = token_divergence.detach().reshape(-1)
    if mask is not None:
        mask = validate.mask(mask, "mask", token_divergence.shape, what="token_divergence")
        values = values[mask.reshape(-1)]
    if values.numel() == 0:
        raise ValueError("no token selected")
    _divergences(values, "token_divergence")
    total = values.sum()
    if total <= 0:
        raise ValueError("total divergence is 0: the share is undefined")
    top = values.topk(min(k, values.numel())).values.sum()
    return float(top / total)
