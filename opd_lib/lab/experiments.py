"""The lab chapter's experiments: which runs measure which claim, a resumable runner for them, and
the recovery signal measured on a trainer's student. The tables and figure data are computed by
:mod:`opd_lib.lab.analysis` (re-exported here).

An *arm* is one training configuration (a method and its knobs on top of a preset); a *claim* is a
set of arms compared with each other. Every arm runs once per seed, from the same prepared pair,
into ``out/<arm>-s<seed>/``::

    python -m opd_lib.lab experiments --preset full --out results/lab/full --seeds 0 1 2 --jobs 2

The claims (Chapter 10 discusses each):

* ``chain``     off-policy (SFT on data, KD on teacher samples) vs on-policy (OPD) over chain
  length, with mistakes per trace set beside the no-recovery and recovery predictions;
* ``cost``      OPD vs GRPO: FLOPs and wall time to reach a share of the teacher's accuracy;
* ``opsd``      the hinted self-teacher live / frozen / EMA x no clip / per-token / point-wise;
* ``degraded``  a teacher made worse by stress SFT (it forgets the retention task), then OPD and SFT
  on its samples from the original student;
* ``retention`` forgetting of the retention task under mild SFT, stress SFT, OPD and GRPO;
* ``schedule``  GKD with the industrial lambda schedule (0 -> mixed -> 1) vs always on-policy.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from opd_lib.bounds import compounding_mistakes
from opd_lib.bounds import dagger_bound_on_policy as independent_mistakes
from opd_lib.lab.analysis import (
    cost_table,
    curves,
    evals,
    final_table,
    load_arms,
    mean_sd,
    mistakes_by_length,
    pm_table,
    seed_curves,
)
from opd_lib.lab.data import encode
from opd_lib.lab.metrics import read_jsonl
from opd_lib.lab.pair import prepare_pair
from opd_lib.lab.trainer import train
from opd_lib.lm import completion_logits

__all__ = [
    "ARMS",
    "CLAIMS",
    "arm_config",
    "compounding_mistakes",
    "cost_table",
    "curves",
    "final_table",
    "independent_mistakes",
    "load_arms",
    "mean_sd",
    "mistakes_by_length",
    "pm_table",
    "recovery_signal",
    "run_experiments",
    "seed_curves",
]

# arm -> overrides of the preset's Config (a function of it, for knobs scaled from the preset)
ARMS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "sft": lambda c: dict(method="sft", source="data"),
    "kd": lambda c: dict(method="kd", source="teacher"),
    "opd": lambda c: dict(method="opd", opd_estimator="full"),
    "rl": lambda c: dict(method="rl"),
    "stress-sft": lambda c: dict(method="sft", source="data", lr=5 * c.lr),
    "gkd-industrial": lambda c: dict(method="gkd", lam_schedule="industrial", beta=0.5),
    "gkd-onpolicy": lambda c: dict(method="gkd", lam=1.0, beta=0.5),
    **{
        f"opsd-{teacher}-{clip}": (
            lambda c, teacher=teacher, clip=clip: dict(
                method="opsd", opsd_teacher=teacher, clip=clip, opsd_kind="fkl"
            )
        )
        for teacher in ("live", "frozen", "ema")
        for clip in ("none", "token", "pointwise")
    },
    # the teacher is the same seed's final stress-SFT student (see ``run_experiments``)
    "degraded-opd": lambda c: dict(method="opd", opd_estimator="full"),
    "degraded-sft": lambda c: dict(method="sft", source="teacher"),
}
TEACHER_FROM = {"degraded-opd": "stress-sft", "degraded-sft": "stress-sft"}

CLAIMS: dict[str, tuple[str, ...]] = {
    "chain": ("sft", "kd", "opd"),
    "cost": ("opd", "rl"),
    "opsd": tuple(a for a in ARMS if a.startswith("opsd-")),
    "degraded": ("stress-sft", "degraded-opd", "degraded-sft"),
    "retention": ("sft", "stress-sft", "opd", "rl"),
    "schedule": ("gkd-industrial", "gkd-onpolicy"),
}


def run_dir(out: str | Path, arm: str, seed: int) -> Path:
    return Path(out) / f"{arm}-s{seed}"


def arm_config(base, arm: str, seed: int, out: str | Path):
    """The Config of ``arm`` for ``seed``: the preset ``base`` with the arm's overrides, the
    shared pair cache ``out/cache`` and, for the degraded-teacher arms, the teacher taken from the
    same seed's stress-SFT run."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {sorted(ARMS)}")
    overrides = ARMS[arm](base) | dict(seed=seed, cache_dir=str(Path(out) / "cache"))
    if arm in TEACHER_FROM:
        overrides["teacher_from"] = str(run_dir(out, TEACHER_FROM[arm], seed))
    config = dataclasses.replace(base, **overrides)
    config.validate()
    return config


def _run_one(job: tuple[Any, str]) -> str:
    config, directory = job
    train(config, directory)  # on config.threads torch threads
    (Path(directory) / "ckpt.pt").unlink(missing_ok=True)  # resumable until here; done now
    return directory


def _is_done(directory: Path, steps: int) -> bool:
    metrics = directory / "metrics.jsonl"
    if not (directory / "student.pt").is_file() or not metrics.is_file():
        return False
    done = evals(read_jsonl(metrics))
    return bool(done) and done[-1]["step"] >= steps


def run_experiments(
    base,
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    claims: Iterable[str] | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Run every arm of ``claims`` (default: all) for every seed from the preset Config ``base``.

    The pair is prepared once (cached in ``out/cache``); finished runs are skipped and killed ones
    resume from their checkpoint, so re-running the same command completes an interrupted set.
    Arms that take their teacher from another arm run after it. ``jobs`` > 1 runs that many
    processes at once (one torch thread each). Returns the run directories."""
    claims = list(CLAIMS) if claims is None else list(claims)
    unknown = sorted(set(claims) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown claims {unknown}; expected some of {sorted(CLAIMS)}")
    arms = list(dict.fromkeys(a for claim in claims for a in CLAIMS[claim]))
    for arm in arms:  # a dependent arm needs its source arm too
        if arm in TEACHER_FROM and TEACHER_FROM[arm] not in arms:
            arms.insert(0, TEACHER_FROM[arm])
    out = Path(out)
    prepare_pair(base, out / "cache")
    phases = ([a for a in arms if a not in TEACHER_FROM], [a for a in arms if a in TEACHER_FROM])
    done: list[Path] = []
    bar = tqdm(total=len(arms) * len(seeds), desc="runs", disable=not progress)
    pool = (
        ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        if jobs > 1
        else None
    )
    try:
        for phase in phases:  # the dependent arms start when their source arms are done
            todo = []
            for arm in phase:
                for seed in seeds:
                    directory = run_dir(out, arm, seed)
                    if _is_done(directory, base.steps):
                        bar.update()
                        done.append(directory)
                    else:
                        config = dataclasses.replace(
                            arm_config(base, arm, seed, out), progress=False
                        )
                        todo.append((config, str(directory)))
            for directory in pool.map(_run_one, todo) if pool else map(_run_one, todo):
                bar.update()
                done.append(Path(directory))
    finally:
        if pool is not None:
            pool.shutdown()
    bar.close()
    return done


def recovery_signal(trainer, n_prompts: int = 256, seed: int = 1) -> dict[str, float]:
    """What the teacher says where the student has just slipped, on the student's own samples.

    Samples ``n_prompts`` traces from the trainer's student (at its rollout temperature), finds
    each trace's first slip in a sum (``RunningSum.first_slip``) and, at the first token of the
    next step, compares the argmax of the teacher and of the student with the true running value
    and with the value the student wrote. Needs the character tokenizer (one token per character,
    so character offsets are token offsets). Returns the number of slips and the shares."""
    rng = random.Random(seed)
    examples = [trainer.task.sample(rng) for _ in range(n_prompts)]
    b = encode(trainer.tok, examples, trainer.device)
    gen = torch.Generator(device=trainer.device).manual_seed(seed)
    with torch.no_grad():
        ids = trainer.sample(trainer.student, b.prompt_ids, b.prompt_mask, gen=gen)
        argmax = {
            who: completion_logits(model, b.prompt_ids, b.prompt_mask, ids).argmax(-1)
            for who, model in (("teacher", trainer.teacher), ("student", trainer.student))
        }
    digit = {d: trainer.tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    counts = {"teacher_true": 0, "student_true": 0, "student_copies": 0}
    slips = 0
    for i, (ex, text) in enumerate(zip(examples, trainer.decode(ids), strict=True)):
        found = trainer.task.first_slip(ex, text)
        if found is None:
            continue
        offset, true_value = found
        written = text[offset - 2]  # the wrong result, just before the comma
        slips += 1
        counts["teacher_true"] += int(argmax["teacher"][i, offset]) == digit[true_value]
        counts["student_true"] += int(argmax["student"][i, offset]) == digit[true_value]
        counts["student_copies"] += int(argmax["student"][i, offset]) == digit[int(written)]
    return {"slips": slips, **{k: v / slips if slips else math.nan for k, v in counts.items()}}
