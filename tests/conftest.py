"""Fixtures shared by the unit tests."""

import pytest

from opd_lib._threads import single_thread


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and busy CI machines make them much slower."""
    with single_thread():
        yield
