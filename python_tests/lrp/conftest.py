"""LRP test fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def float64_default():
    """float64 default dtype for the requesting module only (restored afterwards), so no other family sees it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
