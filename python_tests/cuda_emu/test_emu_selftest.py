"""The emulator itself (csrc/testing/cuda_emu/cuda_emu.h), through the kernels of emu_selftest.cu: the
other tests in this folder trust it to run CUDA code by the hardware's rules."""
import random

import pytest

CUDA_SUCCESS, INVALID_CONFIGURATION, LAUNCH_TIMEOUT = 0, 9, 702


def test_warp_shuffle_sum(emu):
    vals = [random.Random(1).randint(-1000, 1000) for _ in range(256)]
    out, err = emu.emu_warp_sum(vals, 128)  # 2 blocks of 4 warps
    assert err == CUDA_SUCCESS
    assert out == [sum(vals[32 * w:32 * w + 32]) for w in range(8)]


@pytest.mark.parametrize("live", [1, 37, 64, 100, 128])
def test_returned_threads_leave_the_barrier(emu, live):
    vals = [float(i % 7) for i in range(3 * 128)]
    out, err = emu.emu_early_exit(vals, 128, live)
    assert err == CUDA_SUCCESS
    assert out == [sum(vals[128 * b:128 * b + live]) for b in range(3)]


def test_dynamic_shared_memory_starts_as_garbage(emu):
    out, err = emu.emu_dynamic_shared(64, 64 * 4)
    assert err == CUDA_SUCCESS and out == [0xFFFFFFFF] * 64


@pytest.mark.parametrize("threads,shared", [(1025, 0), (0, 0), (64, 48 * 1024 + 4)])
def test_bad_launches_are_refused_like_the_driver(emu, threads, shared):
    if threads == 0:
        out, err = emu.emu_index([1, 1, 1], [0, 1, 1])
    else:
        out, err = emu.emu_dynamic_shared(threads, shared)
        assert out == [0] * threads  # the kernel did not run
    assert err == INVALID_CONFIGURATION


def test_grid_y_limit(emu):
    _, err = emu.emu_index([1, 65536, 1], [1, 1, 1])
    assert err == INVALID_CONFIGURATION


def test_error_is_cleared_by_reading(emu):
    emu.emu_dynamic_shared(2000, 0)  # refused, and cudaGetLastError() inside consumed the error
    out, err = emu.emu_dynamic_shared(32, 128)
    assert err == CUDA_SUCCESS and out == [0xFFFFFFFF] * 32


def test_atomics(emu):
    count, fsum, imax, err = emu.emu_atomics(5, 96)
    assert err == CUDA_SUCCESS
    assert count == 480 and fsum == 240.0 and imax == 479


def test_indices_of_3d_grids_and_blocks(emu):
    grid, block = [3, 2, 2], [4, 2, 3]
    out, err = emu.emu_index(grid, block)
    assert err == CUDA_SUCCESS
    seen = {tuple(out[6 * i:6 * i + 6]) for i in range(len(out) // 6)}
    want = {(bx, by, bz, tx, ty, tz) for bx in range(3) for by in range(2) for bz in range(2)
            for tx in range(4) for ty in range(2) for tz in range(3)}
    assert seen == want


def test_deadlock_is_reported_not_hung(emu, monkeypatch):
    monkeypatch.setenv("MEDSEG_CUDA_EMU_TIMEOUT_S", "0.5")
    assert emu.emu_deadlock() == LAUNCH_TIMEOUT
