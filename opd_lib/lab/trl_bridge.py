"""Carry a lab run to TRL's ``DistillationTrainer`` (accelerate, DeepSpeed, FSDP, vLLM).

``trl_distillation_args(settings, task)`` turns the lab's settings (a ``Config`` or a plain
dict of its fields, including the hub fields of ``presets.HUB_PRESETS``) into TRL 1.16's
``DistillationConfig``, a ``datasets.Dataset`` of prompts in the order the lab would draw them,
and LoRA keyword arguments for ``peft.LoraConfig`` (``None`` for a full fine-tune)::

    args, dataset, lora = trl_distillation_args(config, task)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=dataset, processing_class=tokenizer,
                                  peft_config=LoraConfig(**lora) if lora else None)

What maps (lab -> TRL):

===============================  ===========================================================
``method="opd"`` (exact)         ``beta=1.0`` (reverse KL, always on the student's samples)
``method="gkd"``, ``lam=1``      ``beta=beta`` (generalized JSD; 0 forward KL, 1 reverse KL)
``lr``, ``steps``                ``learning_rate``, ``max_steps`` (constant, no warm-up)
``batch_size/micro_batch_size``  ``per_device_train_batch_size=micro``, accumulation
                                 ``batch / micro``; both divide by the whole batch's counted
                                 tokens (``num_items_in_batch``), as the lab does
``grad_clip``, ``weight_decay``  ``max_grad_norm``, ``weight_decay``; ``optimizer`` -> ``optim``
``seed``                         ``seed``, ``data_seed``; ``shuffle_dataset=False`` (the data set
                                 already holds the lab's prompt order)
``max_new_tokens``, temperature  ``max_completion_length``, ``temperature``
``precision``                    ``bf16``/``fp16`` (autocast over float32 master weights when the
                                 student is loaded in float32); ``fp32`` -> neither
``gradient_checkpointing``       ``activation_checkpointing`` (its new name; TRL's default: on)
``lora_rank/alpha/dropout``      the returned LoRA kwargs, on ``lora_modules``
``device="cpu"``                 ``use_cpu=True`` (and never bf16: TRL's default raises there)
thinking off                     ``chat_template_kwargs={"enable_thinking": False}``
===============================  ===========================================================

What does not map (refused with ``ValueError``, or different by design):

* ``kd``, ``sft`` (fixed sequences), ``rl`` (GRPO: ``trl.GRPOTrainer``), ``opsd``, ``gkd`` with
  ``lam < 1`` (``trl.experimental.gkd.GKDTrainer`` mixes data and samples),
  ``opd_estimator="sampled"`` and pure ``bf16`` precision (it does not learn at small lr).
* ``temperature != 1``: TRL divides the *loss* logits by it as well; the lab samples at
  ``temperature`` but scores the unscaled distributions (refused).
* Evaluation (accuracy, retention, KL to the teacher), checkpoints and metrics: TRL's own.
* Randomness: TRL samples through ``generate`` from the global RNG, so the completions (not
  the loss of a given batch) differ; TRL's loss forwards pass no position ids (left-padded rows
  then differ by rounding only: rotary embeddings see relative positions). TRL's chunked
  divergence works from hidden states, like the lab's fused path.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from typing import Any

from opd_lib.lab.memory import LINEARS

__all__ = ["trl_distillation_args"]


def _settings(settings: Any) -> dict[str, Any]:
    if isinstance(settings, dict):
        return dict(settings)
    if dataclasses.is_dataclass(settings):
        return dataclasses.asdict(settings)
    raise TypeError(f"settings must be a Config or a dict, got {type(settings).__name__}")


def _beta(s: dict[str, Any]) -> float:
    method = s.get("method", "opd")
    if method == "opd" and s.get("opd_estimator", "full") == "full":
        return 1.0
    if method == "gkd" and s.get("lam", 0.5) == 1.0:
        return float(s.get("beta", 0.5))
    raise ValueError(
        f"method {method!r} (lam={s.get('lam')}, opd_estimator={s.get('opd_estimator')}) has no "
        "DistillationTrainer equivalent: it trains only on the student's samples with a "
        "full-vocabulary divergence (opd exact, or gkd with lam=1); use trl.experimental.gkd."
        "GKDTrainer for lam < 1, trl.GRPOTrainer for rl, trl.SFTTrainer for sft"
    )


def trl_distillation_args(
    settings: Any, task: Any, output_dir: str | None = None
) -> tuple[Any, Any, dict[str, Any] | None]:
    """``(DistillationConfig, Dataset, lora_kwargs or None)`` equivalent to the lab run
    ``settings`` on ``task`` (a lab task: ``RunningSum``, ``GSM8K``, ...): the data set holds the
    ``steps x batch_size`` prompts ``task.sample(random.Random(seed))`` gives, the lab trainer's
    draws in its order."""
    from datasets import Dataset
    from trl import DistillationConfig

    s = _settings(settings)
    beta = _beta(s)
    if s.get("temperature", 1.0) != 1.0:
        raise ValueError("temperature must be 1: TRL also divides the loss logits by it")
    precision = s.get("precision", "fp32" if s.get("dtype", "float32") == "float32" else "bf16")
    if precision == "bf16":
        raise ValueError("pure bf16 training rounds small updates away; use precision='bf16-amp'")
    batch, micro = s.get("batch_size", 16), s.get("micro_batch_size", 16)
    if batch % micro:
        raise ValueError(f"batch_size ({batch}) must be a multiple of micro_batch_size ({micro})")
    if not callable(getattr(task, "sample", None)):
        raise TypeError(f"task must have a sample(rng) method, got {type(task).__name__}")
    cpu = s.get("device", "cpu") == "cpu"
    args = DistillationConfig(
        output_dir=output_dir or tempfile.mkdtemp(prefix="trl-"),
        beta=beta,
        learning_rate=s.get("lr", 1e-3),
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_steps=s.get("steps", 20),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,
        max_grad_norm=s.get("grad_clip", 1.0),
        weight_decay=s.get("weight_decay", 0.0),
        optim={"adamw": "adamw_torch", "sgd": "sgd"}[s.get("optimizer", "adamw")],
        seed=s.get("seed", 0),
        data_seed=s.get("seed", 0),
        shuffle_dataset=False,
        max_completion_length=s.get("max_new_tokens") or 256,
        temperature=1.0,
        bf16=precision == "bf16-amp" and not cpu,
        fp16=precision == "fp16-amp" and not cpu,
        use_cpu=cpu,
        activation_checkpointing=bool(s.get("gradient_checkpointing", False)),
        chat_template_kwargs={"enable_thinking": False},
        disable_dropout=True,
        dataloader_pin_memory=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
    )
    rng = random.Random(s.get("seed", 0))
    n = s.get("steps", 20) * batch
    prompts = [task.sample(rng).prompt for _ in range(n)]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    lora = None
    if s.get("lora_rank", 0):
        lora = dict(
            r=s["lora_rank"], lora_alpha=s.get("lora_alpha", 2 * s["lora_rank"]),
            lora_dropout=s.get("lora_dropout", 0.0),
            target_modules=list(s.get("lora_modules", LINEARS)), task_type="CAUSAL_LM",
        )  # fmt: skip
    return args, dataset, lora
