import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Engine and HF references on one thread: on 2 shared cores, 2 threads can run 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
