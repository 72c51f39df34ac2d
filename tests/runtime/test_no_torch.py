"""berg_onnx never imports torch or the export stage."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import berg_onnx

PACKAGE = Path(berg_onnx.__file__).resolve().parent
BANNED = ("torch", "torchvision", "export")


def test_no_module_of_the_package_imports_torch_or_export():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in BANNED:
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert not offenders


def test_importing_everything_loads_no_torch():
    modules = sorted(
        f"berg_onnx.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in ("__main__",)
    )
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'export')]\n"
        + "assert not bad, bad\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(os.environ.get("BERG_EXPECT_NO_TORCH") != "1", reason="torch-free CI stage")
def test_this_environment_has_no_torch_and_uses_the_wheel():
    assert importlib.util.find_spec("torch") is None
    with pytest.raises(ImportError):
        import torch  # noqa: F401
    assert "site-packages" in berg_onnx.__file__  # the installed wheel, not the checkout
    assert (PACKAGE / "models.json").is_file()  # shipped as package data
