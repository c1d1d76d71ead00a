"""`auditor bench NAME`: benchmark commands that print figures (never tests).

Each benchmark lives in `auditor/benchmarks/<name>.py` with `register(subparsers)`; modules whose name
starts with an underscore are helpers of a benchmark, not benchmarks.
"""
from __future__ import annotations

import importlib
import pkgutil

import auditor.benchmarks as benchmarks


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark commands that print measured figures")
    bench_sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"auditor.benchmarks.{info.name}").register(bench_sub)
