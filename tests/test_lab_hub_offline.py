"""The hub path on CPU, offline: Qwen/Qwen3-0.6B distilled from Qwen/Qwen3-1.7B on GSM8K, with
models built from the two published configurations (the real 151,936-logit vocabulary, hidden
sizes, heads and head_dim; one decoder layer each instead of 28, random weights), the real Qwen3
tokenizer (offline), and GSM8K-format records written for the tests (``SAMPLE_RECORDS``, served
where ``datasets`` would load GSM8K), through ``train`` and evaluation.

The presets' settings as a CPU can run them: ``colab-t4`` is fp16 autocast with a gradient
scaler over LoRA adapters and an fp16 teacher; a CPU has no fast fp16, so its run here is
bf16-amp over LoRA adapters with a bf16 base and teacher (the same code path: autocast, float32
adapters, gradient checkpointing, the memory preflight against its 15 GiB budget). ``a100`` runs
as it is (full fine-tune, float32 master weights, bf16 autocast, bf16 teacher). Only the sizes
shrink: 2 steps of 1 prompt, 1 evaluation prompt, 4 new tokens (at the real vocabulary every
token costs a pass over a 151,936-row head: about half a second on one CPU thread).

Then the same settings on the tiny character pair, where runs take a fraction of a second:
exact LoRA resume, the fp16 scaler's skipped step, and one step at the ``a100`` learning rate.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from opd_lib.lab import tasks
from opd_lib.lab.checkpoint import load_checkpoint
from opd_lib.lab.gsm8k import SAMPLE_RECORDS
from opd_lib.lab.metrics import read_jsonl
from opd_lib.lab.presets import preset
from opd_lib.lab.tasks import ALPHABET, gsm8k_examples
from opd_lib.lab.trainer import Config, Trainer, train
from opd_lib.models import ModelPair, qwen3_offline, tiny_qwen3_pair
from opd_lib.sampling import completion_mask
from opd_lib.tokenizers import char_tokenizer, qwen3_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SHRINK = dict(
    device="cpu", steps=2, batch_size=1, micro_batch_size=1, eval_size=1, max_new_tokens=4,
    eval_every=2, checkpoint_every=2, progress=False, threads=1,
)  # fmt: skip
# colab-t4 on a CPU: bf16 where the card would use fp16 (see the module docstring)
T4_ON_CPU = dict(precision="bf16-amp", dtype="bfloat16", teacher_dtype="bfloat16")


@pytest.fixture(scope="module")
def hub(one_thread):
    """Student (float32) and teacher (bf16) at the published shapes, one layer each, the Qwen3
    tokenizer, and GSM8K served from the sample records."""
    mp = pytest.MonkeyPatch()
    records = lambda split="train", limit=None: gsm8k_examples(SAMPLE_RECORDS[:limit])  # noqa: E731
    mp.setattr(tasks, "load_gsm8k", records)
    student = qwen3_offline("Qwen/Qwen3-0.6B", layers=1, seed=0)
    teacher = qwen3_offline("Qwen/Qwen3-1.7B", layers=1, seed=1, dtype=torch.bfloat16)
    yield student, teacher, qwen3_tokenizer()
    mp.undo()


def run(hub, tmp_path, name: str, **overrides):
    """``train`` with preset ``name`` shrunk, on a copy of the student; returns the trainer's
    records, the trained student and every sampled completion (training and evaluation)."""
    student, teacher, tok = hub
    pair = ModelPair(teacher, copy.deepcopy(student), tok)
    config = preset(name, **SHRINK, **overrides)
    samples = []
    real_sample = Trainer.sample

    def spy(self, *args, **kw):
        samples.append(real_sample(self, *args, **kw))
        return samples[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "sample", spy)
        records = train(config, tmp_path, pair=pair)
    return records, pair.student, samples


def check_records(records, steps=2):
    train_steps = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_steps] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in train_steps)
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [0, steps]
    for r in evals:  # accuracy and the KL diagnostics over the real vocabulary
        assert 0.0 <= r["acc"] <= 1.0
        assert math.isfinite(r["rkl_to_teacher"]) and r["rkl_to_teacher"] > 0
    assert [r["type"] for r in records].count("teacher") == 1


def test_colab_t4_settings_opd_with_lora(hub, tmp_path):
    """OPD under the colab-t4 settings: LoRA on a frozen bf16 base, gradient checkpointing, the
    memory preflight; sampling never draws a padded id (>= 151,669 tokens) nor <|endoftext|>."""
    student0, _, tok = hub
    records, student, samples = run(hub, tmp_path, "colab-t4", method="opd", **T4_ON_CPU)
    check_records(records)
    assert student.model.gradient_checkpointing
    trainable = {n: p for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and {p.dtype for p in trainable.values()} == {torch.float32}
    assert all("lora_" in n for n in trainable)
    # the base is frozen: unchanged from the loaded (bf16) weights
    base = student.model.embed_tokens.weight
    assert base.dtype == torch.bfloat16
    assert torch.equal(base, student0.model.embed_tokens.weight.to(torch.bfloat16))
    assert any(p.abs().sum() > 0 for n, p in trainable.items() if "lora_B" in n)  # B moved off 0
    # the checkpoint holds the adapters only, and the scaler-free precision saves no scaler state
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert set(state["student"]) == set(trainable) and state["scaler"] == {}
    # the two rollouts: within each completion, only real tokens and no stop id but <|im_end|>
    assert len(samples) == 2
    for ids in samples:
        counted = ids[completion_mask(ids, tok.eos_token_id)]
        assert counted.max() < len(tok) and not (counted == tok.pad_token_id).any()


def test_a100_settings_kd_full_fine_tune(hub, tmp_path):
    """KD under the a100 settings as they are: full fine-tune, float32 master weights and AdamW
    state, bf16 autocast, bf16 teacher; every parameter trains and the checkpoint is complete."""
    student0, teacher, _ = hub
    records, student, _ = run(hub, tmp_path, "a100", method="kd")
    check_records(records)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in student.parameters())
    assert teacher.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in teacher.parameters())
    layer, layer0 = student.model.layers[0].mlp, student0.model.layers[0].mlp
    moved = layer.up_proj.weight - layer0.up_proj.weight
    assert (moved != 0).float().mean() > 0.99  # lr 1e-6 survives in float32 master weights
    assert set(load_checkpoint(tmp_path / "ckpt.pt")["student"]) == set(student.state_dict())
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["type"] == "eval"


def test_memory_preflight_refuses_a_run_that_does_not_fit(hub, tmp_path):
    """At the 1-layer shapes the a100 settings need about 3 GiB; a 1 GiB budget is refused before
    any step, naming the largest component."""
    with pytest.raises(MemoryError, match="largest component"):
        run(hub, tmp_path, "a100", method="kd", memory_budget_gib=1.0)
    assert read_jsonl(tmp_path / "metrics.jsonl") == []


# ------------------------------------------------------------------ the hub settings, tiny pair

TINY = dict(
    min_len=2, max_len=3, eval_lengths=(2, 3), eval_size=2, batch_size=4, micro_batch_size=2,
    progress=False, steps=4, eval_every=10, checkpoint_every=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    small = dict(layers=1, hidden=32, heads=4)
    return tiny_qwen3_pair(char_tokenizer(ALPHABET), teacher=small, student=small)


def fresh(pair):
    return type(pair)(copy.deepcopy(pair.teacher), copy.deepcopy(pair.student), pair.tokenizer)


@pytest.mark.parametrize("method", ["opsd", "rl"])
def test_lora_run_resumes_exactly_from_adapters_only(tiny, tmp_path, method):
    """LoRA + bf16 autocast + gradient checkpointing (+ OPSD's EMA self-teacher, which shares the
    frozen base): 4 steps at once or 2 + 2 from a checkpoint of the adapters give the same
    adapters, bit for bit."""
    kw = dict(TINY, method=method, lora_rank=4, lora_alpha=8, precision="bf16-amp",
              gradient_checkpointing=True, opsd_teacher="ema", lr=1e-2)  # fmt: skip
    whole = Trainer(Config(**kw), fresh(tiny))
    whole.run()
    Trainer(Config(**{**kw, "steps": 2}), fresh(tiny), tmp_path).run()
    resumed = Trainer(Config(**kw), fresh(tiny), tmp_path)
    assert resumed.resumed and resumed.step == 2
    resumed.run()
    for a, b in zip(whole.params, resumed.params, strict=True):
        assert torch.equal(a, b)
    assert any(p.abs().sum() > 0 for p in whole.params)
    if method == "opsd":
        base = whole.student.model.embed_tokens.weight
        assert whole.self_teacher.model.embed_tokens.weight is base  # shared, not copied
        saved = load_checkpoint(tmp_path / "ckpt.pt")["self_teacher"]
        assert set(saved) == {n for n, p in whole.student.named_parameters() if p.requires_grad}


def test_fp16_overflow_is_a_skipped_step_and_the_scale_resumes(tiny, tmp_path):
    """fp16-amp: a step whose scaled gradients overflow is skipped (weights untouched, logged
    ``skipped``, the scale halved), the next one applies; the scale is saved and restored."""
    config = Config(**{**TINY, "steps": 2}, method="sft", precision="fp16-amp")
    trainer = Trainer(config, fresh(tiny), tmp_path)
    healthy = trainer.loss_fn

    def huge_at_step_1(logits, roll, teacher, c):
        per_token, stats = healthy(logits, roll, teacher, c)
        return per_token * (1e30 if trainer.step == 0 else 1.0), stats

    trainer.loss_fn = huge_at_step_1
    before = [p.detach().clone() for p in trainer.params]
    first = trainer.train_step()
    assert first["skipped"] and math.isfinite(first["loss"]) and first["loss_scale"] == 32768.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    second = trainer.train_step()
    assert not second["skipped"] and second["loss_scale"] == 32768.0
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    trainer.save()
    again = Trainer(config, fresh(tiny), tmp_path)
    assert again.mp.scale() == 32768.0


def _one_step(tiny, **kw) -> torch.Tensor:
    trainer = Trainer(Config(**TINY, method="kd", **kw), fresh(tiny))
    before = [p.detach().clone() for p in trainer.params]
    trainer.train_step()
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.params, before,
                                                                 strict=True)])  # fmt: skip


def test_a100_learning_rate_step_moves_like_float32_and_pure_bf16_is_refused(tiny):
    """One KD step at the a100 preset's lr (1e-6): bf16 autocast over float32 master weights
    moves the weights as the float32 step does. Tolerance (as in ``test_lab_precision.py``):
    relative L2 distance of the two update vectors < 10 % (measured 8 %), > 99.5 % of the weights
    moved in the same direction (measured 99.7 %) and > 99 % moved at all. Adam's first step is
    about ``-lr sign(g)``; half-precision compute only flips the sign of near-zero gradients, each
    flip costing ``2 lr``. Pure bf16 weights at that rate are refused before any step (they would
    keep about 2 % of the update: ``opd_lib.lab.precision``)."""
    lr = preset("a100").lr
    reference = _one_step(tiny, lr=lr)
    amp = _one_step(tiny, lr=lr, precision="bf16-amp")
    assert reference.abs().max() == pytest.approx(lr, rel=0.05)
    assert torch.linalg.vector_norm(amp - reference) / torch.linalg.vector_norm(reference) < 0.1
    assert (amp.sign() == reference.sign()).float().mean() > 0.995
    assert (amp != 0).float().mean() > 0.99
    with pytest.raises(ValueError, match="round away"):
        Trainer(Config(**TINY, method="kd", lr=lr, precision="bf16", dtype="bfloat16"),
                fresh(tiny))  # fmt: skip
