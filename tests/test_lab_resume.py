"""A run killed with SIGKILL and resumed ends with the same metrics as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opd_lib.lab.cli import main
from opd_lib.lab.metrics import TIME_KEYS, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")


def command(out: Path, cache: Path) -> list[str]:
    return [
        sys.executable, "-m", "opd_lib.lab", "train", "--method", "gkd", "--preset", "tiny",
        "--out", str(out), "--cache-dir", str(cache), "--seed", "3", "--steps", "16",
        "--lam", "0.5", "--no-progress",
        "--set", "teacher_steps=5", "student_init_steps=5", "eval_size=4", "eval_every=4",
        "checkpoint_every=4", "threads=1",
    ]  # fmt: skip


def deterministic(records):
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def test_sigkill_then_resume_reproduces_the_uninterrupted_metrics(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cache = tmp_path / "cache"
    full, killed = tmp_path / "full", tmp_path / "killed"
    # the uninterrupted reference runs in this process (one interpreter start less)
    assert main(command(full, cache)[3:]) == 0

    proc = subprocess.Popen(command(killed, cache), env=env, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not (killed / "ckpt.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    partial = read_jsonl(killed / "metrics.jsonl")
    assert max(r["step"] for r in partial) < 16

    subprocess.run(command(killed, cache), env=env, check=True, cwd=ROOT, timeout=300)
    expected = deterministic(read_jsonl(full / "metrics.jsonl"))
    got = deterministic(read_jsonl(killed / "metrics.jsonl"))
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert got == expected
    assert not list(killed.glob(".ckpt.pt.*"))  # no temporary checkpoint left behind
