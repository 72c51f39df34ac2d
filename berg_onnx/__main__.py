"""python -m berg_onnx: the berg-onnx command line."""

import sys

from berg_onnx.cli._legacy import main

sys.exit(main())
