"""The lab CLI: train, report, help, the CLI's defaults, what a run says, and clear errors."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opd_lib.lab import cli
from opd_lib.lab.cli import _config_from_args, build_parser, main, parse_overrides, with_pair_cache
from opd_lib.lab.cli_text import summary
from opd_lib.lab.config import METHODS, Config
from opd_lib.lab.metrics import read_jsonl
from opd_lib.lab.presets import PRESETS, preset

ROOT = Path(__file__).resolve().parents[1]

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


# ------------------------------------------------------------------ help, defaults, messages


def help_of(*argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # help wraps with the terminal's width


def test_help_documents_choices_defaults_presets_and_methods(capsys):
    text = help_of("train", capsys=capsys)
    for flag in ("--clip {none,token,pointwise}", "--opsd-teacher {live,frozen,ema}",
                 "--source {data,teacher}", "--lam-schedule {fixed,industrial}"):  # fmt: skip
        assert flag in text
    assert "with --method kd: teacher" in text and "with --method opsd: frozen" in text
    assert "8 (tiny)" in text  # --steps: the default of each preset
    for name in [*PRESETS, *METHODS, "hub = colab-t4", "--list-keys"]:
        assert name in text
    top = help_of(capsys=capsys)
    assert "--preset full --steps 20" in top and "``" not in top


def test_building_the_parser_imports_no_torch():
    code = "import sys, opd_lib.lab.cli as c; c.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr


def test_list_keys_names_every_config_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--list-keys"])
    text = capsys.readouterr().out
    assert all(f" {f.name} " in text for f in dataclasses.fields(Config))
    assert "one of live, frozen, ema" in text


def config_of(*argv) -> Config:
    return _config_from_args(build_parser().parse_args(["train", *argv, "--out", "x"]))


def test_cli_method_defaults_are_the_chapter_arms():
    # Chapter 10's kd arm distils on the teacher's samples; its opsd control is the frozen teacher
    assert config_of("--method", "kd").source == "teacher" != Config().source
    assert config_of("--method", "kd", "--source", "data").source == "data"
    assert config_of("--method", "kd", "--set", "source=data").source == "data"
    assert config_of("--method", "sft").source == Config().source == "data"
    assert config_of("--method", "opsd").opsd_teacher == "frozen" != Config().opsd_teacher
    assert config_of("--method", "opsd", "--opsd-teacher", "ema").opsd_teacher == "ema"


def write_metrics(out, teacher_acc, accs):
    out.mkdir()
    records = [{"type": "teacher", "step": 0, "teacher_acc": teacher_acc}]
    records += [{"type": "eval", "step": 10 * i, "acc": a} for i, a in enumerate(accs)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_names_the_evaluation_and_the_accuracies(tmp_path):
    write_metrics(tmp_path / "r", 0.99, [0.5, 0.6, 0.75])
    sampled = summary(preset("full", steps=20, eval_temperature=1.0, eval_noise=0.0), "full",
                      tmp_path / "r")  # fmt: skip
    assert "accuracy (sampled at T=1): teacher 99%; student 50% at step 0 -> 75% at step 20" in (
        sampled
    )
    assert "wrote in" in sampled and "metrics.jsonl" in sampled and "student.pt" not in sampled
    greedy = summary(preset("tiny", eval_temperature=0.0, eval_noise=0.1), "tiny", tmp_path / "r")
    assert "accuracy (greedy, execution noise 0.1):" in greedy and "plumbing check" in greedy


def test_a_run_says_what_it_trains_resumes_and_finished(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--method", "opd", "--out", str(out), "--cache-dir", str(cache), *FAST]
    assert main([*args, "--steps", "2"]) == 0
    said = capsys.readouterr()
    assert f"training the pair in {cache}" in said.err
    line = r"accuracy \((greedy|sampled at T=1)[^)]*\): teacher \d+%; student \d+% at step 0 -> "
    line += r"\d+% at step 2"
    assert re.search(line, said.out) and "plumbing check" in said.out
    assert main([*args, "--steps", "2"]) == 0
    said = capsys.readouterr()
    assert "already finished" in said.err and "training the pair" not in said.err
    assert "at step 2" in said.out
    assert main([*args, "--steps", "3"]) == 0
    assert "resuming from step 2 of 3" in capsys.readouterr().err
    assert max(r["step"] for r in read_jsonl(out / "metrics.jsonl")) == 3


def test_full_uses_the_committed_pair_only_when_it_holds_this_pair(tmp_path, monkeypatch):
    from opd_lib.lab.pair import cache_key

    monkeypatch.setattr(cli, "COMMITTED_CACHE", tmp_path)
    full = preset("full")
    assert with_pair_cache(full, "full", tmp_path / "run").cache_dir is None  # empty cache
    for stage in ("teacher-clean", "teacher", "student"):
        (tmp_path / f"{stage}-{cache_key(full, stage)}.pt").touch()
    assert with_pair_cache(full, "full", tmp_path / "run").cache_dir == str(tmp_path)
    assert with_pair_cache(preset("full", cache_dir="c"), "full", "run").cache_dir == "c"
    assert with_pair_cache(preset("tiny"), "tiny", tmp_path / "run").cache_dir is None


def test_user_mistakes_are_one_line_errors_naming_the_setting(tmp_path, capsys, monkeypatch):
    base = ["train", "--method", "opd", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main([*base, "--set", "eval_size=abc"]) == 2
    assert capsys.readouterr().err == "error: eval_size expects an int, got 'abc'\n"
    assert main([*base, "--set", f"teacher_from={tmp_path / 'none'}"]) == 2
    assert capsys.readouterr().err.startswith("error: teacher_from: ")
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        assert capsys.readouterr().err.startswith("error: device='cuda'")

    def over_budget(config, out_dir):
        raise MemoryError("estimated peak 20 GiB exceeds the budget of 15 GiB")

    monkeypatch.setattr("opd_lib.lab.trainer.train", over_budget)
    monkeypatch.setattr(cli, "with_pair_cache", lambda config, *_: config)
    assert main(base) == 2
    assert capsys.readouterr().err == "error: estimated peak 20 GiB exceeds the budget of 15 GiB\n"
