import pytest
import torch

from opd_lib._threads import single_thread, torch_threads


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


def test_torch_threads_sets_then_restores_and_zero_leaves_the_count_alone():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        with torch_threads(0):
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
