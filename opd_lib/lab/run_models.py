"""The run's two models made ready before the first step, as the Config says.

* the student: loaded dtype (``dtype``), LoRA adapters or a full fine-tune, gradient checkpointing,
  and the precision's requirement on its trainable parameters (float32 master weights, or for
  pure ``bf16`` a learning rate large enough not to round away: ``opd_lib.lab.precision``);
* the teacher: frozen, in ``teacher_dtype``, in eval mode; for OPSD on an accelerator, kept in
  CPU memory (OPSD's teacher is the student itself; the real teacher is read by evaluation only,
  and :func:`on_device` brings it over for that);
* both: logits restricted to the tokenizer's tokens, stopping as one event
  (:func:`opd_lib.models.restrict_logits`; a no-op for the tiny character models).

On the tiny path (float32, no LoRA) nothing here changes a number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from opd_lib.lab.config import Config
from opd_lib.lab.lora import apply_lora
from opd_lib.lab.precision import require_float32_master
from opd_lib.models import restrict_logits, stop_token_ids

__all__ = ["evaluating", "on_device", "prepare_student", "prepare_teacher"]


def _cast(model: torch.nn.Module, dtype_name: str) -> None:
    dtype = getattr(torch, dtype_name)
    if any(p.dtype != dtype for p in model.parameters()):
        model.to(dtype)


def _restrict(model: torch.nn.Module, tokenizer) -> None:
    """Restrict the logits where the tokenizer fits the model (a tokenizer larger than the model
    is left for the preflight to report by name)."""
    if len(tokenizer) <= model.get_output_embeddings().weight.shape[0]:
        restrict_logits(model, len(tokenizer), stop_token_ids(model, tokenizer))


def prepare_student(model: torch.nn.Module, c: Config, tokenizer) -> list[str] | None:
    """Ready the student in place (see the module docstring). Returns the names of the parameters
    a checkpoint holds: the LoRA adapters, or ``None`` for the whole state (a full fine-tune).
    Raises ``ValueError`` when the trainable parameters' dtype contradicts ``c.precision``."""
    _cast(model, c.dtype)
    _restrict(model, tokenizer)
    names = None
    if c.lora_rank:
        apply_lora(model, c.lora_rank, c.lora_alpha, c.lora_dropout, c.lora_modules, c.seed)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    else:
        model.requires_grad_(True)
    if c.gradient_checkpointing:
        plain = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # its name in recent transformers
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=plain)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=plain)
        model.config.use_cache = False  # training forwards; the sampler asks for its cache
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    if c.precision == "bf16":
        if trainable != {torch.bfloat16}:
            raise ValueError(
                f"precision='bf16' trains bfloat16 weights, but the student's trainable "
                f"parameters are {sorted(map(str, trainable))}: load it with dtype='bfloat16'"
            )
        require_float32_master(model, c.lr)
    elif trainable != {torch.float32}:
        raise ValueError(
            f"precision={c.precision!r} keeps float32 master weights, but the student's trainable "
            f"parameters are {sorted(map(str, trainable))}: load it with dtype='float32' or use "
            "LoRA (lora_rank > 0)"
        )
    return names


def prepare_teacher(model: torch.nn.Module, c: Config, tokenizer, device: torch.device) -> None:
    """Freeze the teacher in ``c.teacher_dtype`` (eval mode, restricted logits); for OPSD on an
    accelerator, move it to CPU memory until evaluation needs it."""
    _cast(model, c.teacher_dtype)
    model.requires_grad_(False).eval()
    _restrict(model, tokenizer)
    if c.method == "opsd" and torch.device(device).type != "cpu":
        model.to("cpu")


@contextlib.contextmanager
def on_device(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """``model`` on ``device`` for the block, back where it was afterwards."""
    home = next(model.parameters()).device
    if home == torch.device(device):
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode for the block, then back in its mode. Sampling needs it: under
    gradient checkpointing a model in training mode drops its KV cache (``transformers``
    disables the cache in checkpointed layers), so each token would be decoded without context."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
