"""Chapter 6: self-distillation without a bigger teacher. Pure, seeded functions behind the figures.

* A tiny Qwen3 trained for a few seconds on a "hinted copy" task, then used as its own teacher
  (OPSD): :func:`train_hinted_model`, :func:`self_teacher_divergence`.
* The size and sign of the update under no clip, per-token and point-wise clipping:
  :func:`clipped_updates`, :func:`pivot_example_logits`, :func:`synthetic_pivot_batch`.
* SPIN rounds on a categorical policy: :func:`spin_rounds`.
* SD-Zero (generator + reviser from one model, binary verifier) on a tabular policy:
  :func:`sd_zero_rounds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from opd_lib import hinted_copy
from opd_lib._threads import single_thread
from opd_lib.divergences import token_divergence, total_variation
from opd_lib.hinted_copy import ANSWER_LEN, KEY_AT
from opd_lib.models import tiny_qwen3
from opd_lib.opsd import hinted_teacher_inputs, hinted_teacher_logits, opsd_loss
from opd_lib.sampling import sample_completions
from opd_lib.spin import expected_gradient_norm, spin_loss
from opd_lib.tokenizers import char_tokenizer

# ---------------------------------------------------------------------------------- the task

hinted_copy_examples = hinted_copy.examples  # the task lives in opd_lib.hinted_copy


def train_hinted_model(steps: int = 200, batch: int = 24, lr: float = 4e-3, seed: int = 0):
    """Train a tiny Qwen3 (2 layers x 64) on the hinted copy task, with and without the hint.

    Each batch is two thirds hinted (``prompt + hint -> answer``), one third unhinted
    (``prompt -> answer``), cross-entropy on the answer tokens only. Returns
    ``(model, tokenizer, losses)``; a few seconds on a laptop CPU. Deterministic given ``seed``.
    """
    if steps < 0 or batch < 2:
        raise ValueError("steps must be >= 0 and batch >= 2")
    tokenizer = char_tokenizer()
    model = tiny_qwen3(tokenizer, layers=2, hidden=64, heads=4, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    with single_thread():  # a model this small runs faster on one thread
        for step in range(steps):
            step_seed = seed * 100_003 + step + 1
            losses.append(hinted_copy.sft_step(model, tokenizer, opt, batch, step_seed))
    model.eval()
    return model, tokenizer, np.array(losses)


@dataclass
class SelfTeacherRollouts:
    """Student rollouts scored by the hinted self-teacher.

    completions: the sampled answers (text); divergence: ``[B, N]`` forward KL(teacher || student)
    per token; student_logits / teacher_logits: ``[B, N, V]`` at the completion positions;
    key_correct: whether the student's sampled key letter equals the hint.
    """

    prompts: list[str]
    hints: list[str]
    completions: list[str]
    divergence: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    key_correct: np.ndarray


@torch.no_grad()
def self_teacher_divergence(
    model, tokenizer, n: int = 16, seed: int = 1, kind: str = "fkl", temperature: float = 1.0
) -> SelfTeacherRollouts:
    """Sample ``n`` answers from the unhinted student, score every token with the hinted teacher.

    Same weights on both sides; the only difference is the hint in the teacher's context.
    """
    prompts, hints, _ = hinted_copy_examples(n, seed=10_000 + seed)
    student_in = hinted_teacher_inputs(tokenizer, prompts, [""] * n, [[0]] * n)
    prompt_ids = student_in.input_ids[:, :-1]
    prompt_mask = student_in.attention_mask[:, :-1]
    gen = torch.Generator().manual_seed(seed)
    length = ANSWER_LEN
    ids = sample_completions(
        model,
        prompt_ids,
        prompt_mask,
        length,
        temperature,
        gen,
        eos_token_id=tokenizer.eos_token_id,
    )
    s = hinted_teacher_logits(model, tokenizer, prompts, [""] * n, ids)
    t = hinted_teacher_logits(model, tokenizer, prompts, hints, ids)
    div = token_divergence(s, t, kind)
    texts = tokenizer.batch_decode(ids)
    key_ok = np.array([c[KEY_AT] == h[1] for c, h in zip(texts, hints, strict=True)])
    return SelfTeacherRollouts(prompts, hints, texts, div, s, t, key_ok)


# --------------------------------------------------------------------- clipping measurements


def pivot_example_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """The worked pivot token of Chapter 6 as ``[1, 1, 4]`` logits (student, teacher).

    Student ``q = (0.01, 0.90, 0.05, 0.04)``, teacher ``p = (0.60, 0.30, 0.05, 0.05)``: the pivot
    (entry 0) has 0.01 under the student and 0.6 under the hinted teacher; the rest of each
    distribution is our completion of the widely quoted example.
    """
    q = torch.tensor([0.01, 0.90, 0.05, 0.04], dtype=torch.float64)
    p = torch.tensor([0.60, 0.30, 0.05, 0.05], dtype=torch.float64)
    return q.log().view(1, 1, 4), p.log().view(1, 1, 4)


def synthetic_pivot_batch(
    n_tokens: int = 24,
    pivot_student_prob: float = 0.01,
    pivot_teacher_prob: float = 0.6,
    vocab: int = 16,
    noise: float = 0.15,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-rollout batch ``[1, n_tokens, vocab]`` (student, teacher logits) with one pivot.

    Ordinary tokens: both sides share a peaked distribution, the teacher's logits perturbed by
    Gaussian ``noise``. The middle token is the pivot: the student gives entry 0 probability
    ``pivot_student_prob`` and the teacher ``pivot_teacher_prob``; both put most of the rest on
    entry 1.
    """
    if not (0 < pivot_student_prob < 1 and 0 < pivot_teacher_prob < 1):
        raise ValueError("pivot probabilities must lie in (0, 1)")
    if n_tokens < 1 or vocab < 3:
        raise ValueError("need n_tokens >= 1 and vocab >= 3")
    gen = torch.Generator().manual_seed(seed)
    base = 3.0 * torch.randn(n_tokens, vocab, generator=gen, dtype=torch.float64)
    student = base.clone()
    teacher = base + noise * torch.randn(n_tokens, vocab, generator=gen, dtype=torch.float64)

    def pivot_row(p0: float) -> torch.Tensor:
        rest = (1 - p0) * torch.full((vocab - 1,), 0.1 / (vocab - 2), dtype=torch.float64)
        rest[0] = (1 - p0) * 0.9
        return torch.cat([torch.tensor([p0], dtype=torch.float64), rest]).log()

    mid = n_tokens // 2
    student[mid], teacher[mid] = pivot_row(pivot_student_prob), pivot_row(pivot_teacher_prob)
    return student.unsqueeze(0), teacher.unsqueeze(0)


@dataclass
class ClipComparison:
    """Per clip mode (``"none"``, ``"token"``, ``"pointwise"``): the batch loss, the norm of its
    gradient w.r.t. the student's logits, each token's value ``[B, T]`` and each token's gradient
    norm ``[B, T]``."""

    loss: dict[str, float]
    grad_norm: dict[str, float]
    per_token_value: dict[str, torch.Tensor]
    per_token_grad: dict[str, torch.Tensor]


def clipped_updates(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    max_value: float = 0.05,
    kind: str = "fkl",
) -> ClipComparison:
    """Measure the batch-averaged OPSD update with no clip, per-token and point-wise clipping."""
    from opd_lib.opsd import clip_per_token, clip_pointwise

    loss, norm, values, grads = {}, {}, {}, {}
    for mode in ("none", "token", "pointwise"):
        s = student_logits.detach().clone().requires_grad_(True)
        t = teacher_logits.detach()
        batch_loss = opsd_loss(s, t, mask, kind, clip=mode, max_value=max_value)
        (g,) = torch.autograd.grad(batch_loss, s)
        with torch.no_grad():
            if mode == "pointwise":
                v = clip_pointwise(s, t, mask, kind, max_value)
            else:
                v = token_divergence(s, t, kind, mask=mask)
                if mode == "token":
                    v = clip_per_token(v, max_value)
        loss[mode], norm[mode] = batch_loss.item(), g.norm().item()
        values[mode], grads[mode] = v, g.norm(dim=-1)
    return ClipComparison(loss, norm, values, grads)


# ------------------------------------------------------------------------------------- SPIN


@dataclass
class SpinHistory:
    """SPIN rounds: policies ``[R+1, K]`` (round 0 = the start), tv to the data ``[R+1]``, the
    exact expected gradient norm of the SPIN loss at the start of each round ``[R+1]``, and the
    expected reward ``[R+1]``."""

    policies: np.ndarray
    tv: np.ndarray
    grad_norm: np.ndarray
    reward: np.ndarray


def spin_rounds(
    p_data: np.ndarray,
    init_logits: np.ndarray,
    rounds: int = 8,
    steps: int = 30,
    pairs: int = 2048,
    beta: float = 1.0,
    lr: float = 0.05,
    reward: np.ndarray | None = None,
    seed: int = 0,
) -> SpinHistory:
    """SPIN on a categorical policy ``softmax(theta)`` over ``K`` answers.

    Round ``r``: the opponent is the previous round's policy ``pi_r`` (frozen, also the
    reference). Draw ``pairs`` chosen answers from ``p_data`` and rejected answers from ``pi_r``,
    minimise ``spin_loss`` (logistic, ``beta``) with ``steps`` Adam steps starting at ``theta_r``.

    At ``theta = theta_r`` every margin is 0, and the expected gradient of the loss w.r.t. theta is
    ``-(beta / 2) (p_data - pi_r)``: it vanishes exactly when the policy equals the data, whatever
    the data's quality. ``grad_norm`` records ``(beta / 2) ||p_data - pi_r||``.
    """
    p_data = np.asarray(p_data, dtype=float)
    init_logits = np.asarray(init_logits, dtype=float)
    if p_data.ndim != 1 or init_logits.shape != p_data.shape:
        raise ValueError("p_data and init_logits must be 1-D arrays of the same length")
    if (p_data < 0).any() or not np.isclose(p_data.sum(), 1.0):
        raise ValueError("p_data must be a probability vector")
    reward = np.zeros_like(p_data) if reward is None else np.asarray(reward, dtype=float)
    rng = np.random.default_rng(seed)
    theta = torch.tensor(init_logits, dtype=torch.float64)
    policies = [torch.softmax(theta, 0).numpy()]
    for _ in range(rounds):
        ref = theta.clone()
        ref_logp = torch.log_softmax(ref, 0)
        pi_ref = ref_logp.exp().numpy()
        chosen = torch.as_tensor(rng.choice(len(p_data), pairs, p=p_data))
        rejected = torch.as_tensor(rng.choice(len(p_data), pairs, p=pi_ref / pi_ref.sum()))
        theta = ref.clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=lr)
        for _ in range(steps):
            logp = torch.log_softmax(theta, 0)
            loss = spin_loss(
                logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected], beta
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        theta = theta.detach()
        policies.append(torch.softmax(theta, 0).numpy())
    pol = np.array(policies)
    tv = total_variation(np.broadcast_to(p_data, pol.shape), pol)
    grad_norm = expected_gradient_norm(p_data, pol, beta)
    return SpinHistory(pol, tv, grad_norm, pol @ reward)


# ----------------------------------------------------------------------------------- SD-Zero


@dataclass
class SDZeroHistory:
    """Generator accuracy per round ``[R+1]`` (expected P(correct), averaged over problems) for
    the reviser that sees the verifier's reward, and for a control whose reviser sees no reward."""

    accuracy: np.ndarray
    accuracy_no_reward: np.ndarray


def _sd_zero_run(logits0, correct, rounds, samples, steps, lr, use_reward, rng) -> np.ndarray:
    n, k = logits0.shape
    theta = torch.tensor(logits0, dtype=torch.float64)
    idx = torch.arange(n)
    acc = [torch.softmax(theta, 1)[idx, correct].mean().item()]
    for _ in range(rounds):
        pi = torch.softmax(theta, 1).numpy()
        target = np.zeros_like(pi)
        for i in range(n):
            answers = rng.choice(k, samples, p=pi[i] / pi[i].sum())
            for a in answers:
                if use_reward and a == correct[i]:
                    revised = np.eye(k)[a]  # reward 1: the reviser keeps the answer
                elif use_reward:
                    revised = pi[i].copy()  # reward 0: same model, the rejected answer excluded
                    revised[a] = 0.0
                    revised /= revised.sum()
                else:
                    revised = pi[i]  # no reward to condition on: the reviser is the generator
                target[i] += revised / samples
        target_t = torch.tensor(target)
        theta.requires_grad_(True)
        opt = torch.optim.SGD([theta], lr=lr)
        for _ in range(steps):
            ce = -(target_t * torch.log_softmax(theta, 1)).sum(1).mean()
            opt.zero_grad()
            ce.backward()
            opt.step()
        theta = theta.detach()
        acc.append(torch.softmax(theta, 1)[idx, correct].mean().item())
    return np.array(acc)


def sd_zero_rounds(
    n_problems: int = 40,
    n_answers: int = 8,
    rounds: int = 6,
    samples: int = 8,
    steps: int = 20,
    lr: float = 5.0,
    seed: int = 0,
) -> SDZeroHistory:
    """SD-Zero on a tabular policy: one model as generator and reviser, a binary verifier.

    Each problem has one correct answer among ``n_answers``. Per round, the generator samples
    ``samples`` answers per problem; the verifier marks each right or wrong; the reviser is the
    same model conditioned on that: after reward 1 it keeps the answer, after reward 0 it is the
    generator's distribution with the rejected answer excluded. The generator is then trained
    (``steps`` SGD steps of cross-entropy) towards the reviser's averaged distribution: the
    reviser distilled into the generator. The control run gives the reviser no reward.

    The toy's reviser skill (never repeat a rejected answer) is built in, not learned; the only
    new information per round is the verifier's bit.
    """
    if n_problems < 1 or n_answers < 2 or rounds < 0 or samples < 1:
        raise ValueError("need n_problems >= 1, n_answers >= 2, rounds >= 0, samples >= 1")
    rng = np.random.default_rng(seed)
    logits0 = rng.normal(0.0, 1.0, (n_problems, n_answers))
    correct = rng.integers(0, n_answers, n_problems)
    with_reward = _sd_zero_run(logits0, correct, rounds, samples, steps, lr, True, rng)
    rng = np.random.default_rng(seed + 1)
    no_reward = _sd_zero_run(logits0, correct, rounds, samples, steps, lr, False, rng)
    return SDZeroHistory(with_reward, no_reward)
