"""The cache of graphs onnxruntime optimised on this machine (berg_onnx/utils/optimized.py).

Every test runs real onnxruntime sessions on the synthetic test export, with a private
cache folder; responses through the cache are compared bit for bit with a session
made without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG, as_stimulus
from berg_onnx.utils import optimized

ROI = {"roi": "V1"}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "optimized"
    monkeypatch.setenv(optimized.ENV_SESSION_CACHE, str(folder))
    monkeypatch.delenv(optimized.ENV_SESSION_CACHE_MAX_BYTES, raising=False)
    return folder


def entries(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if optimized._KEY.match(p.name) and not p.is_symlink()
    )


def load(export_dir, precision="fp32", subject=1, selection=ROI):
    berg = BERG(berg_dir=export_dir)
    return berg.get_encoding_model(
        "fmri-nsd-fwrf", subject, selection, device="cpu", precision=precision
    )


def written(export_dir, **kwargs):
    """The second session of a model: the one that writes its entry (the first marks it)."""
    load(export_dir, **kwargs)
    return load(export_dir, **kwargs)


def responses(model, images) -> list[np.ndarray]:
    """encode(), and each of the model's sessions (the all-core one made here) on one batch."""
    x = as_stimulus(images).chunk(0, len(images))
    sessions = [model.session, model._single_chunk_session()]
    return [model.encode(images, batch_size=3)] + [model._infer(s, x) for s in sessions]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cached_graph_gives_the_same_bits_and_is_used_by_the_next_session(
    export_dir, photos, cache, monkeypatch, precision
):
    images = photos[:4]
    once = load(export_dir, precision)  # a first use writes only a 0-byte mark
    assert entries(cache) == [] and [p.stat().st_size for p in cache.iterdir()] == [0]
    assert once.session._model_path == str(once.onnx_path)
    first = load(export_dir, precision)
    made = entries(cache)
    assert len(made) == 1 and not [p for p in cache.iterdir() if p.name.startswith(".seen")]
    names = sorted(p.name for p in made[0].iterdir())
    assert names == [optimized.DATA_NAME, optimized.MODEL_NAME, optimized.RECORD_NAME]
    assert first.session._model_path == str(first.onnx_path)  # the export's file, this once

    second = load(export_dir, precision)
    assert second.session._model_path == str(made[0] / optimized.MODEL_NAME)
    if second.threads > 1:  # the all-core session comes from the cache too
        all_core = second._single_chunk_session()
        assert all_core._model_path == str(made[0] / optimized.MODEL_NAME)
    assert entries(cache) == made

    monkeypatch.setenv(optimized.ENV_SESSION_CACHE, "off")
    plain = load(export_dir, precision)
    assert plain.session._model_path == str(plain.onnx_path)
    for got, want in zip(responses(second, images), responses(plain, images), strict=True):
        np.testing.assert_array_equal(got, want)
    for model in (first, once):
        for got, want in zip(responses(model, images), responses(plain, images), strict=True):
            np.testing.assert_array_equal(got, want)


def test_off_writes_nothing(export_dir, cache, monkeypatch):
    monkeypatch.setenv(optimized.ENV_SESSION_CACHE, "off")
    written(export_dir)
    assert not cache.exists()


def test_an_entry_changed_after_writing_is_rebuilt_never_loaded(export_dir, photos, cache):
    want = written(export_dir).encode(photos[:2])
    (entry,) = entries(cache)
    data = entry / optimized.DATA_NAME
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\x7f" * 64  # same size, other weights
    data.write_bytes(bytes(raw))
    model = load(export_dir)
    assert model.session._model_path == str(model.onnx_path)  # not the changed entry
    np.testing.assert_array_equal(model.encode(photos[:2]), want)
    (rebuilt,) = entries(cache)
    assert load(export_dir).session._model_path == str(rebuilt / optimized.MODEL_NAME)
    np.testing.assert_array_equal(load(export_dir).encode(photos[:2]), want)


def test_a_broken_entry_whose_record_matches_is_removed_and_rebuilt(export_dir, photos, cache):
    want = written(export_dir).encode(photos[:2])
    (entry,) = entries(cache)
    model_file = entry / optimized.MODEL_NAME
    model_file.write_bytes(b"not an onnx graph")
    record = json.loads((entry / optimized.RECORD_NAME).read_text())
    record["files"][optimized.MODEL_NAME] = optimized.stamp(os.stat(model_file))
    (entry / optimized.RECORD_NAME).write_text(json.dumps(record))  # as if it were ours
    model = load(export_dir)
    np.testing.assert_array_equal(model.encode(photos[:2]), want)
    (rebuilt,) = entries(cache)
    assert (rebuilt / optimized.MODEL_NAME).read_bytes() != b"not an onnx graph"


def test_another_machine_or_runtime_gets_its_own_entry(monkeypatch, cache):
    a = optimized.OptimizedGraph.for_model("ab" * 32, "onnxruntime 1.0")
    b = optimized.OptimizedGraph.for_model("ab" * 32, "onnxruntime 1.1")
    monkeypatch.setattr(optimized, "machine_identity", lambda: "linux x86_64 | other CPU | sse2")
    c = optimized.OptimizedGraph.for_model("ab" * 32, "onnxruntime 1.0")
    assert len({a.key, b.key, c.key}) == 3
    assert all(optimized._KEY.match(g.key) for g in (a, b, c))


def test_an_unwritable_cache_still_loads(export_dir, photos, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(optimized.ENV_SESSION_CACHE, str(blocker / "optimized"))
    model = written(export_dir)
    assert model.session._model_path == str(model.onnx_path)
    assert model.encode(photos[:2]).shape == (2, model.n_voxels)
    assert blocker.read_text() == "not a folder"


def test_the_size_bound_evicts_least_recently_used_and_nothing_else(
    export_dir, cache, tmp_path, monkeypatch
):
    written(export_dir, selection={"roi": "V1"})
    (v1,) = entries(cache)
    size = sum(p.stat().st_size for p in v1.iterdir())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / optimized.MODEL_NAME).write_text("keep me")
    lookalike = cache / ("f" * 16)  # a key-like name that is a link to a folder outside
    lookalike.symlink_to(outside, target_is_directory=True)
    (cache / "notes.txt").write_text("not the cache's")
    stale = cache / f".tmp-{'0' * 16}-old"
    stale.mkdir()
    (stale / optimized.MODEL_NAME).write_text("a killed writer's")
    old = time.time() - 2 * optimized.STALE_SECONDS
    os.utime(stale, (old, old))
    fresh = cache / f".tmp-{'1' * 16}-new"
    fresh.mkdir()
    os.utime(v1 / optimized.RECORD_NAME, (old, old))  # V1 used long ago
    seen_long_ago, seen_lately = cache / f".seen-{'2' * 16}", cache / f".seen-{'3' * 16}"
    seen_long_ago.touch()
    seen_lately.touch()
    ages_ago = time.time() - 2 * optimized.SEEN_SECONDS
    os.utime(seen_long_ago, (ages_ago, ages_ago))

    monkeypatch.setenv(optimized.ENV_SESSION_CACHE_MAX_BYTES, str(int(size * 1.5)))
    written(export_dir, selection={"roi": "FFA-1"})
    left = entries(cache)
    assert v1 not in left and len(left) == 1  # V1 made room for FFA-1
    assert (outside / optimized.MODEL_NAME).read_text() == "keep me"
    assert lookalike.is_symlink() and (cache / "notes.txt").exists()
    assert not stale.exists() and fresh.exists()
    assert not seen_long_ago.exists() and seen_lately.exists()


def test_processes_starting_together_share_one_entry(export_dir, photos, cache, tmp_path):
    np.save(tmp_path / "images.npy", photos[:2])
    code = (
        "import sys, numpy as np; from berg_onnx import BERG\n"
        "m = BERG(berg_dir=sys.argv[1]).get_encoding_model('fmri-nsd-fwrf', 1, {'roi': 'V1'},"
        " device='cpu')\n"
        "np.save(sys.argv[3], m.encode(np.load(sys.argv[2])))\n"
    )
    env = {**os.environ, optimized.ENV_SESSION_CACHE: str(cache)}
    load(export_dir)  # the first use: the four below all go on to write the entry
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(export_dir), str(tmp_path / "images.npy"), str(out)],
            env=env,
        )
        for out in (tmp_path / f"out{i}.npy" for i in range(4))
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    outs = [np.load(tmp_path / f"out{i}.npy") for i in range(4)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert len(entries(cache)) == 1
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_doctor_reports_the_cache(export_dir, cache, cli, monkeypatch):
    written(export_dir)
    (entry,) = entries(cache)
    size = sum(p.stat().st_size for p in entry.iterdir())
    assert optimized.summary() == {
        "folder": str(cache),
        "entries": 1,
        "bytes": size,
        "max_bytes": optimized.DEFAULT_MAX_BYTES,
    }
    out = cli("doctor", "--berg-dir", str(export_dir)).stdout
    assert f"optimised graphs: {cache} (1 entry, " in out
    monkeypatch.setenv(optimized.ENV_SESSION_CACHE, "off")
    assert "optimised graphs: off" in cli("doctor", "--berg-dir", str(export_dir)).stdout


def test_a_written_copy_that_computes_otherwise_is_never_kept(
    export_dir, photos, cache, monkeypatch
):
    """Whatever went wrong in writing it (here: weights changed between the write and the
    check), a copy that does not reproduce the session's bits is not published."""
    from berg_onnx import session as sessions

    real = sessions.check_written

    def corrupt_then_check(session, written):
        data = written.parent / optimized.DATA_NAME
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\x7f" * 64
        data.write_bytes(bytes(raw))
        real(session, written)

    monkeypatch.setattr(sessions, "check_written", corrupt_then_check)
    model = written(export_dir)
    assert entries(cache) == []  # nothing left behind but the mark: a later session retries
    assert [p.name[:6] for p in cache.iterdir()] == [".seen-"]
    monkeypatch.setenv(optimized.ENV_SESSION_CACHE, "off")
    np.testing.assert_array_equal(model.encode(photos[:3]), load(export_dir).encode(photos[:3]))


def test_no_cache_in_the_working_folder_when_the_home_is_unknown(tmp_path, monkeypatch):
    """No $HOME and a uid without a passwd entry (a container's random uid): expanduser
    leaves "~" as it is, and a cache there would be a "~" folder in the working one."""
    pwd = pytest.importorskip("pwd")

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "XDG_CACHE_HOME", optimized.ENV_SESSION_CACHE, "BERG_ONNX_VERIFY_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(tmp_path)
    from berg_onnx.utils import verified

    assert optimized.cache_dir() is None and verified.cache_dir() is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # absolute: used
    assert optimized.cache_dir() == tmp_path / "xdg" / "berg-onnx" / "optimized"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec: ignored
    assert optimized.cache_dir() is None
    assert list(tmp_path.iterdir()) == []
