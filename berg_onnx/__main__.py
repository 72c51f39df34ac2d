"""python -m berg_onnx: the berg-onnx command line."""

import sys

from .cli import main

sys.exit(main())
