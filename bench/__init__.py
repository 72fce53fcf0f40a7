"""Reproducible benchmarks of the export worker: ``python -m bench`` (see bench/README.md)."""
