"""Benchmarks against the peer libraries (DESIGN.md principle 8); run them with `medseg-ext bench`.

``harness`` holds the reusable parts (timing, peak memory, copy bandwidth, tables, results files);
one module per family (``losses``) defines its cases.
"""
from .harness import Case, CaseSpec, copy_bandwidth, markdown_table, peak_memory, time_call, write_json

__all__ = ["Case", "CaseSpec", "time_call", "peak_memory", "copy_bandwidth", "markdown_table", "write_json"]
