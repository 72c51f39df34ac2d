"""`berg-onnx web`: serve the browser page and a local export on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path

from berg_onnx.web.server import add_arguments

EXAMPLES = """examples:
  berg-onnx web --berg-dir export_dir              # then open http://127.0.0.1:8765/
  berg-onnx web --berg-dir export_dir --port 9000"""


def run(args: argparse.Namespace) -> int:
    from berg_onnx.web.server import serve  # http.server: only when serving

    serve(Path(args.berg_dir), args.port, Path(args.web_dir) if args.web_dir else None)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `web` command's options (no model-source flags: it serves a local export)."""
    help = "serve the browser page and a local export on 127.0.0.1 (needs a checkout's web/)"
    p = sub.add_parser(
        "web",
        help=help,
        description=help,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run, repo_id=None, revision=None)
