"""Test support code: Hub-protocol servers, the Ray cluster helper, shared builders.

A package, imported as ``tests._support.<module>`` (the repository root is on
``sys.path`` through pytest's rootdir conftest), never by editing ``sys.path``.
"""
