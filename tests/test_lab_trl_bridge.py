"""The TRL bridge: a lab run becomes a DistillationConfig + data set, and TRL's
DistillationTrainer takes the same first step (loss and gradient) as the lab on the same batch."""

from __future__ import annotations

import copy
import os
import random

import pytest
import torch

from opd_lib.lab import Config
from opd_lib.lab.data import Rollout
from opd_lib.lab.losses import loss_for
from opd_lib.lab.presets import HUB_PRESETS
from opd_lib.lab.tasks import ALPHABET, RunningSum, render_prompt
from opd_lib.lab.trl_bridge import trl_distillation_args
from opd_lib.lm import completion_logits
from opd_lib.models import tiny_qwen3_pair
from opd_lib.tokenizers import char_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
SETTINGS = dict(method="opd", lr=1e-3, steps=2, batch_size=4, micro_batch_size=4, seed=3,
                device="cpu", max_new_tokens=16)  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer(ALPHABET)
    pair = tiny_qwen3_pair(tok, teacher=dict(layers=2, hidden=64, heads=4),
                           student=dict(layers=1, hidden=32, heads=4), seed=0)  # fmt: skip
    task = RunningSum(4, 4)  # one chain length: equal prompt lengths, no left padding
    return tok, pair, task


def _batch(tok, prompts, task_examples):
    """Chat-rendered prompts and reference completions (EOS, right padding; one cut short)."""
    enc = tok([render_prompt(tok, p) for p in prompts], add_special_tokens=False,
              return_tensors="pt")  # fmt: skip
    rows = [tok(ex.completion, add_special_tokens=False)["input_ids"] for ex in task_examples]
    rows[1] = rows[1][:5]  # as if the student had stopped early
    rows = [r + [tok.eos_token_id] for r in rows]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return enc["input_ids"], enc["attention_mask"], ids, mask


def test_config_mapping_and_the_lab_prompt_order(setup):
    tok, _, task = setup
    args, dataset, lora = trl_distillation_args(Config(**SETTINGS), task)
    assert args.beta == 1.0 and args.learning_rate == 1e-3 and args.max_steps == 2
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 1)
    assert args.use_cpu and not args.bf16 and not args.fp16 and not args.shuffle_dataset
    assert args.chat_template_kwargs == {"enable_thinking": False}
    assert lora is None and len(dataset) == 2 * 4
    rng = random.Random(SETTINGS["seed"])  # the lab trainer's data_rng
    lab_prompts = [task.sample(rng).prompt for _ in range(8)]
    assert [row["prompt"][0]["content"] for row in dataset] == lab_prompts
    gkd, _, _ = trl_distillation_args(SETTINGS | dict(method="gkd", lam=1.0, beta=0.3), task)
    assert gkd.beta == 0.3
    t4 = HUB_PRESETS["colab-t4"] | {"method": "opd", "device": "cuda"}
    args, _, lora = trl_distillation_args(t4, task)
    assert args.fp16 and not args.bf16 and args.gradient_checkpointing
    assert args.gradient_accumulation_steps == t4["batch_size"] // t4["micro_batch_size"]
    assert lora["r"] == 16 and "down_proj" in lora["target_modules"]
    _, _, attention_only = trl_distillation_args(t4 | {"lora_modules": ("q_proj", "v_proj")}, task)
    assert attention_only["target_modules"] == ["q_proj", "v_proj"]  # the run's modules


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(method="kd"), "GKDTrainer"),
        (dict(method="gkd", lam=0.5), "lam"),
        (dict(method="opd", opd_estimator="sampled"), "sampled"),
        (dict(temperature=0.7), "temperature"),
        (dict(precision="bf16"), "bf16-amp"),
        (dict(batch_size=6), "multiple"),
    ],
)
def test_what_does_not_map_is_refused(setup, change, match):
    with pytest.raises(ValueError, match=match):
        trl_distillation_args(SETTINGS | change, setup[2])


def test_bad_arguments_are_named(setup):
    with pytest.raises(TypeError, match="settings"):
        trl_distillation_args(["opd"], setup[2])
    with pytest.raises(TypeError, match="task"):
        trl_distillation_args(SETTINGS, [1, 2])


@pytest.mark.parametrize(("method", "beta"), [("opd", 1.0), ("gkd", 0.5)])
def test_trl_and_the_lab_take_the_same_first_step(setup, method, beta):
    """Same batch (the first 4 prompts of the data set, reference completions as the samples):
    TRL's ``compute_loss`` (hidden states + chunked divergence, divided by the counted tokens)
    against the lab's loss (``loss_for(config)``: full logits, summed over the mask, divided by
    the counted tokens). Loss and every parameter gradient agree to float32 rounding."""
    from trl import DistillationTrainer

    tok, pair, task = setup
    settings = SETTINGS | dict(method=method, lam=1.0, beta=beta)
    args, dataset, _ = trl_distillation_args(settings, task)
    prompts = [row["prompt"][0]["content"] for row in dataset][:4]
    rng = random.Random(SETTINGS["seed"])
    p_ids, p_mask, c_ids, c_mask = _batch(tok, prompts, [task.sample(rng) for _ in range(4)])
    n_tokens = int(c_mask.sum())

    trl_student = copy.deepcopy(pair.student)
    trainer = DistillationTrainer(model=trl_student, teacher_model=pair.teacher, args=args,
                                  train_dataset=dataset, processing_class=tok)  # fmt: skip
    trainer.model.train()
    inputs = dict(prompt_ids=p_ids, prompt_mask=p_mask, completion_ids=c_ids,
                  completion_mask=c_mask, num_items_in_batch=torch.tensor(n_tokens))  # fmt: skip
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    trl_loss.backward()

    lab_student = copy.deepcopy(pair.student).train()
    config = Config(**settings)
    roll = Rollout(p_ids, p_mask, c_ids, c_mask.bool(), "student")
    logits = completion_logits(lab_student, p_ids, p_mask, c_ids)

    def teacher():
        with torch.no_grad():
            return completion_logits(pair.teacher, p_ids, p_mask, c_ids)

    per_token, _ = loss_for(config)(logits, roll, teacher, config)
    lab_loss = torch.where(roll.mask, per_token, 0.0).sum() / n_tokens
    lab_loss.backward()

    assert trl_loss.item() == pytest.approx(lab_loss.item(), rel=1e-5)
    assert lab_loss.item() > 1e-3  # a real divergence, not two zeros
    trl_params = dict(trainer.model.named_parameters())
    for name, p in lab_student.named_parameters():
        torch.testing.assert_close(trl_params[name].grad, p.grad, rtol=1e-4, atol=1e-7)
