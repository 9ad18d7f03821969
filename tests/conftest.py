"""Fixtures shared by the unit tests."""

import pytest

from opd_lib._threads import single_thread


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and busy CI machines make them much slower."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def char_pair():
    """An untrained 1-layer, width-32 teacher/student pair over the lab's character alphabet
    (the lab's trainer tests copy it before training: see their ``make``)."""
    from opd_lib.lab.tasks import ALPHABET
    from opd_lib.models import tiny_qwen3_pair
    from opd_lib.tokenizers import char_tokenizer

    size = dict(layers=1, hidden=32, heads=4)
    return tiny_qwen3_pair(char_tokenizer(ALPHABET), teacher=size, student=size)
