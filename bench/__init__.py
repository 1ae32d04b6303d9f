"""Benchmarks: `python -m bench.bench_runs [--quick]`; see bench/README.md."""
