"""Hub presets chosen by the hardware: ``Qwen/Qwen3-0.6B`` distilled from ``Qwen/Qwen3-1.7B`` on
GSM8K, sized by :func:`opd_lib.lab.memory.estimate_for_settings` to fit each card.

* ``colab-t4``  a free Colab T4 (16 GB; budget 15 GiB). No bf16 hardware on sm_75, so fp16:
  the student's frozen base and the teacher in fp16, LoRA adapters (rank 16 on every linear
  layer, through ``peft``) in float32 with fp16 autocast and a gradient scaler, gradient
  checkpointing. A full fine-tune with float32 master weights does not fit next to the teacher.
  LoRA's learning rate is about 10x a full fine-tune's ("LoRA Without Regret", Schulman et al.,
  Thinking Machines, 2025): 1e-5 against 1e-6.
* ``a100``      an A100 40 GB (budget 38 GiB): full fine-tune, float32 master weights and AdamW
  state, bf16 autocast, the teacher in bf16.
* ``h100``      an H100 80 GB (budget 76 GiB): as ``a100`` with twice the micro-batch.

Every preset uses the fused (logits-free) divergence, evaluates and samples in micro-batches of
``eval_micro_batch_size`` prompts, prompts GSM8K with an explicit ``\\boxed{}`` answer format and
allows ``max_new_tokens = 512`` (``opd_lib.lab.gsm8k``). Fields beyond today's ``Config``:
``precision``, ``teacher_dtype``, ``lora_rank``, ``lora_alpha``, ``lora_dropout``,
``lora_modules``, ``gradient_checkpointing``, ``fused_divergence``, ``eval_micro_batch_size``,
``max_prompt_tokens``, ``memory_budget_gib``, ``memory_overhead_gib``. (``dtype`` stays the
student's load dtype.)
"""

from __future__ import annotations

from typing import Any

from opd_lib.lab.gsm8k import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS
from opd_lib.lab.memory import LINEARS

__all__ = ["HUB_PRESETS", "NEW_FIELDS"]

NEW_FIELDS: dict[str, Any] = dict(
    precision="bf16-amp",  # fp32 | bf16-amp | fp16-amp | bf16 (pure: refused at small lr)
    teacher_dtype="bfloat16",  # the frozen teacher's dtype
    lora_rank=0,  # 0: full fine-tune; else LoRA on every linear layer (peft)
    lora_alpha=32,
    lora_dropout=0.0,  # > 0 saves a copy of each adapted layer's input
    lora_modules=LINEARS,  # every linear layer of every decoder layer
    gradient_checkpointing=False,
    fused_divergence=True,  # divergences from hidden states, logits never built
    eval_micro_batch_size=8,  # prompts sampled/scored at once in evaluation
    max_prompt_tokens=MAX_PROMPT_TOKENS,  # longer prompts are refused (GSM8K: well under)
    memory_budget_gib=0.0,  # the card's usable memory; 0: not checked
    memory_overhead_gib=0.75,  # CUDA context, cuBLAS workspace, allocator slack
)
"""The new ``Config`` fields and their defaults."""

_HUB: dict[str, Any] = dict(
    model="hub",
    task="gsm8k",
    device="cuda",
    retention=False,
    hint="trace",
    steps=100,
    eval_size=128,
    eval_temperature=0.0,  # greedy: GSM8K accuracy as usually reported
    batch_size=8,
    group_size=4,
    max_new_tokens=MAX_NEW_TOKENS,
    eval_every=25,
    checkpoint_every=25,
    grad_clip=1.0,
    weight_decay=0.0,
)

HUB_PRESETS: dict[str, dict[str, Any]] = {
    "colab-t4": _HUB
    | NEW_FIELDS
    | dict(
        dtype="float16",  # the frozen base; the adapters are float32
        precision="fp16-amp",
        teacher_dtype="float16",
        lora_rank=16,
        gradient_checkpointing=True,
        micro_batch_size=2,
        eval_micro_batch_size=8,
        lr=1e-5,
        memory_budget_gib=15.0,
    ),
    "a100": _HUB
    | NEW_FIELDS
    | dict(
        dtype="float32",  # master weights
        precision="bf16-amp",
        teacher_dtype="bfloat16",
        micro_batch_size=2,  # rl: x group_size = 8 sequences per forward
        eval_micro_batch_size=16,
        lr=1e-6,
        memory_budget_gib=38.0,
    ),
    "h100": _HUB
    | NEW_FIELDS
    | dict(
        dtype="float32",
        precision="bf16-amp",
        teacher_dtype="bfloat16",
        micro_batch_size=4,
        eval_micro_batch_size=32,
        lr=1e-6,
        memory_budget_gib=76.0,
    ),
}
