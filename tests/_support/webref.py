"""Shared helpers of the web tests: Node, the web/ package, reference files.

The JavaScript under test (web/src) is compared with berg_onnx on data
written here by Python; Node and Chromium must be present where CI says so
(``BERG_EXPECT_WEB=1``, set by tests/run.sh), else these tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
CHROMIUM = Path("/usr/bin/chromium")
#: Flags that work here: no sandbox (root in a container), no GPU, nothing phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(ok: bool, what: str) -> None:
    """Skip without ``what``, or fail where CI promised it (BERG_EXPECT_WEB=1)."""
    if ok:
        return
    if os.environ.get("BERG_EXPECT_WEB") == "1":
        pytest.fail(f"BERG_EXPECT_WEB=1 but {what}")
    pytest.skip(what)


def node_binary() -> str:
    node = shutil.which("node")
    require(node is not None, "node (20+) is not installed")
    require(
        (WEB / "node_modules" / "onnxruntime-web").is_dir(),
        "web/node_modules is missing; run `npm ci` in web/",
    )
    return node


def run_node_test(test_file: str, reference: Path, timeout: float = 600) -> int:
    """Run one web/test file with ``node --test``; fail with its output unless every test
    passes. Returns the number of tests that passed."""
    node = node_binary()
    env = dict(os.environ, BERG_WEB_REFERENCE=str(reference))
    proc = subprocess.run(
        [node, "--test", "--test-reporter=spec", f"test/{test_file}"],
        cwd=WEB,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"node --test test/{test_file} failed (exit {proc.returncode}):\n{output}")
    passed = re.search(r"^\S+ pass (\d+)$", output, re.M)
    failed = re.search(r"^\S+ fail (\d+)$", output, re.M)
    if not passed or not failed or failed.group(1) != "0":
        pytest.fail(f"cannot read a clean summary from node --test test/{test_file}:\n{output}")
    return int(passed.group(1))


def write_image(folder: Path, name: str, hwc: np.ndarray) -> dict:
    """Raw interleaved uint8 pixels + their shape, as the Node tests read them."""
    hwc = np.ascontiguousarray(hwc, dtype=np.uint8)
    (folder / f"{name}.u8").write_bytes(hwc.tobytes())
    h, w, c = hwc.shape
    return {"name": name, "file": f"{name}.u8", "height": h, "width": w, "channels": c}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")
