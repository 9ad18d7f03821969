"""The lab: offline tokenizers, tiny or real Qwen3 teacher/student pairs, and preflight checks."""

from opd_lib.lab.models import ModelPair, load_qwen3_pair, tiny_qwen3, tiny_qwen3_pair
from opd_lib.lab.preflight import (
    PaddedVocabularyWarning,
    PreflightError,
    PreflightReport,
    preflight,
    sanity_check,
)
from opd_lib.lab.tokenizers import char_tokenizer, qwen3_tokenizer

__all__ = [
    "ModelPair",
    "PaddedVocabularyWarning",
    "PreflightError",
    "PreflightReport",
    "char_tokenizer",
    "load_qwen3_pair",
    "preflight",
    "qwen3_tokenizer",
    "sanity_check",
    "tiny_qwen3",
    "tiny_qwen3_pair",
]
