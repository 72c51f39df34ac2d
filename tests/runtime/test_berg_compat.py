"""BERG's quickstart and fMRI-tutorial calls, replayed against an export.

Every value is checked against what BERG returns for these calls (the structures in
../shared/spec/fwrf-nsd.md, copied below as BERG_*), not against berg-onnx's own
output: code written for BERG must run with only the import changed.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from berg_onnx import BERG, BERGError, InvalidParameterError, ModelNotFoundError
from berg_onnx.source import cards
from berg_onnx.source.catalog import load_catalog

MODEL = "fmri-nsd-fwrf"
TOL = 1e-4

BERG_MODELS = ["fmri-nsd-fwrf"]
BERG_CATALOG = {"fMRI": ["Natural Scenes Dataset (NSD) (subject-native volume space)"]}
BERG_DESCRIBE_KEYS = [
    "description",
    "example_usage",
    "input",
    "model_id",
    "model_info",
    "output",
    "parameters",
    "parameters_by_function",
    "performance",
]
BERG_ROIS = [
    "V1", "V2", "V3", "hV4", "EBA", "FBA-2", "OFA", "FFA-1", "FFA-2", "PPA", "RSC", "OPA",
    "OWFA", "VWFA-1", "VWFA-2", "mfs-words", "early", "midventral", "midlateral",
    "midparietal", "parietal", "lateral", "ventral",
]  # fmt: skip
# describe(...)["parameters"] of BERG, free-text "description" fields left out
BERG_PARAMETERS = {
    "subject": {
        "type": "int",
        "required": True,
        "valid_values": [1, 2, 3, 4, 5, 6, 7, 8],
        "example": 1,
        "function": "get_encoding_model",
    },
    "selection": {
        "type": "dict",
        "required": True,
        "function": "get_encoding_model",
        "properties": {"roi": {"type": "str", "valid_values": BERG_ROIS, "example": "V1"}},
    },
    "stimulus": {
        "type": "numpy.ndarray",
        "required": True,
        "shape": ["batch_size", 3, "height", "width"],
        "example": "An array of shape [100, 3, 224, 224] representing 100 RGB images.",
        "function": "encode",
    },
    "device": {
        "type": "str",
        "required": False,
        "valid_values": ["cpu", "cuda", "auto"],
        "default": "auto",
        "example": "auto",
        "function": "encode",
    },
}
BERG_MODEL_INFO = {
    "modality": "fMRI",
    "training_dataset": "Natural Scenes Dataset (NSD) (subject-native volume space)",
}
# voxels per ROI for subject 1, as the card lists them
BERG_VOXELS_SUB1 = dict(
    zip(
        BERG_ROIS,
        [1350, 1433, 1187, 687, 2971, 430, 355, 484, 310, 1033, 566, 1611, 464, 773, 505, 165,
         5917, 986, 834, 950, 3548, 7799, 7604],
        strict=True,
    )
)  # fmt: skip
BERG_METADATA = {  # get_model_metadata / encode(..., return_metadata=True): key -> shape
    "fmri": {"ncsnr": ("nv",), "roi_mask_volume": (81, 104, 83), "fmri_affine": (4, 4)},
    "encoding_models": {
        "r2": ("nv",),
        "noise_ceiling": ("nv",),
        "explained_variance": ("nv",),
        "train_img_num": (9000,),
        "val_img_num": (485,),
        "test_img_num": (515,),
    },
}


def _without_descriptions(value):
    if isinstance(value, dict):
        return {k: _without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    return value


def _voxel_counts(text: str) -> dict[str, int]:
    """ROI: count lines of the card's output description (BERG writes 1,350)."""
    found = re.findall(r"^\s*-\s*([\w-]+):\s*([\d,]+)\s*$", text, flags=re.M)
    return {roi: int(n.replace(",", "")) for roi, n in found}


@pytest.fixture(scope="module")
def berg(export_dir) -> BERG:
    """tests/conftest.py's berg, but built as BERG's tutorials do: berg_dir positional."""
    return BERG(export_dir)


# -- the catalogue calls -------------------------------------------------------------
def test_list_models(berg, capsys):
    assert berg.list_models() == BERG_MODELS
    assert capsys.readouterr().out == ""


def test_get_model_catalog_structure_and_printout(berg, capsys):
    assert berg.get_model_catalog() == BERG_CATALOG
    assert berg.get_model_catalog(False) == BERG_CATALOG
    assert capsys.readouterr().out == ""  # print_format=False prints nothing
    assert berg.get_model_catalog(print_format=True) == BERG_CATALOG
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Available Modalities and Datasets:" and set(lines[1]) == {"="}
    modalities = [ln[2:] for ln in lines if ln.startswith("• ")]
    datasets = [ln.split("└─ ", 1)[1] for ln in lines if "└─ " in ln]
    assert modalities == [m.upper() for m in BERG_CATALOG]  # BERG prints "• FMRI"
    assert datasets == [d for ds in BERG_CATALOG.values() for d in ds]


def test_describe_returns_bergs_structure(berg, capsys):
    info = berg.describe(MODEL)
    printed = capsys.readouterr().out
    assert sorted(info) == BERG_DESCRIBE_KEYS
    assert info["model_id"] == MODEL
    assert _without_descriptions(info["parameters"]) == BERG_PARAMETERS
    assert list(info["parameters"]) == list(BERG_PARAMETERS)
    by_function = _without_descriptions(info["parameters_by_function"])
    assert by_function == {
        "get_encoding_model": {k: BERG_PARAMETERS[k] for k in ("subject", "selection")},
        "encode": {k: BERG_PARAMETERS[k] for k in ("stimulus", "device")},
    }
    for key, value in BERG_MODEL_INFO.items():
        assert info["model_info"][key] == value
    assert set(info["model_info"]) == {
        "modality",
        "training_dataset",
        "model_architecture",
        "creator",
    }
    assert info["input"]["type"] == "numpy.ndarray"
    assert info["input"]["shape"] == ["batch_size", 3, "height", "width"]
    assert info["output"]["type"] == "numpy.ndarray"
    assert info["output"]["shape"] == ["batch_size", "n_voxels"]
    assert [d["name"] for d in info["output"]["dimensions"]] == ["batch_size", "n_voxels"]
    assert _voxel_counts(info["output"]["description"]) == BERG_VOXELS_SUB1
    assert info["performance"]["accuracy_plots"]
    for text in (info["description"], info["example_usage"]):
        assert isinstance(text, str) and text
    # the printed card: BERG's sections, in BERG's order
    sections = ["🧠 Model: fmri-nsd-fwrf", "Modality: fMRI", "Training dataset: Natural Scenes",
                "📋 Description:", "📥 Input:", "📤 Output:", "📌 Parameters for encode():",
                "📌 Parameters for get_encoding_model():", "📊 Performance:", "📚 References:",
                "📦 Example Usage:"]  # fmt: skip
    at = [printed.find(s) for s in sections]
    assert -1 not in at and at == sorted(at), dict(zip(sections, at, strict=True))
    for roi in BERG_ROIS:
        assert roi in printed


def test_describe_answers_do_not_share_state(berg, capsys):
    first = berg.describe(MODEL)
    first["parameters"]["subject"]["valid_values"].append(99)
    first["model_info"]["modality"] = "changed"
    second = berg.describe(MODEL)
    assert _without_descriptions(second["parameters"]) == BERG_PARAMETERS
    assert second["model_info"]["modality"] == "fMRI"


def test_describe_example_usage_runs(berg, export_dir, photos, capsys):
    code = berg.describe(MODEL)["example_usage"]
    assert code.startswith("from berg_onnx import BERG")
    path = re.search(r'BERG\("([^"]+)"\)', code).group(1)
    scope = {"stimulus": photos[:2]}
    exec(code.replace(path, str(export_dir)), scope)
    assert scope["responses"].shape == (2, 60) and scope["responses"].dtype == np.float32


def test_model_instance_methods_of_berg(berg, photos, capsys):
    model = berg.get_encoding_model(MODEL, subject=1, selection={"roi": "V1"})
    assert np.array_equal(model.generate_response(photos[:3]), berg.encode(model, photos[:3]))
    assert _without_descriptions(model.describe()["parameters"]) == BERG_PARAMETERS


# -- the card that ships, against the catalogue ----------------------------------------
def test_every_catalogue_model_has_a_card_that_agrees_with_it():
    catalog = load_catalog()
    assert set(cards.card_ids()) >= set(catalog.models)
    for model_id, spec in catalog.models.items():
        card = cards.load_card(model_id)
        params = card["parameters"]
        assert params["subject"]["valid_values"] == list(spec.subjects)
        assert params["selection"]["properties"]["roi"]["valid_values"] == list(spec.roi_names)
        assert _voxel_counts(card["output"]["description"]) == spec.voxels[1]


# -- the tutorial, call by call --------------------------------------------------------
def test_quickstart_and_fmri_tutorial_calls(berg, artifacts_dir, photos, capsys):
    assert berg.list_models() == BERG_MODELS
    assert berg.get_model_catalog(print_format=True) == BERG_CATALOG
    info = berg.describe("fmri-nsd-fwrf")
    rois = info["parameters"]["selection"]["properties"]["roi"]["valid_values"]
    subjects = info["parameters"]["subject"]["valid_values"]
    assert rois == BERG_ROIS and subjects == list(range(1, 9))

    images = photos.astype(np.int64)  # BERG's tutorials pass int arrays
    fwrf_model = berg.get_encoding_model(
        model_id="fmri-nsd-fwrf", subject=1, selection={"roi": "V1"}, device="auto"
    )
    insilico = berg.encode(fwrf_model, images)
    expected = np.load(artifacts_dir / "reference" / "sub-01_V1.npy")  # BERG's PyTorch model
    assert insilico.dtype == np.float32 and insilico.shape == expected.shape
    assert np.abs(insilico - expected).max() <= TOL

    insilico2, metadata = berg.encode(fwrf_model, images, return_metadata=True)
    assert np.array_equal(insilico2, insilico)
    metadata2 = berg.get_model_metadata("fmri-nsd-fwrf", subject=1, roi="V1")
    nv = insilico.shape[1]
    for meta in (metadata, metadata2):
        assert {g: set(v) for g, v in meta.items()} == {g: set(v) for g, v in BERG_METADATA.items()}
        for group, arrays in BERG_METADATA.items():
            for name, shape in arrays.items():
                want = tuple(nv if s == "nv" else s for s in shape)
                assert meta[group][name].shape == want, (group, name)
                assert np.array_equal(meta[group][name], metadata[group][name])
    assert metadata["fmri"]["roi_mask_volume"].dtype == bool

    # the tutorial's loop back into volume space
    mask = metadata["fmri"]["roi_mask_volume"]
    volumes = np.zeros((len(insilico), *mask.shape), np.float32)
    for i, response in enumerate(insilico):
        volumes[i][mask] = response
    assert int(mask.sum()) == nv
    assert np.array_equal(volumes[:, mask], insilico)

    # every ROI the card lists, for the subjects this export holds
    held = berg.get_catalog_details()[MODEL]["rois"]
    assert held == rois
    for roi in ("V1", "FFA-1", "lateral"):
        model = berg.get_encoding_model(model_id="fmri-nsd-fwrf", subject=1, selection={"roi": roi})
        out = berg.encode(model, images[:4])
        ref = np.load(artifacts_dir / "reference" / f"sub-01_{roi}.npy")[:4]
        assert np.abs(out - ref).max() <= TOL
        meta = berg.get_model_metadata("fmri-nsd-fwrf", subject=1, roi=roi)
        assert int(meta["fmri"]["roi_mask_volume"].sum()) == out.shape[1]


# -- BERG's errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.describe("fmri-nsd-nope"),
        lambda b: b.get_encoding_model("fmri-nsd-nope", subject=1, selection={"roi": "V1"}),
        lambda b: b.get_model_metadata("fmri-nsd-nope", subject=1, roi="V1"),
    ],
    ids=["describe", "get_encoding_model", "get_model_metadata"],
)
def test_unknown_model_id_is_bergs_model_not_found(berg, call):
    with pytest.raises(ModelNotFoundError) as e:
        call(berg)
    assert isinstance(e.value, BERGError)
    msg = str(e.value)
    assert "'fmri-nsd-nope' not found" in msg and "fmri-nsd-fwrf" in msg  # and the fix


@pytest.mark.parametrize(
    "call, missing",
    [
        (lambda b: b.get_encoding_model("fmri-nsd-fwrf", subject=1), "selection"),
        (lambda b: b.get_encoding_model("fmri-nsd-fwrf", selection={"roi": "V1"}), "subject"),
        (lambda b: b.get_model_metadata("fmri-nsd-fwrf", roi="V1"), "subject"),
        (lambda b: b.get_model_metadata("fmri-nsd-fwrf"), "subject"),
    ],
    ids=["model-selection", "model-subject", "metadata-subject", "metadata-nothing"],
)
def test_missing_parameters_are_bergs_invalid_parameter(berg, call, missing):
    with pytest.raises(InvalidParameterError) as e:
        call(berg)
    msg = str(e.value)
    assert missing in msg and ("required" in msg.lower() or "missing" in msg.lower())


def test_card_is_a_copy_and_unknown_cards_are_refused():
    card = cards.load_card(MODEL)
    card["parameters"].clear()
    assert cards.load_card(MODEL)["parameters"]
    with pytest.raises(ModelNotFoundError):
        cards.load_card("../../models")
    assert copy.deepcopy(cards.describe_card(cards.load_card(MODEL)))["model_id"] == MODEL
