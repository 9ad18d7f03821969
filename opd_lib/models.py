"""Teacher/student model pairs: tiny random Qwen3 models offline, real Qwen3 checkpoints in Colab.

Both constructors return a :class:`ModelPair`, so everything after loading is shared code.
"""

from __future__ import annotations

import functools
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
from transformers.initialization import no_init_weights

__all__ = [
    "QWEN3_CONFIGS",
    "ModelPair",
    "load_qwen3_pair",
    "qwen3_offline",
    "restrict_logits",
    "restricted_tokens",
    "stop_token_ids",
    "tiny_qwen3",
    "tiny_qwen3_pair",
]

# Eager attention: on CPU at these sizes it measured as fast as SDPA (both repeatable bit for bit),
# it has no special cases for fully masked (left-padded) rows, and it can return attention maps.
ATTN_IMPLEMENTATION = "eager"

# The published config.json of each model on the Hugging Face hub (the fields that set its shape and
# its special ids), and of its generation_config.json: generation stops on <|im_end|> (151645) and
# on <|endoftext|> (151643, also the pad id). 151,936 logits for the tokenizer's 151,669 tokens.
_QWEN3_COMMON: dict[str, Any] = dict(
    vocab_size=151_936, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
    head_dim=128, max_position_embeddings=40_960, rope_theta=1_000_000, rms_norm_eps=1e-6,
    tie_word_embeddings=True, bos_token_id=151_643, eos_token_id=151_645,
)  # fmt: skip
QWEN3_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-0.6B": _QWEN3_COMMON | dict(hidden_size=1024, intermediate_size=3072),
    "Qwen/Qwen3-1.7B": _QWEN3_COMMON | dict(hidden_size=2048, intermediate_size=6144),
}
QWEN3_GENERATION_STOP = (151_645, 151_643)


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


def qwen3_offline(
    name: str, layers: int | None = None, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Qwen3ForCausalLM:
    """A randomly initialised model with the published configuration of ``name`` (a key of
    :data:`QWEN3_CONFIGS`), built offline: the real vocabulary (151,936 logits), hidden size,
    heads, ``head_dim``, MLP width, special ids and generation stop ids; ``layers`` decoder layers
    instead of 28 (for CPU tests). Weights uniform with standard deviation 0.02 (the config's
    ``initializer_range``), RMSNorm weights 1; they depend only on ``seed``."""
    if name not in QWEN3_CONFIGS:
        raise ValueError(f"name must be one of {sorted(QWEN3_CONFIGS)}, got {name!r}")
    settings = dict(QWEN3_CONFIGS[name], attn_implementation=ATTN_IMPLEMENTATION)
    if layers is not None:
        if not (isinstance(layers, int) and layers >= 1):
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        settings["num_hidden_layers"] = layers
    with no_init_weights():  # HF's init of 151,936 x 2048 normals takes ~20 s on one CPU thread
        model = Qwen3ForCausalLM._from_config(Qwen3Config(**settings), dtype=dtype)
    model.tie_weights()  # HF ties the head to the embedding in init_weights, skipped here
    gen, bound = torch.Generator().manual_seed(seed), 0.02 * 3**0.5  # uniform with std 0.02
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # linears and the (tied) embedding; RMSNorm weights stay 1
                p.uniform_(-bound, bound, generator=gen)
    model.generation_config.eos_token_id = list(QWEN3_GENERATION_STOP)
    model.generation_config.pad_token_id = QWEN3_GENERATION_STOP[1]
    return model


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The ids that end a generation: the tokenizer's EOS first, then any other id the model's
    generation config lists (Qwen3: ``<|im_end|>``, then ``<|endoftext|>``)."""
    eos = tokenizer.eos_token_id
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = [] if listed is None else [listed] if isinstance(listed, int) else list(listed)
    return (eos, *(i for i in listed if i != eos))


def _restricted(module, args, logits, n_tokens: int, stops: tuple[int, ...]) -> torch.Tensor:
    ids = torch.arange(logits.shape[-1], device=logits.device)
    if len(stops) > 1:  # "stop" is one event: its probability is the sum over the stop ids
        merged = torch.logsumexp(logits[..., list(stops)].float(), -1, keepdim=True)
        logits = torch.where(ids == stops[0], merged.to(logits.dtype), logits)
    banned = ids >= n_tokens
    for i in stops[1:]:
        banned = banned | (ids == i)
    return logits.masked_fill(banned, torch.finfo(logits.dtype).min)


def restrict_logits(model: PreTrainedModel, n_tokens: int, stops: tuple[int, ...]) -> bool:
    """Make ``model``'s logits a distribution over the tokenizer's ``n_tokens`` tokens in which
    stopping is one token, ``stops[0]`` (in place, by a forward hook on the output embeddings;
    returns whether one was needed).

    Two fixes for a padded, multi-stop vocabulary such as Qwen3's: the logits ``n_tokens..V-1``
    belong to no token (151,669 tokens, 151,936 logits) and are set to the dtype's lowest value, so
    sampling never draws them; and the other stop ids (``<|endoftext|>``) are folded into the first
    (``<|im_end|>``): ``z_eos <- logsumexp(z_stop)`` and the others masked, so a sample stops with
    the probability of stopping on any of them and ends in the one EOS the masks and losses know.
    Every softmax of the logits (sampling, unfused losses) then sees the restricted distribution;
    the fused divergence reads the head's weight directly and does not."""
    if not stops:
        raise ValueError("stops must hold at least the EOS id")
    vocab = model.get_output_embeddings().weight.shape[0]
    if not 0 < n_tokens <= vocab or any(not 0 <= i < n_tokens for i in stops):
        raise ValueError(f"need 0 < n_tokens <= {vocab} and stop ids below it, got {n_tokens}, "
                         f"{stops}")  # fmt: skip
    if n_tokens == vocab and len(stops) == 1:
        return False
    done = getattr(model, "_restricted_logits", None)
    if done is not None:
        if done != (n_tokens, tuple(stops)):
            raise ValueError(f"model's logits are already restricted with {done}")
        return True
    hook = functools.partial(_restricted, n_tokens=n_tokens, stops=tuple(stops))
    model.get_output_embeddings().register_forward_hook(hook)
    model._restricted_logits = (n_tokens, tuple(stops))
    return True


def restricted_tokens(model: torch.nn.Module) -> int | None:
    """The ``n_tokens`` that :func:`restrict_logits` restricted ``model``'s logits to, or None."""
    done = getattr(model, "_restricted_logits", None)
    return None if done is None else done[0]
