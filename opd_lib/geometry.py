"""Chapter 8: the shape of the per-token gradient cloud, measured.

Seed 000 sorts SFT, RL, OPD and OPSD by three properties of their per-token gradients, drawn by
hand: *density* (does every token carry signal), *bias* (do the tokens pull one way) and
*concentration* (is the signal piled on a few tokens). This module measures them.

* :func:`per_token_gradients`: one gradient vector per completion token, ``[N, P]``.
* :func:`gradient_statistics`: density, bias, concentration and friends, defined precisely there.
* :func:`train_student_teacher`, :func:`preset_gradients`, :func:`batch_alignment`: the chapter's
  experiment on a tiny Qwen3 trained for a few seconds on the hinted copy task of Chapter 6
  (``opd_lib.sim.self_distill``), which has a natural pivot token (the key letter only the hint
  reveals).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from opd_lib._threads import single_thread
from opd_lib.gkd import GKDBatch, completion_logits
from opd_lib.sampling import completion_mask

__all__ = [
    "GeometryRun",
    "batch_alignment",
    "gradient_statistics",
    "per_token_gradients",
    "preset_gradients",
    "project_2d",
    "train_student_teacher",
]


# ------------------------------------------------------------------------------ the measurement


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
    batch: GKDBatch,
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
    if not isinstance(batch, GKDBatch):
        raise ValueError(f"batch must be a GKDBatch, got {type(batch).__name__}")
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
        if eos_token_id is None:
            eos_token_id = getattr(getattr(model, "config", None), "eos_token_id", None)
        if eos_token_id is None:
            raise ValueError("eos_token_id is needed to build the mask (or pass mask)")
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
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
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
def _output_layer_gradients(model, batch: GKDBatch, coeff, mask) -> torch.Tensor:
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


# ------------------------------------------------------------------------------- the experiment


def train_student_teacher(student_steps: int = 60, teacher_steps: int = 90, seed: int = 0):
    """One training run of Chapter 6's hinted-copy model, with a snapshot as the student.

    A tiny Qwen3 (2 layers x 64) trains on ``prompt (+ hint) -> answer``
    (``opd_lib.sim.self_distill``'s task and training step). The snapshot after ``student_steps``
    is the **student**; the same run continued to ``teacher_steps`` is the same-family **teacher**
    (same architecture, tokenizer and recipe, more training). Returns
    ``(student, teacher, tokenizer)``, both in eval mode. Deterministic given ``seed``.
    """
    from opd_lib.lab import char_tokenizer, tiny_qwen3
    from opd_lib.sim import self_distill as sd

    if not 0 <= student_steps <= teacher_steps:
        raise ValueError("need 0 <= student_steps <= teacher_steps")
    tokenizer = char_tokenizer()
    model = tiny_qwen3(tokenizer, layers=2, hidden=64, heads=4, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.0)
    student = copy.deepcopy(model) if student_steps == 0 else None
    with single_thread():
        model.train()
        for step in range(teacher_steps):
            sd._train_step(model, tokenizer, opt, 24, seed * 100_003 + step + 1)
            if step + 1 == student_steps:
                student = copy.deepcopy(model)
    return student.eval(), model.eval(), tokenizer


@dataclass
class GeometryRun:
    """Per-token output-layer gradients of each preset on the same prompts.

    grads: preset key -> ``[N, P]`` per-token gradients; positions: ``[N]`` position in the answer
    of each row (the same order for every preset); key_position: the pivot's position; stats:
    preset key -> :func:`gradient_statistics`; pivot_share: preset key -> share of the squared
    norm at the pivot position; success_rate: the verifier's mean on the student's samples;
    advantages: preset key -> ``[B, C]``.
    """

    grads: dict[str, np.ndarray]
    positions: np.ndarray
    key_position: int
    stats: dict[str, dict[str, float]]
    pivot_share: dict[str, float]
    success_rate: float
    advantages: dict[str, np.ndarray]


def _hinted_batch(tokenizer, prompts, answers) -> GKDBatch:
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt", add_special_tokens=False)
    ids = torch.tensor([tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers])
    return GKDBatch(enc["input_ids"], enc["attention_mask"], ids)


def _task_setup(student, tokenizer, n: int, seed: int):
    from opd_lib.sampling import sample_completions
    from opd_lib.sim import self_distill as sd

    prompts, hints, answers = sd.hinted_copy_examples(n, seed=seed)
    batch = _hinted_batch(tokenizer, prompts, answers)
    gen = torch.Generator().manual_seed(seed)
    samples = sample_completions(
        student,
        batch.prompt_ids,
        batch.prompt_mask,
        batch.completion_ids.shape[1],
        generator=gen,
        eos_token_id=tokenizer.eos_token_id,
    )
    copied = batch.completion_ids[:, : sd.PROMPT_LEN]

    def verifier(completion_ids, _batch=None):  # did the answer copy the prompt's letters?
        return (completion_ids[:, : sd.PROMPT_LEN] == copied).all(dim=1).double()

    return prompts, hints, batch, samples, verifier


@single_thread()
def preset_gradients(
    student, teacher, tokenizer, n: int = 32, seed: int = 1, presets=("sft", "rl", "opd", "opsd")
) -> GeometryRun:
    """Per-token output-layer gradients of each preset on the same ``n`` prompts.

    SFT uses the dataset answers; RL (verifier: the prompt's letters were copied right,
    batch-mean baseline), OPD (``teacher``) and OPSD (the student reading the hint) share one
    set of student samples, so they differ only in the advantage. Every advantage comes from
    ``opd_lib.unified`` (``preset_loss``); the gradients from :func:`per_token_gradients`
    (``params="output"``).
    """
    from opd_lib.sim import self_distill as sd
    from opd_lib.unified import hinted_teacher, preset_loss

    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    prompts, hints, batch, samples, verifier = _task_setup(student, tokenizer, n, 10_000 + seed)
    teachers = {"opd": teacher, "opsd": hinted_teacher(student, tokenizer, prompts, hints)}
    grads, stats, share, advs = {}, {}, {}, {}
    positions = None
    for key in presets:
        with torch.no_grad():
            res = preset_loss(
                key,
                student,
                batch,
                teacher=teachers.get(key),
                verifier=verifier,
                samples=samples,
                eos_token_id=tokenizer.eos_token_id,
            )
        seq = GKDBatch(batch.prompt_ids, batch.prompt_mask, res.completion_ids)
        mask = torch.ones_like(res.mask)  # the task has no EOS: every answer token counts
        g = per_token_gradients(student, seq, res.advantage, "output", mask=mask).numpy()
        pos = np.tile(np.arange(seq.completion_ids.shape[1]), seq.completion_ids.shape[0])
        positions = pos
        sq = (g**2).sum(axis=1)
        grads[key] = g
        advs[key] = res.advantage.numpy()
        if sq.sum() > 0:
            stats[key] = gradient_statistics(g)
            share[key] = float(sq[pos == sd.KEY_AT].sum() / sq.sum())
        else:  # e.g. RL on a batch where every sample got the same reward: no gradient at all
            stats[key] = {k: float("nan") for k in ("density", "bias", "concentration")}
            share[key] = float("nan")
    success = float(verifier(samples).mean())
    return GeometryRun(grads, positions, sd.KEY_AT, stats, share, success, advs)


@single_thread()
def batch_alignment(
    student,
    teacher,
    tokenizer,
    batch_sizes: Sequence[int] = (2, 4, 8, 16, 32, 64, 128),
    pool: int = 256,
    reference_pool: int = 1024,
    draws: int = 100,
    seed: int = 2,
    presets=("rl", "opd", "opsd"),
) -> dict[str, np.ndarray]:
    """Does a batch average point where the expected gradient points? Cosine vs batch size.

    ``pool + reference_pool`` prompts get one student sample each. For each preset, the
    per-sequence output-layer gradient ``sum_t A_t grad log pi(y_t)`` is computed for every
    sample. The *expected direction* is the mean over the ``reference_pool`` samples (for RL with
    their mean reward as baseline). For each batch size ``B``, ``draws`` batches of ``B`` sequences
    are drawn from the other ``pool`` samples (RL with the batch-mean baseline, as its preset);
    the result is the mean cosine between the batch's mean gradient and the expected direction
    (a batch whose gradient is zero, e.g. RL with no success in it, scores 0). Returns
    ``{preset: [len(batch_sizes)]}`` plus ``"batch_sizes"`` and ``"success_rate"``.
    """
    from opd_lib.unified import hinted_teacher

    if min(batch_sizes) < 2 or max(batch_sizes) > pool or reference_pool < 2:
        raise ValueError("need 2 <= batch sizes <= pool and reference_pool >= 2")
    total = pool + reference_pool
    prompts, hints, batch, samples, verifier = _task_setup(student, tokenizer, total, 20_000 + seed)
    with torch.no_grad():
        s_logits, hidden = _logits_hidden(student, batch, samples)
        s_logp = torch.log_softmax(s_logits, -1).gather(-1, samples[..., None])[..., 0]
        dlog = -torch.softmax(s_logits, -1)
        dlog.scatter_add_(-1, samples[..., None], torch.ones_like(dlog[..., :1]))
    reward = verifier(samples).numpy()
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {"batch_sizes": np.asarray(batch_sizes)}
    for key in presets:
        if key == "rl":
            coeff = torch.ones_like(s_logp)
        else:
            t = teacher if key == "opd" else hinted_teacher(student, tokenizer, prompts, hints)
            with torch.no_grad():
                t_logits = (
                    completion_logits(t, batch.prompt_ids, batch.prompt_mask, samples)
                    if isinstance(t, torch.nn.Module)
                    else t(batch.prompt_ids, batch.prompt_mask, samples)
                )
            t_logp = torch.log_softmax(t_logits.float(), -1).gather(-1, samples[..., None])[..., 0]
            coeff = t_logp - s_logp
        per_seq = torch.einsum("bt,btv,bth->bvh", coeff, dlog, hidden).reshape(total, -1).numpy()
        per_seq = per_seq.astype(np.float64)
        ref_part, draw_part = per_seq[pool:], per_seq[:pool]
        if key == "rl":  # per_seq is the score sum_t grad log pi; weight by R - b
            r_ref = reward[pool:]
            ref = ((r_ref - r_ref.mean())[:, None] * ref_part).mean(0)
        else:
            ref = ref_part.mean(0)
        cos = []
        for b in batch_sizes:
            vals = []
            for _ in range(draws):
                idx = rng.choice(pool, b, replace=False)
                if key == "rl":
                    r = reward[idx]
                    g = ((r - r.mean())[:, None] * draw_part[idx]).mean(0)
                else:
                    g = draw_part[idx].mean(0)
                denom = np.linalg.norm(g) * np.linalg.norm(ref)
                vals.append(float(g @ ref / denom) if denom > 0 else 0.0)
            cos.append(np.mean(vals))
        out[key] = np.array(cos)
    out["success_rate"] = np.array(float(reward.mean()))
    return out


def _logits_hidden(model, batch: GKDBatch, ids: torch.Tensor):
    """Logits (float32) and last hidden states at the positions that predict ``ids``."""
    width = batch.prompt_ids.shape[1]
    full = torch.cat([batch.prompt_ids, ids], dim=1)
    attn = torch.cat([batch.prompt_mask.long(), torch.ones_like(ids).long()], 1)
    position_ids = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(
        input_ids=full, attention_mask=attn, position_ids=position_ids, output_hidden_states=True
    )
    return out.logits[:, width - 1 : -1, :].float(), out.hidden_states[-1][:, width - 1 : -1, :]


def _logp(model, batch: GKDBatch, ids: torch.Tensor) -> torch.Tensor:
    logits = completion_logits(model, batch.prompt_ids, batch.prompt_mask, ids)
    return torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
