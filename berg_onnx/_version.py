"""The package version: the one string the build (pyproject's dynamic version) and the code read."""

__version__ = "0.1.0"
