"""Benchmarks of llm_gateway against the alternatives (not part of the test suite).

Run them with ``nox -s bench``, which installs the contenders and writes ``docs/benchmarks.md``.
"""
