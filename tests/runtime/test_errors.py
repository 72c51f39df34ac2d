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

N_PHOTOS = 2  # the shared photos fixture (tests/conftest.py) gives the first two


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


# -- issue 11: BERG-compatible arguments (finding 8) -------------------------------------------
@pytest.mark.parametrize("subject", [1, np.int64(1), np.int32(1), np.uint8(1), 1.0, np.float64(1)])
def test_subject_as_numpy_integer_or_integral_float(berg, subject):
    a = berg.get_encoding_model("fmri-nsd-fwrf", subject, {"roi": "V1"}, device="cpu")
    assert a is berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    assert berg.get_model_metadata("fmri-nsd-fwrf", subject, "V1")["fmri"]["ncsnr"].shape == (60,)


def test_subjects_from_np_arange(berg):
    for s in np.arange(1, 3):
        assert berg.get_encoding_model("fmri-nsd-fwrf", s, {"roi": "V1"}).subject == s


@pytest.mark.parametrize("subject", [True, np.bool_(True), 1.5, float("nan"), 0, 9, -1, None, [1]])
def test_bad_subjects_are_invalid_parameters(berg, subject):
    with pytest.raises(InvalidParameterError, match="1, 2, 3, 4, 5, 6, 7, 8"):
        berg.get_encoding_model("fmri-nsd-fwrf", subject, {"roi": "V1"})


def test_cpu_and_auto_share_one_model_without_cuda(export_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: auto means the GPU")
    berg = BERG(berg_dir=export_dir)
    auto = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="auto")
    assert auto is berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")


def test_a_long_lived_berg_notices_a_re_export(export_dir, golden_export, tmp_path, photos):
    import shutil

    from berg_onnx.source.manifest import Manifest

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    berg = BERG(berg_dir=copy)
    before = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    assert before.n_voxels == 60
    # re-export V1 in place: new files, new manifest (written atomically, as convert does)
    for suffix in (".onnx", ".npz"):
        name = f"fmri-nsd-fwrf_sub-01_roi-V1{suffix}"
        shutil.copy(golden_export / name, copy / name)
    manifest = Manifest.load(copy / "manifest.json")
    manifest.add(Manifest.load(golden_export / "manifest.json").get("fmri-nsd-fwrf", 1, "V1"))
    manifest.write(copy / "manifest.json")
    after = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    assert after.n_voxels == 40
    assert berg.encode(after, photos[:1], show_progress=False).shape == (1, 40)
    assert berg.get_model_metadata("fmri-nsd-fwrf", 1, "V1")["fmri"]["ncsnr"].shape == (40,)


# -- issue 11: messages that suggest the right fix (finding 12) --------------------------------
@pytest.mark.parametrize(
    "stimulus, fix",
    [
        (np.zeros((2, 64, 64, 3), np.uint8), "x.transpose(0, 3, 1, 2)"),
        (np.zeros((64, 64, 3), np.uint8), "x.transpose(2, 0, 1)[None]"),
        (np.zeros((3, 64, 64), np.uint8), "x[None]"),
        (np.zeros((2, 1, 64, 64), np.uint8), "np.repeat(x, 3, axis=1)"),
        (np.zeros((64, 64), np.uint8), "np.repeat(x[None, None], 3, axis=1)"),
        (np.zeros((5, 64, 64), np.uint8), "np.repeat(x[:, None], 3, axis=1)"),
        (np.full((1, 3, 8, 8), 0.5, np.float32), "(x * 255).round().astype(np.uint8)"),
        (np.full((1, 3, 8, 8), 200.0, np.float64), "x.round().astype(np.uint8)"),
        (np.full((1, 3, 8, 8), 1000, np.uint16), "// 257"),
        (np.zeros((2, 8, 8, 4), np.uint8), "load_image(PIL.Image.fromarray(im))"),
    ],
)
def test_each_message_suggests_the_fix_for_its_input(berg, model, stimulus, fix):
    with pytest.raises(StimulusError) as info:
        berg.encode(model, stimulus, show_progress=False)
    assert fix in str(info.value)
    if stimulus.ndim == 4 and stimulus.dtype.kind == "f" and stimulus.max() > 1:
        assert "x * 255" not in str(info.value)  # would wrap values already in 0-255


@pytest.mark.parametrize(
    "stimulus",
    [
        np.full((1, 3, 8, 8), 300.0),
        np.full((1, 3, 8, 8), -0.5, np.float32),
        np.full((1, 3, 8, 8), 70000, np.int64),
        np.full((1, 3, 8, 8), -3, np.int16),
    ],
)
def test_no_suggestion_that_wraps_silently(berg, model, stimulus):
    with pytest.raises(StimulusError) as info:
        berg.encode(model, stimulus, show_progress=False)
    message = str(info.value)
    assert "astype(np.uint8)" not in message.replace("plain astype", "")


def test_suggested_fixes_work(berg, model):
    """Apply each suggestion to its input: the result is accepted, and means the same image."""
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    ref = berg.encode(model, x.transpose(0, 3, 1, 2), show_progress=False)
    np.testing.assert_array_equal(
        berg.encode(model, x[0].transpose(2, 0, 1)[None], show_progress=False), ref[:1]
    )
    g = x[..., 0]
    np.testing.assert_array_equal(
        berg.encode(model, np.repeat(g[0][None, None], 3, axis=1), show_progress=False),
        berg.encode(model, np.repeat(g[:1, None], 3, axis=1), show_progress=False),
    )
    f = x.transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_array_equal(
        berg.encode(model, f.round().astype(np.uint8), show_progress=False), ref
    )
    np.testing.assert_array_equal(
        berg.encode(model, ((f / 255) * 255).round().astype(np.uint8), show_progress=False), ref
    )


@pytest.mark.parametrize(
    "stimulus, fix",
    [
        ([np.zeros((3, 8, 8), np.uint8)] * 2, "np.stack(images)"),
        (memoryview(np.zeros((1, 3, 8, 8), np.uint8)), "np.asarray(x)"),
    ],
)
def test_containers_get_a_conversion_hint(berg, model, stimulus, fix):
    with pytest.raises(StimulusError) as info:
        berg.encode(model, stimulus, show_progress=False)
    assert fix in str(info.value)


def test_a_folder_path_points_to_scan_images(berg, model, tmp_path):
    with pytest.raises(StimulusError, match="scan_images"):
        berg.encode(model, str(tmp_path), show_progress=False)
