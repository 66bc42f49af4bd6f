"""Test configuration: Triton runs in interpreter mode on machines without a GPU, hypothesis
profiles for CI (bounded examples, no deadline), and the test helper modules on sys.path."""
import os
import sys

import torch

if not torch.cuda.is_available():
    # must be set before triton.jit decorates the kernels, i.e. before medseg_ext.triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

# shared test helpers: helpers.py here, and each family folder's own case modules (e.g.
# topology/topo_cases.py); --import-mode=importlib (CI) puts no test folder on sys.path by itself
_HERE = os.path.dirname(os.path.abspath(__file__))
for _folder in [_HERE] + sorted(os.path.join(_HERE, d) for d in os.listdir(_HERE)):
    if os.path.isdir(_folder) and not os.path.basename(_folder).startswith((".", "__")) and _folder not in sys.path:
        sys.path.insert(0, _folder)

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _record_triton_launches(path: str) -> None:
    """MEDSEG_EXT_RECORD_TRITON=<file>: append each distinct interpreted Triton launch (kernel, argument
    kinds, constexpr values) as a JSON line; csrc/testing/triton_aot/compile_recorded.py then compiles
    them for real GPU targets (the interpreter accepts code the compiler rejects)."""
    import json

    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    seen = set()
    original = InterpretedFunction.run

    def describe(v):
        if isinstance(v, torch.Tensor):
            return {"kind": "tensor", "dtype": str(v.dtype).replace("torch.", "")}
        if v is None:
            return {"kind": "none"}
        if isinstance(v, tl.constexpr):
            v = v.value
        if isinstance(v, (bool, int, float, str)):
            return {"kind": "scalar", "value": v}
        if hasattr(v, "dtype") and hasattr(v, "data_ptr"):  # tensor-like wrappers
            return {"kind": "tensor", "dtype": str(v.dtype).replace("torch.", "")}
        return {"kind": "other", "value": repr(v)}

    def run(self, *args, grid, warmup, **kwargs):
        names = self.arg_names
        values = dict(zip(names, args))
        values.update({k: v for k, v in kwargs.items() if k in names})
        rec = {"module": self.fn.__module__, "name": self.fn.__name__,
               "args": {k: describe(v) for k, v in values.items()}}
        key = json.dumps(rec, sort_keys=True)
        if key not in seen:
            seen.add(key)
            with open(path, "a") as f:
                f.write(key + "\n")
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run


if os.environ.get("MEDSEG_EXT_RECORD_TRITON") and os.environ.get("TRITON_INTERPRET") == "1":
    _record_triton_launches(os.environ["MEDSEG_EXT_RECORD_TRITON"])


def pytest_collection_finish(session):
    # a module that changes torch's default dtype at import changes it for every test collected after
    # it (other families then fail with dtype mismatches); such state belongs in a fixture
    if torch.get_default_dtype() != torch.float32:
        raise RuntimeError(f"a test module set torch's default dtype to {torch.get_default_dtype()} at import; "
                           "use a fixture that restores it")
