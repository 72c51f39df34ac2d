"""Bad input gets a clear error naming what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from berg_onnx import (
    BERG,
    BERGError,
    InvalidParameterError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceError,
    StimulusError,
)


@pytest.fixture(scope="module")
def berg(export_dir) -> BERG:
    return BERG(berg_dir=export_dir)


@pytest.fixture(scope="module")
def model(berg):
    return berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")


def test_hierarchy_like_the_original():
    for cls in (ModelNotFoundError, ModelLoadError, InvalidParameterError, StimulusError):
        assert issubclass(cls, BERGError)
    assert issubclass(ResourceError, BERGError)
    assert issubclass(StimulusError, ValueError)  # catchable as the builtin too


@pytest.mark.parametrize(
    "stimulus, words",
    [
        (np.zeros((2, 3, 64, 64), np.float32), "float32"),
        (np.full((1, 3, 8, 8), np.nan), "NaN"),
        (np.zeros((2, 3, 64, 64), bool), "bool"),
        (np.empty((2, 3, 8, 8), object), "object"),
        (np.zeros((3, 64, 64), np.uint8), "x[None]"),
        (np.zeros((2, 64, 64, 3), np.uint8), "transpose"),
        (np.zeros((2, 1, 64, 64), np.uint8), "1 channels"),
        (np.zeros((0, 3, 64, 64), np.uint8), "empty"),
        (np.full((1, 3, 8, 8), 256, np.int64), "0-255"),
        (np.full((1, 3, 8, 8), -1, np.int16), "0-255"),
        ([], "empty"),
        ([1, 2], "PIL"),
        ({"a": 1}, "expected"),
        ("does/not/exist.png", "not found"),
    ],
)
def test_bad_stimuli(berg, model, stimulus, words):
    with pytest.raises(StimulusError, match="(?i)" + words.replace("[", r"\[").replace("]", r"\]")):
        berg.encode(model, stimulus, show_progress=False)


def test_unreadable_image_file(berg, model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(StimulusError, match="Cannot read"):
        berg.encode(model, [bad], show_progress=False)


def test_unknown_model_subject_roi_selection(berg):
    with pytest.raises(ModelNotFoundError, match="fmri-nsd-fwrf"):
        berg.get_encoding_model("eeg-things", 1, {"roi": "V1"})
    with pytest.raises(InvalidParameterError, match="1, 2, 3, 4, 5, 6, 7, 8"):  # as the original
        berg.get_encoding_model("fmri-nsd-fwrf", 9, {"roi": "V1"})
    with pytest.raises(ModelNotFoundError, match="V1, V2, V3"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V7"})
    with pytest.raises(InvalidParameterError, match="valid keys: roi"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1", "hemisphere": "lh"})
    with pytest.raises(InvalidParameterError, match="'roi'"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, None)
    with pytest.raises(InvalidParameterError, match="auto, cpu, cuda"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="tpu")
    with pytest.raises(ModelNotFoundError, match="V2"):  # in the catalogue, not in this export
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V2"})


def test_bad_batch_size(berg, model):
    with pytest.raises(InvalidParameterError, match="batch_size"):
        berg.encode(model, np.zeros((1, 3, 8, 8), np.uint8), batch_size=0, show_progress=False)


def test_original_berg_dir_points_to_the_export_command(golden_dir):
    berg = BERG(berg_dir=golden_dir / "berg_dir")
    with pytest.raises(ModelLoadError, match="python -m export convert"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})


def test_missing_dir_and_non_export_dir(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        BERG(berg_dir=tmp_path / "nope").get_model_metadata("fmri-nsd-fwrf", 1, "V1")
    with pytest.raises(ModelNotFoundError, match="manifest.json"):
        BERG(berg_dir=tmp_path).get_model_metadata("fmri-nsd-fwrf", 1, "V1")


def test_corrupted_file_is_refused(export_dir, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    target = next(copy.glob("*roi-FFA-1.onnx"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        BERG(berg_dir=copy).get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "FFA-1"})


def test_cuda_on_cpu_only_install_raises_resource_error(berg):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ResourceError, match="CUDA"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cuda")
    auto = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="auto")
    assert auto.provider == "CPUExecutionProvider"


def test_precision_choices(berg, golden_export):
    with pytest.raises(InvalidParameterError, match="fp32, int8"):
        berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, precision="fp16")
    golden = BERG(berg_dir=golden_export)  # exported without --int8
    with pytest.raises(ModelNotFoundError, match="--int8"):
        golden.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, precision="int8")
