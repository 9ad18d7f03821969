"""Moved to :mod:`opd_lib.tokenizers` (a foundation module); the old import path keeps working."""

from opd_lib.tokenizers import (
    CHATML_TEMPLATE,
    DEFAULT_ALPHABET,
    QWEN3_CHAT_TEMPLATE,
    QWEN3_SPECIAL_TOKENS,
    char_tokenizer,
    qwen3_cache_dir,
    qwen3_tokenizer,
)

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_ALPHABET",
    "QWEN3_CHAT_TEMPLATE",
    "QWEN3_SPECIAL_TOKENS",
    "char_tokenizer",
    "qwen3_cache_dir",
    "qwen3_tokenizer",
]
