"""Chapter 5: reverse KL is reinforcement learning.

On-policy distillation with the reverse KL,

    KL(p_theta || p_T) = E_{y ~ p_theta}[ sum_t log p_theta(y_t | y_<t) - log p_T(y_t | y_<t) ],

is a policy-gradient problem whose per-token reward is r_t = log p_T(y_t) - log p_theta(y_t)
(MiniLLM, Gu et al. 2024, arXiv:2306.08543). This module holds the pieces: the reward, the
REINFORCE surrogate loss, reward-to-go (with MiniLLM's length normalisation), MiniLLM's exact
single-step term, and two ways of pushing the reward past the teacher (G-OPD's reward
extrapolation, and a verifier bonus added to the teacher's log-likelihood).

Conventions: per-token tensors are [B, T]; ``mask`` [B, T] is boolean, True on completion tokens
that count; log-probs are of the sampled tokens.
"""

from __future__ import annotations

import math

import torch

from opd_lib import validate
from opd_lib.divergences import token_divergence

_check_same_shape = validate.same_shape


def _check_mask(mask: torch.Tensor, shape: torch.Size, what: str = "logp") -> torch.Tensor:
    return validate.mask(mask, "mask", shape, what=what)


def _sampled_logp(x: torch.Tensor, name: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probs of tokens sampled from that model: ``<= 0`` and finite (``p > 0``)."""
    x = validate.log_probs(x, name, where=mask)
    if ((x if mask is None else x[mask]) == -math.inf).any():
        raise ValueError(f"{name} contains -inf: a token sampled from that model has p > 0")
    return x


def _values(x: torch.Tensor, name: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Finite real values (integers become float), checked at ``mask``."""
    x = validate.float_tensor(x, name, allow_int=True)
    validate.no_nan(x, name, where=mask, inf="both")
    return x


def per_token_reverse_kl_reward(
    logp_teacher: torch.Tensor, logp_student: torch.Tensor
) -> torch.Tensor:
    """Per-token reverse-KL reward r_t = log p_T(y_t | y_<t) - log p_theta(y_t | y_<t), detached.

    Positive where the teacher likes the sampled token more than the student does. Summed over a
    sequence its expectation under the student is -KL(p_theta || p_T) (MiniLLM, arXiv:2306.08543,
    Sec. 2.2). Example: p_T = 0.7, p_theta = 0.3 gives r = log(7/3) = +0.847.
    """
    logp_teacher = validate.log_probs(logp_teacher, "logp_teacher")
    logp_student = _sampled_logp(logp_student, "logp_student")
    _check_same_shape(logp_teacher=logp_teacher, logp_student=logp_student)
    return (logp_teacher - logp_student).detach()


def _as_token_tensor(baseline: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar, per-sequence [B] or per-token [B, T] baseline to ``like`` [B, T]."""
    if isinstance(baseline, torch.Tensor):
        b = _values(baseline, "baseline").to(like.dtype)
    else:
        b = torch.tensor(validate.real(baseline, "baseline"), dtype=like.dtype, device=like.device)
    if b.ndim == 1:
        if b.shape[0] != like.shape[0]:
            raise ValueError(
                f"shape mismatch: per-sequence baseline {tuple(b.shape)} vs values "
                f"{tuple(like.shape)}"
            )
        b = b.unsqueeze(-1)
    elif b.ndim not in (0, like.ndim) or (b.ndim == like.ndim and b.shape != like.shape):
        raise ValueError(
            f"shape mismatch: baseline must be a scalar, [B] or [B, T]; got {tuple(b.shape)} "
            f"for values {tuple(like.shape)}"
        )
    return b.expand_as(like)


def reinforce_loss(
    logp: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    baseline: float | torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE surrogate (Williams 1992): a scalar whose gradient is the policy-gradient estimate.

        loss = -(1/N) sum_{(b,t) in mask} (rewards - baseline).detach() * logp
               - entropy_coef * (1/N) sum_{(b,t) in mask} entropy

    with N the number of masked tokens in the whole batch (a token mean: every token weighs the
    same, so longer sequences contribute more terms). ``rewards`` is the per-token weight, e.g. the
    reward-to-go from :func:`discounted_returns` or a per-token advantage; ``baseline`` may be a
    scalar, per sequence [B] or per token [B, T]. Rewards and baseline are detached, so the
    gradient is -(1/N) sum (R - b) grad log p. With R_t the reward-to-go of the reverse-KL reward
    and sequences of a fixed length L, it is an unbiased estimate of grad KL(p_theta || p_T) / L
    (MiniLLM, arXiv:2306.08543, Sec. 2.2). A baseline that does not depend on the token sampled
    at t keeps it unbiased and can lower its variance.

    ``entropy`` [B, T] is the student's per-token entropy H(p_theta(. | y_<t)) computed with
    gradient from its logits (an optional bonus, not part of MiniLLM's objective, added with a
    small coefficient against collapse); it is required when ``entropy_coef > 0`` and ignored
    when ``entropy_coef == 0``.
    With the reverse-KL reward the objective already holds the student's entropy (its -log p_theta
    part), so the bonus adds entropy on top of it.
    """
    logp = validate.float_tensor(logp, "logp")
    rewards = validate.float_tensor(rewards, "rewards", allow_int=True)
    _check_same_shape(logp=logp, rewards=rewards)
    mask = _check_mask(mask, logp.shape)
    logp = _sampled_logp(logp, "logp", mask)
    rewards = _values(rewards, "rewards", mask).to(logp.dtype)
    entropy_coef = validate.nonnegative(entropy_coef, "entropy_coef")
    advantage = rewards.detach()
    if baseline is not None:
        b = _as_token_tensor(baseline, rewards).detach()
        validate.no_nan(b, "baseline", where=mask, inf="both")
        advantage = advantage - b
    n_tokens = mask.sum()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    loss = -torch.where(mask, advantage * logp, zero).sum() / n_tokens
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the per-token entropy tensor")
        entropy = _values(entropy, "entropy")
        _check_same_shape(logp=logp, entropy=entropy)
        validate.no_nan(entropy, "entropy", where=mask, inf="both")
        if (entropy[mask] < -1e-5).any():
            raise ValueError("entropy must be >= 0 (an entropy in nats) at the selected tokens")
        loss = loss - entropy_coef * torch.where(mask, entropy, zero).sum() / n_tokens
    return loss


def discounted_returns(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    length_normalize: bool = False,
) -> torch.Tensor:
    """Reward-to-go over the masked tokens of each row: R_t = sum_{k >= t} gamma^(k - t) r_k.

    Only masked positions are steps: unmasked positions (prompt, padding, tool output) neither add
    reward nor count as a discount step, and get 0 in the output. With ``length_normalize`` the
    return at t is divided by the number of masked tokens from t to the end of the row (T - t for a
    contiguous completion of length T, 0-indexed t), i.e. it becomes the average reward over the
    remaining tokens. This is MiniLLM's length normalisation (arXiv:2306.08543, Sec. 2.2, "Length
    Normalization"): the long-term return sums more (mostly negative) per-token rewards the longer
    the continuation, which pushes the student towards short responses, so it is replaced by an
    average over the tokens it sums. The official implementation
    (microsoft/LMOps, minillm/losses.py, ``_get_advantages_and_returns``) divides the discounted
    reward-to-go including r_t by that count of remaining tokens, which is what is done here.
    """
    rewards = validate.float_tensor(rewards, "rewards", allow_int=True, ndim=2, dims="[B, T]")
    mask = _check_mask(mask, rewards.shape, "rewards")
    rewards = _values(rewards, "rewards", mask)
    gamma = validate.unit(gamma, "gamma")
    validate.flag(length_normalize, "length_normalize")
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(mask[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = torch.where(mask[:, t], running, zero)
    if length_normalize:
        remaining = mask.flip(-1).cumsum(-1).flip(-1).clamp(min=1).to(rewards.dtype)
        returns = returns / remaining
    return returns


def single_step_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """MiniLLM's single-step term: the exact per-position reverse KL, averaged over masked tokens.

        (1/N) sum_{(b,t) in mask} sum_v p_theta(v|y_<t) [log p_theta(v|y_<t) - log p_T(v|y_<t)]

    MiniLLM (arXiv:2306.08543, Sec. 2.2, "Single-Step Decomposition") splits grad KL into a
    single-step part, the gradient of this expectation over the next token with the sampled prefix
    held fixed (computed exactly over the vocabulary, so it has no sampling noise in y_t), plus a
    long-term REINFORCE part weighted by R_{t+1} = sum_{k > t} r_k (with gamma = 1,
    ``discounted_returns(r, mask) - r``). Differentiable w.r.t. ``student_logits`` [B, T, V];
    ``teacher_logits`` [B, T, V] are treated as constants. Vocabulary entries the student gives
    probability 0 contribute 0 (in value and gradient: ``-inf`` logits shared with the teacher,
    a masked vocabulary, give finite gradients). Computed by
    ``opd_lib.divergences.token_divergence(kind="rkl", reduction="mean")``.
    """
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        validate.float_tensor(x, name, ndim=3, dims="[B, T, V]")
    _check_same_shape(student_logits=student_logits, teacher_logits=teacher_logits)
    mask = _check_mask(mask, student_logits.shape[:2])
    validate.no_nan(student_logits, "student_logits", where=mask, inf="+")
    validate.no_nan(teacher_logits, "teacher_logits", where=mask, inf="+")
    return token_divergence(
        student_logits, teacher_logits.detach(), "rkl", mask=mask, reduction="mean"
    )


def extrapolated_reward(
    logp_teacher: torch.Tensor, logp_reference: torch.Tensor, lam: float
) -> torch.Tensor:
    """G-OPD's scaled implicit reward lam * (log pi_T(y_t) - log pi_ref(y_t)), detached.

    Generalized On-Policy Distillation (Yang et al. 2026, "Learning beyond Teacher: Generalized
    On-Policy Distillation with Reward Extrapolation", arXiv:2602.12125) maximises

        J(theta) = E_{y ~ pi_theta}[ lam * log(pi_T(y) / pi_ref(y)) - KL(pi_theta || pi_ref) ],

    dense KL-constrained RL with reward log(pi_T / pi_ref) scaled by lam. Adding the KL term's
    sampled per-token part gives the full per-token reward

        r_t = lam * (log pi_T - log pi_ref) - (log pi_theta - log pi_ref),

    i.e. this function's output plus ``logp_reference - logp_student``. At lam = 1 pi_ref cancels
    and r_t = log pi_T - log pi_theta, the plain reverse-KL reward (standard OPD); 0 < lam < 1
    interpolates between reference and teacher, lam > 1 ("ExOPD") extrapolates past the teacher.
    The optimum is pi* proportional to pi_ref^(1 - lam) * pi_T^lam.
    """
    logp_teacher = validate.log_probs(logp_teacher, "logp_teacher")
    logp_reference = _sampled_logp(logp_reference, "logp_reference")
    _check_same_shape(logp_teacher=logp_teacher, logp_reference=logp_reference)
    lam = validate.nonnegative(lam, "lam")
    return (lam * (logp_teacher - logp_reference)).detach()


def verifier_augmented_reward(
    logp_teacher: torch.Tensor,
    verifier_reward: torch.Tensor,
    beta: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """A verifier-bonus reward R(y) = log P_T(y) + beta * R_ext(y), per token.

    This form also circulates under the name G-OPD, but the G-OPD paper (arXiv:2602.12125)
    instead scales the implicit reward log(pi_T / pi_ref) by lam (see :func:`extrapolated_reward`)
    and adds no external verifier. Per token the output is log p_T(y_t) on masked tokens, plus
    beta * verifier_reward[b] on the last masked token of row b, so that summing over a row gives
    exactly log P_T(y) + beta * R_ext(y); unmasked positions are 0. ``verifier_reward`` is one
    score per sequence [B]. The student's entropy term of the reverse KL is not included: add
    ``-logp_student`` (or use :func:`per_token_reverse_kl_reward` for the first part). Detached.
    """
    logp_teacher = validate.float_tensor(logp_teacher, "logp_teacher", ndim=2, dims="[B, T]")
    mask = _check_mask(mask, logp_teacher.shape, "logp_teacher")
    verifier_reward = _values(verifier_reward, "verifier_reward")
    if verifier_reward.shape != logp_teacher.shape[:1]:
        raise ValueError(
            f"shape mismatch: verifier_reward {tuple(verifier_reward.shape)} must be [B] for "
            f"logp_teacher {tuple(logp_teacher.shape)}"
        )
    if not mask.any(dim=1).all():
        empty = torch.nonzero(~mask.any(dim=1)).flatten().tolist()
        raise ValueError(
            f"mask selects no tokens in rows {empty}: nowhere to add the verifier reward"
        )
    logp_teacher = validate.log_probs(logp_teacher, "logp_teacher", where=mask)
    beta = validate.real(beta, "beta")
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).max(dim=1).values
    is_last = positions == last.unsqueeze(-1)
    zero = torch.zeros((), dtype=logp_teacher.dtype, device=logp_teacher.device)
    bonus = torch.where(is_last, beta * verifier_reward.to(logp_teacher.dtype).unsqueeze(-1), zero)
    return torch.where(mask, logp_teacher + bonus, zero).detach()
