"""Benchmarks behind `auditor bench`: one module each, with register(subparsers)."""
