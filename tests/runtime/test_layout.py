"""The package's layout: imports run one way, and ``import berg_onnx`` stays cheap.

The import graph is read from the source's AST (tests/_support/imports.py), so an
import inside a function, which runs only on the path that calls it, counts as much as
one at the top of a module. The static "no torch, no export" rule over every module is
tests/runtime/test_no_torch.py's; here every module is also imported for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import berg_onnx
from tests._support.imports import cycles, import_graph

PACKAGE = Path(berg_onnx.__file__).resolve().parent

#: Never loaded by berg_onnx: the torch exporter and what only it needs.
BANNED = ("torch", "torchvision", "export")
#: Optional extras (zarr, ray, brain) and the layers above the Python API: loaded when
#: used, never by ``import berg_onnx`` (Pillow, tqdm and the Hub client: test_api.py).
NOT_AT_IMPORT = ("zarr", "ray", "nibabel", "matplotlib") + tuple(
    f"berg_onnx.{layer}" for layer in ("cli", "web", "engines", "experiment", "brain", "control")
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_berg_onnx_has_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert len(graph) > 20 and "berg_onnx.api" in graph  # the whole package was read
    found = cycles(graph)
    assert not found, "import cycles (each a set of modules that reach one another): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_the_cycle_check_sees_imports_inside_functions_and_type_checking(tmp_path):
    """The check can fail: a cycle closed only by a function-level import and an
    ``if TYPE_CHECKING:`` import, written as relative imports, is found; without it, none."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n"
    )
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("import os\n")
    assert cycles(import_graph(pkg)) == []


def test_importing_every_module_loads_neither_torch_nor_export():
    """Every module of the package (subpackages included) in one fresh process. A module
    whose optional extra is not installed here is passed over; one that needs torch or
    export is not."""
    modules = sorted(import_graph(PACKAGE))
    code = (
        "import importlib, json, sys\n"
        "missing = {}\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as e:\n"
        "        missing[name] = e.name or str(e)\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'missing': missing}))\n"
    )
    run = _python(code)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert not _loaded(result["modules"], BANNED)
    needs = {
        m: n for m, n in result["missing"].items() if n.split(".")[0] in BANNED + ("berg_onnx",)
    }
    assert not needs, f"modules that cannot import without torch/export: {needs}"
    assert len(result["missing"]) < len(modules) / 2, result["missing"]  # most really imported


def test_import_berg_onnx_stays_cheap():
    run = _python("import json, sys\nimport berg_onnx\nprint(json.dumps(sorted(sys.modules)))")
    assert run.returncode == 0, run.stderr
    modules = json.loads(run.stdout)
    assert "berg_onnx.api" in modules  # what `import berg_onnx` is for
    assert not _loaded(modules, BANNED + NOT_AT_IMPORT)
