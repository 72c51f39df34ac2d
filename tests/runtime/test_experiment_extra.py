"""The [zarr] extra stays optional: `import berg_onnx` never imports zarr, and running an
experiment without it is one error naming the extra (runs in the torch-free stage too,
where zarr is really absent)."""

from __future__ import annotations

import subprocess
import sys


def test_import_berg_onnx_does_not_import_zarr():
    code = "import sys, berg_onnx, berg_onnx.experiment; print('zarr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_missing_zarr_is_one_line_naming_the_extra(export_dir, tmp_path):
    code = (
        "import sys; sys.modules['zarr'] = None\n"  # as if zarr were not installed
        "import numpy as np\n"
        "from berg_onnx import BERG\n"
        "try:\n"
        f"    BERG(berg_dir={str(export_dir)!r}).run(np.zeros((1, 3, 8, 8), np.uint8),\n"
        f"        store={str(tmp_path / 'x.zarr')!r})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert 'ResourceError experiment stores need zarr: pip install "berg-onnx[zarr]"' in out.stdout
    assert not (tmp_path / "x.zarr").exists()
    cli = [
        sys.executable,
        "-c",
        "import sys; sys.modules['zarr'] = None\nfrom berg_onnx.cli import main; sys.exit(main())",
        "run",
        str(tmp_path),
        "--subjects",
        "1",
        "--rois",
        "V1",
        "--berg-dir",
        str(export_dir),
        "--out",
        str(tmp_path / "y.zarr"),
    ]
    run = subprocess.run(cli, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0
    assert 'pip install "berg-onnx[zarr]"' in run.stderr
