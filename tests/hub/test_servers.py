"""Prove the Hub test servers against the REAL huggingface_hub client (no mocks).

Why: later tests of berg-onnx's publish/download code trust these fixtures to behave like the
Hub. Here the actual client uploads, tags, lists and downloads against :class:`HubServer` and
downloads through ``olah``, and the failure hooks are shown to produce the errors the client
really raises.

How the client is pointed at the servers: in-process, every call gets ``endpoint=`` explicitly
and :func:`hubserver.client_settings` switches Xet uploads off and shortens timeouts (these
are import-time constants in huggingface_hub, so env vars would come too late). One test runs
a child interpreter configured only through ``HF_ENDPOINT`` & co., the way production code
that passes no ``endpoint=`` is pointed at a server.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2  # the client's HTTP library (a huggingface_hub 2.x dependency)
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# tests/ has no package markers: make the sibling helper modules importable
from tests._support.hubserver import HubServer, client_env, client_settings, git_blob_oid
from tests._support.olahserver import (
    OlahServer,
    build_fixture_repo,
    live_group_members,
    olah_bin_or_skip,
)

REPO = "berg/test-model"
TOKEN = "test-token"


def _binary(size: int, seed: bytes = b"berg") -> bytes:
    """Deterministic pseudo-random bytes (incompressible, not valid UTF-8)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


FILES: dict[str, bytes] = {
    "README.txt": b"berg-onnx test model\n",
    "config.json": b'{"opset": 17}\n',
    "model.onnx": _binary(20_000),
    "weights/extra.npz": _binary(3_000, b"npz"),
}


def _download(
    endpoint: str, tmp_path: Path, filename: str, revision: str, repo_id: str = REPO
) -> Path:
    """hf_hub_download into a fresh cache directory, so nothing is served from an old cache."""
    cache = tempfile.mkdtemp(prefix="cache-", dir=tmp_path)
    path = hf_hub_download(
        repo_id,
        filename,
        revision=revision,
        endpoint=endpoint,
        cache_dir=cache,
        token=TOKEN,
        etag_timeout=5,
    )
    return Path(path)


@pytest.fixture(autouse=True)
def _hf_settings() -> Iterator[None]:
    with client_settings():
        yield


@pytest.fixture
def bare_hub() -> Iterator[HubServer]:
    """An empty HubServer, one per test (the `hub` of conftest.py has the export on it)."""
    with HubServer() as server:
        yield server


@dataclass(frozen=True)
class Published:
    hub: HubServer
    api: HfApi
    commit: str
    folder: Path


@pytest.fixture
def published(bare_hub: HubServer, tmp_path: Path) -> Published:
    """A repo created, filled with upload_folder and tagged ``v1`` through the real client."""
    folder = tmp_path / "export"
    for rel, data in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    api = HfApi(endpoint=bare_hub.endpoint, token=TOKEN)
    url = api.create_repo(REPO)
    assert url.repo_id == REPO
    info = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="Publish v1")
    api.create_tag(REPO, tag="v1", revision=info.oid)
    return Published(hub=bare_hub, api=api, commit=info.oid, folder=folder)


# ---------------------------------------------------------------------------- HubServer


def test_upload_folder_creates_commit_with_lfs_and_regular_files(published: Published) -> None:
    hub, api = published.hub, published.api
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == published.commit
    assert api.repo_info(REPO, revision="v1").sha == published.commit
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {".gitattributes", *FILES}
    onnx = siblings["model.onnx"]
    assert (
        onnx.lfs is not None and onnx.lfs.sha256 == hashlib.sha256(FILES["model.onnx"]).hexdigest()
    )
    assert onnx.size == len(FILES["model.onnx"])
    assert siblings["weights/extra.npz"].lfs is not None  # LFS by suffix despite its size
    readme = siblings["README.txt"]
    assert readme.lfs is None and readme.blob_id == git_blob_oid(FILES["README.txt"])

    assert sorted(api.list_repo_files(REPO, revision="v1")) == sorted([".gitattributes", *FILES])
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(REPO)}
    assert top["weights"] == "RepoFolder" and top["model.onnx"] == "RepoFile"
    nested = [e.path for e in api.list_repo_tree(REPO, path_in_repo="weights", revision="v1")]
    assert nested == ["weights/extra.npz"]
    refs = api.list_repo_refs(REPO)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", published.commit)]
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", published.commit)]

    # only the LFS files went through the LFS batch + PUT path
    puts = [r.path for r in hub.request_log if r.method == "PUT"]
    assert sorted(p.split("/")[3].split("?")[0] for p in puts) == sorted(
        hashlib.sha256(FILES[f]).hexdigest() for f in ("model.onnx", "weights/extra.npz")
    )
    assert hub.file_info(REPO, "config.json")["lfs"] is False


@pytest.mark.parametrize("kind", ["branch", "commit", "tag"])
@pytest.mark.parametrize("filename", ["model.onnx", "README.txt", "weights/extra.npz"])
def test_download_by_branch_commit_and_tag(
    published: Published, tmp_path: Path, kind: str, filename: str
) -> None:
    revision = {"branch": "main", "commit": published.commit, "tag": "v1"}[kind]
    path = _download(published.hub.endpoint, tmp_path, filename, revision)
    assert path.read_bytes() == FILES[filename]
    assert f"/snapshots/{published.commit}/" in path.as_posix()


def test_resolve_metadata_matches_hub_conventions(published: Published) -> None:
    endpoint = published.hub.endpoint
    onnx = get_hf_file_metadata(hf_hub_url(REPO, "model.onnx", endpoint=endpoint), token=TOKEN)
    assert onnx.etag == hashlib.sha256(FILES["model.onnx"]).hexdigest()
    assert onnx.size == len(FILES["model.onnx"])
    assert onnx.commit_hash == published.commit
    text = get_hf_file_metadata(hf_hub_url(REPO, "README.txt", endpoint=endpoint), token=TOKEN)
    assert text.etag == git_blob_oid(FILES["README.txt"])
    assert text.size == len(FILES["README.txt"])


def test_new_commit_moves_branch_but_not_tag_or_old_commit(
    published: Published, tmp_path: Path
) -> None:
    new_model = _binary(25_000, b"v2")
    info = published.api.upload_file(
        path_or_fileobj=new_model, path_in_repo="model.onnx", repo_id=REPO, commit_message="v2"
    )
    assert info.oid != published.commit
    assert published.api.model_info(REPO).sha == info.oid
    endpoint = published.hub.endpoint
    assert _download(endpoint, tmp_path, "model.onnx", "main").read_bytes() == new_model
    assert _download(endpoint, tmp_path, "model.onnx", "v1").read_bytes() == FILES["model.onnx"]
    old = _download(endpoint, tmp_path, "model.onnx", published.commit)
    assert old.read_bytes() == FILES["model.onnx"]
    commits = published.api.list_repo_commits(REPO)
    assert [c.commit_id for c in commits[:2]] == [info.oid, published.commit]


def test_unknown_revision_raises_revision_not_found(published: Published, tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        _download(published.hub.endpoint, tmp_path, "model.onnx", "no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        _download(published.hub.endpoint, tmp_path, "model.onnx", "0" * 40)
    with pytest.raises(RevisionNotFoundError):
        published.api.model_info(REPO, revision="v9")


@pytest.mark.parametrize("status", [404, 401])
def test_missing_repo_raises_repository_not_found(tmp_path: Path, status: int) -> None:
    with HubServer(missing_repo_status=status) as hub:
        with pytest.raises(RepositoryNotFoundError) as info:
            _download(hub.endpoint, tmp_path, "model.onnx", "main", repo_id="berg/absent")
        assert info.value.response.status_code == status
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.endpoint, token=TOKEN).model_info("berg/absent")


def test_missing_file_raises_entry_not_found(published: Published, tmp_path: Path) -> None:
    with pytest.raises(RemoteEntryNotFoundError) as info:
        _download(published.hub.endpoint, tmp_path, "absent.onnx", "main")
    assert isinstance(info.value, EntryNotFoundError)
    assert info.value.response.status_code == 404


def test_corrupt_file_serves_other_bytes_under_same_etag(
    published: Published, tmp_path: Path
) -> None:
    hub = published.hub
    url = hf_hub_url(REPO, "model.onnx", endpoint=hub.endpoint)
    before = get_hf_file_metadata(url, token=TOKEN)
    hub.corrupt_file(REPO, "model.onnx")
    after = get_hf_file_metadata(url, token=TOKEN)
    assert (after.etag, after.size) == (before.etag, before.size)

    # huggingface_hub does not verify content hashes: the corrupt bytes land in the cache
    data = _download(hub.endpoint, tmp_path, "model.onnx", "v1").read_bytes()
    assert data != FILES["model.onnx"] and len(data) == len(FILES["model.onnx"])
    assert hashlib.sha256(data).hexdigest() != after.etag

    hub.clear_faults()
    assert _download(hub.endpoint, tmp_path, "model.onnx", "v1").read_bytes() == FILES["model.onnx"]


def test_truncated_download_fails_size_check(published: Published, tmp_path: Path) -> None:
    published.hub.truncate_file(REPO, "model.onnx", keep_bytes=1000)
    start = time.monotonic()
    with pytest.raises(OSError, match="Consistency check failed"):
        _download(published.hub.endpoint, tmp_path, "model.onnx", "main")
    assert time.monotonic() - start < 5
    assert not list(tmp_path.glob("cache-*/models--*/snapshots/*/model.onnx"))


def test_dropped_connection_is_resumed_with_range_request(
    bare_hub: HubServer, tmp_path: Path
) -> None:
    # the client only writes in 10 MiB chunks, so resuming needs > 10 MiB before the cut
    big = _binary(12 * 1024 * 1024, b"big")
    bare_hub.create_repo(REPO)
    bare_hub.commit(REPO, {"big.onnx": big})
    bare_hub.truncate_file(REPO, "big.onnx", keep_bytes=11 * 1024 * 1024, mode="close", times=1)
    path = _download(bare_hub.endpoint, tmp_path, "big.onnx", "main")
    assert path.read_bytes() == big
    ranges = [r.headers.get("range") for r in bare_hub.request_log if r.method == "GET"]
    assert ranges == [None, f"bytes={10 * 1024 * 1024}-"]


def test_server_down_fails_fast_and_cached_files_still_resolve(
    published: Published, tmp_path: Path
) -> None:
    hub = published.hub
    cache = tmp_path / "warm-cache"

    def fetch() -> str:
        return hf_hub_download(
            REPO, "model.onnx", revision="v1", endpoint=hub.endpoint, cache_dir=cache, token=TOKEN
        )

    cached = fetch()
    hub.close()
    start = time.monotonic()
    with pytest.raises(httpx2.ConnectError):
        published.api.model_info(REPO)
    with pytest.raises(httpx2.ConnectError):
        get_hf_file_metadata(hf_hub_url(REPO, "model.onnx", endpoint=hub.endpoint), timeout=2)
    # with the Hub unreachable the cached copy for that revision is returned
    again = fetch()
    assert again == cached
    assert time.monotonic() - start < 5


def test_injected_503_is_retried_by_the_client(published: Published, tmp_path: Path) -> None:
    published.hub.fail_requests(503, match="/resolve/", method="HEAD", times=1)
    path = _download(published.hub.endpoint, tmp_path, "README.txt", "main")
    assert path.read_bytes() == FILES["README.txt"]
    heads = [r for r in published.hub.request_log if r.method == "HEAD"]
    assert len(heads) == 2


def test_required_token_is_enforced(tmp_path: Path) -> None:
    with HubServer(require_token="s3cret") as hub:
        with pytest.raises(HfHubHTTPError) as info:
            HfApi(endpoint=hub.endpoint, token="wrong").create_repo(REPO)
        assert info.value.response.status_code == 401
        HfApi(endpoint=hub.endpoint, token="s3cret").create_repo(REPO)
        assert hub.list_files(REPO) == [".gitattributes"]


def test_client_settings_endpoint_reaches_server_without_endpoint_args(
    bare_hub: HubServer, tmp_path: Path
) -> None:
    """In-process equivalent of HF_ENDPOINT, for code that passes no ``endpoint=``."""
    bare_hub.create_repo(REPO)
    commit = bare_hub.commit(REPO, {"model.onnx": FILES["model.onnx"]})
    with client_settings(bare_hub.endpoint):
        assert HfApi(token=TOKEN).model_info(REPO).sha == commit
        path = hf_hub_download(REPO, "model.onnx", cache_dir=tmp_path / "c", token=TOKEN)
    assert Path(path).read_bytes() == FILES["model.onnx"]
    assert any(r.path == f"/{REPO}/resolve/main/model.onnx" for r in bare_hub.request_log)


_CHILD = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download
folder = Path(sys.argv[1])
api = HfApi()
api.create_repo("berg/env-model")
info = api.upload_folder(repo_id="berg/env-model", folder_path=folder, commit_message="env")
api.create_tag("berg/env-model", tag="v1")
out = {"commit": info.oid}
for name in ("model.onnx", "README.txt"):
    out[name] = Path(hf_hub_download("berg/env-model", name, revision="v1")).read_bytes().hex()
print(json.dumps(out))
"""


def test_client_pointed_by_hf_endpoint_in_subprocess(bare_hub: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("model.onnx", "README.txt"):
        (folder / name).write_bytes(FILES[name])
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder)],
        env=client_env(bare_hub.endpoint, tmp_path / "hf-home"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["commit"] == bare_hub.resolve_revision("berg/env-model", "v1")
    for name in ("model.onnx", "README.txt"):
        assert bytes.fromhex(out[name]) == FILES[name]
    assert any(r.path.startswith("/berg/env-model/resolve/v1/") for r in bare_hub.request_log)


# ---------------------------------------------------------------------------- olah


def test_fixture_repo_layout(tmp_path: Path) -> None:
    """Pointer files and LFS objects are laid out the git-lfs way (needs only git)."""
    commit = build_fixture_repo(tmp_path / "mirrors", REPO, FILES, tag="v1")
    repo = tmp_path / "mirrors" / "models" / REPO
    oid = hashlib.sha256(FILES["model.onnx"]).hexdigest()
    pointer = (repo / "model.onnx").read_bytes()
    size = len(FILES["model.onnx"])
    assert pointer == (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()
    )
    assert (repo / ".git/lfs/objects" / oid[:2] / oid[2:4] / oid).read_bytes() == FILES[
        "model.onnx"
    ]
    assert (repo / "README.txt").read_bytes() == FILES["README.txt"]
    assert "*.onnx filter=lfs" in (repo / ".gitattributes").read_text()
    git = ["git", "-C", str(repo)]
    assert (
        subprocess.run([*git, "rev-parse", "v1"], capture_output=True, text=True).stdout.strip()
        == commit
    )
    # reproducible: same content, same hash
    again = build_fixture_repo(tmp_path / "other", REPO, FILES, tag="v1")
    assert again == commit


@dataclass(frozen=True)
class OlahFixture:
    olah: OlahServer
    commit: str


@pytest.fixture(scope="module")
def olah_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahFixture]:
    olah_bin = olah_bin_or_skip()
    root = tmp_path_factory.mktemp("olah")
    src = root / "src"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    commit = build_fixture_repo(root / "mirrors", REPO, src, tag="v1")
    with OlahServer(root / "mirrors", olah_bin=olah_bin, workdir=root / "olah") as olah:
        yield OlahFixture(olah=olah, commit=commit)


@pytest.mark.parametrize("kind", ["commit", "tag"])
@pytest.mark.parametrize("filename", ["model.onnx", "README.txt", "weights/extra.npz"])
def test_olah_download_by_commit_and_tag(
    olah_fixture: OlahFixture, tmp_path: Path, kind: str, filename: str
) -> None:
    revision = olah_fixture.commit if kind == "commit" else "v1"
    path = _download(olah_fixture.olah.endpoint, tmp_path, filename, revision)
    assert path.read_bytes() == FILES[filename]
    assert f"/snapshots/{olah_fixture.commit}/" in path.as_posix()


def test_olah_error_mapping(olah_fixture: OlahFixture, tmp_path: Path) -> None:
    endpoint = olah_fixture.olah.endpoint
    with pytest.raises(RemoteEntryNotFoundError):
        _download(endpoint, tmp_path, "absent.onnx", olah_fixture.commit)
    # olah answers 401 RepoNotFound for a missing file by tag and for unknown tags
    with pytest.raises(RepositoryNotFoundError):
        _download(endpoint, tmp_path, "absent.onnx", "v1")
    with pytest.raises(RepositoryNotFoundError):
        _download(endpoint, tmp_path, "model.onnx", "v9")


def test_olah_and_hubserver_agree_on_metadata(
    olah_fixture: OlahFixture, published: Published
) -> None:
    """Our server's ETags/sizes equal those of an independent implementation."""
    for name in FILES:
        ours = get_hf_file_metadata(
            hf_hub_url(REPO, name, revision="v1", endpoint=published.hub.endpoint), token=TOKEN
        )
        theirs = get_hf_file_metadata(
            hf_hub_url(REPO, name, revision="v1", endpoint=olah_fixture.olah.endpoint),
            token=TOKEN,
        )
        assert (ours.etag, ours.size) == (theirs.etag, theirs.size), name


def test_olah_stops_without_leftovers(tmp_path: Path) -> None:
    olah_bin = olah_bin_or_skip()
    build_fixture_repo(tmp_path / "mirrors", REPO, {"README.txt": FILES["README.txt"]})
    with OlahServer(tmp_path / "mirrors", olah_bin=olah_bin) as olah:
        proc = olah.process
        assert proc is not None and proc.poll() is None
        endpoint, workdir = olah.endpoint, olah.workdir
    assert proc.returncode is not None
    assert live_group_members(proc.pid) == []
    with pytest.raises(httpx2.ConnectError):
        httpx2.head(f"{endpoint}/{REPO}/resolve/main/README.txt", timeout=2)
    assert not workdir.exists()


def test_a_failing_git_call_says_what_git_said(tmp_path):
    """A fixture repo's git failure names git's own reason, not only "exit status 128"."""
    import shutil

    from tests._support.olahserver import _git

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    with pytest.raises(subprocess.CalledProcessError) as info:
        _git(tmp_path, "rev-parse", "no-such-revision")  # not a repository at all
    message = str(info.value)
    assert "exit status 128" in message and "not a git repository" in message, message
