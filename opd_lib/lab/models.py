"""Moved to :mod:`opd_lib.models` (a foundation module); the old import path keeps working."""

from opd_lib.models import (
    ATTN_IMPLEMENTATION,
    ModelPair,
    load_qwen3_pair,
    tiny_qwen3,
    tiny_qwen3_pair,
)

__all__ = ["ATTN_IMPLEMENTATION", "ModelPair", "load_qwen3_pair", "tiny_qwen3", "tiny_qwen3_pair"]
