"""The lab chapter's experiments: arms, the resumable runner, and the analysis functions."""

import json
import math

import pytest
import torch

from opd_lib.lab.experiments import (
    ARMS,
    CLAIMS,
    arm_config,
    arm_seeds,
    compounding_mistakes,
    cost_table,
    curves,
    final_table,
    independent_mistakes,
    load_arms,
    mistakes_by_length,
    run_experiments,
    seed_curves,
)
from opd_lib.lab.metrics import JsonlLogger
from opd_lib.lab.pair import cache_key
from opd_lib.lab.presets import preset

torch.set_num_threads(1)


def test_mistake_predictions():
    """Recovery: eps * T. No recovery: step j is wrong iff one of steps 1..j erred."""
    assert independent_mistakes(0.1, 3) == pytest.approx(0.3)
    assert compounding_mistakes(0.1, 3) == pytest.approx(0.1 + 0.19 + 0.271)
    assert compounding_mistakes(0.0, 9) == 0.0 and compounding_mistakes(1.0, 9) == 9.0
    # small eps: about eps T (T + 1) / 2, i.e. quadratic in T
    assert compounding_mistakes(1e-4, 20) == pytest.approx(1e-4 * 20 * 21 / 2, rel=1e-2)
    for t in range(1, 12):
        assert compounding_mistakes(0.05, t) >= independent_mistakes(0.05, t) - 1e-12


def _write_run(root, arm, seed, evals, teacher_acc=1.0, wall=1.0):
    log = JsonlLogger(root / f"{arm}-s{seed}" / "metrics.jsonl")
    log.log({"type": "teacher", "step": 0, "teacher_acc": teacher_acc})
    for e in evals:
        log.log({"type": "train", "step": e["step"], "wall_s": wall * e["step"]})
        log.log({"type": "eval", **e})


def test_analysis_on_hand_written_runs(tmp_path):
    start = dict(step_err_len2=0.3, step_err_len4=0.5, acc_len2=0.7, acc_len4=0.2)
    final = dict(step_err_len2=0.1, step_err_len4=0.2, acc_len2=0.9, acc_len4=0.5)
    for seed, acc in ((0, 0.2), (1, 0.4)):
        _write_run(tmp_path, "sft", seed, [
            dict(step=0, acc=0.1, flops=0.0, **start),
            dict(step=10, acc=acc, flops=100.0, **final),
        ], teacher_acc=0.5)  # fmt: skip
    _write_run(
        tmp_path, "rl", 0, [dict(step=0, acc=0.0, flops=0.0), dict(step=10, acc=0.1, flops=9.0)]
    )
    runs = load_arms(tmp_path)
    assert sorted(runs) == ["rl", "sft"] and len(runs["sft"]) == 2

    rows = mistakes_by_length(runs, ["sft"])
    assert [r["length"] for r in rows] == [2, 4]
    assert rows[1]["mistakes"] == pytest.approx(0.2 * 3) and rows[1]["mistakes_sd"] == 0.0
    assert rows[1]["independent"] == pytest.approx(0.3)
    assert rows[1]["compounding"] == pytest.approx(compounding_mistakes(0.1, 3))

    before = mistakes_by_length(runs, ["sft"], evaluation=0)
    assert [r["mistakes"] for r in before] == pytest.approx([0.3, 1.5])
    assert before[1]["compounding"] == pytest.approx(compounding_mistakes(0.3, 3))

    cost = {r["arm"]: r for r in cost_table(runs, ["sft", "rl"], share=0.8)}
    # target 0.8 * 0.5 = 0.4: seed 1 reaches it at step 10, seed 0 never (median of 10, inf)
    assert cost["sft"]["reached"] == 1 and cost["sft"]["step"] == math.inf
    assert cost["rl"]["reached"] == 0  # teacher_acc 1.0 -> target 0.8, never reached
    assert cost["sft"]["budget_flops"] == 100.0 and cost["rl"]["budget_flops"] == 9.0

    table = final_table(runs, ["sft"], ["acc", "acc@0", "teacher_acc"])[0]
    assert table["acc"] == pytest.approx(0.3) and table["acc_sd"] == pytest.approx(0.1414, abs=1e-3)
    assert table["acc@0"] == pytest.approx(0.1) and table["teacher_acc"] == 0.5

    c = curves(runs, "sft")
    assert c["step"] == [0, 10] and c["mean"] == pytest.approx([0.1, 0.3])
    assert seed_curves(runs, "sft") == [([0.0, 100.0], [0.1, 0.2]), ([0.0, 100.0], [0.1, 0.4])]


def test_arms_and_claims_are_consistent(tmp_path):
    assert {a for arms in CLAIMS.values() for a in arms} <= set(ARMS)
    base = preset("tiny")
    cfg = arm_config(base, "degraded-opd", 3, tmp_path)
    assert cfg.method == "opd" and cfg.seed == 3 and cfg.eval_temperature == 1.0
    assert cfg.teacher_from == str(tmp_path / "stress-sft-s3")
    assert arm_config(base, "stress-sft", 0, tmp_path).lr == pytest.approx(5 * base.lr)
    opsd = arm_config(base, "opsd-ema-pointwise", 0, tmp_path)
    assert (opsd.opsd_teacher, opsd.clip, opsd.rollout_noise) == ("ema", "pointwise", 0.2)
    # the chain arms: noise only where the student samples, DART only on data
    assert arm_config(base, "opd", 0, tmp_path).rollout_noise == 0.0
    assert arm_config(base, "fkl-noise", 0, tmp_path).rollout_noise == 0.2
    assert arm_config(base, "sft-dart", 0, tmp_path).data_perturb == 0.5
    # other starting students: their own student stage (cache key), the same teacher stages
    weak = arm_config(base, "scratch-degraded-opd", 0, tmp_path)
    assert not weak.student_from_teacher and weak.teacher_from == str(tmp_path / "stress-sft-s0")
    assert cache_key(weak, "student") != cache_key(base, "student")
    assert cache_key(weak, "teacher") == cache_key(base, "teacher")
    keep = arm_config(base, "keep-rl-kl", 0, tmp_path)
    assert keep.teacher_from == str(tmp_path / "teacher-retaining") and keep.rl_kl > 0
    assert arm_seeds("keep-opd", [4, 5, 6]) == [4] and arm_seeds("sft", [4, 5]) == [4, 5]
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config(base, "nope", 0, tmp_path)
    with pytest.raises(ValueError, match="unknown claims"):
        run_experiments(base, tmp_path, claims=["nope"])


def test_runner_orders_dependent_arms_and_skips_finished_runs(tmp_path):
    base = preset(
        "tiny", steps=2, eval_every=2, checkpoint_every=2, eval_size=2, eval_lengths=(2, 3),
        teacher_steps=2, teacher_recovery_steps=1, student_init_steps=4, progress=False,
    )  # fmt: skip
    dirs = run_experiments(base, tmp_path, seeds=(0, 1), claims=["degraded"], progress=False)
    # single-seed arms run the first seed only; the teacher arm first
    assert [d.name for d in dirs] == ["stress-sft-s0", "degraded-opd-s0", "degraded-sft-s0",
                                      "scratch-degraded-opd-s0"]  # fmt: skip
    for d in dirs:
        assert (d / "student.pt").is_file() and not (d / "ckpt.pt").exists()
    runs = load_arms(tmp_path)
    # the degraded arms' teacher is the stress-SFT student: its accuracy is what they log
    stressed = [r for r in runs["stress-sft"][0] if r["type"] == "eval"][-1]["acc"]
    for arm in ("degraded-opd", "scratch-degraded-opd"):
        teacher = next(r for r in runs[arm][0] if r["type"] == "teacher")
        assert teacher["teacher_acc"] == stressed
    first = [r for r in runs["degraded-opd"][0] if r["type"] == "eval"][0]
    # measured on every evaluation (None in the log when no pair of steps qualified)
    assert {"p_wrong_after_wrong", "p_wrong_after_right", "n_after_wrong"} <= set(first)
    # probes: the slip-gradient rows and greedy scores of every final student of the claim
    probes = json.loads((tmp_path / "probes.json").read_text())
    assert {"start", "teacher", "start-scratch", "start-careless", "degraded-opd-s0"} <= set(
        probes["greedy"]
    )
    stamp = (tmp_path / "degraded-opd-s0" / "metrics.jsonl").stat().st_mtime_ns
    run_experiments(base, tmp_path, seeds=(0, 1), claims=["degraded"], progress=False,
                    probes=False)  # fmt: skip
    assert (tmp_path / "degraded-opd-s0" / "metrics.jsonl").stat().st_mtime_ns == stamp


def test_pm_table_formats_mean_and_sd():
    from opd_lib.lab.experiments import pm_table

    rows = [dict(arm="opd", acc=0.8333, acc_sd=0.0471, seeds=3)]
    assert pm_table(rows, ["acc"]) == [{"arm": "opd", "acc": "0.83 ± 0.05"}]


def test_recovery_signal_counts_slips_and_compares_argmaxes(monkeypatch):
    """With the student's samples replaced by sloppy traces (slips guaranteed), every slip is
    counted, a teacher that always says one digit agrees with the true value exactly as often as
    that digit is the true value at a slip, and a teacher identical to the student agrees."""
    import random
    from types import SimpleNamespace

    from opd_lib.lab.data import encode
    from opd_lib.lab.experiments import recovery_signal
    from opd_lib.lab.pair import prepare_pair
    from opd_lib.lab.trainer import Trainer

    config = preset("tiny", progress=False, teacher_steps=2, teacher_recovery_steps=0,
                    student_init_steps=0)  # fmt: skip
    trainer = Trainer(config, prepare_pair(config))
    rng = random.Random(1)  # recovery_signal draws its prompts with seed 1 too
    examples = [trainer.task.sample(rng) for _ in range(64)]
    noisy = [trainer.task.sloppy(ex, random.Random(i), 0.5) for i, ex in enumerate(examples)]
    ids = encode(trainer.tok, noisy).completion_ids
    monkeypatch.setattr(trainer, "sample", lambda *a, **k: ids)
    texts = trainer.decode(ids)
    slips = [trainer.task.first_slip(ex, t) for ex, t in zip(examples, texts, strict=True)]
    true_values = [found[1] for found in slips if found is not None]
    three = trainer.tok.convert_tokens_to_ids("3")

    class SaysThree(torch.nn.Module):  # argmax "3" at every position
        def forward(self, input_ids, **_):
            logits = torch.zeros(*input_ids.shape, len(trainer.tok))
            logits[..., three] = 1.0
            return SimpleNamespace(logits=logits)

    trainer.teacher = SaysThree()
    out = recovery_signal(trainer, n_prompts=64)
    assert out["slips"] == len(true_values) >= 10
    assert out["teacher_true"] == pytest.approx(true_values.count(3) / len(true_values))
    for key in ("student_true", "student_copies"):
        assert 0.0 <= out[key] <= 1.0
    trainer.teacher = trainer.student
    same = recovery_signal(trainer, n_prompts=64)
    assert same["slips"] == out["slips"] and same["teacher_true"] == same["student_true"]


def test_slip_gradient_table_finds_every_first_slip(monkeypatch):
    """With the student's samples replaced by sloppy traces, every first slip is a slip token;
    a teacher identical to the student gives zero divergence and gradient everywhere."""
    import random

    from opd_lib.lab import experiments
    from opd_lib.lab.data import encode
    from opd_lib.lab.pair import prepare_pair
    from opd_lib.lab.tasks import RunningSum

    config = preset("tiny", progress=False, teacher_steps=2, teacher_recovery_steps=0,
                    student_init_steps=0, student_from_teacher=False)  # fmt: skip
    pair = prepare_pair(config)
    task = RunningSum(2, 4, style="tagged")
    rng = random.Random(0)  # slip_gradient_table draws its prompts with seed 0 too
    examples = [task.sample(rng, 4) for _ in range(32)]
    sloppy = [task.sloppy(ex, random.Random(i), 0.5) for i, ex in enumerate(examples)]
    ids = encode(pair.tokenizer, sloppy).completion_ids
    monkeypatch.setattr(experiments, "generate", lambda *a, **k: ids)
    texts = pair.tokenizer.batch_decode(ids, skip_special_tokens=True)
    slips = sum(task.first_slip(ex, t) is not None for ex, t in zip(examples, texts, strict=True))
    rows = experiments.slip_gradient_table(
        pair.student, pair.student, pair.tokenizer, task, length=4, n_prompts=32
    )
    assert [r["kind"] for r in rows] == ["rkl", "fkl", "jsd"] and slips >= 5
    for r in rows:
        assert r["n_slip"] == slips and r["n_other"] > r["n_slip"]
        assert r["grad_slip"] == pytest.approx(0.0, abs=1e-6)
        assert r["div_other"] == pytest.approx(0.0, abs=1e-6)
    different = experiments.slip_gradient_table(
        pair.student, pair.teacher, pair.tokenizer, task, length=4, n_prompts=32
    )
    assert all(r["div_slip"] > 0 and r["grad_other"] > 0 for r in different)


def test_verdicts_speak_for_every_seed(tmp_path):
    from opd_lib.lab.verdicts import (
        chain_table,
        chain_verdict,
        cost_verdict,
        opsd_gate,
        retention_verdict,
        schedule_verdict,
    )

    def ev(step, flops, **kw):
        return dict(step=step, flops=flops, acc=kw.pop("acc", 0.5), **kw)

    for seed, late in enumerate((0.5, 0.7)):  # seed 1's fkl recovers, seed 0's too little
        _write_run(tmp_path, "fkl-noise", seed, [
            ev(0, 0.0, acc_len2=0.9, acc_len6=0.5, acc_recovery=0.0),
            ev(10, 10.0, acc_len2=0.9, acc_len6=0.8, acc_recovery=late - 0.3),
        ])  # fmt: skip
        _write_run(tmp_path, "opd-noise", seed, [
            ev(0, 0.0, acc_len2=0.9, acc_len6=0.5, acc_recovery=0.0),
            ev(10, 20.0, acc_len2=0.9, acc_len6=0.5, acc_recovery=0.05),
        ])  # fmt: skip
        _write_run(tmp_path, "rl-noise", seed, [
            ev(0, 0.0, acc_len6=0.5), ev(10, 30.0, acc_len6=0.6), ev(20, 60.0, acc_len6=late + 0.2),
        ])  # fmt: skip
    runs = load_arms(tmp_path)
    v = chain_verdict(runs, recover=["fkl-noise"], stuck=["opd-noise"], high=0.3, low=0.1)
    assert not v["holds"] and v["recovery"]["fkl-noise"] == pytest.approx([0.2, 0.4])
    assert chain_verdict(runs, recover=["fkl-noise"], stuck=["opd-noise"], high=0.2)["holds"]
    table = {r["arm"]: r for r in chain_table(runs, ["fkl-noise", "opd-noise"])}
    assert table["start"]["len6"] == 0.5 and table["fkl-noise"]["recovery"] == pytest.approx(0.3)
    # target 0.9 x teacher's acc_len6 (1.0 by default) = 0.9: never reached by fkl in seed 0
    cost = cost_verdict(runs, share=0.8, key="acc_len6")  # target 0.8
    assert cost["rows"]["fkl-noise"]["seed_flops"] == [10.0, 10.0]
    assert cost["rows"]["rl-noise"]["seed_flops"] == [math.inf, 60.0]
    assert cost["holds"] and "seed 0: rl-noise never reached it (ratio >= 6.0)" in cost["text"]
    assert "seed 1: rl-noise/fkl-noise FLOPs = 6.0" in cost["text"]
    assert not cost_verdict(runs, share=0.85, key="acc_len6")["holds"]  # fkl never gets there

    _write_run(tmp_path, "opsd-frozen-none", 0, [
        ev(0, 0.0, acc_len2=0.9, acc_hinted_len2=1.0, acc_len6=0.5, acc_hinted_len6=0.4,
           acc_recovery=0.0, acc_hinted_recovery=0.6),
        ev(10, 10.0, acc_len2=0.9, acc_len6=0.6, acc_recovery=0.3),
    ])  # fmt: skip
    gate = opsd_gate(load_arms(tmp_path), "opsd-frozen-none")
    assert not gate["passed"] and gate["text"].endswith("worse at len6; not better at len6.")
    assert [r["where"] for r in gate["rows"]] == ["len2", "len6", "recovery"]
    _write_run(tmp_path, "opsd-ema-none", 0, [
        ev(0, 0.0, acc_len2=0.9, acc_hinted_len2=0.89, acc_len6=0.5, acc_hinted_len6=0.8,
           acc_recovery=0.0, acc_hinted_recovery=0.6),
    ])  # fmt: skip
    assert opsd_gate(load_arms(tmp_path), "opsd-ema-none")["passed"]  # a tie within 0.02 at len2
    assert not opsd_gate(load_arms(tmp_path), "opsd-ema-none", tol=0.0)["passed"]

    for seed, (opd, sft) in enumerate(((0.8, 0.5), (0.6, 0.7))):
        _write_run(
            tmp_path,
            "keep-opd",
            seed,
            [ev(0, 0, acc=0.6, acc_retention=1.0), ev(10, 1, acc=0.9, acc_retention=opd)],
        )
        _write_run(
            tmp_path,
            "keep-sft",
            seed,
            [ev(0, 0, acc=0.6, acc_retention=1.0), ev(10, 1, acc=0.95, acc_retention=sft)],
        )
    runs = load_arms(tmp_path)
    kept = retention_verdict(runs, 0.9, others=["keep-sft"])
    assert not kept["holds"]  # seed 1: OPD kept 0.6 < SFT's 0.7
    assert "keep-opd s0: 0.80 at step 10" in kept["text"]
    assert retention_verdict(runs, 0.92, others=["keep-sft"])["text"].count("never") == 2

    for seed, (a, b) in enumerate(((0.5, 0.3), (0.4, 0.4))):
        _write_run(tmp_path, "careless-gkd-industrial", seed, [ev(0, 0, acc=0.1), ev(10, 1, acc=a)])
        _write_run(tmp_path, "careless-gkd-onpolicy", seed, [ev(0, 0, acc=0.1), ev(10, 1, acc=b)])
    assert not schedule_verdict(load_arms(tmp_path))["holds"]  # a tie in seed 1
