"""``python -m berg_onnx.web`` = ``berg-onnx web``."""

import sys

from berg_onnx.cli import main

sys.exit(main(["web", *sys.argv[1:]]))
