"""Chapter 8: the shape of the per-token gradient cloud, measured.

A common picture sorts SFT, RL, OPD and OPSD by three properties of their per-token gradients,
drawn by hand: *density* (does every token carry signal), *bias* (do the tokens pull one way) and
*concentration* (is the signal piled on a few tokens). This module measures them.

* :func:`per_token_gradients`: one gradient vector per completion token, ``[N, P]``.
* :func:`gradient_statistics`: density, bias, concentration and friends, defined precisely there.
* :func:`project_2d`: several clouds on their top two principal components, for a picture.

The chapter's experiment that uses them is in :mod:`opd_lib.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from opd_lib.lm import Batch, completion_logits, token_logprobs
from opd_lib.sampling import completion_mask, special_token_ids


def _resolve_params(model: torch.nn.Module, params) -> list[torch.Tensor]:
    named = dict(model.named_parameters())
    out = []
    for p in params:
        if isinstance(p, str):
            if p not in named:
                raise ValueError(f"model has no parameter named {p!r}")
            out.append(named[p])
        elif isinstance(p, torch.Tensor):
            out.append(p)
        else:
            raise ValueError(f"params must be names or tensors, got {type(p).__name__}")
    if not out:
        raise ValueError("params is empty")
    return out


def per_token_gradients(
    model: torch.nn.Module,
    batch: Batch,
    loss_terms: torch.Tensor,
    params: str | Sequence[str | torch.Tensor] = "output",
    mask: torch.Tensor | None = None,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Gradient of each token's term ``c_t log pi_theta(y_t | x, y_<t)``, one row per token.

    ``batch.completion_ids`` ``[B, C]`` are the tokens ``y`` (data completions or the student's
    samples); ``loss_terms`` ``[B, C]`` are the coefficients ``c_t`` (e.g. the advantages
    ``A_t`` of ``opd_lib.unified.advantages``; detached), so row ``i`` of the result is
    ``grad_params [c_t log pi_theta(y_t)]`` for the ``i``-th counted token in row-major order.
    Tokens that count: ``mask`` if given, else ``completion_mask`` (up to and including the first
    EOS; ``eos_token_id`` defaults to the model's). Returns ``[N_tokens, P]`` (float64).

    ``params``:

    * ``"output"`` (default): the output projection (``lm_head``) with the final hidden states
      ``h_t`` held fixed, in closed form ``c_t (e_{y_t} - p_t) h_t^T``, flattened to
      ``P = V * H``. One forward pass for the whole batch. With tied embeddings this is the
      output-side part of the shared matrix's gradient (the input-side path is left out).
    * a list of parameter names or tensors of ``model``: exact autograd gradients, one backward
      pass per token (slow; meant for checks on small batches).
    """
    if not isinstance(batch, Batch):
        raise ValueError(f"batch must be a Batch, got {type(batch).__name__}")
    ids = batch.completion_ids
    coeff = torch.as_tensor(loss_terms).detach()
    if coeff.shape != ids.shape:
        raise ValueError(
            f"loss_terms must be [B, C] = {tuple(ids.shape)} (one coefficient per completion "
            f"token), got {tuple(coeff.shape)}"
        )
    if torch.isnan(coeff).any():
        raise ValueError("loss_terms contains NaN")
    if mask is None:
        eos_token_id, _ = special_token_ids(model, eos_token_id, None)
        mask = completion_mask(ids, eos_token_id)
    if mask.shape != ids.shape or mask.dtype != torch.bool:
        raise ValueError("mask must be a bool tensor shaped like completion_ids")
    if not mask.any():
        raise ValueError("mask selects no tokens")

    if isinstance(params, str):
        if params != "output":
            raise ValueError(f"params must be 'output' or a list of parameters, got {params!r}")
        return _output_layer_gradients(model, batch, coeff, mask)

    plist = _resolve_params(model, params)
    logits = completion_logits(model, batch.prompt_ids, batch.prompt_mask, ids)
    logp = token_logprobs(logits, ids)
    terms = (coeff.to(logp.dtype) * logp)[mask]
    rows = []
    for i in range(terms.shape[0]):
        grads = torch.autograd.grad(terms[i], plist, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(grads, plist, strict=True)
                ]
            )
        )
    return torch.stack(rows).double()


@torch.no_grad()
def _output_layer_gradients(model, batch: Batch, coeff, mask) -> torch.Tensor:
    ids = batch.completion_ids
    logits, hidden = _logits_hidden(model, batch, ids)
    hidden = hidden.double()[mask]  # [N, H]
    probs = torch.softmax(logits.double(), -1)[mask]  # [N, V]
    dlogits = -probs
    dlogits[torch.arange(probs.shape[0]), ids[mask]] += 1.0
    dlogits *= coeff.double()[mask].unsqueeze(-1)
    return (dlogits.unsqueeze(-1) * hidden.unsqueeze(1)).reshape(probs.shape[0], -1)


def gradient_statistics(
    grads: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray | None = None,
    rel_tol: float = 0.1,
    top_frac: float = 0.01,
) -> dict[str, float]:
    """Shape statistics of a cloud of per-token gradients ``grads`` ``[N, P]`` (rows = tokens).

    With ``n_i = ||g_i||``, ``rms = sqrt(mean n_i^2)`` and ``g_bar = mean_i g_i``:

    * ``density``: the fraction of tokens that carry signal, ``#{i : n_i >= rel_tol * rms} / N``
      (1 when every token has a comparable gradient; ``1/N`` when one token has it all; tokens
      with zero advantage count as empty).
    * ``bias``: how much the tokens pull one way, ``||g_bar|| / mean_i n_i`` in ``[0, 1]``:
      1 when all rows are the same vector, about ``1 / sqrt(N)`` for independent isotropic noise
      (the pulls cancel), 0 when they cancel exactly.
    * ``concentration``: the share of the total squared norm carried by the ``k`` largest tokens,
      ``k = max(1, ceil(top_frac * N))`` (the top 1% by default): ``k / N`` when all norms are
      equal, near 1 when one token dominates.
    * ``effective_tokens``: the participation ratio ``(sum n_i^2)^2 / sum n_i^4``, how many tokens
      effectively carry the squared norm (N when equal, 1 when one dominates).
    * ``mean_cosine``: the mean pairwise cosine between distinct non-zero rows.
    * ``mean_norm`` (``mean_i n_i``), ``mean_grad_norm`` (``||g_bar||``), ``n_tokens``.
    * ``alignment`` (only with ``reference`` ``[P]``): the cosine between ``g_bar`` and
      ``reference`` (0 if either is zero), i.e. whether the average points somewhere useful.
    """
    g = torch.as_tensor(np.asarray(grads), dtype=torch.float64)
    if g.ndim != 2 or g.shape[0] < 1 or g.shape[1] < 1:
        raise ValueError(f"grads must be a non-empty [N, P] array, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ValueError("grads contains NaN or infinity")
    if not 0.0 < top_frac <= 1.0:
        raise ValueError(f"top_frac must lie in (0, 1], got {top_frac}")
    if not rel_tol >= 0.0:
        raise ValueError(f"rel_tol must be >= 0, got {rel_tol}")
    n = g.shape[0]
    norms = g.norm(dim=1)
    sq = norms**2
    total = float(sq.sum())
    if total == 0.0:
        raise ValueError("every gradient is zero: the statistics are undefined")
    rms = math.sqrt(total / n)
    mean_vec = g.mean(dim=0)
    mean_norm = float(norms.mean())
    k = max(1, math.ceil(top_frac * n))
    nonzero = g[norms > 0] / norms[norms > 0].unsqueeze(-1)
    m = nonzero.shape[0]
    if m > 1:
        s = nonzero.sum(dim=0)
        mean_cos = float((s @ s - m) / (m * (m - 1)))
    else:
        mean_cos = float("nan")
    stats = {
        "density": float((norms >= rel_tol * rms).double().mean()),
        "bias": float(mean_vec.norm()) / mean_norm,
        "concentration": float(torch.topk(sq, k).values.sum()) / total,
        "effective_tokens": total**2 / float((sq**2).sum()),
        "mean_cosine": mean_cos,
        "mean_norm": mean_norm,
        "mean_grad_norm": float(mean_vec.norm()),
        "n_tokens": float(n),
    }
    if reference is not None:
        ref = torch.as_tensor(np.asarray(reference), dtype=torch.float64).reshape(-1)
        if ref.shape[0] != g.shape[1]:
            raise ValueError(f"reference has {ref.shape[0]} entries, grads have {g.shape[1]}")
        denom = float(ref.norm() * mean_vec.norm())
        stats["alignment"] = float(ref @ mean_vec) / denom if denom > 0 else 0.0
    return stats


def project_2d(*clouds: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Project several ``[N_k, P]`` clouds onto the top two principal components of all of them
    together (centred on their joint mean). Returns the projected clouds ``[N_k, 2]`` and the
    ``[2, P]`` components; a mean vector ``v`` is drawn as ``components @ v`` (an arrow)."""
    if not clouds:
        raise ValueError("no clouds given")
    stacked = np.concatenate([np.asarray(c, dtype=float) for c in clouds])
    centred = stacked - stacked.mean(axis=0)
    # randomized subspace iteration for the top two right singular vectors (a full SVD of a
    # [thousands, thousands] matrix takes minutes on a busy CPU; this takes milliseconds)
    rng = np.random.default_rng(0)
    k = min(10, *centred.shape)
    basis = np.linalg.qr(centred @ rng.normal(size=(centred.shape[1], k)))[0]
    for _ in range(6):
        basis = np.linalg.qr(centred @ (centred.T @ basis))[0]
    _, _, vt = np.linalg.svd(basis.T @ centred, full_matrices=False)
    comps = vt[:2]
    return [np.asarray(c, dtype=float) @ comps.T for c in clouds], comps


def _logits_hidden(model, batch: Batch, ids: torch.Tensor):
    """Logits (float32) and last hidden states at the positions that predict ``ids``."""
    logits, hidden = completion_logits(model, batch.prompt_ids, batch.prompt_mask, ids, hidden=True)
    return logits.float(), hidden
