"""Publish and download through real Hub-protocol servers on loopback (no mocks).

HubServer (tests/_support/hubserver.py) accepts uploads, so it carries the publish ->
download -> encode round trip and the failure cases; olah, a third-party Hub
mirror, serves a git fixture built from the same export, pinned by commit and tag.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG, ModelLoadError, ModelNotFoundError, ResourceError
from tests._support.cli import cli_process
from tests._support.hubserver import HubServer, client_env, client_settings
from tests._support.olahserver import OlahServer, build_fixture_repo, olah_bin_or_skip

publish_mod = pytest.importorskip("export.publish")  # publish runs from a checkout

REPO_ID = "berg-test/fmri-nsd-fwrf-onnx"
N_PHOTOS = 4  # the shared photos fixture (tests/conftest.py) gives the first four
MODEL = "fmri-nsd-fwrf"


@pytest.fixture(scope="module")
def local_responses(export_dir, photos) -> dict[str, np.ndarray]:
    berg = BERG(berg_dir=export_dir)
    return {
        roi: berg.encode(
            berg.get_encoding_model(MODEL, 1, {"roi": roi}), photos, show_progress=False
        )
        for roi in ("V1", "lateral")
    }


def _berg(hub, cache: Path, revision: str | None = None, **kw) -> BERG:
    server, commit = hub
    return BERG(
        repo_id=REPO_ID,
        revision=revision or commit,
        cache_dir=cache,
        endpoint=server.endpoint,
        **kw,
    )


def _cached_files(cache: Path) -> set[str]:
    return {p.name for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts}


def test_dry_run_lists_files_and_uploads_nothing(export_dir):
    files = publish_mod.publish(export_dir, "x/y", dry_run=True, endpoint="http://127.0.0.1:9")
    names = {f.name for f in files}
    assert "manifest.json" in names and len(names) == 13  # 4 x (onnx, int8 onnx, npz) + manifest
    assert all(len(f.sha256) == 64 and f.size > 0 for f in files)


def test_publish_writes_one_commit_with_model_card(hub, export_dir):
    server, commit = hub
    assert len(commit) == 40 and server.resolve_revision(REPO_ID, "main") == commit
    files = set(server.list_files(REPO_ID, commit)) - {".gitattributes"}  # made with the repo
    assert {p.name for p in export_dir.iterdir()} | {"README.md"} == files
    card = server.read_file(REPO_ID, "README.md", commit).decode()
    assert "Natural Scenes Dataset" in card and "max absolute difference" in card
    assert "Gifford" in card and "Allen" in card


def test_round_trip_equals_local_export(hub, tmp_path, photos, local_responses):
    berg = _berg(hub, tmp_path / "cache")
    for roi, expected in local_responses.items():
        model = berg.get_encoding_model(MODEL, 1, {"roi": roi}, device="cpu")
        np.testing.assert_array_equal(berg.encode(model, photos, show_progress=False), expected)


def test_only_the_needed_files_are_downloaded(hub, tmp_path):
    cache = tmp_path / "cache"
    berg = _berg(hub, cache)
    meta = berg.get_model_metadata(MODEL, 1, "V1")
    assert meta["fmri"]["ncsnr"].shape == (60,)
    assert _cached_files(cache) == {"manifest.json", f"{MODEL}_sub-01_roi-V1.npz"}
    berg.get_encoding_model(MODEL, 1, {"roi": "FFA-1"})
    assert f"{MODEL}_sub-01_roi-FFA-1.onnx" in _cached_files(cache)
    assert not any(".int8." in n for n in _cached_files(cache))  # the fp32 graph only
    assert not any("lateral" in n for n in _cached_files(cache))


def test_tampered_server_file_is_refused_and_not_kept(hub, tmp_path):
    server, commit = hub
    name = f"{MODEL}_sub-01_roi-FFA-1.onnx"
    server.corrupt_file(REPO_ID, name, commit)
    try:
        cache = tmp_path / "cache"
        with pytest.raises(ModelLoadError, match="does not match the manifest"):
            _berg(hub, cache).get_encoding_model(MODEL, 1, {"roi": "FFA-1"})
        assert name not in _cached_files(cache)
        assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1e6]
    finally:
        server.clear_faults()
    # once the server is healthy again the same cache heals
    _berg(hub, tmp_path / "cache").get_encoding_model(MODEL, 1, {"roi": "FFA-1"})


def test_corrupted_cache_file_is_fetched_again(hub, tmp_path, photos, local_responses):
    cache = tmp_path / "cache"
    _berg(hub, cache).get_encoding_model(MODEL, 1, {"roi": "V1"})
    (cached,) = [p for p in cache.rglob("*roi-V1.onnx") if "snapshots" in p.parts]
    blob = cached.resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    berg = _berg(hub, cache)  # a new process would verify on first use too
    model = berg.get_encoding_model(MODEL, 1, {"roi": "V1"})
    np.testing.assert_array_equal(
        berg.encode(model, photos, show_progress=False), local_responses["V1"]
    )


def test_truncated_download_leaves_nothing_corrupt(hub, tmp_path):
    server, commit = hub
    name = f"{MODEL}_sub-01_roi-lateral.onnx"
    server.truncate_file(REPO_ID, name, commit, mode="short")
    try:
        cache = tmp_path / "cache"
        with pytest.raises(ResourceError, match=name):
            _berg(hub, cache).get_encoding_model(MODEL, 1, {"roi": "lateral"})
        assert name not in _cached_files(cache)
    finally:
        server.clear_faults()


def test_unknown_revision_and_missing_repo(hub, tmp_path):
    server, _ = hub
    with pytest.raises(ModelNotFoundError, match="Revision 'v9.9' not found"):
        _berg(hub, tmp_path / "c1", revision="v9.9").get_model_metadata(MODEL, 1, "V1")
    berg = BERG(repo_id="nobody/nothing", cache_dir=tmp_path / "c2", endpoint=server.endpoint)
    with pytest.raises(ModelNotFoundError, match="nobody/nothing"):
        berg.get_model_metadata(MODEL, 1, "V1")


def test_branch_and_tag_revisions(hub, tmp_path, photos, local_responses):
    server, commit = hub
    server.create_tag(REPO_ID, "v1.0", revision=commit)
    for revision in ("main", "v1.0"):
        berg = _berg(hub, tmp_path / revision, revision=revision)
        model = berg.get_encoding_model(MODEL, 1, {"roi": "V1"})
        assert berg.store.commit == commit
        got = berg.encode(model, photos, show_progress=False)
        np.testing.assert_array_equal(got, local_responses["V1"])


def test_offline_uses_cache_and_names_missing_files(hub, tmp_path, monkeypatch, photos):
    from huggingface_hub import constants

    cache = tmp_path / "cache"
    _berg(hub, cache).get_encoding_model(MODEL, 1, {"roi": "V1"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    berg = _berg(hub, cache)
    model = berg.get_encoding_model(MODEL, 1, {"roi": "V1"})  # from the cache, verified
    assert berg.encode(model, photos[:1], show_progress=False).shape == (1, 60)
    with pytest.raises(ResourceError, match=r"(?s)Offline.*roi-FFA-1\.onnx.*berg-onnx download"):
        berg.get_encoding_model(MODEL, 1, {"roi": "FFA-1"})
    with pytest.raises(ResourceError, match="manifest.json"):
        _berg(hub, tmp_path / "empty").get_model_metadata(MODEL, 1, "V1")


def test_server_down(export_dir, tmp_path):
    with HubServer() as server, client_settings(timeout=2):
        commit = publish_mod.publish(export_dir, REPO_ID, endpoint=server.endpoint)
        endpoint = server.endpoint
        warm = tmp_path / "warm"
        BERG(
            repo_id=REPO_ID, revision=commit, cache_dir=warm, endpoint=endpoint
        ).get_encoding_model(MODEL, 1, {"roi": "V1"})
    # the server is gone: a pinned commit still works from the cache ...
    berg = BERG(repo_id=REPO_ID, revision=commit, cache_dir=warm, endpoint=endpoint)
    assert berg.get_encoding_model(MODEL, 1, {"roi": "V1"}).n_voxels == 60
    # ... and a cold cache gets a clear error
    start = time.perf_counter()
    cold = BERG(repo_id=REPO_ID, revision=commit, cache_dir=tmp_path / "cold", endpoint=endpoint)
    with pytest.raises(ResourceError, match="Cannot download manifest.json"):
        cold.get_model_metadata(MODEL, 1, "V1")
    assert time.perf_counter() - start < 60


def test_two_processes_download_the_same_model_at_once(hub, tmp_path):
    server, commit = hub
    cache = tmp_path / "shared-cache"
    code = (
        "import sys\n"
        "from berg_onnx import BERG\n"
        f"b = BERG(repo_id={REPO_ID!r}, revision={commit!r}, cache_dir={str(cache)!r},"
        f" endpoint={server.endpoint!r})\n"
        f"m = b.get_encoding_model({MODEL!r}, 1, {{'roi': 'lateral'}})\n"
        "print(m.n_voxels)\n"
    )
    env = client_env(server.endpoint, tmp_path / "home")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "61"
    (cached,) = [p for p in cache.rglob("*roi-lateral.onnx") if "snapshots" in p.parts]
    from berg_onnx.source.manifest import Manifest

    entry = Manifest.load(next(cache.rglob("manifest.json"))).get(MODEL, 1, "lateral")
    assert entry.onnx.problem(cached) is None


def test_publish_refuses_an_export_that_does_not_match(export_dir, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    next(copy.glob("*.npz")).write_bytes(b"changed")
    with pytest.raises(ModelLoadError, match="does not match its manifest"):
        publish_mod.publish(copy, REPO_ID, dry_run=True)


def test_olah_mirror_by_commit_and_tag(export_dir, tmp_path, photos, local_responses):
    olah_bin = olah_bin_or_skip()
    commit = build_fixture_repo(tmp_path / "mirrors", REPO_ID, export_dir, tag="v1.0")
    with OlahServer(tmp_path / "mirrors", olah_bin=olah_bin, workdir=tmp_path / "olah") as olah:
        for revision in (commit, "v1.0"):
            berg = BERG(
                repo_id=REPO_ID,
                revision=revision,
                cache_dir=tmp_path / f"c-{revision[:6]}",
                endpoint=olah.endpoint,
            )
            for roi in ("V1", "lateral"):
                model = berg.get_encoding_model(MODEL, 1, {"roi": roi})
                got = berg.encode(model, photos, show_progress=False)
                np.testing.assert_array_equal(got, local_responses[roi])


def test_cli_download_then_offline_encode_and_doctor(hub, tmp_path, artifacts_dir):
    server, commit = hub
    cache = tmp_path / "cache"
    env = client_env(server.endpoint, tmp_path / "home")
    env["BERG_ONNX_CACHE"] = str(cache)
    repo = ["--repo-id", REPO_ID, "--revision", commit]

    def cli(*args, offline=False):
        e = dict(env, HF_HUB_OFFLINE="1") if offline else env
        return cli_process(*args, env=e)

    run = cli("download", "--subject", "1", "--roi", "V1", "lateral", *repo, "--quiet")
    assert run.returncode == 0, run.stderr
    assert "verified" in run.stdout
    stim = tmp_path / "stim.npy"
    np.save(stim, np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:2])
    run = cli(
        "encode",
        str(stim),
        "--subject",
        "1",
        "--roi",
        "lateral",
        *repo,
        "--out",
        str(tmp_path / "r.npy"),
        "--quiet",
        offline=True,
    )
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "r.npy").shape == (2, 61)
    run = cli(
        "encode",
        str(stim),
        "--subject",
        "1",
        "--roi",
        "FFA-1",
        *repo,
        "--out",
        str(tmp_path / "f.npy"),
        offline=True,
    )
    assert run.returncode == 1 and "berg-onnx download" in run.stderr  # not prefetched
    run = cli("doctor", offline=True)
    assert run.returncode == 0 and "offline mode (HF_HUB_OFFLINE): on" in run.stdout
    assert "fmri-nsd-fwrf_sub-01_roi-V1" in run.stdout and str(cache) in run.stdout
