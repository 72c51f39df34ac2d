"""Every command of README.md, run as written, in README order, in one fresh folder.

The folder looks like a fresh clone (its top-level entries are links into this
checkout), so ``python -m export demo`` builds the demo export there and the
examples after it use that export as the README tells a newcomer to. ``python``,
``python3`` and ``berg-onnx`` are this interpreter's, as after the README's
install block (``. .venv/bin/activate``); the Hugging Face cache is empty and
``HF_HUB_OFFLINE=1``, so an example that needs the (placeholder) Hub fails
instead of passing on a cached copy. Blocks that cannot run here are marked in
the README with ``<!-- readme-test: skip REASON -->`` (see readme_blocks.py);
an unmarked block that fails fails this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.docs.readme_blocks import Command, commands, parse_blocks, read, unrunnable

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BLOCKS = read(README)
COMMANDS = commands(BLOCKS)
#: The checkout's entries a fresh clone has (links: the README test writes nothing here).
CLONE_ENTRIES = (
    "berg_onnx",
    "export",
    "tests",
    "benchmarks",
    "web",
    "docs",
    "models.json",
    "pyproject.toml",
    "hatch_build.py",
    "README.md",
)
TIMEOUT_S = {"demo": 600, "default": 240}
_failed: list[str] = []


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder that looks like a fresh clone: links to this checkout's files.

    ``$BERG_README_DEMO`` (for iterating on the README by hand; CI never sets it): a
    finished ``berg-onnx-demo`` folder copied in first, so the demo command finds its
    export built and only encodes."""
    root = tmp_path_factory.mktemp("readme-clone")
    for name in CLONE_ENTRIES:
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    prebuilt = os.environ.get("BERG_README_DEMO")
    if prebuilt:
        shutil.copytree(prebuilt, root / "berg-onnx-demo")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The environment after the README's install block, offline, with an empty cache."""
    shims = tmp_path_factory.mktemp("readme-bin")
    script = Path(sys.executable).parent / "berg-onnx"
    launchers = {  # scripts, not links: a linked venv python would lose its venv
        "python": f'exec "{sys.executable}" "$@"',
        "python3": f'exec "{sys.executable}" "$@"',
        "berg-onnx": f'exec "{script}" "$@"'
        if script.is_file()  # the installed console script, else the same entry point
        else f'exec "{sys.executable}" -m berg_onnx "$@"',
    }
    for name, line in launchers.items():
        (shims / name).write_text(f"#!/bin/sh\n{line}\n")
        (shims / name).chmod(0o755)
    hf = tmp_path_factory.mktemp("readme-hf")
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        ),
        "HF_HOME": str(hf),
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("BERG_ONNX_REPO", "BERG_ONNX_REVISION", "BERG_ONNX_CACHE", "HF_HUB_CACHE"):
        env.pop(name, None)
    return env


def run_command(cmd: Command, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run one README command; AssertionError with its output if it fails."""
    if cmd.lang == "python":
        script = cwd / f"_readme_L{cmd.line}.py"
        script.write_text(cmd.code)
        argv = [sys.executable, script.name]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", cmd.code]
    try:
        result = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"README.md:{cmd.line} ran past {timeout} s:\n{cmd.code}") from e
    output = (result.stdout + result.stderr)[-4000:]
    if result.returncode != 0:
        raise AssertionError(
            f"README.md:{cmd.line} failed (exit {result.returncode}):\n"
            f"{textwrap.indent(cmd.code, '    ')}\n--- output (tail) ---\n{output}"
        )
    return output


def test_every_block_runs_or_is_marked_with_a_reason():
    problems = unrunnable(BLOCKS)
    assert not problems, "\n".join(problems)
    assert any(c.lang == "bash" for c in COMMANDS) and any(c.lang == "python" for c in COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(cmd: Command, clone: Path, env: dict[str, str]):
    if _failed:  # later commands use what earlier ones wrote: report the first failure only
        pytest.fail(f"an earlier README command failed ({_failed[0]}); not run")
    timeout = TIMEOUT_S["demo" if "export demo" in cmd.code else "default"]
    try:
        run_command(cmd, clone, env, timeout)
    except AssertionError:
        _failed.append(f"README.md:{cmd.line}")
        raise


# -- the runner itself: it must be able to fail -------------------------------------------
SAMPLE = """\
Text.

```bash
echo one && \\
  echo two   # a comment
# a comment line
false
```

<!-- readme-test: skip needs a GPU -->
```bash
nvidia-smi
```

```python
raise SystemExit(3)
```

```js
const x = 1;
```

<!-- readme-test: skip -->
```
plain
```
"""


def test_the_runner_splits_commands_and_reads_markers():
    blocks = parse_blocks(SAMPLE)
    assert [b.lang for b in blocks] == ["bash", "bash", "python", "js", ""]
    assert blocks[1].skip == "needs a GPU"
    cmds = commands(blocks)
    assert [c.code.split()[0] for c in cmds] == ["echo", "false", "raise"]
    assert cmds[0].line == 4 and "echo two" in cmds[0].code
    problems = unrunnable(blocks)
    assert len(problems) == 2
    assert "```js block is neither run nor marked" in problems[0]
    assert "needs a reason" in problems[1]


def test_the_runner_fails_on_a_failing_command(tmp_path, env):
    cmds = commands(parse_blocks(SAMPLE))
    run_command(cmds[0], tmp_path, env, 30)  # echo one && echo two: passes
    for failing in cmds[1:]:  # false; a Python block exiting 3
        with pytest.raises(AssertionError, match=r"failed \(exit [13]\)"):
            run_command(failing, tmp_path, env, 30)
