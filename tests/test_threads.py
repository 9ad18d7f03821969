import pytest
import torch

from opd_lib._threads import single_thread
from opd_lib.sim import stability


def test_single_thread_restores_the_count_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), single_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_single_thread_as_a_decorator():
    before = torch.get_num_threads()

    @single_thread()
    def threads(x):
        """Doc."""
        return torch.get_num_threads(), x

    assert threads(3) == (1, 3)
    assert threads(4) == (1, 4)  # a fresh context on every call
    assert threads.__doc__ == "Doc."
    assert torch.get_num_threads() == before


def test_one_helper_everywhere():
    assert stability.single_thread is single_thread
