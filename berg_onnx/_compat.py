"""Old flat import paths (``berg_onnx.catalog``, ``berg_onnx.fileio``, ...) for one release.

The package was reorganised into subpackages by concern (0.2). Code written against
the flat paths keeps working: importing an old name imports the new module, binds it
under the old name too and warns once with a DeprecationWarning naming the new path.
No module file exists at the old paths, so the flat layout does not come back; this
finder is the whole shim. It imports nothing of berg_onnx until an old name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old dotted name -> new dotted name; removed in the release after next.
MOVED: dict[str, str] = {
    "berg_onnx.catalog": "berg_onnx.source.catalog",
    "berg_onnx.manifest": "berg_onnx.source.manifest",
    "berg_onnx.manifest_schema": "berg_onnx.source._schema",
    "berg_onnx.store": "berg_onnx.source.local",
    "berg_onnx.hub": "berg_onnx.source.hub",
    "berg_onnx.metadata": "berg_onnx.source.metadata",
    "berg_onnx.safezip": "berg_onnx.source.safezip",
    "berg_onnx.stimulus": "berg_onnx.inputs.stimulus",
    "berg_onnx.images": "berg_onnx.inputs.images",
    "berg_onnx.files": "berg_onnx.inputs.scan",
    "berg_onnx.resize": "berg_onnx.inputs.resize",
    "berg_onnx.fileio": "berg_onnx.utils.fileio",
    "berg_onnx.cpu": "berg_onnx.utils.cpu",
    "berg_onnx.outputs": "berg_onnx.utils.outputs",
    "berg_onnx.volume": "berg_onnx.brain.volume",
    "berg_onnx.plot": "berg_onnx.brain.plot",
    "berg_onnx.brainspace": "berg_onnx.brain.runs",
    "berg_onnx.experiment.local": "berg_onnx.engines.local",
}


# Plain classes, not importlib.abc's Loader and MetaPathFinder: the import system only
# calls these methods, and importlib.abc imports importlib.resources, pathlib's users and
# tempfile (~6 ms of every cold start).
class _Alias:
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; the old path is removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name already."""


class _MovedFinder:
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (called by ``berg_onnx/__init__``)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
