"""The lab: offline tokenizers, tiny or real Qwen3 teacher/student pairs, preflight checks,
verifiable tasks, and one trainer for every method (``python -m opd_lib.lab --help``)."""

from opd_lib.lab.config import METHODS, Config
from opd_lib.lab.pair import prepare_pair
from opd_lib.lab.preflight import (
    PaddedVocabularyWarning,
    PreflightError,
    PreflightReport,
    preflight,
    sanity_check,
)
from opd_lib.lab.presets import PRESETS, preset
from opd_lib.lab.tasks import ALPHABET, GSM8K, Reverse, RunningSum, make_examples
from opd_lib.lab.trainer import Trainer, train
from opd_lib.models import ModelPair, load_qwen3_pair, tiny_qwen3, tiny_qwen3_pair
from opd_lib.tokenizers import char_tokenizer, qwen3_tokenizer

__all__ = [
    "ALPHABET",
    "Config",
    "GSM8K",
    "METHODS",
    "PRESETS",
    "Reverse",
    "RunningSum",
    "Trainer",
    "make_examples",
    "prepare_pair",
    "preset",
    "train",
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
