"""CAM tests use tiny models: one intra-op thread is faster than two on the shared 2-core CI box
(thread spin-up dominates microsecond convolutions)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
