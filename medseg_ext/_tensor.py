"""Array descriptors for the compiled module: (data pointer, dtype name, shape, strides).

The C++ side reads memory through these without copying and without linking libtorch
(DESIGN.md principle 1). Strides are in elements, as torch and the C++ views use them.
"""
from __future__ import annotations

import torch

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.uint8: "uint8",
}
if hasattr(torch, "uint16"):
    _DTYPE_NAMES[torch.uint16] = "uint16"

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
LABEL_DTYPES = tuple(d for d in _DTYPE_NAMES if d not in FLOAT_DTYPES)


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES[dtype]


def desc(t: torch.Tensor) -> tuple:
    """Descriptor of a tensor that the caller keeps alive for the duration of the kernel call."""
    return (t.data_ptr(), _DTYPE_NAMES[t.dtype], tuple(t.shape), tuple(t.stride()))
