"""The memory estimator: parameter counts against real models, worked numbers, the presets' fit,
refusals, and agreement with the committed CPU measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from opd_lib.lab.config import Config
from opd_lib.lab.memory import (
    GIB,
    LINEARS,
    QWEN3_0_6B,
    QWEN3_1_7B,
    ModelShape,
    estimate_for_settings,
    estimate_measured_step,
    estimate_memory,
    refuse_if_too_big,
)
from opd_lib.lab.presets import HUB_PRESETS, preset
from opd_lib.lab.tokenizers import char_tokenizer
from opd_lib.models import tiny_qwen3

RESULTS = Path(__file__).resolve().parents[1] / "results" / "memory" / "cpu.json"
METHODS = ("sft", "kd", "gkd", "opd", "rl", "opsd")


def _real_config(shape: ModelShape) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, intermediate_size=shape.intermediate, tie_word_embeddings=True,
    )  # fmt: skip


@pytest.mark.parametrize("shape", [QWEN3_0_6B, QWEN3_1_7B], ids=["0.6B", "1.7B"])
def test_parameter_counts_match_the_real_models(shape):
    with torch.device("meta"):  # the real sizes, no memory
        model = Qwen3ForCausalLM(_real_config(shape))
    assert shape.n_params() == sum(p.numel() for p in model.parameters())
    assert ModelShape.from_config(model.config) == shape


def test_parameter_count_of_a_tiny_model_and_an_untied_head():
    model = tiny_qwen3(char_tokenizer(), layers=2, hidden=32, heads=4)
    shape = ModelShape.from_config(model.config)
    assert shape.n_params() == sum(p.numel() for p in model.parameters())
    untied = ModelShape(**{**shape.__dict__, "tied": False})
    assert untied.n_params() - shape.n_params() == shape.vocab * shape.hidden


def test_worked_numbers():
    # 596 M and 1,721 M parameters; 112 KiB of bf16 KV cache per token for either model
    assert round(QWEN3_0_6B.n_params() / 1e6) == 596
    assert round(QWEN3_1_7B.n_params() / 1e6) == 1721
    assert QWEN3_0_6B.kv_bytes_per_token(2) == QWEN3_1_7B.kv_bytes_per_token(2) == 112 * 1024
    # LoRA rank 16 on all seven linears: 16 * (3072 + 2*2048 + 3072 + 2*4096 + 4096) * 28
    assert QWEN3_0_6B.lora_params(16) == 16 * 22528 * 28
    e = estimate_memory(QWEN3_0_6B, QWEN3_1_7B, precision="bf16-amp")
    # fp32 master weights + autocast's bf16 copies; fp32 grads; two fp32 moments
    assert e.components["student_weights"] == QWEN3_0_6B.n_params() * 6
    assert e.components["gradients"] == QWEN3_0_6B.n_params() * 4
    assert e.components["optimizer"] == QWEN3_0_6B.n_params() * 8
    assert e.components["teacher_weights"] == QWEN3_1_7B.n_params() * 2


def test_fused_divergence_and_checkpointing_save_memory():
    kw = dict(precision="bf16-amp", micro_batch=4)
    fused = estimate_memory(QWEN3_0_6B, QWEN3_1_7B, fused_divergence=True, **kw)
    unfused = estimate_memory(QWEN3_0_6B, QWEN3_1_7B, fused_divergence=False, **kw)
    assert unfused.components["loss_transients"] > 20 * fused.components["loss_transients"]
    ckpt = estimate_memory(QWEN3_0_6B, QWEN3_1_7B, gradient_checkpointing=True, **kw)
    assert ckpt.components["activations"] < fused.components["activations"] / 5
    lora = estimate_memory(QWEN3_0_6B, QWEN3_1_7B, lora_rank=16, **kw)
    assert lora.components["optimizer"] < fused.components["optimizer"] / 50


@pytest.mark.parametrize("name", ["colab-t4", "a100", "h100"])
@pytest.mark.parametrize("method", METHODS)
def test_every_hub_preset_fits_its_card(name, method):
    settings = HUB_PRESETS[name] | {"method": method}
    estimate = estimate_for_settings(settings)
    assert estimate.total <= settings["memory_budget_gib"] * GIB
    refuse_if_too_big(estimate, settings["memory_budget_gib"])  # does not raise


def test_the_t4_and_a100_budgets_of_the_issue():
    t4 = HUB_PRESETS["colab-t4"]
    assert estimate_for_settings(t4 | {"method": "opd"}).total <= t4["memory_budget_gib"] * GIB
    assert estimate_for_settings(HUB_PRESETS["a100"] | {"method": "opd"}).total <= 40 * GIB
    # a full fine-tune with fp32 master weights does not fit a T4 next to the fp16 teacher
    full_ft = HUB_PRESETS["colab-t4"] | {"lora_rank": 0, "method": "opd"}
    assert estimate_for_settings(full_ft).total > 15 * GIB


def test_the_old_hub_preset_is_refused_naming_the_component_and_a_preset():
    """The preset as it was: pure bf16, unfused divergences, 128 evaluation prompts at once."""
    old = dict(method="opd", precision="bf16", micro_batch_size=2, batch_size=8,
               eval_micro_batch_size=128, fused_divergence="off", max_new_tokens=256,
               memory_overhead_gib=0.75)  # fmt: skip
    estimate = estimate_for_settings(old)
    assert estimate.phase == "evaluation" and estimate.total > 80 * GIB
    with pytest.raises(MemoryError, match=r"eval_scoring.*colab-t4"):
        refuse_if_too_big(estimate, 15.0, HUB_PRESETS)
    with pytest.raises(MemoryError, match=r"a100"):
        refuse_if_too_big(estimate, 40.0, HUB_PRESETS)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="precision"):
        estimate_memory(QWEN3_0_6B, precision="fp8")
    with pytest.raises(ValueError, match="micro_batch"):
        estimate_memory(QWEN3_0_6B, micro_batch=0)
    with pytest.raises(ValueError, match="vocab"):
        estimate_memory(QWEN3_0_6B, ModelShape(1000, 64, 1, 4, 2, 16, 192))
    with pytest.raises(ValueError, match="lora_modules"):
        QWEN3_0_6B.lora_params(8, ("qkv",))
    with pytest.raises(ValueError, match="hidden"):
        ModelShape(100, 0, 1, 1, 1, 1, 1)
    for name in HUB_PRESETS:  # every hub preset is a valid Config
        preset(name, method="opd")


def test_estimates_agree_with_the_committed_cpu_measurements():
    """``benchmarks/memory_estimate.py`` measured these peaks; today's estimator must stay within
    15 % of every one (re-run the benchmark after changing a formula)."""
    shapes = json.loads(RESULTS.read_text())["shapes"]
    assert any(r["student"] == QWEN3_0_6B.__dict__ for r in shapes)  # the full 0.6B student
    for r in shapes:
        e = estimate_measured_step(r)
        assert abs(e.total / GIB - r["measured_gib"]) <= 0.15 * r["measured_gib"], r["shape"]


def test_lora_count_and_dtypes_match_peft():
    """The trainer's LoRA (``opd_lib.lab.lora.apply_lora``, through peft) at the ``colab-t4``
    preset's rank on the seven linears: ``lora_params`` parameters, in float32 on an fp16 base
    that stays frozen."""
    from opd_lib.lab.lora import apply_lora

    shape = ModelShape(1000, 64, 2, 4, 2, 16, 192)
    t4 = Config(**HUB_PRESETS["colab-t4"])
    model = Qwen3ForCausalLM(_real_config(shape)).to(torch.float16)
    lora = apply_lora(model, t4.lora_rank, t4.lora_alpha, t4.lora_dropout, t4.lora_modules)
    assert t4.lora_rank == 16 and t4.lora_modules == LINEARS
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == shape.lora_params(16)
    assert {p.dtype for p in trainable} == {torch.float32}
    frozen = sum(p.numel() for p in lora.parameters() if not p.requires_grad)
    assert frozen == shape.n_params()
