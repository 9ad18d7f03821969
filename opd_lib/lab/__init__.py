"""The lab: offline tokenizers, tiny or real Qwen3 teacher/student pairs, preflight checks,
verifiable tasks, and one trainer for every method (``python -m opd_lib.lab --help``).

The public names below load on first use (module ``__getattr__``, PEP 562), so that importing a
light submodule such as :mod:`opd_lib.lab.cli` or :mod:`opd_lib.lab.config` does not import torch
and transformers (seconds) through this package."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> the module that defines it
_HOMES = {
    "METHODS": "opd_lib.lab.config",
    "Config": "opd_lib.lab.config",
    "prepare_pair": "opd_lib.lab.pair",
    "PaddedVocabularyWarning": "opd_lib.lab.preflight",
    "PreflightError": "opd_lib.lab.preflight",
    "PreflightReport": "opd_lib.lab.preflight",
    "preflight": "opd_lib.lab.preflight",
    "sanity_check": "opd_lib.lab.preflight",
    "PRESETS": "opd_lib.lab.presets",
    "preset": "opd_lib.lab.presets",
    "ALPHABET": "opd_lib.lab.tasks",
    "GSM8K": "opd_lib.lab.tasks",
    "Reverse": "opd_lib.lab.tasks",
    "RunningSum": "opd_lib.lab.tasks",
    "make_examples": "opd_lib.lab.tasks",
    "Trainer": "opd_lib.lab.trainer",
    "train": "opd_lib.lab.trainer",
    "ModelPair": "opd_lib.models",
    "load_qwen3_pair": "opd_lib.models",
    "tiny_qwen3": "opd_lib.models",
    "tiny_qwen3_pair": "opd_lib.models",
    "char_tokenizer": "opd_lib.tokenizers",
    "qwen3_tokenizer": "opd_lib.tokenizers",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Import ``name``'s module on first use and cache the name here."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


class _Lab(types.ModuleType):
    """Importing the submodule ``opd_lib.lab.preflight`` sets the package attribute of that name;
    the public name ``preflight`` is the function, as it was before the names became lazy."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and getattr(value, name, None) is not None:
            if name in _HOMES and _HOMES[name] == value.__name__:
                return  # keep the function (loaded by __getattr__ on first use)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Lab
