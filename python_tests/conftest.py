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
