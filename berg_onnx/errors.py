"""The exceptions berg_onnx raises, in one place.

The hierarchy mirrors the original BERG's so code written against BERG keeps
working, and each class also derives from the builtin it resembles so callers
may catch either (``except ValueError`` still catches a bad stimulus).
"""

from __future__ import annotations


class BERGError(Exception):
    """Base class of every error raised on purpose by berg_onnx."""


class ModelNotFoundError(BERGError, LookupError):
    """A model id, subject, ROI or file that does not exist in the catalogue or store."""


class ModelLoadError(BERGError, RuntimeError):
    """A model's files exist but cannot be used: corrupt, mismatched or unreadable."""


class InvalidParameterError(BERGError, ValueError):
    """An argument outside its allowed values (the message names the valid ones)."""


class StimulusError(BERGError, ValueError):
    """A stimulus that is not what encode() accepts (the message says what is expected)."""


class ResourceError(BERGError, RuntimeError):
    """A resource the caller asked for is not available: CUDA, network, disk space."""


class ExperimentError(BERGError, RuntimeError):
    """An experiment store that cannot be used for the run asked for (other images,
    other model files, not an experiment store): the message says how to proceed."""


__all__ = [
    "BERGError",
    "ExperimentError",
    "InvalidParameterError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ResourceError",
    "StimulusError",
]
