"""Test support code: Hub-protocol servers, the Ray cluster helper, shared builders.

A package, imported as ``tests._support.<module>``: pytest puts the repository root on
``sys.path`` (``pythonpath = ["."]`` in pyproject.toml), so no test edits ``sys.path``.
Scripts run it from the root: ``python -m tests._support.artifacts OUT``.
"""
