"""Where the time of one GPU dice_loss forward+backward goes: the kernels alone vs the Python,
custom-op and epilogue overhead around them (torch.profiler, CUDA time per kernel name)."""
import sys
import time

import torch

import medseg_ext


def timed(fn, n=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def main(shape=(1, 14, 64, 64, 64)):
    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.randn(shape, device="cuda", generator=g).requires_grad_(True)
    y = torch.randint(0, shape[1], (shape[0],) + shape[2:], device="cuda", generator=g)
    for backend in ("triton", "cuda"):
        with medseg_ext.use_backend(backend):
            def fwd_bwd(validate=True):
                loss = medseg_ext.dice_loss(z, y, validate=validate)
                loss.backward()
                z.grad = None

            def fwd_only():
                with torch.no_grad():
                    medseg_ext.soft_region_stats(z, y, validate=False)

            print(f"{backend}: fwd+bwd {timed(fwd_bwd):.3f} ms, validate=False {timed(lambda: fwd_bwd(False)):.3f} ms, "
                  f"stats fwd only {timed(fwd_only):.3f} ms")
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                    torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(10):
                    fwd_bwd(False)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


if __name__ == "__main__":
    main()
    sys.exit(0)
