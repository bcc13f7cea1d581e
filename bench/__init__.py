"""Benchmarks for Parley (not part of the test suite): `python -m bench [--quick]`."""
