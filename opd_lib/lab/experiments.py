"""The lab chapter's experiments: which runs measure which claim, a resumable runner for them, and
two probes of the prepared pair. The tables, figure data and verdicts are computed from the files
by :mod:`opd_lib.lab.analysis` (its table functions are re-exported here).

An *arm* is one training configuration (a method and its knobs on top of a preset, possibly
another starting student or teacher); a *claim* is a set of arms compared with each other. Every
arm runs once per seed (or, for ``Arm.seeds = 1``, for the first seed only) from the same
prepared teacher, into ``out/<arm>-s<seed>/``::

    python -m opd_lib.lab experiments --preset full --out results/lab/full --jobs 2

The claims (Chapter 10 discusses each; the ``full`` preset evaluates greedily under execution
noise, :mod:`opd_lib.lab.noise`, unless a claim says otherwise):

* ``chain``     recovery needs post-slip states and a signal that does not vanish at a confident
  mistake: SFT on clean traces, SFT on perturbed traces (DART), KD on teacher samples, on-policy
  reverse KL (OPD) and forward KL, each on-policy one with and without noisy rollouts;
* ``cost``      the FLOPs to reach a target that needs recovery (noisy accuracy at the longest
  chain), on-policy forward KL against GRPO (both with noisy rollouts), SFT arms beside them;
* ``opsd``      the hinted self-teacher live / frozen / EMA x no clip / per-token / point-wise,
  with noisy rollouts, beside external-teacher forward KL; its gate is read from step 0;
* ``degraded``  a teacher made worse by stress SFT, then OPD and SFT on its samples, from the
  usual student and from one trained briefly from scratch that does not know the task (sampled
  evaluation; greedy scores of the final students in ``probes.json``);
* ``retention`` forgetting at matched task gain, from a teacher that keeps the retention skill:
  SFT and OPD (also at a lower learning rate), GRPO with and without its KL anchor;
* ``schedule``  GKD's industrial lambda schedule against always on-policy, from a careless student
  whose first samples are useless.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
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
from opd_lib.lab.checkpoint import load_checkpoint, save_checkpoint
from opd_lib.lab.config import Config
from opd_lib.lab.data import auto_max_new_tokens, encode, eval_suite, make_task
from opd_lib.lab.evaluate import evaluate, generate
from opd_lib.lab.metrics import read_jsonl
from opd_lib.lab.pair import prepare_pair
from opd_lib.lab.slips import gradient_at_slips, slip_mask
from opd_lib.lab.trainer import train
from opd_lib.lm import completion_logits
from opd_lib.sampling import completion_mask

__all__ = [
    "ARMS",
    "CLAIMS",
    "STUDENTS",
    "Arm",
    "arm_config",
    "arm_seeds",
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
    "slip_gradient_table",
    "student_config",
]

NOISY = dict(rollout_noise=0.2)  # execution noise in the student's training samples
SPARSE = dict(eval_every=20)  # arms no claim reads between the first and the last evaluation
# claims 4, 5 (the policy's own samples) and the schedule (greedy): no noise, fewer prompts
SMALL = dict(eval_noise=0.0, eval_lengths=(2, 4, 6), eval_size=48)
SAMPLED = dict(eval_temperature=1.0, **SMALL)

# other starting students: overrides of the preset's student stage (cached beside the usual one)
STUDENTS: dict[str, Callable[[Config], dict[str, Any]]] = {
    # from scratch, a quarter of the warm-up: it does not know the task and owes nothing to the
    # teacher's weights (Claim 4's control)
    "scratch": lambda c: dict(
        student_from_teacher=False,
        student_init_hint_frac=0.0,
        student_noise=0.0,
        student_init_steps=c.student_init_steps // 4,
    ),  # fmt: skip
    # from the teacher, warmed up on traces with a 90 % step error: its samples (and its greedy
    # answers) are useless at first, the case GKD's lambda schedule is for
    "careless": lambda c: dict(
        student_noise=0.9, student_init_hint_frac=0.0, student_init_steps=c.student_init_steps // 4
    ),
    # the teacher warmed up on clean traces and the retention task (half the warm-up, no hints
    # to learn): a teacher that keeps the retention skill
    "retaining": lambda c: dict(
        student_noise=0.0, student_init_hint_frac=0.0, student_init_steps=c.student_init_steps // 2
    ),
}


@dataclass(frozen=True)
class Arm:
    """One training configuration: ``overrides(preset)`` of the preset's Config; ``student``: a
    :data:`STUDENTS` entry to start from; ``teacher``: an arm of the same seed (its final
    student) or a :data:`STUDENTS` entry to distil from; ``seeds``: run only the first ``seeds``
    seeds (0: all)."""

    overrides: Callable[[Config], dict[str, Any]]
    student: str | None = None
    teacher: str | None = None
    seeds: int = 0


def _opsd(teacher: str, clip: str) -> Arm:
    return Arm(
        lambda c: dict(
            method="opsd", opsd_teacher=teacher, clip=clip, opsd_kind="fkl", **NOISY, **SPARSE
        ),
        seeds=1,
    )


ARMS: dict[str, Arm] = {
    # Claim 1 and 2 (greedy evaluation under the preset's eval noise)
    "sft": Arm(lambda c: dict(method="sft", source="data")),
    "sft-dart": Arm(lambda c: dict(method="sft", source="data", data_perturb=0.5)),
    "kd": Arm(lambda c: dict(method="kd", source="teacher", **SPARSE), seeds=1),
    "opd": Arm(lambda c: dict(method="opd", opd_estimator="full", **SPARSE), seeds=1),
    "opd-noise": Arm(lambda c: dict(method="opd", opd_estimator="full", **NOISY)),
    "fkl": Arm(lambda c: dict(method="gkd", lam=1.0, beta=0.0, **SPARSE), seeds=1),
    "fkl-noise": Arm(lambda c: dict(method="gkd", lam=1.0, beta=0.0, **NOISY)),
    "rl-noise": Arm(lambda c: dict(method="rl", **NOISY)),
    # Claim 3
    **{
        f"opsd-{teacher}-{clip}": _opsd(teacher, clip)
        for teacher in ("live", "frozen", "ema")
        for clip in ("none", "token", "pointwise")
    },
    # Claim 4: the degraded teacher is the same seed's final stress-SFT student
    "stress-sft": Arm(lambda c: dict(method="sft", source="data", lr=5 * c.lr, **SAMPLED), seeds=1),
    "degraded-opd": Arm(lambda c: dict(method="opd", **SAMPLED), teacher="stress-sft", seeds=1),
    "degraded-sft": Arm(
        lambda c: dict(method="sft", source="teacher", **SAMPLED), teacher="stress-sft", seeds=1
    ),
    "scratch-degraded-opd": Arm(
        lambda c: dict(method="opd", **SAMPLED), student="scratch", teacher="stress-sft", seeds=1
    ),
    # Claim 5, from the retaining teacher, sampled evaluation
    **{
        f"keep-{name}": Arm(lambda c, kw=kw: dict(**kw, **SAMPLED), teacher="retaining", seeds=1)
        for name, kw in (
            ("sft", dict(method="sft", source="data")),
            ("opd", dict(method="opd")),
            ("opd-slow", dict(method="opd", lr=1e-4)),
            ("rl", dict(method="rl")),
            ("rl-kl", dict(method="rl", rl_kl=0.04)),
        )
    },
    # the schedule, from the careless student
    "careless-gkd-industrial": Arm(
        lambda c: dict(method="gkd", lam_schedule="industrial", beta=0.5, **SMALL),
        student="careless",
        seeds=1,
    ),  # fmt: skip
    "careless-gkd-onpolicy": Arm(
        lambda c: dict(method="gkd", lam=1.0, beta=0.5, **SMALL), student="careless", seeds=1
    ),
}

CLAIMS: dict[str, tuple[str, ...]] = {
    "chain": ("sft", "sft-dart", "kd", "opd", "opd-noise", "fkl", "fkl-noise"),
    "cost": ("sft", "sft-dart", "opd-noise", "fkl-noise", "rl-noise"),
    "opsd": (*(a for a in ARMS if a.startswith("opsd-")), "fkl-noise"),
    "degraded": ("stress-sft", "degraded-opd", "degraded-sft", "scratch-degraded-opd"),
    "retention": tuple(a for a in ARMS if a.startswith("keep-")),
    "schedule": ("careless-gkd-industrial", "careless-gkd-onpolicy"),
}


def run_dir(out: str | Path, arm: str, seed: int) -> Path:
    return Path(out) / f"{arm}-s{seed}"


def teacher_dir(out: str | Path, student: str) -> Path:
    """Where the :data:`STUDENTS` entry ``student`` is written as a teacher (``student.pt``)."""
    return Path(out) / f"teacher-{student}"


def student_config(base: Config, student: str | None, out: str | Path) -> Config:
    """``base`` with the student stage of :data:`STUDENTS` entry ``student`` (``None``: as is)
    and the shared pair cache ``out/cache``."""
    if student is not None and student not in STUDENTS:
        raise ValueError(f"unknown student {student!r}; expected one of {sorted(STUDENTS)}")
    overrides = STUDENTS[student](base) if student else {}
    config = dataclasses.replace(base, **overrides, cache_dir=str(Path(out) / "cache"))
    config.validate()
    return config


def arm_seeds(arm: str, seeds: Sequence[int]) -> list[int]:
    """The seeds ``arm`` runs with: all of ``seeds``, or the first ``ARMS[arm].seeds``."""
    n = ARMS[arm].seeds
    return list(seeds[:n] if n else seeds)


def arm_config(base: Config, arm: str, seed: int, out: str | Path) -> Config:
    """The Config of ``arm`` for ``seed``: the preset ``base`` with the arm's student stage and
    overrides, the shared pair cache ``out/cache`` and, for an arm with a ``teacher``, that
    teacher's directory (the same seed's run of a teacher arm, or a prepared student's)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {sorted(ARMS)}")
    spec = ARMS[arm]
    config = student_config(base, spec.student, out)
    overrides = spec.overrides(base) | dict(seed=seed)
    if spec.teacher in STUDENTS:
        overrides["teacher_from"] = str(teacher_dir(out, spec.teacher))
    elif spec.teacher is not None:
        overrides["teacher_from"] = str(run_dir(out, spec.teacher, seed))
    config = dataclasses.replace(config, **overrides)
    config.validate()
    return config


def _run_one(config: Config, directory: str) -> str:
    train(config, directory)  # on config.threads torch threads
    (Path(directory) / "ckpt.pt").unlink(missing_ok=True)  # resumable until here; done now
    return directory


def _prepare_student(config: Config, directory: str | None) -> str | None:
    """Prepare (cache) a student stage; with a directory, also write that student there as a
    teacher (``student.pt``)."""
    pair = prepare_pair(config, config.cache_dir)
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(directory) / "student.pt", {"student": pair.student.state_dict()})
    return directory


def _is_done(directory: Path, steps: int) -> bool:
    metrics = directory / "metrics.jsonl"
    if not (directory / "student.pt").is_file() or not metrics.is_file():
        return False
    done = evals(read_jsonl(metrics))
    return bool(done) and done[-1]["step"] >= steps


class _Inline:
    """An executor that runs each job when it is submitted (``jobs=1``)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # handed to the caller by future.result()
            future.set_exception(e)
        return future

    def shutdown(self) -> None:
        pass


Job = tuple[Callable, tuple, set[str]]  # function, its arguments, the jobs it waits for


def _schedule(jobs: dict[str, Job], executor, on_done: Callable[[str, Any], None]) -> None:
    """Run ``jobs`` on ``executor``, each once the jobs it waits for have finished, in the
    order given among those ready; ``on_done(name, result)`` after each."""
    pending, running, finished = dict(jobs), {}, set()
    while pending or running:
        for name in [n for n, (_, _, deps) in pending.items() if deps <= finished]:
            fn, args, _ = pending.pop(name)
            running[executor.submit(fn, *args)] = name
        if not running:
            raise ValueError(f"jobs wait for jobs that do not exist: {sorted(pending)}")
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in [f for f in running if f in done]:  # in the order they were submitted
            name = running.pop(future)
            on_done(name, future.result())
            finished.add(name)


def run_experiments(
    base: Config,
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    claims: Iterable[str] | None = None,
    jobs: int = 1,
    progress: bool = True,
    probes: bool = True,
) -> list[Path]:
    """Run every arm of ``claims`` (default: all) for its seeds from the preset Config ``base``.

    The teacher and the usual student are prepared first (cached in ``out/cache``); the other
    starting students and every run then go to ``jobs`` processes (one torch thread each), each
    as soon as what it needs is there (a run whose teacher is another arm waits for that run).
    Finished runs are skipped and killed ones resume from their checkpoint, so re-running the
    same command completes an interrupted set. With ``probes``, :func:`write_probes` writes
    ``out/probes.json``. Returns the run directories."""
    claims = list(CLAIMS) if claims is None else list(claims)
    unknown = sorted(set(claims) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown claims {unknown}; expected some of {sorted(CLAIMS)}")
    arms = list(dict.fromkeys(a for claim in claims for a in CLAIMS[claim]))
    for arm in list(arms):  # a dependent arm needs its source arm too
        source = ARMS[arm].teacher
        if source in ARMS and source not in arms:
            arms.insert(0, source)
    out = Path(out)
    prepare_pair(student_config(base, None, out), out / "cache")
    todo: dict[str, Job] = {}
    needed = {ARMS[a].student for a in arms} | {ARMS[a].teacher for a in arms}
    for s in (s for s in STUDENTS if s in needed):
        directory = str(teacher_dir(out, s)) if s == "retaining" else None
        todo[f"student:{s}"] = (_prepare_student, (student_config(base, s, out), directory), set())
    done: list[Path] = []
    for arm in arms:
        spec = ARMS[arm]
        for seed in arm_seeds(arm, seeds):
            directory = run_dir(out, arm, seed)
            if _is_done(directory, base.steps):
                done.append(directory)
                continue
            deps = {f"student:{s}" for s in (spec.student, spec.teacher) if s in STUDENTS}
            if spec.teacher in ARMS:
                deps.add(run_dir(out, spec.teacher, seed).name)
            config = dataclasses.replace(arm_config(base, arm, seed, out), progress=False)
            todo[directory.name] = (_run_one, (config, str(directory)), deps & set(todo))
    bar = tqdm(total=len(done) + sum(not n.startswith("student:") for n in todo),
               initial=len(done), desc="runs", disable=not progress)  # fmt: skip

    def finished(name: str, result: Any) -> None:
        if not name.startswith("student:"):
            bar.update()
            done.append(Path(result))

    executor = (
        ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        if jobs > 1
        else _Inline()
    )
    try:
        _schedule(todo, executor, finished)
    finally:
        executor.shutdown()
    bar.close()
    if probes:
        write_probes(base, out, seeds, [a for a in arms if a in CLAIMS["degraded"]])
    return done


def write_probes(base: Config, out: str | Path, seeds: Sequence[int], arms: Sequence[str]) -> dict:
    """``out/probes.json``: the gradient-at-slip table of the starting pair
    (:func:`slip_gradient_table`, at the longest chain with the rollout noise of the noisy arms)
    and the greedy, noise-free accuracy (``acc``, per chain length, on the prompts of the
    sampled claims' evaluation, :data:`SMALL`) of the final students of ``arms`` per seed, of
    the teacher and of the starting students."""
    out = Path(out)
    pair = prepare_pair(student_config(base, None, out), out / "cache")
    c = student_config(base, None, out)
    probes: dict[str, Any] = {
        "slip_gradients": slip_gradient_table(
            pair.student,
            pair.teacher,
            pair.tokenizer,
            make_task(c),
            length=max(c.eval_lengths),
            noise=NOISY["rollout_noise"],
            max_new_tokens=auto_max_new_tokens(c, pair.tokenizer),
        ),  # fmt: skip
        "greedy": {},
    }
    greedy = dataclasses.replace(c, **SMALL, eval_temperature=0.0, retention=False)
    suite = eval_suite(greedy, make_task(greedy))

    def score(model) -> dict[str, float]:
        ev = evaluate(model, suite, pair.tokenizer, temperature=0.0,
                      max_new_tokens=auto_max_new_tokens(c, pair.tokenizer),
                      micro_batch=c.eval_micro_batch_size)  # fmt: skip
        return {k: v for k, v in ev.items() if k == "acc" or k.startswith("acc_len")}

    probes["greedy"]["start"] = score(pair.student)
    probes["greedy"]["teacher"] = score(pair.teacher)
    for name in ("scratch", "careless"):
        other = prepare_pair(student_config(base, name, out), out / "cache")
        probes["greedy"][f"start-{name}"] = score(other.student)
    model = pair.student
    for arm in arms:
        for seed in arm_seeds(arm, seeds):
            path = run_dir(out, arm, seed) / "student.pt"
            if path.is_file():
                model.load_state_dict(load_checkpoint(path)["student"])
                probes["greedy"][f"{arm}-s{seed}"] = score(model)
    (out / "probes.json").write_text(json.dumps(probes, indent=1))
    return probes


@torch.no_grad()
def slip_gradient_table(
    student,
    teacher,
    tokenizer,
    task,
    *,
    length: int,
    n_prompts: int = 256,
    noise: float = 0.2,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> list[dict[str, float]]:
    """:func:`opd_lib.lab.slips.gradient_at_slips` on ``student``'s own samples: ``n_prompts``
    chains of ``length`` digits sampled at ``temperature`` with execution ``noise`` (the states
    noisy on-policy training sees); the slips found by ``RunningSum.first_slip`` (``[]`` when
    there are none, or no other tokens). Needs the character tokenizer (one token per
    character)."""
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    rng = random.Random(seed)
    examples = [task.sample(rng, length) for _ in range(n_prompts)]
    device = next(student.parameters()).device
    b = encode(tokenizer, examples, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    ids = generate(
        student, tokenizer, b.prompt_ids, b.prompt_mask, max_new_tokens, temperature, gen, noise,
        noise_gen,
    )  # fmt: skip
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    mask = completion_mask(ids, tokenizer.eos_token_id)
    at_slip = slip_mask(task, examples, texts, ids.shape[1]).to(device)
    if not (at_slip & mask).any() or not (mask & ~at_slip).any():
        return []
    logits = [completion_logits(m, b.prompt_ids, b.prompt_mask, ids) for m in (student, teacher)]
    return gradient_at_slips(logits[0], logits[1], mask, at_slip)


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
