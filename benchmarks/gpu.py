"""python -m benchmarks.gpu EXPORT_DIR BERG_DIR: the CUDA provider against torch on the GPU.

Run where onnxruntime-gpu and a GPU are present (the device machine). Checks
that device="cuda" really runs on CUDA and matches the CPU provider, then
measures images/s end to end (berg_onnx.encode, preprocessing on the CPU
overlapped with inference) and model-only with IO binding (input already on
the GPU), next to the export's PyTorch reference on the same GPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .__main__ import ROIS, gflop_per_image


def _rate(fn, n: int, min_time: float = 3.0) -> float:
    fn()
    best, spent = float("inf"), 0.0
    while spent < min_time:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return n / best


def main(export_dir: Path, berg_dir: Path) -> dict:
    import onnxruntime as ort
    import torch

    from berg_onnx import BERG
    from export import layout
    from export.checkpoint import load_checkpoint
    from export.onnx_export import reference_preprocess
    from export.reference import build_model
    from export.samples import photographs

    images = photographs(256, 256)
    out = {
        "gpu": torch.cuda.get_device_name(0),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "torch": torch.__version__,
        "rois": {},
    }
    gpu = BERG(berg_dir=export_dir)
    cpu = BERG(berg_dir=export_dir)
    for roi, (nv, splits) in ROIS.items():
        model = gpu.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, device="cuda")
        assert model.provider == "CUDAExecutionProvider", model.provider
        ref_cpu = cpu.encode(
            cpu.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, device="cpu"),
            images[:16],
            show_progress=False,
        )
        diff = float(np.abs(gpu.encode(model, images[:16], show_progress=False) - ref_cpu).max())
        r = {"nv": nv, "max_abs_diff_cuda_vs_cpu": diff, "batch": model.batch_size}
        r["e2e_images_per_s"] = _rate(
            lambda m=model: gpu.encode(m, images, show_progress=False), len(images)
        )
        pre = np.concatenate(
            [reference_preprocess(images[i : i + 64]).numpy() for i in range(0, 256, 64)]
        )
        for bs in (32, 128):
            x = ort.OrtValue.ortvalue_from_numpy(pre[:bs], "cuda", 0)
            binding = model.session.io_binding()
            binding.bind_ortvalue_input("images", x)
            binding.bind_output("responses", "cuda")

            def run(b=binding, model=model):
                model.session.run_with_iobinding(b)
                b.synchronize_outputs()

            r[f"model_only_iobinding_b{bs}_images_per_s"] = _rate(
                lambda: [run() for _ in range(4)], 4 * bs
            )
        cks = [load_checkpoint(p) for p in layout.checkpoint_paths(berg_dir, 1, roi, splits)]
        ref = build_model([(c.encoder, c.readout) for c in cks]).cuda()
        xt = torch.from_numpy(pre[:128]).cuda()

        def torch_run(ref=ref, xt=xt):
            with torch.no_grad():
                ref(xt)
            torch.cuda.synchronize()

        r["torch_eager_b128_images_per_s"] = _rate(torch_run, 128)
        r["tflops_berg_b128"] = (
            r["model_only_iobinding_b128_images_per_s"] * gflop_per_image(nv, splits) / 1e3
        )
        out["rois"][roi] = r
        print(roi, json.dumps(r), flush=True)
        del ref, xt
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, indent=2))
