"""LoRA adapters on the student (through ``peft``), and what of a model a checkpoint must hold.

LoRA (Hu et al., 2021, arXiv:2106.09685) freezes a linear layer's weight ``W`` and learns a
low-rank change: ``y = W x + (alpha / r) B A x`` with ``A`` ``[r, d_in]`` (random) and ``B``
``[d_out, r]`` (zeros, so training starts from the unchanged model). Only ``A`` and ``B`` get
gradients and AdamW state: for Qwen3-0.6B at ``r = 16`` on its seven linears, 10 M trainable
parameters instead of 596 M, which is what lets a float32-master run fit a 16 GB T4 beside the
teacher (``opd_lib.lab.memory``).

The adapters are injected in place (``peft.inject_adapter_in_model``): the student stays a
``Qwen3ForCausalLM`` with its backbone at ``model.model`` and its LM head untouched, so the fused
divergence, sampling and gradient checkpointing see the same model as without LoRA. The adapters
are float32 (master weights) whatever the frozen base's dtype.

A checkpoint of a LoRA run holds the adapters only (:func:`resume_state`): the frozen base is
whatever was loaded, and a resumed run loads the same base.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

__all__ = ["apply_lora", "frozen_copy", "is_lora", "load_resume_state", "resume_state"]


def apply_lora(
    model: torch.nn.Module,
    rank: int,
    alpha: int,
    dropout: float = 0.0,
    modules: Iterable[str] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                              "down_proj"),
    seed: int = 0,
) -> torch.nn.Module:  # fmt: skip
    """``model`` with rank-``rank`` LoRA adapters on ``modules`` of every layer (in place; returned
    for convenience): the adapters float32 and trainable, everything else frozen. ``A``'s random
    initialisation depends on ``seed`` only (the global torch RNG is left untouched)."""
    if not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover (peft is pinned in requirements.txt)
        raise ImportError(
            "lora_rank > 0 needs peft (pip install peft; it is in requirements.txt and the "
            "'lab' extra)"
        ) from e
    if is_lora(model):
        raise ValueError("model already has LoRA adapters")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(modules), bias="none")  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        adapter = "lora_" in name
        p.requires_grad_(adapter)
        if adapter and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (parameters named ``...lora_A...``/``lora_B``)."""
    return any("lora_" in name for name, _ in model.named_parameters())


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with no trainable parameter that *shares* ``model``'s frozen ones (a
    LoRA student's base): OPSD's frozen or EMA self-teacher then costs the adapters, not a second
    base model. Without frozen parameters, a plain deep copy."""
    shared = {id(p): p for p in model.parameters() if not p.requires_grad}
    return copy.deepcopy(model, memo=shared).requires_grad_(False)


def resume_state(model: torch.nn.Module, names: list[str] | None) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold of ``model`` to resume exactly: its whole ``state_dict``
    (``names=None``, a full fine-tune), or only the parameters ``names`` (a LoRA run's adapters;
    the frozen base is reloaded from where it came)."""
    if names is None:
        return model.state_dict()
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in names}


def load_resume_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], names: list[str] | None
) -> None:
    """Load what :func:`resume_state` saved; raises ``ValueError`` if a LoRA checkpoint's
    parameters are not exactly ``names`` (a checkpoint of another adapter layout)."""
    if names is None:
        model.load_state_dict(state)
        return
    if sorted(state) != sorted(names):
        missing, extra = sorted(set(names) - set(state)), sorted(set(state) - set(names))
        raise ValueError(
            f"checkpoint adapters do not match the model's: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(state[n])
