"""What every command shares: the one-line error, the model-source flags, BERG from flags.

Why here and not in each command: every command reports errors the same way (one
line, exit 1; usage errors exit 2), takes the same ``--berg-dir``/``--repo-id``/
``--revision`` flags and builds its BERG the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from berg_onnx.constants import DEFAULT_MODEL_ID, check_positive_int
from berg_onnx.errors import InvalidParameterError
from berg_onnx.source.catalog import load_catalog

if TYPE_CHECKING:
    from berg_onnx.api import BERG

OVERLAP_HELP = "which of several overlapping ROIs wins (default: refuse overlaps)"


class CLIError(Exception):
    """A user error the CLI reports as one line."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other berg-onnx error (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def source_flags() -> argparse.ArgumentParser:
    """The parent parser of every command that reads models: where they come from."""
    catalog = load_catalog()
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--berg-dir", help="local export directory (default: the Hub)")
    source.add_argument("--repo-id", help=f"Hub repo (default: {catalog.hub_repo_id})")
    source.add_argument("--revision", help="Hub revision (default: the pinned one)")
    return source


def add_command(
    sub: argparse._SubParsersAction, name: str, help: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand with the model-source flags, ``help`` as its description, ``examples``
    as its epilog."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        parents=[source_flags()],
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def subjects_help() -> str:
    return f"subject: {', '.join(map(str, load_catalog().model(DEFAULT_MODEL_ID).subjects))}"


def rois_help() -> str:
    return f"ROI: {', '.join(load_catalog().model(DEFAULT_MODEL_ID).roi_names)}"


def progress_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar, no notes on stderr")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force the progress bar on or off (default: on when stderr is a terminal)",
    )


def positive_int(text: str) -> int:
    try:
        return check_positive_int(int(text), "value")
    except (ValueError, InvalidParameterError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def make_berg(args: argparse.Namespace) -> BERG:
    """The BERG the flags name; an unreachable Hub fails at once (interactive use)."""
    from berg_onnx.api import BERG

    batch_size, threads = getattr(args, "batch_size", None), getattr(args, "threads", None)
    if args.berg_dir:
        return BERG(berg_dir=args.berg_dir, batch_size=batch_size, threads=threads)
    return hub_berg(args.repo_id, args.revision, batch_size=batch_size, threads=threads)


def hub_berg(repo_id: str | None, revision: str | None, **kwargs) -> BERG:
    """A BERG on a Hub repo that fails at once when the Hub cannot be reached (interactive
    use: one line naming --berg-dir, not huggingface_hub's ~25 s of retries)."""
    from berg_onnx.api import BERG

    berg = BERG(repo_id=repo_id, revision=revision, **kwargs)
    berg.store.fail_fast = True
    return berg


def show_progress(args: argparse.Namespace) -> bool:
    """--progress/--no-progress if given; else a bar only on a terminal, and not with --quiet."""
    if args.progress is not None:
        return args.progress
    return not args.quiet and sys.stderr is not None and sys.stderr.isatty()


def note(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"berg-onnx: {message}", file=sys.stderr)
