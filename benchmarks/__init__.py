"""Benchmarks (not tests): `python -m benchmarks NAME`, or bash scripts/bench.sh; docs/performance.md."""
