"""Checkpoints that load without running code, written so a kill at any instant loses nothing.

Format: one safetensors file. Every tensor of the state (weights, optimizer moments, RNG states)
is a safetensors entry; everything else (numbers, strings, lists, tuples, dicts with any keys,
NumPy arrays such as NumPy's RNG state) is JSON in the file's metadata, with a CRC-32 per tensor.
Loading parses JSON and reads raw tensor bytes: no pickle, so a checkpoint from elsewhere cannot
run code (``torch.load`` unpickles arbitrary objects unless ``weights_only=True``).

Writes are atomic: the state goes to a temporary file in the same directory, is flushed to disk
(``fsync``), then ``os.replace``-d over the target, so the previous checkpoint stays intact until
the new one is complete. A truncated or corrupt file is refused with :class:`CheckpointError`,
naming the file and how to recover. Files in the old pickle format load only when they hold
plain tensors (``torch.load(weights_only=True)``, e.g. a cached ``{"model": state_dict}``);
others are refused by name.

``rng_state`` / ``set_rng_state`` capture and restore every random source a run touches: torch's
global RNG, NumPy's, Python's ``random`` and any explicit ``torch.Generator`` or ``random.Random``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "CheckpointError",
    "FORMAT",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "opd-lab-checkpoint/1"
_MARKERS = ("__tensor__", "__tuple__", "__items__", "__ndarray__")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely (truncated, corrupt, or an unsafe format)."""


def _recovery(path: Path) -> str:
    return (
        f"To recover: restore {path.name} from a copy, or delete it to start that run (or "
        "stage) over from the beginning."
    )


# -------------------------------------------------------------------- state <-> (JSON, tensors)


def _encode(obj: Any, tensors: dict[str, torch.Tensor], seen: set, where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        storage = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        whole = t.is_contiguous() and storage[1] == t.numel() * t.element_size()
        if storage in seen or not whole:  # safetensors refuses shared or partial storage
            t = t.contiguous().clone()
        seen.add(storage)
        key = f"t{len(tensors)}"
        tensors[key] = t
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        items = [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {"__tuple__": items}
    if isinstance(obj, list):
        return [_encode(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in obj):
            return {k: _encode(v, tensors, seen, f"{where}[{k!r}]") for k, v in obj.items()}
        return {
            "__items__": [
                [_encode(k, tensors, seen, where), _encode(v, tensors, seen, f"{where}[{k!r}]")]
                for k, v in obj.items()
            ]
        }
    raise TypeError(
        f"cannot save state{where} of type {type(obj).__name__} in a checkpoint (tensors, numbers, "
        "strings, None, lists, tuples, dicts and NumPy arrays only)"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _crc(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    return zlib.crc32(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


# ------------------------------------------------------------------------------------ save / load


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``).

    The previous file at ``path`` is untouched until the new one is complete; temporary files
    left by a run killed mid-save are removed after the next successful save.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, set(), "")
    metadata = {
        "format": FORMAT,
        "state": json.dumps(skeleton),
        "crc32": json.dumps({k: _crc(t) for k, t in tensors.items()}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    return path


def _load_legacy(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any failure means: not safely loadable)
        raise CheckpointError(
            f"{path} is an old-format (pickle) checkpoint that cannot be loaded without running "
            f"code, or it is truncated ({type(e).__name__}). {_recovery(path)}"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a dict of state. {_recovery(path)}")
    return state


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`, tensors on the CPU.

    Raises ``FileNotFoundError`` if there is no file and :class:`CheckpointError` (a
    ``ValueError``) naming the file and how to recover if it is truncated, corrupt or unsafe.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK":  # a zip archive: torch.save's format
        return _load_legacy(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}). "
            f"{_recovery(path)}"
        ) from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a checkpoint of this library (format "
            f"{metadata.get('format')!r}, expected {FORMAT!r}). {_recovery(path)}"
        )
    try:
        crcs = json.loads(metadata["crc32"])
        skeleton = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata. {_recovery(path)}") from e
    bad = sorted(k for k, t in tensors.items() if crcs.get(k) != _crc(t))
    if bad or set(crcs) != set(tensors):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: {len(bad) or 'some'} tensor(s) fail their checksum. "
            f"{_recovery(path)}"
        )
    return _decode(skeleton, tensors)


# -------------------------------------------------------------------------------------------- RNG


def rng_state(
    generators: dict[str, torch.Generator] | None = None,
    pyrngs: dict[str, random.Random] | None = None,
) -> dict[str, Any]:
    """Every RNG state: torch (CPU and CUDA if present), NumPy, Python, and the given ones."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global RNG is what we save)
        "python": random.getstate(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
        "pyrngs": {k: r.getstate() for k, r in (pyrngs or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(
    state: dict[str, Any],
    generators: dict[str, torch.Generator] | None = None,
    pyrngs: dict[str, random.Random] | None = None,
) -> None:
    """Restore what :func:`rng_state` captured (the named generators in place)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])
    for k, r in (pyrngs or {}).items():
        r.setstate(state["pyrngs"][k])
