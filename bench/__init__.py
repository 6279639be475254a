"""Benchmarks (python -m bench.<name>); not run by pytest."""
