"""Chapter 8: the OPD lab simulator. Every distillation method of the book on one toy task.

The task is Chapter 4's (``opd_lib.sim.gkd_toy``): sequences over 8 tokens, a bimodal Markov
teacher (two equally valid modes), a tabular student with a capacity floor. Five methods train the
same student from the same start:

* ``"off-policy KD"``: GKD with ``lam = 0``, forward KL on a fixed set of teacher sequences;
* ``"GKD lam=0.5"`` and ``"GKD lam=1"``: GKD with the generalized JSD (``beta = 0.5``), half or all
  of the batches the student's own samples;
* ``"reverse KL"``: ``lam = 1``, ``beta = 1`` (on-policy reverse KL, MiniLLM-style);
* ``"SPIN"``: self-play rounds (``opd_lib.spin.spin_loss``): chosen = teacher sequences from the
  dataset, rejected = samples of the previous round's student, no teacher probabilities at all.

:func:`mistakes_vs_length` then evaluates each trained student on answers of every length, the
DAgger gap: off-policy students' mistakes grow faster than linearly in ``T``, on-policy ones stay on
a line ``eps T`` (Chapter 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from opd_lib._threads import single_thread
from opd_lib.sim import gkd_toy
from opd_lib.spin import spin_loss

__all__ = [
    "TOY_METHODS",
    "LabResult",
    "mistakes_vs_length",
    "run_lab",
    "train_method",
    "train_spin_toy",
    "training_error_rate",
]

TOY_METHODS: dict[str, tuple[float, float] | None] = {
    "off-policy KD": (0.0, 0.0),
    "GKD lam=0.5": (0.5, 0.5),
    "GKD lam=1": (1.0, 0.5),
    "reverse KL": (1.0, 1.0),
    "SPIN": None,
}
"""Method name -> GKD ``(lam, beta)``; ``None`` for SPIN."""


@single_thread()  # tiny tensors: extra threads only cost time, a lot on a busy CPU
def train_spin_toy(
    steps: int = 150,
    length: int = 16,
    batch_size: int = 16,
    lr: float = 0.1,
    rounds: int = 5,
    beta: float = 0.5,
    dataset_size: int = 64,
    teacher_noise: float = 0.005,
    floor: float = 0.04,
    eval_every: int = 5,
    seed: int = 0,
) -> gkd_toy.ToyRun:
    """SPIN on the toy: ``rounds`` rounds of ``steps // rounds`` Adam steps each.

    In a round the opponent (and reference) is the student at the round's start. Each step draws
    ``batch_size`` chosen sequences from the fixed dataset of correct teacher sequences and
    ``batch_size`` rejected ones sampled from the opponent, and minimises
    ``spin_loss(log p(chosen), log p(rejected), ref..., beta)`` on whole-sequence log-probs of the
    limited student (``gkd_toy.student_probs``). Same start, dataset and metrics as
    ``gkd_toy.train_gkd_toy``; returns a ``ToyRun`` with ``lam = "SPIN"``.
    """
    if min(steps, length, batch_size, dataset_size, eval_every, rounds) < 1 or steps < rounds:
        raise ValueError("steps >= rounds >= 1 and length, batch_size, dataset_size >= 1 needed")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    rng = np.random.default_rng(seed)
    teacher = gkd_toy.teacher_table(teacher_noise)
    data_states, data_tokens = gkd_toy.curated_sequences(teacher, dataset_size, length, rng)
    logits = torch.tensor(gkd_toy.initial_student(seed), requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)

    def probs(x: torch.Tensor) -> torch.Tensor:
        return (1.0 - floor) * torch.softmax(x, -1) + floor / gkd_toy.VOCAB

    def seq_logp(p: torch.Tensor, states: np.ndarray, tokens: np.ndarray) -> torch.Tensor:
        return torch.log(p[torch.as_tensor(states), torch.as_tensor(tokens)]).sum(-1)

    evaluated = [0]
    metrics = [gkd_toy.student_metrics(probs(logits).detach().numpy(), teacher, length)]
    per_round = steps // rounds
    ref = probs(logits).detach()
    for step in range(steps):
        if step % per_round == 0 and step // per_round < rounds:
            ref = probs(logits).detach()
        idx = rng.integers(0, len(data_states), batch_size)
        c_states, c_tokens = data_states[idx], data_tokens[idx]
        r_states, r_tokens = gkd_toy.sample_sequences(ref.numpy(), batch_size, length, rng)
        p = probs(logits)
        loss = spin_loss(
            seq_logp(p, c_states, c_tokens),
            seq_logp(p, r_states, r_tokens),
            seq_logp(ref, c_states, c_tokens),
            seq_logp(ref, r_states, r_tokens),
            beta,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluated.append(step + 1)
            metrics.append(gkd_toy.student_metrics(probs(logits).detach().numpy(), teacher, length))
    final = probs(logits).detach().numpy()
    return gkd_toy.ToyRun("SPIN", float(beta), np.array(evaluated), metrics, final)


def train_method(name: str, length: int = 16, steps: int = 150, seed: int = 0) -> gkd_toy.ToyRun:
    """Train the toy student with one of :data:`TOY_METHODS` (shared defaults otherwise)."""
    if name not in TOY_METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(TOY_METHODS)}")
    setting = TOY_METHODS[name]
    if setting is None:
        return train_spin_toy(steps=steps, length=length, seed=seed)
    lam, beta = setting
    return gkd_toy.train_gkd_toy(lam, beta, steps=steps, length=length, seed=seed)


def training_error_rate(student: np.ndarray, teacher: np.ndarray, length: int) -> float:
    """The student's per-token error rate on the *teacher's* prefixes: the mean probability of an
    invalid transition over the states the teacher visits in ``length`` steps (the eps that
    off-policy training measures and the DAgger bounds are stated in)."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    ok = gkd_toy.valid_transitions(teacher)
    slip = (student * ~ok).sum(axis=1)
    occupancy = np.zeros(gkd_toy.VOCAB + 1)
    occupancy[gkd_toy.BOS] = 1.0
    total = 0.0
    for _ in range(length):
        total += occupancy @ slip
        occupancy = np.concatenate([occupancy @ teacher, [0.0]])
    return float(total / length)


def mistakes_vs_length(student: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """Expected mistakes in one generation of each length, for a trained student table."""
    teacher = gkd_toy.teacher_table()
    return np.array([gkd_toy.student_metrics(student, teacher, int(T)).mistakes for T in lengths])


@dataclass
class LabResult:
    """``run_lab``'s output: the runs (name -> ToyRun), the evaluation lengths, expected mistakes
    per length (name -> ``[len(lengths)]``), each student's per-token error rate on the teacher's
    prefixes (``eps``, name -> float) and the training length."""

    runs: dict[str, gkd_toy.ToyRun]
    lengths: np.ndarray
    mistakes: dict[str, np.ndarray]
    eps: dict[str, float]
    train_length: int


def run_lab(
    train_length: int = 16,
    lengths: Sequence[int] = tuple(range(1, 61)),
    methods: Sequence[str] = tuple(TOY_METHODS),
    steps: int = 150,
    seed: int = 0,
) -> LabResult:
    """Train every method at ``train_length`` and evaluate each student at every length."""
    if not methods:
        raise ValueError("no methods given")
    teacher = gkd_toy.teacher_table()
    runs = {m: train_method(m, train_length, steps, seed) for m in methods}
    lengths = np.asarray(lengths)
    mistakes = {m: mistakes_vs_length(r.student, lengths) for m, r in runs.items()}
    eps = {m: training_error_rate(r.student, teacher, train_length) for m, r in runs.items()}
    return LabResult(runs, lengths, mistakes, eps, train_length)
