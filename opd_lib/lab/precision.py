"""Mixed precision that learns: float32 master weights, half-precision compute.

**Why not pure bf16.** bf16 keeps 8 significant bits, so the representable numbers next to a
weight ``w`` are ``2^(e - 7)`` apart (``e = floor(log2 |w|)``), and round-to-nearest discards any
update smaller than half that spacing, ``2^(e - 8)``. An AdamW step moves each weight by about
``lr``; at ``lr = 1e-6`` it survives only where ``2^(e - 8) <= 1e-6``, i.e. ``e <= -12``,
``|w| < 2^-11 ~ 4.9e-4``. With weights of typical size 0.02 (spacing ``2^-13 ~ 1.2e-4``), about
2 % of them move (measured in ``tests/test_lab_precision.py``) and the rest keep their value,
every step: the run logs a loss and learns almost nothing, with no warning. :func:`rounded_away`
measures that share.

**What we do instead** (the standard recipe, e.g. PyTorch's AMP): parameters, gradients and
AdamW's moments stay float32 ("master weights"); the forward and backward run under
``torch.autocast`` in half precision. bf16 where the hardware has it (Ampere and newer GPUs,
CPUs); fp16 elsewhere (a T4), with a ``GradScaler``: fp16's smallest normal number is ``6e-5``,
so small gradients would flush to zero; the scaler multiplies the loss by ``S`` before backward,
divides the float32 gradients by ``S`` before the step, and skips steps whose gradients
overflowed (``S`` adapts). :class:`MixedPrecision` wraps the three cases behind
``autocast()``, ``backward(loss)`` and ``step(optimizer, params, grad_clip)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch

__all__ = ["MixedPrecision", "autocast_dtype", "require_float32_master", "rounded_away"]


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on CPUs and GPUs of compute capability >= 8 (Ampere), else fp16 (e.g. a T4, sm_75,
    for which ``torch.cuda.is_bf16_supported()`` says True although bf16 is only emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.bfloat16


def rounded_away(weights: torch.Tensor, update: float, dtype: torch.dtype) -> float:
    """Share of ``weights`` (stored in ``dtype``) that an update of size ``update`` leaves
    unchanged: ``(w + update)`` rounds back to ``w`` in ``dtype``."""
    w = weights.detach().to(dtype)
    return ((w.float() + update).to(dtype) == w).float().mean().item()


def require_float32_master(model: torch.nn.Module, lr: float, dtype_bits: int = 8) -> None:
    """Refuse trainable half-precision parameters at a learning rate that rounds away.

    Raises ``ValueError`` naming a parameter when any trainable parameter is bf16/fp16 and
    ``lr`` is below the update that survives at magnitude 0.02 (``2^(floor(log2 0.02) - bits)``,
    ``bits`` = 8 for bf16, 11 for fp16). Load the student in float32 and use autocast instead."""
    for name, p in model.named_parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            bits = dtype_bits if p.dtype == torch.bfloat16 else 11
            smallest = 2.0 ** (math.floor(math.log2(0.02)) - bits)
            if lr < smallest:
                raise ValueError(
                    f"parameter {name!r} is {p.dtype} and trainable; at lr={lr:g} updates below "
                    f"{smallest:.1e} round away (weights ~0.02): keep float32 master weights "
                    "and train under autocast (opd_lib.lab.precision.MixedPrecision)"
                )


class MixedPrecision:
    """Autocast + (for fp16) a gradient scaler around a float32-master optimizer.

    ``dtype``: ``torch.bfloat16``, ``torch.float16`` or ``None`` (no autocast: float32, or pure
    half precision where ``master_fp32=False``). Usage per optimizer step: for each micro-batch
    ``with mp.autocast(): loss = ...`` then ``mp.backward(loss)``; then
    ``grad_norm = mp.step(optimizer, params, grad_clip)``, or its two halves
    ``unscale_and_clip`` and ``apply`` with a check of the norm in between.
    """

    def __init__(
        self, device: str | torch.device, dtype: torch.dtype | None, master_fp32: bool = True
    ) -> None:
        if dtype not in (torch.bfloat16, torch.float16, None):
            raise ValueError(f"dtype must be torch.bfloat16, torch.float16 or None, got {dtype}")
        self.device_type = torch.device(device).type
        self.dtype = dtype
        self.master_fp32 = master_fp32
        self.scaler = torch.amp.GradScaler(self.device_type) if dtype == torch.float16 else None

    @classmethod
    def for_precision(cls, precision: str, device: str | torch.device) -> MixedPrecision:
        """The lab's ``Config.precision``: ``"fp32"`` (plain), ``"bf16-amp"``, ``"fp16-amp"``
        (autocast, fp16 with a scaler) or ``"bf16"`` (pure half precision: no autocast, no
        float32 check; see :func:`require_float32_master`)."""
        dtypes = {"fp32": None, "bf16-amp": torch.bfloat16, "fp16-amp": torch.float16, "bf16": None}
        if precision not in dtypes:
            raise ValueError(f"precision must be one of {tuple(dtypes)}, got {precision!r}")
        return cls(device, dtypes[precision], master_fp32=precision != "bf16")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device_type, dtype=self.dtype):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale_and_clip(
        self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], grad_clip: float
    ) -> float:
        """Unscale the gradients (fp16) and clip them to ``grad_clip`` (0: off); returns their
        norm before clipping (not finite when they overflowed or are NaN)."""
        params = [p for p in params if p.grad is not None]
        if self.master_fp32:
            for p in params:
                if p.dtype != torch.float32:
                    raise ValueError(
                        f"a trainable parameter is {p.dtype}: master weights must be fp32"
                    )
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, grad_clip).item()
        return torch.nn.utils.get_total_norm([p.grad for p in params]).item()

    def apply(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step and zero the gradients; returns False when the scaler skipped the step (fp16
        gradients that overflowed; the scale backs off) and True otherwise."""
        if self.scaler:
            scale = self.scaler.get_scale()
            self.scaler.step(optimizer)
            self.scaler.update()
            applied = self.scaler.get_scale() >= scale  # update() backs off only after a skip
        else:
            optimizer.step()
            applied = True
        optimizer.zero_grad(set_to_none=True)
        return applied

    def step(
        self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], grad_clip: float
    ) -> float:
        """Unscale (fp16), clip to ``grad_clip`` (0: off), step, zero the gradients; returns the
        gradient norm before clipping (``inf``/``nan`` when an fp16 step was skipped)."""
        norm = self.unscale_and_clip(optimizer, params, grad_clip)
        self.apply(optimizer)
        return norm

    def scale(self) -> float:
        """The loss scale (1.0 without a scaler)."""
        return self.scaler.get_scale() if self.scaler else 1.0

    def state_dict(self) -> dict:
        """The scaler's state (for checkpoints; empty without one)."""
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
