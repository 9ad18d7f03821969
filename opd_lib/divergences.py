"""Divergences between a teacher and a student next-token distribution.

Conventions (all values in nats):

* ``p`` is the teacher distribution, ``q`` the student distribution, both over a vocabulary of
  size ``V`` on the last axis.
* forward KL ``KL(p || q) = sum_v p log(p / q)`` (mode-covering; the supervised-KD loss),
  reverse KL ``KL(q || p) = sum_v q log(q / p)`` (mode-seeking; what on-policy distillation
  estimates at student samples).
* generalized JSD (GKD paper, Agarwal et al. 2024, arXiv:2306.13649, Eq. 1, in TRL's
  orientation): with ``m = beta p + (1 - beta) q``,
  ``JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m)``; TRL's ``GKDTrainer`` special-cases
  ``beta = 0`` to forward KL and ``beta = 1`` to reverse KL, and so does this module.
* total variation ``TV = 1/2 sum_v |p - q|``.

Layers: the probability-level functions (``forward_kl`` ...) are for teaching and tests;
``token_divergence`` works on logits and is what the trainers build on; ``pointwise_terms``
exposes the per-vocabulary-entry summands (for point-wise clipping); ``sampled_token_estimators``
gives Schulman's k1/k2/k3 estimators of reverse KL at sampled tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from opd_lib import validate

KINDS = ("fkl", "rkl", "jsd", "tv")
REDUCTIONS = ("none", "sum", "mean")

ArrayLike = torch.Tensor | np.ndarray


# --------------------------------------------------------------------------------------------
# Per-vocabulary-entry terms (the single source of truth for the values)
# --------------------------------------------------------------------------------------------


def _floor(logp: torch.Tensor) -> torch.Tensor:
    """Clamp ``-inf`` log-probabilities to the most negative finite float.

    Then ``p = exp(logp)`` is exactly 0 there and every ``0 * (finite)`` product is 0, so
    ``0 log 0 = 0`` holds in value *and* gradient (no ``0 * inf = nan`` anywhere). The price: a
    KL term whose ``b`` is 0 where ``a`` is not (support mismatch, truly ``+inf``) comes out as
    ``a * 3.4e38`` (float32) -- astronomically large, possibly ``inf``, never NaN.
    """
    return logp.clamp_min(torch.finfo(logp.dtype).min)


def _resolve(kind: str, beta: float) -> str:
    """Validate ``kind``/``beta`` and map the JSD endpoints to forward/reverse KL."""
    validate.choice(kind, "kind", KINDS)
    beta = validate.unit(beta, "beta")
    if kind == "jsd" and beta in (0.0, 1.0):
        return "fkl" if beta == 0.0 else "rkl"
    return kind


def pointwise_terms(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str = "fkl", beta: float = 0.5
) -> torch.Tensor:
    """Per-vocabulary-entry summands ``[..., V]`` of a divergence; ``.sum(-1)`` gives its value.

    Inputs are log-probabilities (e.g. ``log_softmax`` outputs; ``-inf`` allowed). With
    ``p = exp(teacher_logp)``, ``q = exp(student_logp)``, ``m = beta p + (1 - beta) q``:

    * ``"fkl"``: ``p (log p - log q)``
    * ``"rkl"``: ``q (log q - log p)``
    * ``"jsd"``: ``beta p (log p - log m) + (1 - beta) q (log q - log m)``
      (``beta = 0``/``1`` give the ``"fkl"``/``"rkl"`` terms, as in TRL)
    * ``"tv"``: ``|p - q| / 2``

    KL terms can be negative individually (only their sum is ``>= 0``); point-wise clipping of
    these terms is therefore a change of objective, not a bound. ``0 log 0`` is 0 in value and
    gradient; a KL term with ``p > 0 = q`` (support mismatch) is huge rather than ``+inf`` (see
    ``_floor``). Differentiable with autograd. Refuses NaN, ``+inf`` and positive values (logits
    passed as log-probabilities) by name.
    """
    kind = _resolve(kind, beta)
    student_logp = validate.log_probs(student_logp, "student_logp", min_ndim=1, dims="[..., V]")
    teacher_logp = validate.log_probs(teacher_logp, "teacher_logp", min_ndim=1, dims="[..., V]")
    validate.same_shape(student_logp=student_logp, teacher_logp=teacher_logp)
    return _terms(_floor(student_logp), _floor(teacher_logp), kind, float(beta))


def _terms(log_q: torch.Tensor, log_p: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """``pointwise_terms`` from floored log-probabilities and a resolved ``kind``."""
    if kind == "fkl":
        return log_p.exp() * (log_p - log_q)
    if kind == "rkl":
        return log_q.exp() * (log_q - log_p)
    q, p = log_q.exp(), log_p.exp()
    if kind == "tv":
        return 0.5 * (p - q).abs()
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    return beta * p * (log_p - log_m) + (1 - beta) * q * (log_q - log_m)


# --------------------------------------------------------------------------------------------
# Probability-level API
# --------------------------------------------------------------------------------------------


def _prob_divergence(
    p_teacher: ArrayLike, p_student: ArrayLike, kind: str, beta: float
) -> ArrayLike:
    """Shared body: validated inputs, computed in at least float32, returned in the inputs'
    (promoted) dtype; clamped at 0, so float32 rounding never shows as a negative divergence."""
    kind = _resolve(kind, beta)
    p = validate.probabilities(p_teacher, "p_teacher")
    q = validate.probabilities(p_student, "p_student")
    if p.shape[-1:] != q.shape[-1:]:
        raise ValueError(
            f"vocabulary sizes differ: p_teacher has {p.shape[-1]}, p_student has {q.shape[-1]}"
        )
    if p.shape != q.shape:
        raise ValueError(
            f"shape mismatch: p_teacher {tuple(p.shape)} vs p_student {tuple(q.shape)}"
        )
    out_dtype = torch.promote_types(p.dtype, q.dtype)
    dtype = validate.compute_dtype(p, q)
    p, q = p.to(dtype), q.to(dtype)
    value = _terms(_floor(q.log()), _floor(p.log()), kind, float(beta)).sum(-1).clamp_min(0)
    if kind in ("fkl", "rkl"):  # exact +inf on a support mismatch (see _floor)
        a, b = (p, q) if kind == "fkl" else (q, p)
        value = torch.where(((a > 0) & (b == 0)).any(-1), math.inf, value)
    value = value.to(out_dtype)
    if isinstance(p_teacher, np.ndarray) or isinstance(p_student, np.ndarray):
        return value.numpy()
    return value


def forward_kl(p_teacher: ArrayLike, p_student: ArrayLike) -> ArrayLike:
    """Forward KL ``KL(p_teacher || p_student) = sum p_T log(p_T / p_S)``: ``[..., V] -> [...]``.

    Accepts torch tensors or NumPy arrays (NumPy in, NumPy out). ``0 log 0 = 0``; ``+inf`` where
    the student puts zero mass on a teacher-supported entry.
    """
    return _prob_divergence(p_teacher, p_student, "fkl", 0.0)


def reverse_kl(p_teacher: ArrayLike, p_student: ArrayLike) -> ArrayLike:
    """``KL(p_student || p_teacher) = sum p_S log(p_S / p_T)``; conventions as ``forward_kl``."""
    return _prob_divergence(p_teacher, p_student, "rkl", 0.0)


def generalized_jsd(p_teacher: ArrayLike, p_student: ArrayLike, beta: float = 0.5) -> ArrayLike:
    """Generalized JSD (Agarwal et al. 2024, arXiv:2306.13649, Eq. 1; TRL's orientation of beta).

    ``m = beta p_T + (1 - beta) p_S``, value ``beta KL(p_T || m) + (1 - beta) KL(p_S || m)``,
    bounded by the binary entropy ``H(beta) <= log 2``.

    Discontinuity at the ends (a known trap): the interior formula tends to 0 as ``beta -> 0`` or
    ``beta -> 1`` (it is ``O(beta)`` resp. ``O(1 - beta)``), but ``beta = 0`` is *defined* as
    forward KL and ``beta = 1`` as reverse KL, following TRL's ``GKDTrainer``. So
    ``beta = 1e-3`` is a nearly vanishing loss, while ``beta = 0`` is full forward KL; a sweep
    over beta that includes the endpoints is comparing different objectives.
    """
    return _prob_divergence(p_teacher, p_student, "jsd", beta)


def total_variation(p_teacher: ArrayLike, p_student: ArrayLike) -> ArrayLike:
    """``TV = 1/2 sum |p_T - p_S|``, in ``[0, 1]`` and symmetric."""
    return _prob_divergence(p_teacher, p_student, "tv", 0.0)


# --------------------------------------------------------------------------------------------
# Logit-level API
# --------------------------------------------------------------------------------------------


_Index = tuple[torch.Tensor, ...]  # one index tensor per position dimension (``nonzero`` order)


def _log_softmax_at(
    logits: torch.Tensor, at: _Index, temperature: float, dtype: torch.dtype
) -> torch.Tensor:
    """Floored ``log_softmax(logits[at] / temperature)`` as a fresh ``[len(at[0]), V]`` tensor."""
    x = logits[at].to(dtype)  # a gathered copy we own, so in-place ops are safe
    if temperature != 1.0:
        x.div_(temperature)
    return torch.log_softmax(x, dim=-1).clamp_min_(torch.finfo(dtype).min)  # see _floor


def _chunks(index: _Index, chunk: int) -> Iterator[tuple[slice, _Index]]:
    """Consecutive chunks of the selected positions: (slice into ``[M]``, index tuple)."""
    for start in range(0, index[0].numel(), chunk):
        rows = slice(start, start + chunk)
        yield rows, tuple(i[rows] for i in index)


def _softmax_vjp(a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Chain rule through ``a = softmax(x)``: ``dD/dx = a * (r - <a, r>)`` with ``r = dD/da``."""
    return a * (r - (a * r).sum(-1, keepdim=True))


def _logit_grads(
    log_q: torch.Tensor, log_p: torch.Tensor, kind: str, beta: float, need_s: bool, need_t: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Analytic ``dD/ds`` and ``dD/dt`` for ``q = softmax(s)`` (student), ``p = softmax(t)``.

    Every case is the softmax VJP ``a * (r - <a, r>)`` of the probability-space gradient
    ``r = dD/da`` (constants in ``r`` cancel), simplified where that is exact:

    * fkl ``KL(p||q)``: ``dD/ds = q - p``;  ``dD/dt = p * (log p - log q - D)``
    * rkl ``KL(q||p)``: ``dD/ds = q * (log q - log p - D)``;  ``dD/dt = p - q``
    * jsd: ``dD/ds = (1-beta) q * (log(q/m) - KL(q||m))``;
      ``dD/dt = beta p * (log(p/m) - KL(p||m))``
      (``dD/dq = (1-beta) log(q/m)``: the terms from ``d log m`` sum to ``sum_v dm = 0``)
    * tv with ``sigma = sign(q - p)``: ``dD/ds = q * (sigma/2 - <q, sigma/2>)``;
      ``dD/dt = p * (<p, sigma/2> - sigma/2)`` (a subgradient: ``sign(0) = 0``)

    ``D`` is the per-row divergence, i.e. ``<a, r>`` in the VJP. With temperature ``T`` the
    logits are ``s = student / T`` etc., so the caller multiplies by ``1 / T``.
    """
    q, p = log_q.exp(), log_p.exp()
    if kind == "fkl":
        r_s, r_t = None, log_p - log_q
    elif kind == "rkl":
        r_s, r_t = log_q - log_p, None
    elif kind == "jsd":
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        r_s = (1 - beta) * (log_q - log_m) if need_s else None
        r_t = beta * (log_p - log_m) if need_t else None
    else:
        half_sign = 0.5 * torch.sign(q - p)
        r_s, r_t = half_sign, -half_sign
    grad_s = grad_t = None
    if need_s:
        grad_s = q - p if r_s is None else _softmax_vjp(q, r_s)
    if need_t:
        grad_t = p - q if r_t is None else _softmax_vjp(p, r_t)
    return grad_s, grad_t


def logit_gradients(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "rkl", beta: float = 0.5
) -> torch.Tensor:
    """Analytic gradient of the per-position divergence with respect to the student's logits,
    ``[..., V]`` (no autograd): the softmax VJP ``q * (r - <q, r>)`` of ``r = dD/dq``; for the
    reverse KL ``q * (log q - log p - KL(q || p))``, for the forward KL ``q - p`` (the cases are
    listed in ``_logit_grads``). Computed in the logits' dtype (at least float32)."""
    kind = _resolve(kind, beta)
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        validate.float_tensor(x, name, min_ndim=1, dims="[..., V]")
        validate.no_nan(x, name, inf="+")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = _floor(torch.log_softmax(student_logits.to(dtype), dim=-1))
    log_p = _floor(torch.log_softmax(teacher_logits.to(dtype), dim=-1))
    return _logit_grads(log_q, log_p, kind, float(beta), True, False)[0]


class _ChunkedDivergence(torch.autograd.Function):
    """Divergence ``[M]`` at the selected positions ``index`` of ``[..., V]`` logits, by chunks.

    The forward saves only its inputs (the logits, as given, and the index); the backward
    recomputes the log-softmaxes chunk by chunk and writes the analytic gradients
    (``_logit_grads`` times ``grad_out / temperature``) into a zero gradient the size of the
    logits. Only ``[chunk, V]`` temporaries exist. Per-chunk results go into a preallocated
    output: keeping many small tensors alive between the big temporaries fragments the CPU
    heap (glibc) and grows the peak by about one ``[M, V]`` array.
    """

    @staticmethod
    def forward(ctx, student, teacher, kind, beta, temperature, chunk, dtype, *index):
        ctx.save_for_backward(student, teacher, *index)
        ctx.options = (kind, beta, temperature, chunk, dtype)
        out = torch.empty(index[0].numel(), dtype=dtype, device=student.device)
        for rows, at in _chunks(index, chunk):
            log_q = _log_softmax_at(student, at, temperature, dtype)
            log_p = _log_softmax_at(teacher, at, temperature, dtype)
            torch.sum(_terms(log_q, log_p, kind, beta), dim=-1, out=out[rows])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        student, teacher, *index = ctx.saved_tensors
        kind, beta, temperature, chunk, dtype = ctx.options
        need_s, need_t = ctx.needs_input_grad[:2]
        grad_student = torch.zeros_like(student) if need_s else None
        grad_teacher = torch.zeros_like(teacher) if need_t else None
        for rows, at in _chunks(tuple(index), chunk):
            log_q = _log_softmax_at(student, at, temperature, dtype)
            log_p = _log_softmax_at(teacher, at, temperature, dtype)
            grad_s, grad_t = _logit_grads(log_q, log_p, kind, beta, need_s, need_t)
            scale = (grad_out[rows] / temperature).unsqueeze(-1)
            if need_s:
                grad_student.index_put_(at, grad_s.mul_(scale).to(student.dtype))
            if need_t:
                grad_teacher.index_put_(at, grad_t.mul_(scale).to(teacher.dtype))
        return grad_student, grad_teacher, *(None,) * (5 + len(index))


def check_mask(
    mask: torch.Tensor, positions: tuple[int, ...] | torch.Size, nonempty: bool = False
) -> torch.Tensor:
    """The boolean mask (from bool or 0/1), refused unless it has shape ``positions``.

    ``positions`` is the logits' shape without the vocabulary axis (``logits.shape[:-1]``).
    With ``nonempty=True`` a mask that selects no token is an error too (for a mean over the
    selected tokens). Float masks and TRL-style ``-100`` labels are refused by name. The check
    lives in :func:`opd_lib.validate.mask`.
    """
    return validate.mask(mask, "mask", positions, nonempty=nonempty)


def _validate_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Check the two ``[..., V]`` logits and the mask; return the mask as booleans."""
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        validate.float_tensor(x, name, min_ndim=2, dims="[..., V] with positions")
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vs != vt:
        raise ValueError(f"vocabulary sizes differ: student_logits has {vs}, teacher_logits {vt}")
    validate.same_shape(student_logits=student_logits, teacher_logits=teacher_logits)
    if mask is not None:
        return check_mask(mask, student_logits.shape[:-1], nonempty=True)
    return None


def _nan_error(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> ValueError:
    """The error for a NaN divergence, naming the input at fault (failure path only)."""
    pairs = (("student", student_logits), ("teacher", teacher_logits))
    culprits = [name for name, logits in pairs if torch.isnan(logits).any()]
    if culprits:
        names = " and ".join(f"{c}_logits" for c in culprits)
        return ValueError(
            f"NaN divergence: the {' and '.join(culprits)} logits contain NaN ({names})"
        )
    culprits = [f"{name}_logits" for name, logits in pairs if (logits == math.inf).any()]
    if culprits:
        return ValueError(f"NaN divergence: {' and '.join(culprits)} contain +inf")
    return ValueError(
        "NaN divergence: student_logits or teacher_logits have a row that is entirely -inf"
    )


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "fkl",
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "none",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-token divergence between ``softmax(teacher / T)`` and ``softmax(student / T)``.

    Args:
        student_logits, teacher_logits: ``[B, T, V]`` (any leading shape works; need not be
            contiguous), any float dtype. Computed and returned in float32 (float64 stays
            float64).
        kind: ``"fkl"`` ``KL(teacher || student)``, ``"rkl"`` ``KL(student || teacher)``,
            ``"jsd"`` generalized JSD with ``beta`` (``0`` -> fkl, ``1`` -> rkl, as in TRL),
            ``"tv"`` total variation. See ``pointwise_terms`` for the formulas.
        temperature: divides both logits before the softmax (no ``T^2`` factor, as in TRL).
        mask: optional boolean ``[B, T]``; ``False`` positions are excluded.
        reduction: ``"none"`` -> ``[B, T]`` vocabulary-summed divergence, 0 where masked out;
            ``"sum"`` over selected tokens; ``"mean"`` over selected tokens (equals TRL's
            ``generalized_jsd_loss(..., reduction="batchmean")`` with ``labels = -100`` at
            masked positions).
        chunk_size: ``None`` -> plain autograd through ``pointwise_terms`` (the reference path;
            about 17 ``[N, V]`` float32 arrays at peak for jsd, TRL's takes 15). An int ->
            memory-efficient path: ``chunk_size`` positions at a time with a hand-written
            backward (``_ChunkedDivergence``), so forward + backward needs the gradient itself
            plus some ``[chunk_size, V]`` buffers (about 1.4 ``[N, V]`` arrays in all at
            ``N = 1024, V = 151936, chunk_size = 16`` on CPU; see
            ``benchmarks/divergence_memory.py``). On CPU keep ``chunk_size * V * 4`` bytes
            small (16 to 32 rows for ``V ~ 150k``); on GPU larger chunks are fine.

    Gradients flow to both logits if they require grad (detach the teacher to treat it as
    constant). ``-inf`` logits are fine where student and teacher share them (masked
    vocabulary). Raises ``ValueError`` on bad input, including NaN logits at selected positions
    (detected on the result, so the check is free; masked-out positions are not inspected).
    """
    kind = _resolve(kind, beta)
    beta = float(beta)
    validate.choice(reduction, "reduction", REDUCTIONS)
    temperature = validate.positive(temperature, "temperature")
    if chunk_size is not None:
        chunk_size = validate.integer(chunk_size, "chunk_size")
    mask = _validate_logits(student_logits, teacher_logits, mask)

    positions = student_logits.shape[:-1]
    dtype = torch.promote_types(student_logits.dtype, teacher_logits.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    selected = torch.ones(positions, dtype=torch.bool) if mask is None else mask
    index = selected.to(student_logits.device).nonzero(as_tuple=True)

    if chunk_size is None:
        student, teacher = student_logits, teacher_logits
        if mask is not None:
            student, teacher = student[index], teacher[index]
        student, teacher = student.to(dtype), teacher.to(dtype)
        if temperature != 1.0:
            student, teacher = student / temperature, teacher / temperature
        log_q, log_p = torch.log_softmax(student, dim=-1), torch.log_softmax(teacher, dim=-1)
        per_token = _terms(_floor(log_q), _floor(log_p), kind, beta).sum(-1)  # [B, T] or [M]
    else:
        per_token = _ChunkedDivergence.apply(
            student_logits, teacher_logits, kind, beta, temperature, chunk_size, dtype, *index
        )

    # Checked on the result rather than the [N, V] inputs: costs nothing, and NaN logits at
    # masked-out positions are ignored like everything else there.
    if torch.isnan(per_token).any():
        raise _nan_error(student_logits, teacher_logits)
    if reduction == "sum":
        return per_token.sum()
    if reduction == "mean":
        return per_token.mean()
    if per_token.shape == positions:
        return per_token
    return per_token.new_zeros(positions).index_put(index, per_token)


# --------------------------------------------------------------------------------------------
# Sampled-token estimators
# --------------------------------------------------------------------------------------------


class KLEstimates(NamedTuple):
    """Per-token estimates of ``KL(student || teacher)``, each of the input's shape."""

    k1: torch.Tensor
    k2: torch.Tensor
    k3: torch.Tensor


def sampled_token_estimators(logp_student: torch.Tensor, logp_teacher: torch.Tensor) -> KLEstimates:
    """Schulman's k1/k2/k3 estimators of ``KL(student || teacher)`` at tokens ``x ~ student``.

    J. Schulman, "Approximating KL divergence" (2020). With ``log r = logp_teacher - logp_student``
    (log-probabilities of the sampled tokens, any shape):

    * ``k1 = -log r``: unbiased, high variance, can be negative.
    * ``k2 = (log r)^2 / 2``: biased (exact only to second order in ``log r``), low variance,
      ``>= 0``.
    * ``k3 = (r - 1) - log r``: unbiased and ``>= 0`` (``log x <= x - 1``), low variance when
      the distributions are close.

    These estimate the *value*. Used as losses differentiated through ``logp_student`` (sampled
    tokens held fixed), their expected gradients differ: ``E[grad k1] = 0``,
    ``E[grad k2] = grad KL(student || teacher)``, ``E[grad k3] = grad KL(teacher || student)``.
    """
    logp_student = validate.log_probs(logp_student, "logp_student")
    logp_teacher = validate.log_probs(logp_teacher, "logp_teacher")
    validate.same_shape(logp_student=logp_student, logp_teacher=logp_teacher)
    if (logp_student == -math.inf).any():
        raise ValueError("logp_student contains -inf: a token sampled from the student has p > 0")
    out = torch.promote_types(logp_student.dtype, logp_teacher.dtype)
    dtype = validate.compute_dtype(logp_student, logp_teacher)
    log_r = logp_teacher.to(dtype) - logp_student.to(dtype)
    k1, k2, k3 = -log_r, 0.5 * log_r.square(), torch.expm1(log_r) - log_r
    return KLEstimates(k1=k1.to(out), k2=k2.to(out), k3=k3.to(out))
