"""Hub failures as one clear line (issue 11, findings 6, 13 and 14), on the loopback HubServer."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG, ModelLoadError
from tests._support.cli import cli_process
from tests._support.hubserver import client_env

publish_mod = pytest.importorskip("export.publish")  # publish runs from a checkout

REPO_ID = "berg-test/inputs"
MODEL = "fmri-nsd-fwrf"


def _one_line(run: subprocess.CompletedProcess) -> str:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


def _damage_cached_onnx(cache: Path, roi: str) -> None:
    (cached,) = [p for p in cache.rglob(f"*roi-{roi}.onnx") if "snapshots" in p.parts]
    blob = cached.resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_offline_with_a_damaged_cache_is_a_model_load_error(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    server, commit = hub
    cache = tmp_path / "cache"
    BERG(
        repo_id=REPO_ID, revision=commit, cache_dir=cache, endpoint=server.endpoint
    ).get_encoding_model(MODEL, 1, {"roi": "V1"})
    _damage_cached_onnx(cache, "V1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    berg = BERG(repo_id=REPO_ID, revision=commit, cache_dir=cache, endpoint=server.endpoint)
    with pytest.raises(ModelLoadError, match=r"(?s)roi-V1\.onnx.*damaged.*berg-onnx download"):
        berg.get_encoding_model(MODEL, 1, {"roi": "V1"})


def test_cli_offline_with_a_damaged_cache_is_one_line(hub, tmp_path, artifacts_dir):
    server, commit = hub
    env = client_env(server.endpoint, tmp_path / "home")
    env["BERG_ONNX_CACHE"] = str(tmp_path / "cache")
    repo = ["--repo-id", REPO_ID, "--revision", commit]
    run = cli_process("download", "--subject", "1", "--roi", "V1", *repo, env=env)
    assert run.returncode == 0, run.stderr
    _damage_cached_onnx(tmp_path / "cache", "V1")
    stim = tmp_path / "s.npy"
    np.save(stim, np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:1])
    offline = dict(env, HF_HUB_OFFLINE="1")
    run = cli_process(
        "encode", str(stim), "--subject", "1", "--roi", "V1", *repo,
        "--out", str(tmp_path / "r.npy"), env=offline,
    )  # fmt: skip
    line = _one_line(run)
    assert "roi-V1.onnx" in line and "berg-onnx download" in line
    assert not (tmp_path / "r.npy").exists()


def _dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on (bound, then released)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_hub_is_said_quickly(tmp_path, artifacts_dir):
    env = client_env(_dead_endpoint(), tmp_path / "home")
    env["BERG_ONNX_CACHE"] = str(tmp_path / "cache")
    start = time.perf_counter()
    run = cli_process("list", "--repo-id", REPO_ID, env=env)
    took = time.perf_counter() - start
    assert run.returncode == 0, run.stderr
    assert "could not be reached" in run.stdout
    statuses = [line for line in run.stdout.splitlines() if line.startswith("  V1 ")]
    assert statuses and all("unknown" in line and "not cached" not in line for line in statuses)
    assert run.stderr == ""  # no retry chatter
    assert took < 15, took  # huggingface_hub alone retries for ~23 s
    stim = tmp_path / "s.npy"
    np.save(stim, np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:1])
    start = time.perf_counter()
    run = cli_process(
        "encode", str(stim), "--subject", "1", "--roi", "V1", "--repo-id", REPO_ID,
        "--out", str(tmp_path / "r.npy"), env=env,
    )  # fmt: skip
    assert "could not be reached" in _one_line(run)
    assert time.perf_counter() - start < 15


def test_download_a_subject_of_a_partial_export(hub, tmp_path):
    server, commit = hub
    env = client_env(server.endpoint, tmp_path / "home")
    env["BERG_ONNX_CACHE"] = str(tmp_path / "cache")
    repo = ["--repo-id", REPO_ID, "--revision", commit]
    run = cli_process("download", "--subject", "1", *repo, env=env)
    assert run.returncode == 0, run.stderr
    assert "9 files" in run.stdout  # V1, FFA-1, lateral: onnx + int8 onnx + npz each
    assert "not in this export" in run.stdout and "sub-01 V2" in run.stdout
    run = cli_process("download", "--subject", "2", "--roi", "FFA-1", *repo, env=env)
    assert "sub-02 FFA-1" in _one_line(run)


def _every_command(tmp_path: Path, artifacts_dir: Path) -> dict[str, list[str]]:
    """Each subcommand that reads a model source, as a newcomer would run it on the Hub."""
    stim = tmp_path / "s.npy"
    np.save(stim, np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:1])
    rows = tmp_path / "v1.npy"
    np.save(rows, np.zeros((1, 60), np.float32))
    one = ["--subject", "1", "--roi", "V1"]
    return {
        "encode": ["encode", str(stim), *one, "--out", str(tmp_path / "r.npy")],
        "run": ["run", str(stim), "--subjects", "1", "--rois", "V1", "--out",
                str(tmp_path / "g.zarr")],
        "list": ["list"],
        "metadata": ["metadata", *one],
        "download": ["download", *one],
        "volume": ["volume", str(rows), *one, "--out", str(tmp_path / "v.nii.gz")],
        "plot": ["plot", "--accuracy", *one, "--out", str(tmp_path / "a.png")],
    }  # fmt: skip


NEEDS = {"run": "zarr", "volume": "nibabel", "plot": "matplotlib"}


COMMANDS = ["encode", "run", "list", "metadata", "download", "volume", "plot"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("repo", ["named", "default"])
def test_every_command_fails_fast_offline_and_names_berg_dir(
    command, repo, tmp_path, artifacts_dir
):
    """No ~25 s of retries for any subcommand; the line says --berg-dir, and an error about
    the default repo says it is a placeholder (models.json hub.placeholder)."""
    if command in NEEDS:
        pytest.importorskip(NEEDS[command])
    env = client_env(_dead_endpoint(), tmp_path / "home")
    env["BERG_ONNX_CACHE"] = str(tmp_path / "cache")
    env.pop("BERG_ONNX_REPO", None)
    args = _every_command(tmp_path, artifacts_dir)[command]
    args += ["--repo-id", REPO_ID] if repo == "named" else []
    start = time.perf_counter()
    run = cli_process(*args, env=env)
    took = time.perf_counter() - start
    said = run.stdout if command == "list" else _one_line(run)
    assert (run.returncode == 0) is (command == "list"), run.stderr
    assert "could not be reached" in said and "--berg-dir" in said, said
    assert ("placeholder" in said) is (repo == "default"), said
    assert took < 15, (command, took)  # huggingface_hub alone retries for ~23-28 s
