"""Triton kernels (GPU; on the CPU only through TRITON_INTERPRET=1, for tests).

Submodules import triton at import time, so import them only when the Triton backend is chosen.
"""
