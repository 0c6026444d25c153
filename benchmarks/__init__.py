"""Benchmarks for balances-etl: ``python -m benchmarks.run [--quick]`` (see docs/performance.md)."""
