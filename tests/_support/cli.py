"""Running the berg-onnx command line from the tests, two ways.

- In this process (``call_main``, behind the ``cli`` fixture of tests/conftest.py):
  ``berg_onnx.cli.main(argv)`` with stdout and stderr captured. For what the command
  prints and returns (error paths above all), where a process start adds nothing.
- As a user runs it (``cli_process``): ``python -m berg_onnx`` in a subprocess. For what
  only a real process shows: exit codes seen by a shell, pipes, signals, terminals,
  environment variables read at import (the Hub client's), the entry point itself.

Both return a ``subprocess.CompletedProcess`` (``returncode``, ``stdout``, ``stderr``),
so a test reads the same either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _argv(args: Iterable[Any]) -> list[str]:
    return [str(a) for a in args]


def cli_process(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
    """``python -m berg_onnx ARGS`` (str() of each) in a subprocess, output captured as text.

    ``kwargs`` go to ``subprocess.run`` (``cwd``, ``env``, ``timeout``, ...).
    """
    return subprocess.run(
        [sys.executable, "-m", "berg_onnx", *_argv(args)], capture_output=True, text=True, **kwargs
    )


def call_main(capsys: Any, *args: Any) -> subprocess.CompletedProcess:
    """``berg_onnx.cli.main(ARGS)`` in this process, with ``capsys`` capturing its output.

    Exit statuses as the interpreter would give them: ``main``'s return value, or that of
    a ``SystemExit`` (argparse's usage errors, ``--help``, ``--version``). Any other
    exception propagates: in a real process it would be a traceback.
    """
    from berg_onnx.cli import main

    argv = _argv(args)
    capsys.readouterr()  # what the test printed before is not the command's output
    try:
        code: Any = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        err, code = f"{err}{code}\n", 1
    return subprocess.CompletedProcess(["berg-onnx", *argv], code, out, err)


def encode_argv(
    images: str | os.PathLike | Iterable[str | os.PathLike],
    export_dir: Path,
    out: Path,
    *extra: Any,
    roi: str = "V1",
    subject: int = 1,
) -> list[str]:
    """``encode IMAGES --subject S --roi ROI --berg-dir EXPORT --out OUT [extra]`` as argv."""
    given = [images] if isinstance(images, str | os.PathLike) else list(images)
    return _argv(
        [
            "encode",
            *given,
            "--subject",
            subject,
            "--roi",
            roi,
            "--berg-dir",
            export_dir,
            "--out",
            out,
            *extra,
        ]
    )
