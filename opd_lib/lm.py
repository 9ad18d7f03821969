"""Language-model plumbing shared by every method: the batch type, encoding, position ids,
completion logits, token log-probabilities, entropy and one supervised (SFT) loop.

A batch holds prompts padded on the **left** (every prompt ends in the last column, so
generation continues from there) and completions padded on the **right**. Position ids skip the
left padding, so a padded prompt gets exactly the logits of the unpadded one.

Shapes: ``B`` batch, ``P`` prompt length, ``C`` completion length, ``V`` vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from opd_lib import validate

__all__ = [
    "Batch",
    "completion_hidden",
    "completion_logits",
    "encode",
    "entropy",
    "forward_hidden",
    "forward_logits",
    "head_params",
    "position_ids",
    "sft",
    "token_logprobs",
]


@dataclass(frozen=True)
class Batch:
    """Prompts and completions as tensors.

    Attributes:
        prompt_ids: ``[B, P]`` token ids, padded on the **left**.
        prompt_mask: ``[B, P]``, 1 on real prompt tokens, 0 on padding.
        completion_ids: ``[B, C]`` completions, padded on the right; everything after the first
            EOS is ignored (see ``opd_lib.sampling.completion_mask``).
        mask: ``[B, C]`` bool, the completion tokens that count in a loss (``None``: not given;
            :func:`encode` fills it: the completion through its EOS, without its prefix).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        validate.token_ids(self.prompt_ids, "prompt_ids")
        validate.token_ids(self.completion_ids, "completion_ids")
        validate.mask(self.prompt_mask, "prompt_mask", self.prompt_ids.shape, nonempty=False,
                      what="prompt_ids")  # fmt: skip
        if self.prompt_ids.dim() != 2 or self.completion_ids.dim() != 2:
            raise ValueError(
                f"prompt_ids and completion_ids must be [batch, length], got "
                f"{tuple(self.prompt_ids.shape)} and {tuple(self.completion_ids.shape)}"
            )
        if self.prompt_mask.shape != self.prompt_ids.shape:
            raise ValueError(
                f"prompt_mask shape {tuple(self.prompt_mask.shape)} differs from prompt_ids "
                f"{tuple(self.prompt_ids.shape)}"
            )
        if self.completion_ids.shape[0] != self.prompt_ids.shape[0]:
            raise ValueError(
                f"{self.prompt_ids.shape[0]} prompts but {self.completion_ids.shape[0]} completions"
            )
        if self.completion_ids.shape[1] < 1:
            raise ValueError("completion_ids has no columns")
        if self.mask is not None and self.mask.shape != self.completion_ids.shape:
            raise ValueError(
                f"mask shape {tuple(self.mask.shape)} differs from completion_ids "
                f"{tuple(self.completion_ids.shape)}"
            )
        if self.prompt_mask[:, -1].eq(0).any():
            raise ValueError(
                "prompt_mask: prompts must be left padded (the last prompt column has padding)"
            )

    @classmethod
    def from_texts(cls, tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> Batch:
        """:func:`encode` of ``prompts`` and ``completions`` (EOS appended)."""
        return encode(tokenizer, prompts, completions)


def encode(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    prefixes: Sequence[str] | None = None,
    *,
    eos: bool = True,
    device: str | torch.device = "cpu",
) -> Batch:
    """Tokenize ``prompts`` (left padded by the tokenizer) and ``prefix + completion (+ EOS)``
    (right padded with the pad token). No special tokens are added to either. ``mask`` counts the
    completion and its EOS but not the prefix (context the model is shown, e.g. a broken trace).
    """
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(
            f"need as many prompts as completions (and at least one), got {len(prompts)} "
            f"and {len(completions)}"
        )
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    if tokenizer.padding_side != "left":
        raise ValueError("the tokenizer must pad on the left (padding_side='left')")
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt", add_special_tokens=False)
    rows, skips = [], []
    for i, text in enumerate(completions):
        pre = prefixes[i] if prefixes is not None else ""
        pre_ids = tokenizer(pre, add_special_tokens=False)["input_ids"] if pre else []
        rest = tokenizer(text, add_special_tokens=False)["input_ids"]
        rows.append(pre_ids + rest + ([tokenizer.eos_token_id] if eos else []))
        skips.append(len(pre_ids))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, skip) in enumerate(zip(rows, skips, strict=True)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, skip : len(r)] = True
    return Batch(
        enc["input_ids"].to(device), enc["attention_mask"].to(device), ids.to(device),
        mask.to(device),
    )  # fmt: skip


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: ``cumsum(mask) - 1``, 0 on padding and at each row's
    first real token (as Hugging Face ``generate`` computes them)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def forward_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Logits ``[B, L, V]`` of a left-padded batch, with :func:`position_ids`."""
    positions = position_ids(attention_mask)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits


def _joined(
    model, prompt_ids, prompt_mask, completion_ids
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``prompt + completion`` ids and attention mask, and the prompt width, after checking the
    inputs by name (the prompts must be left padded)."""
    validate.module(model, "model")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    validate.token_ids(prompt_ids, "prompt_ids", vocab_size=vocab)
    validate.token_ids(completion_ids, "completion_ids", vocab_size=vocab)
    validate.mask(prompt_mask, "prompt_mask", prompt_ids.shape, nonempty=False, what="prompt_ids")
    if prompt_mask.shape[1] and not prompt_mask[:, -1].bool().all():
        raise ValueError(
            "prompt_mask: prompts must be left padded (the last prompt column has padding)"
        )
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask.long(), prompt_mask.new_ones(completion_ids.shape).long()], 1)
    return ids, attn, prompt_ids.shape[1]


def completion_logits(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    hidden: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, C, V]`` that predict each completion token from the prompt and the tokens
    before it: one forward pass over ``prompt + completion``, shifted by one.

    Position ids skip the left padding, so a padded prompt gets the same logits as unpadded.
    Positions after the first EOS get logits too; mask them out with ``completion_mask``. With
    ``hidden=True`` also the last layer's hidden states at the same positions ``[B, C, H]``.
    """
    ids, attn, width = _joined(model, prompt_ids, prompt_mask, completion_ids)
    out = model(
        input_ids=ids, attention_mask=attn, position_ids=position_ids(attn),
        output_hidden_states=hidden,
    )  # fmt: skip
    logits = out.logits[:, width - 1 : -1, :]
    if hidden:
        return logits, out.hidden_states[-1][:, width - 1 : -1, :]
    return logits


def forward_hidden(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Final (normed) hidden states ``[B, L, H]`` of a left-padded batch: :func:`forward_logits`
    before the head, from the backbone ``model.model`` alone (no ``[B, L, V]`` logits built)."""
    backbone = getattr(model, "model", None)
    if not isinstance(backbone, torch.nn.Module):
        raise validate.ArgumentTypeError(
            f"model must be a causal LM with its backbone at model.model (e.g. Qwen3ForCausalLM), "
            f"got {type(model).__name__}"
        )
    positions = position_ids(attention_mask)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
    return out.last_hidden_state


def completion_hidden(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
) -> torch.Tensor:
    """Final hidden states ``[B, C, H]`` that predict each completion token: exactly
    :func:`completion_logits` before the head (``logits = hidden @ head.T (+ bias)``, see
    :func:`head_params`), with the same inputs and position ids, never building the logits."""
    ids, attn, width = _joined(model, prompt_ids, prompt_mask, completion_ids)
    return forward_hidden(model, ids, attn)[:, width - 1 : -1, :]


def head_params(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's ``(weight [V, H], bias [V] or None)`` (``model.lm_head``), for
    :func:`opd_lib.fused_divergence.fused_token_divergence`. A LoRA/peft-wrapped head is refused:
    its bare weight would silently drop the adapter (merge it first)."""
    head = getattr(model, "lm_head", None)
    if hasattr(head, "base_layer") or type(head).__module__.startswith("peft"):
        raise validate.ArgumentTypeError(
            f"model.lm_head is a LoRA/peft-wrapped {type(head).__name__}; merge the adapter "
            "(merge_and_unload) before using its weight"
        )
    if not isinstance(head, torch.nn.Linear):
        raise validate.ArgumentTypeError(
            f"model.lm_head must be a torch.nn.Linear, got {type(head).__name__}"
        )
    return head.weight, head.bias


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[ids]``: the log-probability of each token, ``[..., V] -> [...]``
    (computed in float32 or wider)."""
    if logits.shape[:-1] != ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)} disagree (need [..., V] "
            "and [...])"
        )
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``H(p) = -sum_v p(v) log p(v)`` of ``softmax(logits)`` per position, in nats
    (float32 or wider)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def sft(
    model: torch.nn.Module,
    next_batch: Callable[[int], Batch],
    *,
    steps: int,
    lr: float,
    warmup: int = 0,
    cosine: bool = False,
    grad_clip: float = 1.0,
    progress: bool = False,
    desc: str = "sft",
) -> list[float]:
    """Supervised fine-tuning: ``steps`` AdamW steps (no weight decay) on the token-mean
    cross-entropy ``-mean_{t in mask} log p(y_t | x, y_<t)`` of ``next_batch(step)`` (its
    ``mask``, else every completion token). The learning rate rises linearly over ``warmup``
    steps, then stays (or, with ``cosine``, decays to a tenth of ``lr`` by the last step);
    gradients are clipped to norm ``grad_clip`` (0: off). Returns the losses."""
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    model.requires_grad_(True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def lr_factor(s: int) -> float:
        decay = 0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)) if cosine else 1.0
        return min(1.0, (s + 1) / max(1, warmup)) * decay

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    losses = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        b = next_batch(step)
        logits = completion_logits(model, b.prompt_ids, b.prompt_mask, b.completion_ids)
        logp = token_logprobs(logits, b.completion_ids)
        loss = -(logp[b.mask] if b.mask is not None else logp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.zero_grad(set_to_none=True)
    return losses
