"""The lab CLI: train, report, and clear errors."""

import pytest
import torch

from opd_lib.lab.cli import main, parse_overrides
from opd_lib.lab.metrics import read_jsonl
from opd_lib.lab.presets import PRESETS, preset

torch.set_num_threads(1)

FAST = ["--no-progress", "--set", "teacher_steps=3", "student_init_steps=3", "eval_size=2"]


def test_train_then_report(tmp_path, capsys):
    for seed in (0, 1):
        out = tmp_path / "runs" / f"sft-s{seed}"
        args = ["train", "--method", "sft", "--preset", "tiny", "--out", str(out)]
        assert (
            main(args + ["--steps", "2", "--seed", str(seed), "--cache-dir", str(tmp_path)] + FAST)
            == 0
        )
        records = read_jsonl(out / "metrics.jsonl")
        assert [r["type"] for r in records] == ["teacher", "eval", "train", "train", "eval"]
        assert (out / "ckpt.pt").is_file() and (out / "config.json").is_file()
    # both seeds share the cached teacher and student
    assert (
        len(list(tmp_path.glob("teacher-clean-*.pt")))
        == len(list(tmp_path.glob("student-*.pt")))
        == 1
    )
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    assert "| sft | sft | 2 |" in text  # two seeds grouped
    assert (tmp_path / "runs" / "report.md").is_file()
    assert (tmp_path / "runs" / "report_acc_steps.png").stat().st_size > 1000
    assert (tmp_path / "runs" / "report_acc_length.png").is_file()


def test_bad_input_is_reported_clearly(tmp_path, capsys):
    base = ["train", "--method", "gkd", "--preset", "tiny", "--out", str(tmp_path / "x")]
    assert main(base + ["--lam", "1.5"]) == 2
    assert "lam must be in [0, 1]" in capsys.readouterr().err
    assert main(base + ["--set", "nonsense=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--method", "dpo", "--out", str(tmp_path / "y")])
    with pytest.raises(SystemExit):
        main(["train", "--method", "opd", "--preset", "huge", "--out", str(tmp_path / "y")])
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_overrides_and_presets():
    o = parse_overrides(["eval_lengths=2,4,8", "retention=false", "lr=0.01", "clip=token"])
    assert o == {"eval_lengths": (2, 4, 8), "retention": False, "lr": 0.01, "clip": "token"}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lr"])
    for name in PRESETS:
        assert preset(name).steps >= 1
    assert preset("hub").model == "hub" and preset("hub").task == "gsm8k"
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_presets_that_start_the_student_from_the_teacher_give_both_one_size():
    keys = ("layers", "hidden", "heads")
    for name in PRESETS:
        c = preset(name)
        if c.model == "tiny" and c.student_from_teacher:
            student = tuple(getattr(c, f"student_{k}") for k in keys)
            assert student == tuple(getattr(c, f"teacher_{k}") for k in keys), name
