"""Every int8 level ``convert --int8`` may choose runs in onnxruntime-web as in berg_onnx.

The page offers the int8 tier, and the scheme is chosen per model, so a graph
mixing all levels (s8, the residual s8x2 with its Add, layers left in fp32) is
written into a copy of the test export, served on loopback, and encoded by
web/src in Node (web/test/encode.test.js) against berg_onnx's own responses.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG
from berg_onnx.source.manifest import FileEntry, Manifest
from berg_onnx.web import make_server, start_in_thread, url_of
from tests._support.webref import WEB, node_binary, run_node_test, write_image, write_json

pytest.importorskip("onnx")
pytest.importorskip("skimage", reason="natural photographs come from scikit-image (export extra)")

from export.int8_schemes import Scheme, quantize  # noqa: E402
from export.samples import photographs  # noqa: E402

SCHEMES = {"V1": "s8x2/s8/fp32", "FFA-1": "fp32/s8x2/s8"}
#: A model for which convert --int8 found no scheme: the page must say why.
ABSENT = ("lateral", "no int8 scheme met the tolerance (a test's reason)")


def _with_schemes(export_dir: Path, out: Path) -> Path:
    shutil.copytree(export_dir, out)
    manifest = Manifest.load(out / "manifest.json")
    for roi, name in SCHEMES.items():
        entry = manifest.get("fmri-nsd-fwrf", 1, roi)
        int8 = entry.onnx_int8.name
        quantize(out / entry.onnx.name, out / int8, Scheme.parse(name))
        scheme = {**(entry.int8_scheme or {}), "name": name}
        manifest.add(
            dataclasses.replace(entry, onnx_int8=FileEntry.of(out, int8), int8_scheme=scheme)
        )
    entry = manifest.get("fmri-nsd-fwrf", 1, ABSENT[0])
    (out / entry.onnx_int8.name).unlink()
    manifest.add(
        dataclasses.replace(entry, onnx_int8=None, int8_scheme=None, int8_absent_reason=ABSENT[1])
    )
    manifest.write(out / "manifest.json")
    return out


def test_mixed_int8_schemes_match_berg_onnx_in_node(export_dir, tmp_path):
    served = _with_schemes(export_dir, tmp_path / "export")
    tampered = shutil.copytree(served, tmp_path / "tampered")
    v1 = Manifest.load(tampered / "manifest.json").get("fmri-nsd-fwrf", 1, "V1").onnx.name
    data = bytearray((tampered / v1).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / v1).write_bytes(bytes(data))
    servers = [make_server(folder, port=0, quiet=True) for folder in (served, tampered)]
    for s in servers:
        start_in_thread(s)
    try:
        photos = photographs(160, 3)
        cases = [
            write_image(tmp_path, f"p{i}", np.ascontiguousarray(p.transpose(1, 2, 0)))
            for i, p in enumerate(photos)
        ]
        berg = BERG(berg_dir=served, threads=1)
        models = []
        for roi in SCHEMES:
            model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, "cpu", "int8")
            fp32 = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, "cpu", "fp32")
            expected = np.concatenate([berg.encode(model, p[None]) for p in photos])
            # a real int8 graph: close to fp32 but not equal to it
            assert 0 < np.abs(expected - berg.encode(fp32, photos)).max() < 0.05
            (tmp_path / f"{roi}.f32").write_bytes(expected.astype("<f4").tobytes())
            models.append(
                {"subject": 1, "roi": roi, "precision": "int8", "nv": expected.shape[1]}
                | {"expected": f"{roi}.f32"}
            )
        urls = [url_of(s) + "export/" for s in servers]
        write_json(
            tmp_path / "encode.json",
            {"base": urls[0], "tampered": urls[1], "images": cases, "models": models},
        )
        assert run_node_test("encode.test.js", tmp_path) == len(models) + 3
        # precision 'int8' on a model without the tier names the export's reason
        script = (
            'import { loadModel } from "./src/berg.js";'
            f'loadModel("{urls[0]}", {{ subject: 1, roi: "{ABSENT[0]}", precision: "int8" }})'
            '.then(() => process.exit(3), (e) => { console.log(e.name + ": " + e.message); });'
        )
        done = subprocess.run(
            [node_binary(), "--input-type=module", "-e", script],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("ModelNotFoundError: fmri-nsd-fwrf/sub-01/lateral has no")
        assert f"has no int8 tier: {ABSENT[1]}. Use precision 'fp32'" in done.stdout
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
