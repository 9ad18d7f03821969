"""Per-token divergence fused with the LM heads: the ``[N, V]`` logits are never built.

``fused_token_divergence(student_hidden, student_head, teacher_hidden, teacher_head, ...)`` equals
``token_divergence(student_hidden @ student_head.T, teacher_hidden @ teacher_head.T, ...)`` (same
kinds, ``beta``, ``temperature``, ``mask`` and ``reduction`` semantics; see
``opd_lib.divergences``), with ``p = softmax(teacher logits / T)``, ``q = softmax(student logits
/ T)``:

* fkl ``sum_v p log(p/q)``, gradient w.r.t. the student logits ``(q - p) / T``;
* rkl ``sum_v q log(q/p)``, gradient ``q (log(q/p) - D) / T``;
* jsd, ``m = beta p + (1 - beta) q``: ``beta KL(p||m) + (1 - beta) KL(q||m)``, gradient
  ``(1 - beta) q (log(q/m) - KL(q||m)) / T`` (``beta = 0``/``1`` are fkl/rkl, as in TRL);
* tv ``sum_v |p - q| / 2``, subgradient ``q (s/2 - <q, s/2>) / T`` with ``s = sign(q - p)``.

How (the design of Liger's ``LigerFusedLinearJSDLoss``, ``liger_kernel/chunked_loss/
fused_linear_distillation.py``, with analytic gradients instead of ``torch.func``): masked-out
positions are dropped first and never projected (TRL 1.16's ``ChunkedDivergenceFunction``,
``trl/kernels/chunked_divergence.py``, projects them on CPU); the selected tokens are processed
``chunk_size`` at a time with full-vocabulary rows, so one pass gives the log-normalisers, the
value and the logit gradient ``g [chunk, V]``, which is immediately folded into
``grad_hidden = g @ W`` (and ``grad_W += g^T h`` when the head is trainable). TRL's kernel instead
tiles the vocabulary with an online log-sum-exp, so it needs a second pass for the JSD and
recomputes both projections in the backward: 5 (fkl/rkl) or 7 (jsd) ``N x V x H`` matmuls
against 3 here (4 with a trainable head, against 6 or 8).

The floor: beyond the weights and their gradients, a forward+backward must hold the gradient of
the student hidden states ``[N, H]`` (it *is* the backward's output) and a few floats per token;
everything else here is ``[chunk_size, V]`` scratch, independent of ``N``. At ``N = 8192``,
``H = 1024`` the floor is 32 MiB; one float32 logits array is 4.6 GiB.

Precision: matmuls and softmaxes run in float32 for half-precision inputs (float64 for float64)
and every accumulation across chunks (``grad_hidden``, ``grad_W``) is float32 (TRL's source
notes that bf16 accumulation biases the entropy downward). A half-precision head is cast to
float32 in vocabulary blocks, never whole. The value is returned in float32 (float64 stays
float64), exactly like ``token_divergence``; gradients come back in the inputs' dtypes.
"""

from __future__ import annotations

import math

import torch

from opd_lib import validate
from opd_lib.divergences import REDUCTIONS, _resolve

_CAST_BLOCK = 8192  # vocabulary rows cast at a time when the head is not in the compute dtype


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``[c, V]`` inputs without a ``[c, V]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _log_softmax_(x: torch.Tensor) -> torch.Tensor:
    """In-place floored ``log_softmax`` over the last axis (the floor as ``divergences._floor``)."""
    return x.sub_(torch.logsumexp(x, -1, keepdim=True)).clamp_min_(torch.finfo(x.dtype).min)


def _chunk_terms(
    log_q: torch.Tensor, log_p: torch.Tensor, kind: str, beta: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row divergence and ``dD/ds`` (logits already divided by T); inputs are overwritten."""
    if kind == "fkl":
        p = log_p.exp()
        value = _rowdot(p, log_p.sub_(log_q))
        return value, (log_q.exp_().sub_(p) if need_grad else None)
    if kind == "rkl":
        q = log_q.exp()
        value = _rowdot(q, log_q.sub_(log_p))
        return value, (log_q.sub_(value.unsqueeze(-1)).mul_(q) if need_grad else None)
    if kind == "tv":
        q = log_q.exp()
        diff = log_p.exp_().neg_().add_(q)  # q - p
        value = 0.5 * torch.linalg.vector_norm(diff, ord=1, dim=-1)
        if not need_grad:
            return value, None
        half_sign = diff.sign_().mul_(0.5)
        return value, half_sign.sub_(_rowdot(q, half_sign).unsqueeze(-1)).mul_(q)
    log_m = log_p + math.log(beta)
    torch.logaddexp(log_m, log_q + math.log1p(-beta), out=log_m)
    prob = log_p.exp()  # p, then q in the same buffer
    kl_pm = _rowdot(prob, log_p.sub_(log_m))
    torch.exp(log_q, out=prob)
    kl_qm = _rowdot(prob, log_q.sub_(log_m))
    value = beta * kl_pm + (1 - beta) * kl_qm
    if not need_grad:
        return value, None
    return value, log_q.sub_(kl_qm.unsqueeze(-1)).mul_(prob).mul_(1 - beta)


def _project(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``h @ weight.T + bias`` in ``h``'s dtype; a head in another dtype is cast by blocks."""
    if weight.dtype == h.dtype:
        out = h @ weight.t()
    else:
        out = h.new_empty(h.shape[0], weight.shape[0])
        for start in range(0, weight.shape[0], _CAST_BLOCK):
            block = weight[start : start + _CAST_BLOCK].to(h.dtype)
            out[:, start : start + block.shape[0]] = h @ block.t()
    return out if bias is None else out.add_(bias.to(h.dtype))


def _back_project(g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``g @ weight`` (``[c, V] @ [V, H]``) in ``g``'s dtype; a head in another dtype by blocks."""
    if weight.dtype == g.dtype:
        return g @ weight
    out = g.new_zeros(g.shape[0], weight.shape[1])
    for start in range(0, weight.shape[0], _CAST_BLOCK):
        block = weight[start : start + _CAST_BLOCK].to(g.dtype)
        out.addmm_(g[:, start : start + block.shape[0]], block)
    return out


def _sweep(
    student: tuple,
    teacher: tuple,
    options: tuple,
    *,
    value: bool,
    hidden: bool,
    head: bool,
    row_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One pass over token chunks: per-token values and the gradients asked for.

    ``student``/``teacher`` are ``(hidden [M, H], weight [V, H], bias or None)``. Gradients are
    of ``sum_i row_weight_i D_i`` (``row_weight = 1`` when ``None``), accumulated in ``dtype``.
    """
    (h_s, w_s, b_s), (h_t, w_t, b_t) = student, teacher
    kind, beta, temperature, chunk, dtype = options
    rows = h_s.shape[0]
    values = torch.empty(rows, dtype=dtype, device=h_s.device) if value else None
    grad_h = torch.empty(h_s.shape, dtype=dtype, device=h_s.device) if hidden else None
    grad_w = torch.zeros(w_s.shape, dtype=dtype, device=w_s.device) if head else None
    grad_b = (
        torch.zeros(w_s.shape[0], dtype=dtype, device=w_s.device)
        if head and b_s is not None
        else None
    )
    for start in range(0, rows, chunk):
        sl = slice(start, start + chunk)
        hs = h_s[sl].to(dtype)
        log_q = _log_softmax_(_project(hs, w_s, b_s).div_(temperature))
        log_p = _log_softmax_(_project(h_t[sl].to(dtype), w_t, b_t).div_(temperature))
        out, g = _chunk_terms(log_q, log_p, kind, beta, hidden or head)
        del log_p
        if value:
            values[sl] = out
        if g is None:
            continue
        scale = (
            1 / temperature
            if row_weight is None
            else row_weight[sl].to(dtype).unsqueeze(-1) / temperature
        )
        g.mul_(scale)
        if hidden:
            grad_h[sl] = _back_project(g, w_s)
        if head:
            if w_s.dtype == dtype:
                grad_w.addmm_(g.t(), hs)
            else:
                for vs in range(0, w_s.shape[0], _CAST_BLOCK):
                    grad_w[vs : vs + _CAST_BLOCK].addmm_(g[:, vs : vs + _CAST_BLOCK].t(), hs)
            if grad_b is not None:
                grad_b.add_(g.sum(0))
    return values, grad_h, grad_w, grad_b


class _FusedDivergence(torch.autograd.Function):
    """Per-token divergence ``[M]`` of the selected rows; gradients computed in the forward.

    The forward keeps ``grad_hidden [M, H]`` (and the head's gradient when it requires grad) of
    ``sum_i D_i``; the backward only scales them by ``grad_out``. A head gradient for a
    non-uniform ``grad_out`` (a weighted sum of the ``reduction="none"`` output) cannot be
    rescaled after the fact and is recomputed by a second pass.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, b_s, h_t, w_t, b_t, options):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        head = need_w or need_b
        student, teacher = (h_s, w_s, b_s), (h_t.detach(), w_t.detach(), b_t)
        values, grad_h, grad_w, grad_b = _sweep(
            student, teacher, options, value=True, hidden=need_h, head=head
        )
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.inputs = (student, teacher, options) if head else None
        ctx.hidden_dtype = h_s.dtype
        return values

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        out_h = out_w = out_b = None
        if need_h:
            out_h = (grad_h * grad_out.to(grad_h.dtype).unsqueeze(-1)).to(ctx.hidden_dtype)
        if need_w or need_b:
            if grad_out.numel() and bool((grad_out == grad_out[0]).all()):
                factor = grad_out[0].to(grad_w.dtype)
                grad_w, grad_b = grad_w * factor, (None if grad_b is None else grad_b * factor)
            else:
                student, teacher, options = ctx.inputs
                _, _, grad_w, grad_b = _sweep(
                    student,
                    teacher,
                    options,
                    value=False,
                    hidden=False,
                    head=True,
                    row_weight=grad_out,
                )
            _, w_s, b_s = ctx.inputs[0]
            out_w = grad_w.to(w_s.dtype) if need_w else None
            out_b = grad_b.to(b_s.dtype) if need_b else None
        return out_h, out_w, out_b, None, None, None, None


def _check_head(head: object, bias: object, hidden: torch.Tensor, who: str) -> None:
    if isinstance(head, torch.nn.Module):
        raise validate.ArgumentTypeError(
            f"{who}_head must be the head's weight tensor [V, H] (e.g. lm_head.weight), not a "
            f"{type(head).__name__}"
        )
    validate.float_tensor(head, f"{who}_head", ndim=2, dims="[V, H]")
    if head.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"hidden sizes differ: {who}_head is [V, {head.shape[1]}] but {who}_hidden has "
            f"hidden size {hidden.shape[-1]}"
        )
    if bias is not None:
        validate.float_tensor(bias, f"{who}_bias", ndim=1, dims=f"[{head.shape[0]}]")
        if bias.shape[0] != head.shape[0]:
            raise ValueError(f"{who}_bias must be [{head.shape[0]}], got {tuple(bias.shape)}")


def _check_inputs(student_hidden, student_head, teacher_hidden, teacher_head, biases) -> None:
    for name, hidden in (("student_hidden", student_hidden), ("teacher_hidden", teacher_hidden)):
        validate.float_tensor(hidden, name, min_ndim=2, dims="[..., H] with positions")
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"positions differ: student_hidden {tuple(student_hidden.shape)} vs teacher_hidden "
            f"{tuple(teacher_hidden.shape)}"
        )
    _check_head(student_head, biases[0], student_hidden, "student")
    _check_head(teacher_head, biases[1], teacher_hidden, "teacher")
    vs, vt = student_head.shape[0], teacher_head.shape[0]
    if vs != vt:
        raise ValueError(f"vocabulary sizes differ: student_head has {vs} rows, teacher_head {vt}")


def fused_token_divergence(
    student_hidden: torch.Tensor,
    student_head: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_head: torch.Tensor,
    *,
    kind: str = "fkl",
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "none",
    chunk_size: int = 64,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``token_divergence`` of ``hidden @ head.T (+ bias)`` logits, without building them.

    Args:
        student_hidden, teacher_hidden: ``[B, T, H_s]`` and ``[B, T, H_t]`` final hidden states
            (any leading shape, the same for both; e.g. ``model.model(...).last_hidden_state``).
        student_head, teacher_head: the LM heads' weight tensors ``[V, H]`` (``lm_head.weight``),
            the same ``V``; optional ``student_bias``/``teacher_bias`` ``[V]``. Tensors, not
            modules: a LoRA-wrapped head would otherwise be silently evaluated without its
            adapter; pass a merged weight for such a head.
        kind, beta, temperature, reduction: as ``opd_lib.divergences.token_divergence``
            (``beta`` only for ``"jsd"``; ``temperature`` divides both logits, no ``T^2``).
        mask: optional ``[B, T]``, boolean or integer 0/1 (``opd_lib.validate.mask``);
            unselected positions are never projected. ``reduction="none"`` gives ``[B, T]``
            with 0 there; ``"mean"`` averages over the selected positions, ``"sum"`` adds them.
        chunk_size: selected tokens per chunk; scratch memory is a few ``[chunk_size, V]``
            arrays (64 rows at V = 151,936: ~37 MiB each in float32).

    Gradients: to ``student_hidden`` and to ``student_head``/``student_bias`` when they require
    grad (a frozen head, or a LoRA base weight with ``requires_grad=False``, gets none and costs
    nothing); never to the teacher (its inputs are detached). All are computed in the forward
    pass (which is wasted only when grad is enabled but ``backward`` is never called; under
    ``torch.no_grad`` only values are computed).
    """
    kind = _resolve(kind, beta)
    validate.choice(reduction, "reduction", REDUCTIONS)
    temperature = validate.positive(temperature, "temperature")
    chunk_size = validate.integer(chunk_size, "chunk_size")
    _check_inputs(
        student_hidden, student_head, teacher_hidden, teacher_head, (student_bias, teacher_bias)
    )
    positions = student_hidden.shape[:-1]
    selected = torch.ones(positions, dtype=torch.bool) if mask is None else mask
    selected = validate.mask(selected, "mask", positions, what="the positions")
    index = selected.to(student_hidden.device).nonzero(as_tuple=True)
    dtype = validate.compute_dtype(student_hidden, student_head, teacher_hidden, teacher_head)
    options = (kind, float(beta), temperature, chunk_size, dtype)
    per_token = _FusedDivergence.apply(
        student_hidden[index],
        student_head,
        student_bias,
        teacher_hidden[index],
        teacher_head,
        teacher_bias,
        options,
    )
    if torch.isnan(per_token).any():
        raise ValueError("NaN divergence: check the hidden states and heads for NaN or inf")
    if reduction == "sum":
        return per_token.sum()
    if reduction == "mean":
        return per_token.mean()
    return per_token.new_zeros(positions).index_put(index, per_token)


def memory_floor_bytes(
    n_tokens: int, hidden_size: int, floats_per_token: int = 4, bytes_per_float: int = 4
) -> int:
    """The least extra memory of a fused forward+backward, beyond weights and their gradients.

    ``n_tokens * hidden_size`` floats for the gradient of the student's hidden states (the
    backward's output, so no method can avoid it) plus ``floats_per_token`` per token
    (log-normalisers, the value). At 8,192 tokens and ``H = 1024``: 32 MiB, against 4.6 GiB for
    one float32 ``[N, 151936]`` logits array.
    """
    if n_tokens < 0 or hidden_size < 1:
        raise ValueError(f"need n_tokens >= 0 and hidden_size >= 1, got {n_tokens}, {hidden_size}")
    return n_tokens * (hidden_size + floats_per_token) * bytes_per_float
