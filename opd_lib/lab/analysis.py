"""From ``metrics.jsonl`` records to the lab's tables, curves and figures: pure functions of the
records (only :func:`report` reads files and writes the markdown table and PNGs).

Record types (written by :class:`opd_lib.lab.trainer.Trainer`): ``"train"`` (one per step),
``"eval"`` (every ``eval_every`` steps and at step 0) and one ``"teacher"`` record (the teacher's
own evaluation, keys prefixed ``teacher_``).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opd_lib.bounds import compounding_mistakes, dagger_bound_on_policy
from opd_lib.lab.metrics import read_jsonl

__all__ = [
    "cost_table",
    "cost_to_target",
    "curves",
    "evals",
    "final_table",
    "fmt_mean_sd",
    "load_arms",
    "mean_sd",
    "mistakes_by_length",
    "pm_table",
    "report",
    "seed_curves",
    "teacher_record",
]

Runs = dict[str, list[list[dict]]]  # arm -> records of each seed


def evals(records: list[dict]) -> list[dict]:
    """The evaluation records, in order."""
    return [r for r in records if r.get("type") == "eval"]


def teacher_record(records: list[dict]) -> dict:
    """The teacher's evaluation record (``{}`` if there is none)."""
    return next((r for r in records if r.get("type") == "teacher"), {})


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite ``values``."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt_mean_sd(values: Iterable[float]) -> str:
    """``"mean ± sd"`` of the finite ``values`` (3 and 2 significant digits), the mean alone for
    one value, ``"-"`` for none."""
    xs = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not xs:
        return "-"
    mean, sd = mean_sd(xs)
    return f"{mean:.3g}" if len(xs) == 1 else f"{mean:.3g} ± {sd:.2g}"


def load_arms(root: str | Path) -> Runs:
    """``{arm: [records of seed 0, records of seed 1, ...]}`` from ``root/<arm>-s<seed>/``."""
    root = Path(root)
    arms: dict[str, dict[int, list[dict]]] = {}
    for f in sorted(root.glob("*-s*/metrics.jsonl")):
        arm, _, seed = f.parent.name.rpartition("-s")
        if seed.isdigit():
            arms.setdefault(arm, {})[int(seed)] = read_jsonl(f)
    if not arms:
        raise ValueError(f"no <arm>-s<seed>/metrics.jsonl under {root}")
    return {arm: [by_seed[s] for s in sorted(by_seed)] for arm, by_seed in arms.items()}


def cost_to_target(records: list[dict], target: float, key: str = "acc") -> dict[str, float]:
    """FLOPs, wall seconds and step at the first evaluation where ``key >= target``, from one
    run's records (``metrics.jsonl``); ``inf`` everywhere when the run never got there.

    Wall time is the training time logged by the last train step at or before that evaluation
    (evaluation time is not counted)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    wall = {r["step"]: r["wall_s"] for r in records if r.get("type") == "train"}
    for r in evals(records):
        if r.get(key, -1.0) >= target:
            step = r["step"]
            before = [s for s in wall if s <= step]
            return {
                "step": float(step),
                "flops": float(r.get("flops", 0.0)),
                "wall_s": float(wall[max(before)]) if before else 0.0,
            }
    return {"step": math.inf, "flops": math.inf, "wall_s": math.inf}


def mistakes_by_length(runs: Runs, arms: Sequence[str], evaluation: int = -1) -> list[dict]:
    """Per arm and evaluated chain length ``k`` (``T = k - 1`` steps): wrong steps per trace at
    the ``evaluation``-th evaluation (default the last; 0: before training; mean, sd over seeds)
    and the two predictions from the arm's own per-step error ``eps`` at length 2 (one step, so
    nothing to compound): ``eps T`` (recovering, :func:`opd_lib.bounds.dagger_bound_on_policy`)
    and :func:`opd_lib.bounds.compounding_mistakes`."""
    rows = []
    for arm in arms:
        finals = [evals(r)[evaluation] for r in runs[arm]]
        lengths = sorted(
            int(m.group(1)) for k in finals[0] if (m := re.fullmatch(r"step_err_len(\d+)", k))
        )
        eps, _ = mean_sd(f["step_err_len2"] for f in finals)
        for k in lengths:
            m, sd = mean_sd(f[f"step_err_len{k}"] * (k - 1) for f in finals)
            acc, acc_sd = mean_sd(f[f"acc_len{k}"] for f in finals)
            rows.append(
                dict(
                    arm=arm, length=k, mistakes=m, mistakes_sd=sd, acc=acc, acc_sd=acc_sd,
                    eps=eps, independent=dagger_bound_on_policy(eps, k - 1),
                    compounding=compounding_mistakes(eps, k - 1),
                )
            )  # fmt: skip
    return rows


def cost_table(runs: Runs, arms: Sequence[str], share: float = 0.9, key: str = "acc") -> list[dict]:
    """Per arm: the step, FLOPs and training wall time at which each seed's student first reached
    ``share`` x its teacher's ``key`` (median over seeds; ``inf`` if a seed never did), how many
    seeds got there, the per-seed values (``seed_step``, ``seed_flops``) and the FLOPs of a whole
    run (``budget_flops``, median over seeds)."""
    rows = []
    for arm in arms:
        hits = []
        for records in runs[arm]:
            target = share * teacher_record(records).get(f"teacher_{key}", 1.0)
            hits.append(cost_to_target(records, min(1.0, target), key))
        reached = [h for h in hits if math.isfinite(h["step"])]
        row = dict(arm=arm, seeds=len(hits), reached=len(reached))
        for k in ("step", "flops", "wall_s"):
            row[k] = statistics.median(h[k] for h in hits)
        row["seed_step"] = [h["step"] for h in hits]
        row["seed_flops"] = [h["flops"] for h in hits]
        row["budget_flops"] = statistics.median(evals(r)[-1]["flops"] for r in runs[arm])
        rows.append(row)
    return rows


def final_table(runs: Runs, arms: Sequence[str], keys: Sequence[str]) -> list[dict]:
    """Per arm: mean and sd over seeds of ``keys`` at the first (``<key>@0``) and last evaluation
    and, with a ``teacher_`` prefix, of the teacher's own evaluation."""
    rows = []
    for arm in arms:
        row: dict[str, Any] = dict(arm=arm, seeds=len(runs[arm]))
        for key in keys:
            if key.startswith("teacher_"):
                values = [teacher_record(r).get(key, math.nan) for r in runs[arm]]
            elif key.endswith("@0"):
                values = [evals(r)[0].get(key[:-2], math.nan) for r in runs[arm]]
            else:
                values = [evals(r)[-1].get(key, math.nan) for r in runs[arm]]
            row[key], row[key + "_sd"] = mean_sd(values)
        rows.append(row)
    return rows


def seed_curves(
    runs: Runs, arm: str, x: str = "flops", y: str = "acc"
) -> list[tuple[list[float], list[float]]]:
    """``(xs, ys)`` over the evaluations of each seed of ``arm`` (e.g. accuracy against
    cumulative FLOPs, which differ from seed to seed)."""
    return [([e[x] for e in evals(r)], [e[y] for e in evals(r)]) for r in runs[arm]]


def curves(runs: Runs, arm: str, key: str = "acc") -> dict[str, list]:
    """``key`` over evaluation steps for ``arm``: steps, mean and sd over seeds (seeds evaluated
    at the same steps)."""
    per_seed = [[e.get(key, math.nan) for e in evals(r)] for r in runs[arm]]
    steps = [e["step"] for e in evals(runs[arm][0])]
    stats = [mean_sd(col) for col in zip(*per_seed, strict=False)]
    return dict(step=steps, mean=[m for m, _ in stats], sd=[s for _, s in stats])


def pm_table(rows: list[dict], keys: Sequence[str], digits: int = 2) -> list[dict[str, str]]:
    """Rows of :func:`final_table` (or any rows with ``key`` and ``key_sd``) for display: the
    ``arm`` and each of ``keys`` as ``"mean ± sd"``."""
    return [
        {"arm": r["arm"], **{k: f"{r[k]:.{digits}f} ± {r[k + '_sd']:.{digits}f}" for k in keys}}
        for r in rows
    ]


# ------------------------------------------------------------------------------------ report

_SEED_SUFFIX = re.compile(r"[-_.]?s(?:eed)?\d+$")


def _run_summary(f: Path, root: Path) -> dict | None:
    records = read_jsonl(f)
    ev, trains = evals(records), [r for r in records if r.get("type") == "train"]
    if not ev:
        return None
    rel = f.parent.relative_to(root).as_posix() if f.parent != root else root.name
    config_file = f.parent / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return {
        "eval_temperature": config.get("eval_temperature"),
        "eval_noise": config.get("eval_noise", 0.0),
        "run": rel,
        "group": _SEED_SUFFIX.sub("", rel) or rel,
        "method": ev[-1].get("method"),
        "seed": ev[-1].get("seed"),
        "step": ev[-1]["step"],
        "final": ev[-1],
        "first": ev[0],
        "teacher": teacher_record(records),
        "evals": ev,
        "wall_s": trains[-1]["wall_s"] if trains else 0.0,
        "flops": ev[-1].get("flops", 0.0),
    }


def report(root: str | Path, out: str | Path | None = None, figures: bool = True) -> dict:
    """Tables (markdown, written to ``out/report.md``) and figures (PNG) of every
    ``metrics.jsonl`` under ``root``. Runs whose directory names differ only by a seed suffix
    (``-s0``, ``_seed1``) are grouped: mean ± standard deviation over seeds.

    Returns ``{"runs": [...], "groups": [...], "markdown": str, "figures": [paths]}``.
    """
    from opd_lib.lab.figures import report_figures

    root = Path(root)
    out = Path(out) if out is not None else root
    files = sorted(root.rglob("metrics.jsonl"))
    if not files:
        raise ValueError(f"no metrics.jsonl under {root}")
    runs = [s for f in files if (s := _run_summary(f, root)) is not None]
    acc_keys = sorted(
        {k for r in runs for k in r["final"] if k.startswith("acc_") and k != "acc_retention"},
        key=lambda k: (len(k), k),
    )
    cols = ["acc", *acc_keys, "acc_retention", "rkl_to_teacher", "eval_entropy"]
    header = ["group", "method", "seeds", "step", *cols, "teacher acc", "flops", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = defaultdict(list)
    for r in runs:
        groups[r["group"]].append(r)
    group_rows = []
    for name, members in groups.items():
        row = {
            "group": name,
            "method": members[0]["method"],
            "seeds": len(members),
            "step": max(m["step"] for m in members),
        }
        for c in cols:
            row[c] = [m["final"].get(c, float("nan")) for m in members]
        row["teacher acc"] = [m["teacher"].get("teacher_acc", float("nan")) for m in members]
        row["flops"] = [m["flops"] for m in members]
        row["wall s"] = [m["wall_s"] for m in members]
        group_rows.append(row)
        cells = [name, str(row["method"]), str(row["seeds"]), str(row["step"])]
        cells += [fmt_mean_sd(row[c]) for c in [*cols, "teacher acc", "flops", "wall s"]]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown + "\n")
    paths = report_figures(runs, out) if figures else []
    return {"runs": runs, "groups": group_rows, "markdown": markdown, "figures": paths}


# ------------------------------------------------------------------- the claims and verdicts
#
# Each verdict is computed from the files and returns ``holds`` (bool), ``text`` (a sentence true
# of every seed it names) and ``falsified_if`` (what result would have refuted the claim).


def lengths_of(record: dict) -> list[int]:
    """The chain lengths ``k`` with an ``acc_len<k>`` key in an evaluation record."""
    return sorted(int(m.group(1)) for k in record if (m := re.fullmatch(r"acc_len(\d+)", k)))


def _final(runs: Runs, arm: str, key: str) -> list[float]:
    return [evals(r)[-1].get(key, math.nan) for r in runs[arm]]


def chain_table(runs: Runs, arms: Sequence[str]) -> list[dict]:
    """Claim 1 per arm, final evaluation (mean and sd over seeds): accuracy per chain length
    (``len<k>``), ``P(wrong | wrong before)``, ``P(wrong | right before)`` and the accuracy after
    a forced slip (``recovery``); first rows ``teacher`` and ``start`` (step 0 of ``arms[0]``)."""
    first = runs[arms[0]]
    keys = {f"len{k}": f"acc_len{k}" for k in lengths_of(evals(first[0])[0])}
    keys |= dict(
        wrong_after_wrong="p_wrong_after_wrong", wrong_after_right="p_wrong_after_right",
        recovery="acc_recovery",
    )  # fmt: skip
    sources = {  # name -> one record per seed
        "teacher": [{k[8:]: v for k, v in teacher_record(r).items()} for r in first],
        "start": [evals(r)[0] for r in first],
    }
    rows = []
    for name in ("teacher", "start", *arms):
        row: dict[str, Any] = dict(arm=name)
        for label, key in keys.items():
            if name in sources:
                values = [e.get(key, math.nan) for e in sources[name]]
            else:
                values = _final(runs, name, key)
            row[label], row[label + "_sd"] = mean_sd(values)
        row["seeds"] = len(first) if name in sources else len(runs[name])
        rows.append(row)
    return rows


def chain_verdict(
    runs: Runs,
    recover: Sequence[str] = ("fkl-noise", "sft-dart"),
    stuck: Sequence[str] = ("sft", "kd", "opd", "opd-noise", "fkl"),
    high: float = 0.3,
    low: float = 0.1,
) -> dict[str, Any]:
    """Claim 1: recovery needs post-slip states *and* a signal that does not vanish at a
    confident mistake. Holds when every seed of each ``recover`` arm ends with ``acc_recovery >=
    high`` and every seed of each ``stuck`` arm with ``acc_recovery <= low``."""
    rec = {a: _final(runs, a, "acc_recovery") for a in (*recover, *stuck) if a in runs}
    up = all(min(rec[a]) >= high for a in recover if a in rec)
    down = all(max(rec[a]) <= low for a in stuck if a in rec)
    parts = [f"{a} {min(v):.2f}-{max(v):.2f}" for a, v in rec.items()]
    return dict(
        holds=up and down,
        recovery=rec,
        text=(
            f"Recovery after a forced slip (range over seeds): {', '.join(parts)}. "
            + ("Every seed of " if up else "Not every seed of ")
            + f"{' and '.join(recover)} reached {high:.2f}; "
            + ("every seed of " if down else "not every seed of ")
            + f"{', '.join(stuck)} stayed at or below {low:.2f}."
        ),
        falsified_if=(
            f"reverse-KL OPD with noisy rollouts recovering (>= {high}) in any seed (then the "
            "vanishing gradient would not stop it), forward KL with noisy rollouts or SFT on "
            "perturbed traces failing to (then states plus signal would not suffice), or clean SFT "
            "or KD recovering (then post-slip states would not be needed)"
        ),
    )


def cost_verdict(
    runs: Runs, fast: str = "fkl-noise", slow: str = "rl-noise", share: float = 0.9,
    key: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Claim 2: distillation reaches a target that needs recovery (``share`` x the teacher's
    noisy accuracy at the longest chain, ``key``) at fewer FLOPs than GRPO, seed by seed (seeds
    paired by order). A seed where GRPO never got there gives a lower bound (its budget)."""
    key = key or f"acc_len{max(lengths_of(evals(runs[fast][0])[0]))}"
    rows = {r["arm"]: r for r in cost_table(runs, [fast, slow], share, key)}
    budget = [evals(r)[-1]["flops"] for r in runs[slow]]
    sentences, ok = [], True
    pairs = zip(rows[fast]["seed_flops"], rows[slow]["seed_flops"], budget, strict=False)
    for s, (f, g, b) in enumerate(pairs):
        if not math.isfinite(f):
            ok = False
            sentences.append(f"seed {s}: {fast} never reached it")
        elif math.isfinite(g):
            ok &= g > f
            sentences.append(f"seed {s}: {slow}/{fast} FLOPs = {g / f:.1f}")
        else:
            sentences.append(f"seed {s}: {slow} never reached it (ratio >= {b / f:.1f})")
    return dict(
        holds=ok,
        key=key,
        rows=rows,
        text=f"Target {share:.0%} of the teacher's {key}; " + "; ".join(sentences) + ".",
        falsified_if=(
            f"{slow} reaching the target at no more FLOPs than {fast} in any seed, or {fast} "
            "not reaching it within the budget"
        ),
    )


def opsd_gate(runs: Runs, arm: str, tol: float = 0.02) -> dict[str, Any]:
    """Claim 3's gate, from step 0 of an OPSD ``arm``: the hinted self (the hint in the prompt)
    against the plain self, per chain length (under the same evaluation noise) and after a
    forced slip (means over seeds). Passes when the hinted self is nowhere worse (by more than
    ``tol``; at two digits the one step's noise is beyond anyone's repair, so a tie is the best
    there is), better at the longest chain and better after a forced slip."""
    first = [evals(r)[0] for r in runs[arm]]
    rows = []
    for k in lengths_of(first[0]):
        plain, _ = mean_sd(e[f"acc_len{k}"] for e in first)
        hinted, _ = mean_sd(e.get(f"acc_hinted_len{k}", math.nan) for e in first)
        rows.append(dict(where=f"len{k}", plain=plain, hinted=hinted))
    plain, _ = mean_sd(e["acc_recovery"] for e in first)
    hinted, _ = mean_sd(e.get("acc_hinted_recovery", math.nan) for e in first)
    rows.append(dict(where="recovery", plain=plain, hinted=hinted))
    worse = [r["where"] for r in rows if not r["hinted"] >= r["plain"] - tol]
    not_better = [r["where"] for r in rows[-2:] if not r["hinted"] > r["plain"]]
    passed = not worse and not not_better
    if passed:
        text = "The hinted self passes the gate: nowhere worse, better at the longest chain and "
        text += "after a forced slip."
    else:
        text = (
            "The hinted self fails the gate: "
            + "; ".join(
                part
                for part in (
                    f"worse at {', '.join(worse)}" if worse else "",
                    f"not better at {', '.join(not_better)}" if not_better else "",
                )
                if part
            )
            + "."
        )
    return dict(passed=passed, rows=rows, text=text)


def opsd_verdict(
    runs: Runs, arms: Sequence[str], gate_arm: str = "opsd-frozen-none", gain: float = 0.2
) -> dict[str, Any]:
    """Claim 3: a self-teacher that passes the gate passes recovery to the student. Holds when
    the gate passes and some OPSD arm ends ``gain`` above the start's ``acc_recovery`` in every
    seed; reports the arm with the highest final recovery."""
    gate = opsd_gate(runs, gate_arm)
    start, _ = mean_sd(evals(r)[0]["acc_recovery"] for r in runs[gate_arm])
    best = max(arms, key=lambda a: mean_sd(_final(runs, a, "acc_recovery"))[0])
    rec = _final(runs, best, "acc_recovery")
    gained = min(rec) >= start + gain
    return dict(
        holds=gate["passed"] and gained,
        gate=gate,
        best=best,
        text=(
            gate["text"]
            + f" The best OPSD arm, {best}, ends with recovery {fmt_mean_sd(rec)} "
            + f"(start {start:.2f})."
        ),
        falsified_if=(
            "a gated self-teacher leaving the student's recovery where it started, or a "
            "self-teacher that fails the gate improving it"
        ),
    )


def degraded_table(runs: Runs, arms: Sequence[str], greedy: dict[str, dict]) -> list[dict]:
    """Claim 4 per arm: final sampled accuracy (the runs' own evaluation, temperature 1) and
    greedy accuracy (``greedy["<arm>-s<seed>"]["acc"]``, from ``probes.json``), mean and sd."""
    rows = []
    for arm in arms:
        sampled = _final(runs, arm, "acc")
        g = [greedy.get(f"{arm}-s{s}", {}).get("acc", math.nan) for s in range(len(runs[arm]))]
        rows.append(dict(arm=arm, sampled=mean_sd(sampled), greedy=mean_sd(g)))
    return rows


def degraded_verdict(
    runs: Runs, greedy: dict[str, dict], teacher: str = "stress-sft", student: str = "degraded-opd"
) -> dict[str, Any]:
    """Claim 4: the OPD student ends above its degraded teacher (the teacher arm's final student)
    in every seed, by sampled *and* by greedy accuracy."""
    rows = {r["arm"]: r for r in degraded_table(runs, [teacher, student], greedy)}
    n = min(len(runs[teacher]), len(runs[student]))
    above = {"sampled": True, "greedy": True}
    for s in range(n):
        above["sampled"] &= _final(runs, student, "acc")[s] > _final(runs, teacher, "acc")[s]
        g = [greedy.get(f"{a}-s{s}", {}).get("acc", math.nan) for a in (student, teacher)]
        above["greedy"] &= g[0] > g[1]
    return dict(
        holds=above["sampled"] and above["greedy"],
        above=above,
        rows=rows,
        text=(
            f"{student} vs its teacher, sampled {rows[student]['sampled'][0]:.2f} vs "
            f"{rows[teacher]['sampled'][0]:.2f}, greedy {rows[student]['greedy'][0]:.2f} vs "
            f"{rows[teacher]['greedy'][0]:.2f} (means over {n} seeds); above in every seed: "
            f"sampled {above['sampled']}, greedy {above['greedy']}."
        ),
        falsified_if="the OPD student ending at or below its teacher's greedy accuracy in any seed",
    )


def retention_at_target(runs: Runs, arms: Sequence[str], target: float) -> list[dict]:
    """Claim 5 per arm and seed: retention (``acc_retention``) at the first evaluation where the
    task accuracy ``acc`` reached ``target`` (matched task gain), with that step; ``nan`` and
    ``inf`` when it never did. Also the final retention and accuracy."""
    rows = []
    for arm in arms:
        for s, records in enumerate(runs[arm]):
            hit = next((e for e in evals(records) if e["acc"] >= target), None)
            rows.append(
                dict(
                    arm=arm, seed=s, step=hit["step"] if hit else math.inf,
                    retention=hit["acc_retention"] if hit else math.nan,
                    final_acc=evals(records)[-1]["acc"],
                    final_retention=evals(records)[-1]["acc_retention"],
                )
            )  # fmt: skip
    return rows


def retention_verdict(
    runs: Runs,
    target: float,
    opd: str = "keep-opd",
    others: Sequence[str] = ("keep-sft", "keep-rl"),
) -> dict[str, Any]:
    """Claim 5: at matched task gain OPD keeps more of the retention skill than SFT and GRPO.
    Holds when ``opd`` reached ``target`` and its retention there exceeds that of every arm in
    ``others`` that reached it, in every seed (seeds paired by order)."""
    rows = retention_at_target(runs, [opd, *others], target)
    by = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if r["arm"] == opd})
    ok = all(math.isfinite(by[(opd, s)]["step"]) for s in seeds)
    for arm in others:
        for s in seeds:
            if (arm, s) in by and math.isfinite(by[(arm, s)]["step"]):
                ok &= by[(opd, s)]["retention"] > by[(arm, s)]["retention"]
    parts = [
        f"{r['arm']} s{r['seed']}: "
        + (f"{r['retention']:.2f} at step {r['step']:.0f}" if math.isfinite(r["step"]) else "never")
        for r in rows
    ]
    return dict(
        holds=ok,
        rows=rows,
        text=f"Retention when the task accuracy first reached {target:.2f}: "
        + "; ".join(parts)
        + ".",
        falsified_if=(
            "SFT or GRPO keeping as much retention as OPD (or more) at the same task accuracy"
        ),
    )


def schedule_verdict(
    runs: Runs, scheduled: str = "careless-gkd-industrial", onpolicy: str = "careless-gkd-onpolicy"
) -> dict[str, Any]:
    """The lambda schedule: from a careless student, starting off-policy ends above always
    on-policy GKD in every seed (final ``acc``)."""
    a, b = _final(runs, scheduled, "acc"), _final(runs, onpolicy, "acc")
    ok = all(x > y for x, y in zip(a, b, strict=False))
    start = mean_sd(evals(r)[0]["acc"] for r in runs[scheduled])[0]
    return dict(
        holds=ok,
        text=(
            f"From a careless student (accuracy {start:.2f}), the schedule ends at "
            f"{fmt_mean_sd(a)}, always on-policy at {fmt_mean_sd(b)}."
        ),
        falsified_if="always on-policy GKD ending at or above the schedule in any seed",
    )
