"""Benchmarks (not tests): python -m benchmarks.run, or bash scripts/bench.sh. See docs/performance.md."""
