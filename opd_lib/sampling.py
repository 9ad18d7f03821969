"""Sampling completions from a causal LM, reproducibly, and masking them after the first EOS.

Hugging Face ``generate`` draws from the global RNG and takes no ``torch.Generator``, so two runs
only agree if nothing else touched that RNG in between. On-policy methods sample inside the
training loop, so this module has its own small sampling loop that draws every token from an
explicit ``generator``: the same generator state gives the same completions.

Shapes: ``B`` batch, ``P`` prompt length (left padded), ``N`` new tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from opd_lib.lm import position_ids

__all__ = ["completion_mask", "sample_completions", "special_token_ids"]


def completion_mask(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Boolean ``[B, N]`` mask of the tokens that count in a batch of completions.

    A token counts if no EOS came *before* it: the first EOS itself counts (the model must learn to
    stop), everything after it (padding, or what a sampler wrote past the end) does not. A
    completion without EOS counts in full (it was cut at the length limit).
    """
    if ids.dim() != 2:
        raise ValueError(f"ids must be [batch, length], got shape {tuple(ids.shape)}")
    if ids.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"ids must be integer token ids, got {ids.dtype}")
    is_eos = ids == eos_token_id
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return eos_before == 0


@torch.no_grad()
def sample_completions(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    corrupt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sample ``max_new_tokens`` tokens after each (left-padded) prompt; returns ``[B, N]`` ids.

    A KV-cached loop: one forward pass over the prompts, then one per new token, with position ids
    that skip the left padding (as ``generate`` computes them). Each token is drawn with
    ``torch.multinomial(softmax(logits / temperature), generator=generator)``; ``temperature=0``
    means greedy decoding. Once a row has produced ``eos_token_id`` every later token of that row
    is ``pad_token_id`` (default: the EOS id), so ``completion_mask`` marks exactly the sampled
    part. The loop stops early when every row has finished; the result is still ``N`` wide.

    Args:
        model: a Hugging Face causal LM (anything returning ``.logits`` and ``.past_key_values``).
        prompt_ids, attention_mask: ``[B, P]``; padding on the left, mask 1 on real tokens.
        generator: the source of randomness (on the model's device); ``None`` uses the global RNG.
        eos_token_id: defaults to ``model.config.eos_token_id``.
        corrupt: ``corrupt(previous, drawn) -> written``, the environment's change to the tokens
            ``[B]`` just drawn given each row's previous token (execution noise, e.g.
            :func:`opd_lib.lab.noise.digit_noise`); the written token is what the model reads
            next. ``None``: the drawn tokens are written.

    The prompt's forward pass keeps only the last position's logits (``logits_to_keep=1``): at
    a 151,936-token vocabulary the whole prompt's would cost 0.6 MB per prompt token.
    """
    if prompt_ids.dim() != 2 or attention_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_ids and attention_mask must both be [batch, length], got "
            f"{tuple(prompt_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if attention_mask[:, -1].eq(0).any():
        raise ValueError("prompts must be left padded: the last column has padding")
    eos_token_id, _ = special_token_ids(model, eos_token_id, None)
    pad = eos_token_id if pad_token_id is None else pad_token_id

    batch = prompt_ids.shape[0]
    mask = attention_mask.long()
    positions = position_ids(mask)
    out = model(
        input_ids=prompt_ids, attention_mask=mask, position_ids=positions, use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    previous = prompt_ids[:, -1]
    past = out.past_key_values
    logits = out.logits[:, -1, :]
    last_position = positions[:, -1]
    finished = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    tokens = torch.full(
        (batch, max_new_tokens), pad, dtype=prompt_ids.dtype, device=prompt_ids.device
    )
    for step in range(max_new_tokens):
        if temperature == 0:
            next_token = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if corrupt is not None:
            next_token = corrupt(previous, next_token)
            previous = next_token
        next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
        tokens[:, step] = next_token
        finished |= next_token == eos_token_id
        if finished.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        last_position = last_position + 1
        out = model(
            input_ids=next_token[:, None],
            attention_mask=mask,
            position_ids=last_position[:, None],
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        logits = out.logits[:, -1, :]
    return tokens


def special_token_ids(
    model: torch.nn.Module, eos_token_id: int | None, pad_token_id: int | None
) -> tuple[int, int | None]:
    """(eos, pad) ids: the given ones, else the model config's (the first, where the config lists
    several EOS ids); raises if there is no EOS id."""
    config = getattr(model, "config", None)
    if eos_token_id is None:
        eos_token_id = getattr(config, "eos_token_id", None)
        if isinstance(eos_token_id, list):
            eos_token_id = eos_token_id[0]
    if eos_token_id is None:
        raise ValueError("eos_token_id is needed (the model's config has none)")
    if pad_token_id is None:
        pad_token_id = getattr(config, "pad_token_id", None)
    return eos_token_id, pad_token_id
