"""The lab chapter's experiments: arms, the resumable runner, and the analysis functions."""

import math

import pytest
import torch

from opd_lib.lab.experiments import (
    ARMS,
    CLAIMS,
    arm_config,
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
    assert cfg.method == "opd" and cfg.seed == 3
    assert cfg.teacher_from == str(tmp_path / "stress-sft-s3")
    assert arm_config(base, "stress-sft", 0, tmp_path).lr == pytest.approx(5 * base.lr)
    opsd = arm_config(base, "opsd-ema-pointwise", 0, tmp_path)
    assert (opsd.opsd_teacher, opsd.clip) == ("ema", "pointwise")
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config(base, "nope", 0, tmp_path)
    with pytest.raises(ValueError, match="unknown claims"):
        run_experiments(base, tmp_path, claims=["nope"])


def test_runner_orders_dependent_arms_and_skips_finished_runs(tmp_path):
    base = preset(
        "tiny", steps=2, eval_every=2, checkpoint_every=2, eval_size=2, eval_lengths=(2,),
        teacher_steps=2, teacher_recovery_steps=1, student_init_steps=2, progress=False,
    )  # fmt: skip
    dirs = run_experiments(base, tmp_path, seeds=(0,), claims=["degraded"], progress=False)
    assert [d.name for d in dirs] == ["stress-sft-s0", "degraded-opd-s0", "degraded-sft-s0"]
    for d in dirs:
        assert (d / "student.pt").is_file() and not (d / "ckpt.pt").exists()
    runs = load_arms(tmp_path)
    # the degraded arms' teacher is the stress-SFT student: its accuracy is what they log
    stressed = [r for r in runs["stress-sft"][0] if r["type"] == "eval"][-1]["acc"]
    teacher = next(r for r in runs["degraded-opd"][0] if r["type"] == "teacher")["teacher_acc"]
    assert teacher == stressed
    stamp = (tmp_path / "degraded-opd-s0" / "metrics.jsonl").stat().st_mtime_ns
    run_experiments(base, tmp_path, seeds=(0,), claims=["degraded"], progress=False)
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
