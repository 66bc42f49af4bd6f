"""Compiles every Triton kernel launch the test suite made, for real GPU targets, on a machine without
a GPU (tests only; .ci/run runs it after pytest).

Without a GPU the tests run the Triton kernels in interpreter mode (TRITON_INTERPRET=1), which executes
them with NumPy semantics and accepts code that the Triton compiler rejects (type mismatches, shapes,
unsupported ops). With MEDSEG_EXT_RECORD_TRITON=<file>, python_tests/conftest.py records each launch
(kernel, argument kinds, constexpr values); this script then compiles each distinct specialisation
with triton.compile for the given targets (ptxas included), which needs no GPU and no driver.

    python csrc/testing/triton_aot/compile_recorded.py RECORD.jsonl [--arch 90 --arch 80]

Exit status 1 when any specialisation fails to compile (each failure is printed), 2 when nothing was
recorded."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("run without TRITON_INTERPRET=1: the kernels must be compiled, not interpreted")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

# recorded value kinds -> Triton signature types
POINTER = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16", "float64": "*fp64", "int64": "*i64",
           "int32": "*i32", "int16": "*i16", "int8": "*i8", "uint8": "*u8", "bool": "*i1"}


def _jit_function(module: str, name: str) -> JITFunction:
    obj = getattr(importlib.import_module(module), name)
    while not isinstance(obj, JITFunction):  # autotuners / heuristics wrap the JITFunction in .fn
        obj = obj.fn
    return obj


def _scalar_type(v) -> str:
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        return "i32" if -2**31 <= v < 2**31 else ("i64" if -2**63 <= v < 2**63 else "u64")
    if isinstance(v, float):
        return "fp32"
    raise TypeError(f"unexpected scalar {v!r}")


def specialisation(fn: JITFunction, args: dict):
    signature, constexprs = {}, {}
    for p in fn.params:
        rec = args.get(p.name)
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constexprs[p.name] = None if rec is None else rec["value"]
        elif rec is None or rec["kind"] == "none":
            signature[p.name] = "constexpr"
            constexprs[p.name] = None
        elif rec["kind"] == "tensor":
            signature[p.name] = POINTER[rec["dtype"]]
        else:
            signature[p.name] = _scalar_type(rec["value"])
    return signature, constexprs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record")
    ap.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90 (default: 90 and 80)")
    a = ap.parse_args(argv)
    archs = a.arch or [90, 80]
    seen, launches = set(), []
    with open(a.record) as f:
        for line in f:
            rec = json.loads(line)
            key = json.dumps(rec, sort_keys=True)
            if key not in seen:
                seen.add(key)
                launches.append(rec)
    if not launches:
        print(f"{a.record}: no Triton launches recorded")
        return 2
    failures, done, t0 = [], set(), time.time()
    for rec in launches:
        fn = _jit_function(rec["module"], rec["name"])
        signature, constexprs = specialisation(fn, rec["args"])
        key = (rec["module"], rec["name"], json.dumps(signature, sort_keys=True), json.dumps(constexprs, sort_keys=True))
        if key in done:
            continue
        done.add(key)
        for arch in archs:
            try:
                triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                               target=GPUTarget("cuda", arch, 32))
            except Exception as exc:  # noqa: BLE001 - every failure is reported, then the run fails
                failures.append(f"{rec['module']}.{rec['name']} sm_{arch} {signature} {constexprs}:\n"
                                f"  {type(exc).__name__}: {str(exc)[:1500]}")
    kernels = {(k[0], k[1]) for k in done}
    print(f"compiled {len(done)} specialisations of {len(kernels)} Triton kernels for sm_{', sm_'.join(map(str, archs))} "
          f"in {time.time() - t0:.0f} s; {len(failures)} failed")
    for msg in failures:
        print(msg)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
