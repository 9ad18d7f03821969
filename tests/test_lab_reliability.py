"""The lab refuses to waste or corrupt a run: preflight before the first step, a non-finite loss
stops the run before any checkpoint holds it, and a refused resume writes nothing."""

import copy
import hashlib
import math

import pytest
import torch

from opd_lib.lab.checkpoint import load_checkpoint
from opd_lib.lab.metrics import read_jsonl
from opd_lib.lab.preflight import PreflightError
from opd_lib.lab.tasks import ALPHABET
from opd_lib.lab.trainer import Config, Trainer, train
from opd_lib.tokenizers import char_tokenizer

SMALL = dict(
    min_len=2, max_len=3, eval_lengths=(2, 3), eval_size=2, batch_size=4, micro_batch_size=4,
    progress=False, steps=3, eval_every=10, checkpoint_every=1, method="sft",
)  # fmt: skip


@pytest.fixture(scope="module")
def pair(char_pair):
    return char_pair


def fresh(pair, **kw):
    return type(pair)(copy.deepcopy(pair.teacher), copy.deepcopy(pair.student), **kw)


def folder_digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_a_teacher_with_another_tokenizer_is_refused_before_training(pair, tmp_path):
    foreign = char_tokenizer(ALPHABET[::-1])  # same symbols, other ids
    bad = fresh(pair, tokenizer=pair.tokenizer, teacher_tokenizer=foreign)
    before = copy.deepcopy(bad.student.state_dict())
    with pytest.raises(PreflightError, match="vocabularies"):
        train(Config(**SMALL), tmp_path, pair=bad)
    assert not (tmp_path / "ckpt.pt").exists()
    assert read_jsonl(tmp_path / "metrics.jsonl") == []  # not one record, not one step
    for name, value in bad.student.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_skip_preflight_warns_and_runs(pair):
    foreign = char_tokenizer(ALPHABET[::-1])
    bad = fresh(pair, tokenizer=pair.tokenizer, teacher_tokenizer=foreign)
    with pytest.warns(UserWarning, match="skip_preflight"):
        records = Trainer(Config(**SMALL, skip_preflight=True), bad).run()
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3]


@pytest.mark.parametrize("bad_step", [1, 3])
def test_a_nan_loss_stops_the_run_before_any_checkpoint_holds_it(pair, tmp_path, bad_step):
    trainer = Trainer(Config(**{**SMALL, "steps": 4}), fresh(pair, tokenizer=pair.tokenizer),
                      tmp_path)  # fmt: skip
    healthy = trainer.loss_fn

    def poisoned(logits, roll, teacher, c):
        per_token, stats = healthy(logits, roll, teacher, c)
        if trainer.step + 1 == bad_step:
            per_token = per_token * float("nan")
        return per_token, stats

    trainer.loss_fn = poisoned
    with pytest.raises(FloatingPointError, match=f"step {bad_step}"):
        trainer.run()
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert steps == list(range(1, bad_step))
    ckpt = tmp_path / "ckpt.pt"
    if bad_step == 1:
        assert not ckpt.exists()
    else:  # checkpoint_every=1: the last good step's state, untouched by the NaN
        state = load_checkpoint(ckpt)
        assert state["step"] == bad_step - 1
        assert all(torch.isfinite(v).all() for v in state["student"].values())
    assert all(math.isfinite(p.detach().abs().sum().item()) for p in trainer.student.parameters())


def test_a_refused_resume_leaves_the_folder_byte_identical(pair, tmp_path):
    train(Config(**{**SMALL, "steps": 2}), tmp_path, pair=fresh(pair, tokenizer=pair.tokenizer))
    assert (tmp_path / "ckpt.pt").is_file()
    before = folder_digest(tmp_path)
    other = Config(**{**SMALL, "steps": 4, "lr": 5e-3})  # another run's settings
    with pytest.raises(ValueError, match=r"different config \(\['lr'\]\)"):
        train(other, tmp_path, pair=fresh(pair, tokenizer=pair.tokenizer))
    assert folder_digest(tmp_path) == before
    # the same settings (more steps) resume
    records = train(Config(**{**SMALL, "steps": 3}), tmp_path,
                    pair=fresh(pair, tokenizer=pair.tokenizer))  # fmt: skip
    assert [r["step"] for r in records if r["type"] == "train"] == [3]
