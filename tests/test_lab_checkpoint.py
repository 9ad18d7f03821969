"""Lab checkpoints and metrics logs: safe to load, atomic to write, never silently short."""

import json
import os
import random

import numpy as np
import pytest
import torch

from opd_lib.lab import checkpoint as ck
from opd_lib.lab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from opd_lib.lab.metrics import JsonlLogger, MetricsLogError, read_jsonl


def tiny_state():
    """A trainer-like state: tied weights, AdamW moments (int keys, tuple betas), every RNG."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7))
    model[1].weight = model[0].weight  # tied, as in the tiny Qwen3 models
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([1, 2])).sum().backward()
    opt.step()
    gen, pyrng = torch.Generator().manual_seed(1), random.Random(2)
    state = {
        "step": 3,
        "config": {"method": "gkd", "lam": 0.5, "layers": [1, 2], "note": None},
        "student": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": ck.rng_state({"sample": gen}, {"data": pyrng}),
        "totals": {"flops": 1.5e9, "wall_s": float("inf")},
        "half": torch.arange(3, dtype=torch.bfloat16),
    }
    return model, opt, gen, pyrng, state


def draws(gen, pyrng):
    return [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random(),  # noqa: NPY002
            torch.rand(2, generator=gen).tolist(), pyrng.random()]  # fmt: skip


def test_round_trip_restores_weights_optimizer_and_every_rng(tmp_path):
    model, opt, gen, pyrng, state = tiny_state()
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    expected = draws(gen, pyrng)
    loaded = load_checkpoint(path)
    assert loaded["config"] == state["config"] and loaded["totals"] == state["totals"]
    assert loaded["half"].dtype == torch.bfloat16
    twin = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7))
    twin[1].weight = twin[0].weight
    twin.load_state_dict(loaded["student"])
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    opt2 = torch.optim.AdamW(twin.parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)
    for s1, s2 in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values(),
                      strict=True):  # fmt: skip
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    ck.set_rng_state(loaded["rng"], {"sample": gen}, {"data": pyrng})
    assert draws(gen, pyrng) == expected


def test_a_kill_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def dies_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)  # a partial write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".ckpt.pt.*"))  # the temporary file is gone


def test_a_temp_file_left_by_sigkill_is_ignored_then_removed(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})
    stale = tmp_path / ".ckpt.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert load_checkpoint(path)["step"] == 1
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 2 and not stale.exists()


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, -1])
def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path, keep):
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_state()[-1])
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*(truncated|corrupt).*delete it"):
        load_checkpoint(path)


def test_a_corrupted_tensor_is_refused_by_its_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"w": torch.ones(100)})
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # a flipped byte inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_loading_never_runs_code_from_a_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ckpt.pt"
    torch.save({"step": 1, "evil": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*old-format"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_old_checkpoints_of_plain_tensors_still_load(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save({"model": {"w": torch.arange(4.0)}}, path)  # the committed cache files
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(4.0))


def test_unsavable_state_is_refused_naming_where(tmp_path):
    with pytest.raises(TypeError, match=r"\['config'\]\['fn'\]"):
        save_checkpoint(tmp_path / "ckpt.pt", {"config": {"fn": print}})
    assert not list(tmp_path.iterdir())


def test_missing_checkpoint_is_a_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_checkpoint(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------ metrics log


def write_log(path, n):
    log = JsonlLogger(path)
    for step in range(n):
        log.log({"step": step, "loss": 1.0 / (step + 1)})
    return log


def test_the_logger_writes_nothing_until_used(tmp_path):
    log = JsonlLogger(tmp_path / "run" / "metrics.jsonl")
    assert log.offset == 0 and not (tmp_path / "run").exists()


def test_resume_drops_lines_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = write_log(path, 3)
    offset = log.offset
    log.log({"step": 3})
    JsonlLogger(path).truncate(offset)
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2]


@pytest.mark.parametrize("damage", ["deleted", "shortened"])
def test_resume_refuses_a_log_shorter_than_the_checkpoint(tmp_path, damage):
    path = tmp_path / "metrics.jsonl"
    offset = write_log(path, 3).offset
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(MetricsLogError, match=r"metrics\.jsonl.*lost.*ckpt\.pt"):
        JsonlLogger(path).truncate(offset)


def test_resume_refuses_an_offset_inside_a_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    offset = write_log(path, 3).offset
    with pytest.raises(MetricsLogError, match="metrics.jsonl"):
        JsonlLogger(path).truncate(offset - 3)


def test_a_torn_last_line_is_skipped_on_read_and_dropped_before_the_next_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_log(path, 2)
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    assert [r["step"] for r in read_jsonl(path)] == [0, 1]
    JsonlLogger(path).log({"step": 2})
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2]


def test_a_damaged_line_in_the_middle_is_refused_by_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_log(path, 3)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-4]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetricsLogError, match=r"metrics\.jsonl, line 2"):
        read_jsonl(path)
    assert json.loads(lines[0])["step"] == 0
