"""Teacher/student model pairs: tiny random Qwen3 models offline, real Qwen3 checkpoints in Colab.

Both constructors return a :class:`ModelPair`, so everything after loading is shared code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3Config,
    Qwen3ForCausalLM,
)

__all__ = ["ModelPair", "load_qwen3_pair", "tiny_qwen3", "tiny_qwen3_pair"]

# Eager attention: on CPU at these sizes it measured as fast as SDPA (both repeatable bit for bit),
# it has no special cases for fully masked (left-padded) rows, and it can return attention maps.
ATTN_IMPLEMENTATION = "eager"


@dataclass(frozen=True)
class ModelPair:
    """A teacher, a student and their tokenizer(s).

    ``tokenizer`` is the student's; ``teacher_tokenizer`` defaults to the same object. On-policy
    distillation needs both to agree (see :func:`opd_lib.lab.preflight.preflight`).
    """

    teacher: PreTrainedModel
    student: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    teacher_tokenizer: PreTrainedTokenizerBase | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        if self.teacher_tokenizer is None:
            object.__setattr__(self, "teacher_tokenizer", self.tokenizer)
        object.__setattr__(self, "device", torch.device(self.device))


def tiny_qwen3(
    tokenizer: PreTrainedTokenizerBase,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    seed: int = 0,
    **config_overrides: Any,
) -> Qwen3ForCausalLM:
    """A randomly initialised Qwen3 causal LM sized for CPU tests, with ``tokenizer``'s ids.

    ``vocab_size`` is ``len(tokenizer)``, the MLP is 3x ``hidden`` (as in Qwen3-0.6B), ``head_dim``
    is ``hidden // heads`` with half as many key/value heads (grouped-query attention), and the
    embeddings are tied. ``config_overrides`` go to :class:`~transformers.Qwen3Config` last.
    Initialisation depends only on ``seed`` (the global torch RNG is left untouched).
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    pad_id = tokenizer.pad_token_id
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else pad_id
    settings: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2 if heads % 2 == 0 else heads,
        head_dim=hidden // heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation=ATTN_IMPLEMENTATION,
    )
    settings.update(config_overrides)
    config = Qwen3Config(**settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = pad_id
    return model


def tiny_qwen3_pair(
    tokenizer: PreTrainedTokenizerBase,
    teacher: dict[str, Any] | None = None,
    student: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ModelPair:
    """A bigger tiny teacher and a smaller tiny student sharing ``tokenizer``.

    ``teacher`` and ``student`` are keyword arguments for :func:`tiny_qwen3` (defaults: 4 layers x
    128 hidden and 2 layers x 64 hidden, 4 heads each); the teacher uses ``seed`` and the student
    ``seed + 1``.
    """
    teacher_kw = dict(layers=4, hidden=128, heads=4) if teacher is None else dict(teacher)
    student_kw = dict(layers=2, hidden=64, heads=4) if student is None else dict(student)
    teacher_kw.setdefault("seed", seed)
    student_kw.setdefault("seed", seed + 1)
    return ModelPair(
        teacher=tiny_qwen3(tokenizer, **teacher_kw).to(device),
        student=tiny_qwen3(tokenizer, **student_kw).to(device),
        tokenizer=tokenizer,
        device=torch.device(device),
    )


def load_qwen3_pair(
    teacher: str = "Qwen/Qwen3-1.7B",
    student: str = "Qwen/Qwen3-0.6B",
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    teacher_dtype: torch.dtype | None = None,
) -> ModelPair:
    """Load a real teacher/student pair from the Hugging Face hub (or its local cache).

    ``dtype`` is the student's, ``teacher_dtype`` the teacher's (default: ``dtype``). Each model
    comes with its own tokenizer (``tokenizer`` is the student's), both set to pad on
    the left for batched generation. Run :func:`opd_lib.lab.preflight.preflight` on the result
    before distilling.
    """
    hub: dict[str, Any] = {"cache_dir": cache_dir}

    def load(name: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left", **hub)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **hub)
        return model.to(device), tokenizer

    teacher_model, teacher_tokenizer = load(teacher, teacher_dtype or dtype)
    student_model, student_tokenizer = load(student, dtype)
    return ModelPair(
        teacher=teacher_model,
        student=student_model,
        tokenizer=student_tokenizer,
        teacher_tokenizer=teacher_tokenizer,
        device=torch.device(device),
    )
