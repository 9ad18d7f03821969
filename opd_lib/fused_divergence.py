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

Speed on a CPU: the matmuls are nearly all of the time, and their speed depends on the chunk
(one thread, ``H = 1024``, ``V = 151,936``: ~32 GFLOP/s at 64 rows, ~55 at 256), hence the
default of up to 256 rows (``auto_chunk_size``). The rest is kept off the critical path: one
``exp`` per logit and side (``exp(z - max)`` gives both the normaliser and the probabilities),
the elementwise work in blocks of ``_ROW_BLOCK`` rows that stay in cache, ``1/T`` and the
mean's weights applied to ``[c, H]`` results rather than ``[c, V]`` arrays, and two ``[c, V]``
buffers reused by every chunk (fresh ones are page-faulted anew each time).

The floor: beyond the weights and their gradients, a forward+backward must hold the gradient of
the student hidden states ``[N, H]`` (it *is* the backward's output) and a few floats per token;
everything else here is two ``[chunk_size, V]`` arrays (plus ``[_ROW_BLOCK, V]``
temporaries), independent of ``N`` beyond 2,048 selected tokens. At ``N = 8192``,
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
_ROW_BLOCK = 4  # rows per elementwise step: its [4, V] operands stay in cache
_MAX_CHUNK, _MIN_CHUNK = 256, 32


def auto_chunk_size(selected_tokens: int) -> int:
    """The default ``chunk_size``: ``ceil(M / 8)`` selected tokens, clamped to ``[32, 256]``.

    From ``M = 256`` on, the two ``[chunk, V]`` scratch arrays are at most a quarter of one
    ``[M, V]`` logits array (below, the 32-row floor binds); 256 rows is where a one-thread
    float32 GEMM against a ``[151936, H]`` head reaches its speed on the benchmark's CPU (64
    rows run ~40 % slower). E.g. ``M = 1843`` (2,048 tokens, 10 % padding): 231 rows.
    """
    if selected_tokens < 0:
        raise ValueError(f"selected_tokens must be >= 0, got {selected_tokens}")
    return min(_MAX_CHUNK, max(_MIN_CHUNK, -(-selected_tokens // 8)))


def _normalize_(logits: torch.Tensor, inv_temperature: float) -> torch.Tensor:
    """Turn ``logits`` into the floored ``log_softmax(logits / T)`` in place; return the softmax.

    One ``exp`` per element (``exp(z - max)`` gives both the normaliser and the probabilities);
    the floor is ``divergences._floor``'s (``-inf`` logits give the most negative float).
    """
    if inv_temperature != 1.0:
        logits.mul_(inv_temperature)
    logits.sub_(logits.amax(-1, keepdim=True)).clamp_min_(torch.finfo(logits.dtype).min)
    prob = logits.exp()
    total = prob.sum(-1, keepdim=True)
    logits.sub_(total.log())
    return prob.div_(total)


def _block_terms(
    z_q: torch.Tensor, z_p: torch.Tensor, kind: str, beta: float, inv_t: float, need_grad: bool
) -> torch.Tensor:
    """Per-row divergence of student logits ``z_q`` and teacher logits ``z_p`` (``[r, V]``).

    Both are overwritten; with ``need_grad``, ``z_q`` ends up holding ``dD/ds`` (``s = z/T``)
    up to the constant ``_grad_factor(kind, beta)``.
    """
    q, p = _normalize_(z_q, inv_t), _normalize_(z_p, inv_t)
    log_q, log_p = z_q, z_p  # row sums below are in place: ``x.mul_(y).sum(-1)``
    if kind == "fkl":
        log_ratio = log_p.sub_(log_q)  # log(p/q); log_q is free from here on
        if need_grad:
            torch.sub(q, p, out=log_q)
        return log_ratio.mul_(p).sum(-1)
    if kind == "rkl":
        log_ratio = log_q.sub_(log_p)  # log(q/p); log_p is free from here on
        value = torch.mul(log_ratio, q, out=log_p).sum(-1)
        if need_grad:
            log_ratio.sub_(value.unsqueeze(-1)).mul_(q)
        return value
    if kind == "tv":
        diff = p.neg_().add_(q)  # q - p
        value = 0.5 * torch.linalg.vector_norm(diff, ord=1, dim=-1)
        if need_grad:  # q (s - <q, s>), s = sign(q - p); the 1/2 is in _grad_factor
            sign = diff.sign_()
            centre = torch.mul(sign, q, out=log_p).sum(-1, keepdim=True)
            torch.mul(sign.sub_(centre), q, out=log_q)
        return value
    log_m = torch.add(log_p, math.log(beta))
    torch.logaddexp(log_m, torch.add(log_q, math.log1p(-beta)), out=log_m)
    kl_pm = log_p.sub_(log_m).mul_(p).sum(-1)  # log_p is free from here on
    log_ratio = log_q.sub_(log_m)  # log(q/m)
    kl_qm = torch.mul(log_ratio, q, out=log_p).sum(-1)
    if need_grad:  # (1 - beta) q (log(q/m) - KL(q||m)); the (1 - beta) is in _grad_factor
        log_ratio.sub_(kl_qm.unsqueeze(-1)).mul_(q)
    return beta * kl_pm + (1 - beta) * kl_qm


def _grad_factor(kind: str, beta: float) -> float:
    """The constant ``_block_terms`` leaves out of the gradient it writes."""
    return {"tv": 0.5, "jsd": 1 - beta}.get(kind, 1.0)


def _project(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """``out = h @ weight.T + bias`` in ``out``'s dtype; a head of another dtype cast by blocks."""
    if weight.dtype == out.dtype:
        torch.matmul(h, weight.t(), out=out)
    else:
        for start in range(0, weight.shape[0], _CAST_BLOCK):
            block = weight[start : start + _CAST_BLOCK].to(out.dtype)
            torch.matmul(h, block.t(), out=out[:, start : start + block.shape[0]])
    return out if bias is None else out.add_(bias.to(out.dtype))


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
    Chunks are balanced (``ceil(M / ceil(M / chunk))`` rows); the elementwise work runs on
    ``_ROW_BLOCK`` rows at a time, and every constant or per-row scale is applied to the
    ``[c, H]`` side, never to a ``[c, V]`` array.
    """
    (h_s, w_s, b_s), (h_t, w_t, b_t) = student, teacher
    kind, beta, temperature, chunk, dtype = options
    rows, need_grad = h_s.shape[0], hidden or head
    values = torch.empty(rows, dtype=dtype, device=h_s.device) if value else None
    grad_h = torch.empty(h_s.shape, dtype=dtype, device=h_s.device) if hidden else None
    grad_w = torch.zeros(w_s.shape, dtype=dtype, device=w_s.device) if head else None
    grad_b = torch.zeros(w_s.shape[0], dtype=dtype, device=w_s.device)
    grad_b = grad_b if head and b_s is not None else None
    factor = _grad_factor(kind, beta) / temperature
    chunk = -(-rows // max(1, -(-rows // chunk)))  # balanced: no short last chunk
    # two [chunk, V] buffers reused by every chunk (a fresh one would be page-faulted each time)
    buffers = torch.empty(2, min(chunk, rows), w_s.shape[0], dtype=dtype, device=h_s.device)
    for start in range(0, rows, chunk):
        sl = slice(start, start + chunk)
        hs = h_s[sl].to(dtype)
        z_q = _project(hs, w_s, b_s, buffers[0, : hs.shape[0]])
        z_p = _project(h_t[sl].to(dtype), w_t, b_t, buffers[1, : hs.shape[0]])
        for r in range(0, z_q.shape[0], _ROW_BLOCK):
            rb = slice(r, r + _ROW_BLOCK)
            out = _block_terms(z_q[rb], z_p[rb], kind, beta, 1 / temperature, need_grad)
            if value:
                values[start + r : start + r + out.shape[0]] = out
        if not need_grad:
            continue
        scale = factor if row_weight is None else row_weight[sl].to(dtype).unsqueeze(-1) * factor
        if hidden:
            grad_h[sl] = _back_project(z_q, w_s).mul_(scale)
        if head:
            hs_scaled = hs * scale
            if w_s.dtype == dtype:
                grad_w.addmm_(z_q.t(), hs_scaled)
            else:
                for vs in range(0, w_s.shape[0], _CAST_BLOCK):
                    grad_w[vs : vs + _CAST_BLOCK].addmm_(
                        z_q[:, vs : vs + _CAST_BLOCK].t(), hs_scaled
                    )
            if grad_b is not None:
                if row_weight is None:
                    grad_b.add_(z_q.sum(0), alpha=factor)
                else:
                    grad_b.addmv_(z_q.t(), scale.view(-1))
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
    chunk_size: int | None = None,
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
        chunk_size: selected tokens per chunk (at most; chunks are balanced); scratch memory
            is two ``[chunk_size, V]`` float32 arrays (256 rows at V = 151,936: 148 MiB each).
            ``None``: ``auto_chunk_size`` of the number of selected tokens.

    Gradients: to ``student_hidden`` and to ``student_head``/``student_bias`` when they require
    grad (a frozen head, or a LoRA base weight with ``requires_grad=False``, gets none and costs
    nothing); never to the teacher (its inputs are detached). All are computed in the forward
    pass (which is wasted only when grad is enabled but ``backward`` is never called; under
    ``torch.no_grad`` only values are computed).
    """
    kind = _resolve(kind, beta)
    validate.choice(reduction, "reduction", REDUCTIONS)
    temperature = validate.positive(temperature, "temperature")
    if chunk_size is not None:
        chunk_size = validate.integer(chunk_size, "chunk_size")
    _check_inputs(
        student_hidden, student_head, teacher_hidden, teacher_head, (student_bias, teacher_bias)
    )
    positions = student_hidden.shape[:-1]
    selected = torch.ones(positions, dtype=torch.bool) if mask is None else mask
    selected = validate.mask(selected, "mask", positions, what="the positions")
    index = selected.to(student_hidden.device).nonzero(as_tuple=True)
    dtype = validate.compute_dtype(student_hidden, student_head, teacher_hidden, teacher_head)
    chunk_size = chunk_size or auto_chunk_size(int(index[0].numel()))
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
