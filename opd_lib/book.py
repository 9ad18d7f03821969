"""Helpers for the book's pages: publish computed numbers into the prose.

Every number in the text is computed by a cell. ``glue`` hands a value to MyST-NB, which the page
writes inline with ``{glue:text}`name:format```. Outside a book build (Colab, a plain Jupyter
session) MyST-NB may be absent, so the value is printed instead, formatted the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def glue(name: str, value: Any, fmt: str = "") -> None:
    """Publish ``value`` under ``name`` for the page's prose (``fmt`` formats the fallback print).

    NumPy scalars are converted to Python numbers, which MyST-NB's format specs understand.
    """
    if isinstance(value, np.generic):
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"{name} = {value:{fmt}}")
    else:
        myst_glue(name, value, display=False)
