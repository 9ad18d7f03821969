"""Chapter 8: the shape of the per-token gradient cloud, measured.

A common picture sorts SFT, RL, OPD and OPSD by three properties of their per-token gradients,
drawn by hand: *density* (does every token carry signal), *bias* (do the tokens pull one way) and
*concentration* (is the signal piled on a few tokens). This module measures them.

* :func:`per_token_gradients`: one gradient vector per completion token, ``[N, P]``.
* :func:`gradient_statistics`: density, bias, concentration and friends, defined precisely there.
  These and :func:`project_2d` live in :mod:`opd_lib.gradient_cloud` (re-exported here).
* :func:`train_student_teacher`, :func:`preset_gradients`, :func:`batch_alignment`: the chapter's
  experiment on a tiny Qwen3 trained for a few seconds on the hinted copy task of Chapter 6
  (:mod:`opd_lib.hinted_copy`), which has a natural pivot token (the key letter only the hint
  reveals).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import hinted_copy
from opd_lib._threads import single_thread
from opd_lib.gradient_cloud import (
    _logits_hidden,
    gradient_statistics,
    per_token_gradients,
    project_2d,
)
from opd_lib.lm import Batch, encode, token_logprobs
from opd_lib.models import tiny_qwen3
from opd_lib.sampling import sample_completions
from opd_lib.tokenizers import char_tokenizer
from opd_lib.unified import hinted_teacher, preset_loss, teacher_logits

__all__ = [
    "GeometryRun",
    "batch_alignment",
    "gradient_statistics",
    "per_token_gradients",
    "preset_gradients",
    "project_2d",
    "train_student_teacher",
]


# ------------------------------------------------------------------------------- the experiment


def train_student_teacher(student_steps: int = 60, teacher_steps: int = 90, seed: int = 0):
    """One training run of Chapter 6's hinted-copy model, with a snapshot as the student.

    A tiny Qwen3 (2 layers x 64) trains on ``prompt (+ hint) -> answer``
    (:mod:`opd_lib.hinted_copy`'s task and training step). The snapshot after ``student_steps``
    is the **student**; the same run continued to ``teacher_steps`` is the same-family **teacher**
    (same architecture, tokenizer and recipe, more training). Returns
    ``(student, teacher, tokenizer)``, both in eval mode. Deterministic given ``seed``.
    """
    if not 0 <= student_steps <= teacher_steps:
        raise ValueError("need 0 <= student_steps <= teacher_steps")
    tokenizer = char_tokenizer()
    model = tiny_qwen3(tokenizer, layers=2, hidden=64, heads=4, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.0)
    student = copy.deepcopy(model) if student_steps == 0 else None
    with single_thread():
        model.train()
        for step in range(teacher_steps):
            hinted_copy.sft_step(model, tokenizer, opt, 24, seed * 100_003 + step + 1)
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


def _task_setup(student, tokenizer, n: int, seed: int):
    prompts, hints, answers = hinted_copy.examples(n, seed=seed)
    batch = encode(tokenizer, prompts, answers, eos=False)  # every answer counts, no EOS
    gen = torch.Generator().manual_seed(seed)
    samples = sample_completions(
        student,
        batch.prompt_ids,
        batch.prompt_mask,
        batch.completion_ids.shape[1],
        generator=gen,
        eos_token_id=tokenizer.eos_token_id,
    )
    copied = batch.completion_ids[:, : hinted_copy.PROMPT_LEN]

    def verifier(completion_ids, _batch=None):  # did the answer copy the prompt's letters?
        return (completion_ids[:, : hinted_copy.PROMPT_LEN] == copied).all(dim=1).double()

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
        seq = Batch(batch.prompt_ids, batch.prompt_mask, res.completion_ids)
        mask = torch.ones_like(res.mask)  # the task has no EOS: every answer token counts
        g = per_token_gradients(student, seq, res.advantage, "output", mask=mask).numpy()
        pos = np.tile(np.arange(seq.completion_ids.shape[1]), seq.completion_ids.shape[0])
        positions = pos
        sq = (g**2).sum(axis=1)
        grads[key] = g
        advs[key] = res.advantage.numpy()
        if sq.sum() > 0:
            stats[key] = gradient_statistics(g)
            share[key] = float(sq[pos == hinted_copy.KEY_AT].sum() / sq.sum())
        else:  # e.g. RL on a batch where every sample got the same reward: no gradient at all
            stats[key] = {k: float("nan") for k in ("density", "bias", "concentration")}
            share[key] = float("nan")
    success = float(verifier(samples).mean())
    return GeometryRun(grads, positions, hinted_copy.KEY_AT, stats, share, success, advs)


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
    if min(batch_sizes) < 2 or max(batch_sizes) > pool or reference_pool < 2:
        raise ValueError("need 2 <= batch sizes <= pool and reference_pool >= 2")
    total = pool + reference_pool
    prompts, hints, batch, samples, verifier = _task_setup(student, tokenizer, total, 20_000 + seed)
    with torch.no_grad():
        s_logits, hidden = _logits_hidden(student, batch, samples)
        s_logp = token_logprobs(s_logits, samples)
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
                t_logp = token_logprobs(teacher_logits(t, batch, samples), samples)
            coeff = t_logp - s_logp  # the OPD advantage: log p_T - log p_S per token
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
