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
from tests._support.imports import cycles, import_graph, layer_of, upward_imports

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


def test_imports_run_one_way_down_the_layers():
    """No module imports a layer above its own (docs/architecture.md's diagram)."""
    graph = import_graph(PACKAGE)
    assert all(layer_of(m) >= 0 for m in graph)  # every module is in a layer (KeyError if not)
    assert upward_imports(graph) == []


def test_the_layer_check_finds_an_upward_import(tmp_path):
    """The check can fail: a source module importing the API, inside a function."""
    pkg = tmp_path / "berg_onnx"
    (pkg / "source").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("X = 1\n")
    (pkg / "source" / "__init__.py").write_text("")
    (pkg / "source" / "hub.py").write_text("def f():\n    from berg_onnx import api\n")
    assert upward_imports(import_graph(pkg)) == [("berg_onnx.source.hub", "berg_onnx.api")]


def test_the_flat_level_holds_only_the_top_modules():
    """Modules at the package's top are the ones docs/architecture.md names; the rest live in
    subpackages by concern (the flat 0.1 paths are import aliases, not files)."""
    flat = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert flat == [
        "__init__",
        "__main__",
        "_compat",
        "_version",
        "api",
        "constants",
        "errors",
        "model",
        "session",
    ]


def test_old_flat_paths_still_import_with_a_deprecation_warning():
    code = (
        "import warnings, json\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import berg_onnx.catalog as old\n"
        "    from berg_onnx.fileio import open_npy_stimulus\n"
        "import berg_onnx.source.catalog as new, berg_onnx.utils.fileio as io\n"
        "print(json.dumps([old is new, open_npy_stimulus is io.open_npy_stimulus,"
        " [str(x.message) for x in w if x.category is DeprecationWarning]]))\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    same_module, same_function, messages = json.loads(result.stdout)
    assert same_module and same_function
    assert any("berg_onnx.catalog moved to berg_onnx.source.catalog" in m for m in messages)
    assert any("berg_onnx.fileio moved to berg_onnx.utils.fileio" in m for m in messages)
