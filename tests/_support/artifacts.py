"""Build the files the runtime tests consume: a small synthetic export, the golden
export, and reference responses computed by the export's PyTorch model.

Run once with torch installed, from the repository root
(``python -m tests._support.artifacts OUT``), so that the
torch-free runtime tests can compare against PyTorch without importing it; the
test session fixture calls the same function when torch is available.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
from tests._support.golden import golden_root  # noqa: E402

GOLDEN = golden_root()

#: ROIs of the synthetic test export (small voxel counts keep the suite fast).
TEST_VOXELS = {"V1": 60, "FFA-1": 25, "lateral": 61}
TEST_SUBJECTS = (1, 2)
SEED = 1234


def build(out: Path) -> Path:
    """Write OUT/berg, OUT/export, OUT/golden_export, OUT/reference; returns OUT."""
    import numpy as np
    import torch

    from berg_onnx.source.catalog import load_catalog
    from export import layout
    from export.checkpoint import load_checkpoint
    from export.convert import convert
    from export.onnx_export import reference_preprocess
    from export.reference import build_model
    from export.samples import photographs
    from export.synth import synthesize

    spec = load_catalog().model("fmri-nsd-fwrf")
    out.mkdir(parents=True, exist_ok=True)
    berg = out / "berg"
    synthesize(berg, spec, TEST_SUBJECTS[:1], list(TEST_VOXELS), TEST_VOXELS, SEED, False)
    synthesize(berg, spec, TEST_SUBJECTS[1:], ["V1"], TEST_VOXELS, SEED, False)
    convert(berg, out / "export", spec, progress=False, int8=True)
    if (GOLDEN / "berg_dir").is_dir():
        convert(GOLDEN / "berg_dir", out / "golden_export", spec, progress=False)

    ref = out / "reference"
    ref.mkdir(exist_ok=True)
    photos = photographs(256, 12)  # natural images, not 227: preprocessing is exercised
    np.save(ref / "photos_256_uint8.npy", photos)
    x = reference_preprocess(photos)
    for roi in TEST_VOXELS:
        paths = layout.checkpoint_paths(berg, 1, roi, spec.roi(roi).splits)
        cks = [load_checkpoint(p) for p in paths]
        with torch.no_grad():
            np.save(
                ref / f"sub-01_{roi}.npy",
                build_model([(c.encoder, c.readout) for c in cks])(x).numpy(),
            )
            if len(cks) > 1:  # each split on its own, to check the concatenation order
                for i, c in enumerate(cks, start=1):
                    y = build_model([(c.encoder, c.readout)])(x).numpy()
                    np.save(ref / f"sub-01_{roi}_split-{i}_own-mu.npy", y)
    (out / "artifacts.json").write_text(
        json.dumps({"voxels": TEST_VOXELS, "subjects": TEST_SUBJECTS, "seed": SEED}) + "\n"
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests._support.artifacts OUT_DIR")
    print(build(Path(sys.argv[1])))
