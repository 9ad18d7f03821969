"""One helper shared by the simulators: run torch on a single CPU thread, then restore the setting.

The book's models and tables are tiny. For them torch's thread pool only adds synchronisation, and
on a busy 2-core machine a multi-threaded step was 5-50x slower than a single-threaded one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["single_thread", "torch_threads"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block; the previous thread count is restored after.

    Use it as ``with single_thread(): ...`` or, for a whole function, as the decorator
    ``@single_thread()`` (a fresh context on every call). ``torch`` is imported only when the block
    is entered, so importing this module does not load it.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch on ``threads`` CPU threads inside the block (0: leave the setting alone); the
    previous count is restored after."""
    import torch

    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads > 0:
            torch.set_num_threads(previous)
