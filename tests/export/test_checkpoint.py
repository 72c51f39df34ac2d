"""Safe loading of original BERG files: same content as torch.load, no code executed."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from berg_onnx.errors import ModelLoadError  # noqa: E402
from export.checkpoint import (  # noqa: E402
    UnsafePickleError,
    load_checkpoint,
    load_pickled_npy,
)

FWRF = "encoding_models/modality-fmri/train_dataset-nsd/model-fwrf"


@pytest.mark.parametrize("variant", ["berg_dir", "berg_dir_numpy1"])
def test_golden_checkpoint_equals_trusted_torch_load(golden_dir, variant):
    path = golden_dir / variant / FWRF / "encoding_models_weights/weights_sub-01_roi-V1.pt"
    ours = load_checkpoint(path)
    # the golden files are ours to trust; torch.load is only the oracle here
    theirs = torch.load(path, weights_only=False, map_location="cpu")
    enc = theirs["best_params"]["enc"]
    assert list(ours.encoder) == list(enc)
    for k, v in enc.items():
        np.testing.assert_array_equal(ours.encoder[k], v.numpy())
        assert ours.encoder[k].dtype == v.numpy().dtype
    for k, v in theirs["best_params"]["fwrfs"][1].items():
        np.testing.assert_array_equal(ours.readout[k], v.numpy())
    assert (ours.subject, ours.roi, ours.split, ours.nv) == (1, "V1", 1, 40)
    np.testing.assert_array_equal(ours.stim_mean, theirs["stim_mean"])


@pytest.mark.parametrize("variant", ["berg_dir", "berg_dir_numpy1"])
def test_golden_metadata_equals_allow_pickle_load(golden_dir, variant):
    path = golden_dir / variant / FWRF / "metadata/metadata_sub-01_roi-V1.npy"
    ours = load_pickled_npy(path)
    theirs = np.load(path, allow_pickle=True).item()  # trusted oracle, test only
    assert ours.keys() == theirs.keys()
    for group in theirs:
        assert ours[group].keys() == theirs[group].keys()
        for k, v in theirs[group].items():
            np.testing.assert_array_equal(ours[group][k], v)
            assert ours[group][k].dtype == v.dtype


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_zip(path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


def test_malicious_checkpoint_raises_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    payload = pickle.dumps({"args.": None, "best_params": evil}, protocol=2)
    path = tmp_path / "weights_sub-01_roi-V1.pt"
    _torch_zip(path, payload)
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_metadata_raises_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "metadata.npy"
    np.save(path, np.array({"fmri": evil}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="not allowed"):
        load_pickled_npy(path)
    assert not marker.exists()


def _u(text: str) -> bytes:  # BINUNICODE
    return b"X" + len(text).to_bytes(4, "little") + text.encode()


def test_other_gadgets_are_refused(tmp_path):
    for payload in (
        b"\x80\x02cbuiltins\neval\n" + _u("1+1") + b"\x85R.",
        b"\x80\x02csubprocess\nPopen\n" + _u("true") + b"\x85R.",
        b"\x80\x02c_codecs\nencode\n" + _u("x") + _u("rot13") + b"\x86R.",  # refused argument
        b"\x80\x02cnumpy\nndarray\nK\x05\x85R.",  # allowed global, but never called
    ):
        path = tmp_path / "x.pt"
        _torch_zip(path, payload)
        with pytest.raises(UnsafePickleError):
            load_checkpoint(path)
    for payload in (  # text-protocol opcodes never appear in BERG files: refused by the pre-scan
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
    ):
        _torch_zip(path, payload)
        with pytest.raises(ModelLoadError, match="opcode STRING never appears"):
            load_checkpoint(path)


def test_cuda_saved_tensors_load_on_cpu(tmp_path):
    """A pickle naming a 'cuda:0' storage location, as written on a GPU machine."""
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)

    class CudaPickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, torch.UntypedStorage):
                return ("storage", torch.FloatStorage, "0", "cuda:0", 12)
            return None

    t = torch.from_numpy(weights)
    rebuilt = (torch._utils._rebuild_tensor_v2, (t.untyped_storage(), 0, (3, 4), (4, 1), False, {}))

    class Holder:
        def __reduce__(self):
            return rebuilt

    buf = io.BytesIO()
    CudaPickler(buf, protocol=2).dump({"x": Holder()})
    path = tmp_path / "cuda.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", weights.tobytes())
    # torch itself (the oracle) needs map_location on a CPU-only machine
    assert torch.equal(torch.load(path, map_location="cpu", weights_only=True)["x"], t)
    from export.checkpoint import _load_torch_zip

    np.testing.assert_array_equal(_load_torch_zip(path)["x"], weights)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights_sub-01_roi-V1.pt"
    path.write_bytes(b"hello")
    with pytest.raises(ModelLoadError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)
    npy = tmp_path / "m.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ModelLoadError, match="pickled dict"):
        load_pickled_npy(npy)
