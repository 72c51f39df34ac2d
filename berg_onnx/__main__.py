"""``python -m berg_onnx`` = ``berg-onnx``."""

import sys

from berg_onnx.cli import main

sys.exit(main())
