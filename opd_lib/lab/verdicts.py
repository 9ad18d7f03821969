"""Chapter 10's claims, computed from the runs of ``results/lab/full``: for each claim a table and
a verdict (``holds``, a ``text`` true of every seed it names, and ``falsified_if``: what would
have made it false). Pure functions of the records :func:`opd_lib.lab.analysis.load_arms` reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from opd_lib.lab.analysis import Runs, cost_table, evals, fmt_mean_sd, mean_sd, teacher_record

__all__ = [
    "chain_table",
    "chain_verdict",
    "cost_verdict",
    "degraded_table",
    "degraded_verdict",
    "lengths_of",
    "opsd_gate",
    "opsd_verdict",
    "retention_at_target",
    "retention_verdict",
    "schedule_verdict",
]


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
            "recovering (then post-slip states would not be needed); KD and noise-free forward KL "
            "see only the occasional slips of temperature-1 samples (the teacher's or the "
            "student's own), so their staying low is a weaker prediction"
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
            + f" The best OPSD arm, {best}, ends with recovery "
            + (f"{rec[0]:.2f}" if len(rec) == 1 else fmt_mean_sd(rec))
            + f" (start {start:.2f})."
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
            f"{rows[teacher]['greedy'][0]:.2f} ("
            + (
                "one seed"
                if n == 1
                else f"means over {n} seeds; above in every seed: "
                f"sampled {above['sampled']}, greedy {above['greedy']}"
            )
            + ")."
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
