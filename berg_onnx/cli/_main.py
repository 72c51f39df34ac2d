"""The ``berg-onnx`` entry point: the parser of every command, and the error contract.

Errors are one line on stderr and a non-zero exit code, never a traceback:
exit 1 for a berg-onnx error (``BERGError``, ``CLIError``, ``OSError``), 2 for a
usage error, 130 for Ctrl-C; a closed pipe (``berg-onnx list | head``) exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from berg_onnx._version import __version__
from berg_onnx.cli import brain, control, doctor, encode, models, run, web
from berg_onnx.cli._common import CLIError, Parser
from berg_onnx.errors import BERGError

#: Modules with one command group each, in the order ``--help`` lists them.
COMMANDS = (encode, run, control, brain, models, doctor, web)


def build_parser() -> argparse.ArgumentParser:
    epilog = "\n\n".join(
        text
        for module in COMMANDS
        for name, text in vars(module).items()
        if name.endswith("EXAMPLES")
    )
    parser = Parser(
        prog="berg-onnx",
        description="Predict fMRI responses to images with BERG's fmri-nsd-fwrf models "
        "on onnxruntime.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"berg-onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as given
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    if args.berg_dir and (args.repo_id or args.revision):
        print(
            "berg-onnx: error: give --berg-dir or --repo-id/--revision, not both", file=sys.stderr
        )
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `berg-onnx list | head`: the reader left; not an error
        _silence_stdout()
        return 0
    except (CLIError, BERGError, OSError) as e:  # BERGError covers every berg_onnx error
        message = " ".join(str(e).split())  # one line
        print(f"berg-onnx: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("berg-onnx: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
