"""A minimal, in-process Hugging Face Hub protocol server for tests.

Why this exists: berg-onnx publishes exported models to a Hub repo and downloads them with
``huggingface_hub``. The real Hub is unreachable from tests (and would be slow and flaky anyway),
so this module speaks just enough of the Hub's HTTP protocol, on 127.0.0.1 only, for the REAL
``huggingface_hub`` client (2.x) to create repos, upload, tag, list and download against it. It
keeps real state (immutable commit snapshots, branches, tags, content-addressed blobs) and offers
failure-injection hooks (corrupted storage, truncated downloads, injected HTTP errors, server
down) that the real Hub cannot give us. Standard library only.

Usage::

    with HubServer() as hub:
        api = HfApi(endpoint=hub.endpoint, token="test-token")
        api.create_repo("org/model")
        api.upload_folder(repo_id="org/model", folder_path=some_dir)
        path = hf_hub_download("org/model", "model.onnx", endpoint=hub.endpoint,
                               cache_dir=tmp_path / "cache")

Pointing the client at the server -- two ways that both work with huggingface_hub 2.4:

* In-process, explicit ``endpoint=``: pass ``endpoint=hub.endpoint`` to ``HfApi(...)`` and to
  ``hf_hub_download(...)``. ``hf_hub_url`` swaps the default endpoint for the given one, so
  resolve URLs reach this server even though ``constants.ENDPOINT`` still names the real Hub.
  huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``; so
  for uploads ``constants.HF_HUB_DISABLE_XET`` must be ``True`` (see :func:`client_settings`):
  with ``hf_xet`` installed, 2.x otherwise uploads through Xet storage, which this server does
  not speak. ``is_xet_available()`` reads the constant at call time, so setting the attribute
  works even after import.
* Environment, ``HF_ENDPOINT``: code that calls ``hf_hub_download(...)`` without ``endpoint=``
  (as berg-onnx's production code may) must see ``HF_ENDPOINT=http://127.0.0.1:PORT`` before
  ``huggingface_hub`` is imported, i.e. run it in a subprocess with the environment from
  :func:`client_env`. In-process, the equivalent is to set ``constants.ENDPOINT`` and
  ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (what :func:`client_settings` does when asked);
  ``HfApi()`` picks ``constants.ENDPOINT`` up when it is constructed.

Endpoints implemented (``{type}`` is ``models``, ``datasets``, ``spaces`` or ``kernels``; the
repo id may have one or two segments; URL prefixes ``datasets/``, ``spaces/``, ``kernels/``
select the repo type on non-API paths):

* ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``GET /api/whoami-v2``,
  ``POST /api/validate-yaml`` (always valid).
* ``GET /api/{type}/{repo}`` and ``GET /api/{type}/{repo}/revision/{rev}`` (``sha``,
  ``siblings``; sizes, ``blobId`` and ``lfs`` with ``?blobs=true``).
* ``GET /api/{type}/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``),
  ``POST /api/{type}/{repo}/paths-info/{rev}``, ``GET /api/{type}/{repo}/refs``,
  ``GET /api/{type}/{repo}/commits/{rev}``.
* ``POST /api/{type}/{repo}/preupload/{rev}``, ``POST {prefix}{repo}.git/info/lfs/objects/batch``
  (basic transfer, upload + verify actions), ``PUT /_lfs/upload/{oid}``,
  ``POST /_lfs/verify/{oid}``, ``GET /_lfs/objects/{oid}``,
  ``POST /api/{type}/{repo}/commit/{rev}`` (NDJSON: ``header``, ``file``, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``; ``parentCommit`` checked, 412 on mismatch).
* ``POST /api/{type}/{repo}/tag/{rev}`` / ``DELETE /api/{type}/{repo}/tag/{tag}``,
  ``POST`` / ``DELETE /api/{type}/{repo}/branch/{branch}``.
* ``GET`` and ``HEAD {prefix}{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, quoted
  ``ETag`` (git blob sha1 of regular files, sha256 of LFS files), ``X-Linked-Etag`` /
  ``X-Linked-Size`` for LFS files, ``Content-Length``, ``Accept-Ranges`` and single ``Range``
  requests (``206`` + ``Content-Range``; the client resumes interrupted downloads with
  ``Range: bytes=N-``). Files are served directly (200), never redirected.

Python API on the server object (tests run it in-process): ``endpoint``, ``close()``,
``request_log``; seeding without HTTP: ``create_repo``, ``commit``, ``create_tag``,
``create_branch``; inspection: ``resolve_revision``, ``list_files``, ``file_info``,
``read_file``; faults: ``corrupt_file``, ``truncate_file``, ``fail_requests``,
``clear_faults``; a slow link: ``throttle_bytes_per_s``. The LFS rule is ``lfs_threshold``
(bytes) and ``lfs_suffixes``.

Errors carry ``X-Error-Code`` / ``X-Error-Message`` the way the Hub does, which is what the
client maps to exception types: ``RepoNotFound`` (404, or 401 with ``missing_repo_status=401``
like the real Hub for missing/private repos) -> ``RepositoryNotFoundError``;
``RevisionNotFound`` (404) -> ``RevisionNotFoundError``; ``EntryNotFound`` (404) ->
``RemoteEntryNotFoundError`` (2.x name; subclass of ``EntryNotFoundError``). Note that the
client maps a bare 401 *without* ``X-Error-Code`` to ``RepositoryNotFoundError`` only for
``https://`` URLs, so over plain http the header is what matters.

Known client behaviours worth knowing when writing tests (huggingface_hub 2.4):

* ``hf_hub_download`` never checks the sha256 of what it downloaded; it only compares the size
  with the advertised size. A corrupted blob (:meth:`HubServer.corrupt_file`) is therefore
  stored in the cache silently -- checksum verification is the caller's job.
* An interrupted body (:meth:`HubServer.truncate_file` with ``mode="close"``) is retried up to
  5 times, 1 s apart. The client writes in 10 MiB chunks, so it resumes with
  ``Range: bytes=N-`` only after a complete chunk; smaller downloads restart from byte 0.
* When the server is down and nothing is cached, ``hf_hub_download`` retries the metadata
  request with exponential backoff (1+2+4+8+8 s) before raising ``LocalEntryNotFoundError``:
  about 23 s. ``HfApi.model_info`` / ``get_hf_file_metadata`` fail at once with
  ``httpx2.ConnectError``. If the file is already cached for that revision,
  ``hf_hub_download`` returns the cached copy without waiting.
* The LFS PUT inside ``huggingface_hub`` triggers httpx2's ``DeprecationWarning`` ("Use
  'content=<...>'"); a ``filterwarnings = error`` setting must exempt it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_LFS_SUFFIXES",
    "HubError",
    "HubServer",
    "RequestRecord",
    "client_env",
    "client_settings",
    "git_blob_oid",
    "lfs_pointer",
]

#: File suffixes the server asks the client to upload through LFS, whatever their size.
DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".onnx",
    ".npz",
    ".npy",
    ".bin",
    ".safetensors",
    ".pt",
    ".pth",
    ".data",
    ".tar",
    ".gz",
    ".zip",
)

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIXES = {"dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_API_SUBPATHS = frozenset(
    {
        "revision",
        "tree",
        "paths-info",
        "preupload",
        "commit",
        "refs",
        "commits",
        "tag",
        "branch",
        "xet-write-token",
        "xet-read-token",
    }
)
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{7,39}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

_INITIAL_GITATTRIBUTES = (
    "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in DEFAULT_LFS_SUFFIXES)
).encode()


def git_blob_oid(data: bytes) -> str:
    """Git's object id of a blob: what the Hub reports as ``oid``/``ETag`` of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256_hex: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in the git tree for an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex}\nsize {size}\n"
    ).encode()


def client_env(
    endpoint: str, home: str | os.PathLike[str], token: str = "test-token"
) -> dict[str, str]:
    """Environment for a subprocess running huggingface_hub against ``endpoint``.

    huggingface_hub reads these once, at import; a child process gets them in time. ``HF_HOME``
    isolates the token file, cache and telemetry markers from the developer's own.
    """
    env = dict(os.environ)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(key, None)
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": os.fspath(home),
            "HF_TOKEN": token,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "5",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    return env


@contextlib.contextmanager
def client_settings(endpoint: str | None = None, *, timeout: int = 5) -> Iterator[None]:
    """Temporarily set the import-time settings of an already imported huggingface_hub.

    Why: ``huggingface_hub.constants`` is filled from the environment at import, so setting
    ``HF_HUB_DISABLE_XET`` / ``HF_ENDPOINT`` in ``os.environ`` afterwards has no effect. This sets
    the attributes the client reads at call time and restores them afterwards. With
    ``endpoint=None`` only Xet and the timeouts are changed (pass ``endpoint=`` explicitly to
    ``HfApi`` / ``hf_hub_download`` then); with an endpoint, calls without ``endpoint=`` reach
    it too (``HfApi`` objects read ``constants.ENDPOINT`` when constructed).
    """
    from huggingface_hub import constants

    names = ["HF_HUB_DISABLE_XET", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"]
    if endpoint is not None:
        names += ["ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE"]
    saved = {name: getattr(constants, name) for name in names}
    try:
        constants.HF_HUB_DISABLE_XET = True
        constants.HF_HUB_DOWNLOAD_TIMEOUT = timeout
        constants.HF_HUB_ETAG_TIMEOUT = timeout
        if endpoint is not None:
            constants.ENDPOINT = endpoint.rstrip("/")
            constants.HUGGINGFACE_CO_URL_TEMPLATE = (
                constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
            )
        yield
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class _Entry:
    """One file in a commit snapshot: metadata only, content lives in the blob store.

    ``git_oid`` is the blob id in the git tree: of the content for regular files, of the
    pointer file for LFS files -- as on the Hub.
    """

    path: str
    size: int
    sha256: str
    lfs: bool
    git_oid: str

    @classmethod
    def regular(cls, path: str, data: bytes) -> _Entry:
        return cls(
            path=path,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            lfs=False,
            git_oid=git_blob_oid(data),
        )

    @classmethod
    def large(cls, path: str, sha256: str, size: int) -> _Entry:
        return cls(
            path=path,
            size=size,
            sha256=sha256,
            lfs=True,
            git_oid=git_blob_oid(lfs_pointer(sha256, size)),
        )

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class _Commit:
    oid: str
    parents: tuple[str, ...]
    title: str
    message: str
    date: str
    files: Mapping[str, _Entry]


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    """A per-blob download fault; ``times=None`` means it never wears off."""

    keep_bytes: int
    mode: str
    times: int | None


@dataclass
class _InjectedError:
    status: int
    match: str
    method: str | None
    times: int | None
    error_code: str | None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (tests assert on ranges, auth, call counts)."""

    method: str
    path: str
    headers: Mapping[str, str]


class HubError(Exception):
    """A Hub-style error: HTTP status plus ``X-Error-Code``; also raised by the Python API."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


class _ThreadingServer(ThreadingHTTPServer):
    """Tracks open connections so that ``close()`` really cuts keep-alive clients off."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: HubServer) -> None:
        self.hub = hub
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
            self._open.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut by ``close()`` or by a truncation fault are expected: stay quiet."""


class HubServer:
    """Hub-protocol server on a free 127.0.0.1 port, served from a daemon thread.

    Args:
        lfs_threshold: files larger than this many bytes are answered ``uploadMode: "lfs"``
            by the preupload endpoint.
        lfs_suffixes: files ending with one of these are always LFS.
        require_token: if set, every request must carry ``Authorization: Bearer <token>``
            (otherwise any or no token is accepted).
        missing_repo_status: 404 (default) or 401 (what the real Hub answers for missing or
            private repos); both carry ``X-Error-Code: RepoNotFound``.
        host: must stay a loopback address.
    """

    def __init__(
        self,
        *,
        lfs_threshold: int = 10 * 1024,
        lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
        require_token: str | None = None,
        missing_repo_status: int = 404,
        host: str = "127.0.0.1",
    ) -> None:
        if not host.startswith("127.") and host != "localhost":
            raise ValueError("HubServer only binds loopback addresses")
        self.lfs_threshold = lfs_threshold
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.require_token = require_token
        self.missing_repo_status = missing_repo_status
        self.request_log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._pristine: dict[str, bytes] = {}
        self._faults: dict[str, _Fault] = {}
        self._errors: list[_InjectedError] = []
        #: when set, file downloads are paced to about this many bytes per second and connection
        self.throttle_bytes_per_s: int | None = None
        self._seq = 0
        self._closed = False
        self._httpd = _ThreadingServer((host, 0), self)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self.endpoint = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"HubServer:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, close the port and cut open keep-alive connections.

        Afterwards new connections are refused, which is how tests emulate "Hub is down".
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        self._thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ state API

    def create_repo(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        private: bool = False,
        exist_ok: bool = False,
    ) -> str:
        """Create a repo with an initial commit holding a ``.gitattributes``, like the Hub.

        Returns the repo URL.
        """
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if exist_ok:
                    return self._repo_url(repo_type, repo_id)
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = _Repo(repo_id=repo_id, repo_type=repo_type, private=private, created_at=_now())
            self._repos[key] = repo
            self._store(_INITIAL_GITATTRIBUTES)
            entry = _Entry.regular(".gitattributes", _INITIAL_GITATTRIBUTES)
            commit = self._new_commit(repo, (), "initial commit", "", {entry.path: entry})
            repo.branches["main"] = commit.oid
            return self._repo_url(repo_type, repo_id)

    def delete_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        with self._lock:
            self._get_repo(repo_type, repo_id)
            del self._repos[(repo_type, repo_id)]

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        deletions: Iterable[str] = (),
        branch: str = "main",
        message: str = "Upload files",
        repo_type: str = "model",
        lfs: bool | None = None,
    ) -> str:
        """Commit files directly (without the HTTP upload dance); returns the commit hash.

        ``lfs=None`` applies the same LFS rule the preupload endpoint announces.
        """
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            adds: dict[str, _Entry] = {}
            for path, data in files.items():
                as_lfs = self.should_use_lfs(path, len(data)) if lfs is None else lfs
                adds[path] = self._entry_for(path, data, as_lfs)
            return self._apply_commit(repo, branch, message, "", adds, list(deletions), [], None)

    def create_tag(
        self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model"
    ) -> str:
        """Tag ``revision``; returns the tagged commit hash."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            oid = self._resolve(repo, revision)
            repo.tags[tag] = oid
            return oid

    def create_branch(
        self, repo_id: str, branch: str, revision: str = "main", *, repo_type: str = "model"
    ) -> str:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            oid = self._resolve(repo, revision)
            repo.branches[branch] = oid
            return oid

    def resolve_revision(
        self, repo_id: str, revision: str = "main", *, repo_type: str = "model"
    ) -> str:
        """Commit hash that ``revision`` (branch, tag, full or abbreviated hash) points to."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision)

    def list_files(
        self, repo_id: str, revision: str = "main", *, repo_type: str = "model"
    ) -> list[str]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return sorted(repo.commits[self._resolve(repo, revision)].files)

    def file_info(
        self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model"
    ) -> dict[str, Any]:
        """Advertised metadata of a file: ``size``, ``sha256``, ``git_oid``, ``lfs``, ``etag``."""
        entry = self._entry(repo_type, repo_id, revision, path)
        return {
            "size": entry.size,
            "sha256": entry.sha256,
            "git_oid": entry.git_oid,
            "lfs": entry.lfs,
            "etag": entry.etag,
        }

    def read_file(
        self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model"
    ) -> bytes:
        """The bytes the server currently serves for a file (after any corruption)."""
        entry = self._entry(repo_type, repo_id, revision, path)
        with self._lock:
            return self._blobs[entry.sha256]

    def should_use_lfs(self, path: str, size: int) -> bool:
        """The server's LFS rule: by suffix, or by size above ``lfs_threshold``."""
        return path.lower().endswith(self.lfs_suffixes) or size > self.lfs_threshold

    # ------------------------------------------------------------------ fault hooks

    def corrupt_file(
        self,
        repo_id: str,
        path: str,
        revision: str = "main",
        *,
        repo_type: str = "model",
        data: bytes | None = None,
    ) -> bytes:
        """Change the stored bytes of a published file; hash, ETag and size stay advertised.

        Emulates silent storage corruption: clients get bytes whose sha256 does not match the
        advertised one. By default every byte is inverted (same length, so the client's size
        check passes). ``data`` of another length makes the size differ as well. The blob
        store is content-addressed, so every commit/repo sharing this content is affected, as
        with a real corrupted object. Returns the bytes now served; undo with
        :meth:`clear_faults`.
        """
        entry = self._entry(repo_type, repo_id, revision, path)
        with self._lock:
            current = self._blobs[entry.sha256]
            self._pristine.setdefault(entry.sha256, current)
            new = bytes(b ^ 0xFF for b in current) if data is None else bytes(data)
            self._blobs[entry.sha256] = new
            return new

    def truncate_file(
        self,
        repo_id: str,
        path: str,
        revision: str = "main",
        *,
        repo_type: str = "model",
        keep_bytes: int | None = None,
        mode: str = "short",
        times: int | None = None,
    ) -> None:
        """Make GET downloads of a file stop after ``keep_bytes`` (default: half) bytes.

        HEAD keeps advertising the full size. ``mode="short"``: the GET response says
        ``Content-Length: keep_bytes`` and ends cleanly -- the client's size check fails at
        once (``OSError: Consistency check failed``). ``mode="close"``: the GET response
        announces the full length, sends ``keep_bytes`` and drops the connection -- the client
        sees an incomplete body and retries with ``Range: bytes=N-`` (the cut is at absolute
        offset ``keep_bytes``, so while the fault lasts no retry gets further; the client gives
        up after 5 retries, ~1 s apart). ``times``: how many GETs are affected (``None``:
        all); e.g. ``mode="close", times=1`` exercises resumption.
        """
        if mode not in ("short", "close"):
            raise ValueError("mode must be 'short' or 'close'")
        entry = self._entry(repo_type, repo_id, revision, path)
        keep = entry.size // 2 if keep_bytes is None else keep_bytes
        if not 0 <= keep < max(entry.size, 1):
            raise ValueError(f"keep_bytes must be in [0, {entry.size})")
        with self._lock:
            self._faults[entry.sha256] = _Fault(keep_bytes=keep, mode=mode, times=times)

    def fail_requests(
        self,
        status: int = 503,
        *,
        match: str = "",
        method: str | None = None,
        times: int | None = 1,
        error_code: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``match`` with ``status``.

        For retry/backoff tests (e.g. 503 on ``/resolve/``, 500 on ``/commit/``). ``times=None``
        fails them forever, until :meth:`clear_faults`.
        """
        with self._lock:
            self._errors.append(
                _InjectedError(
                    status=status,
                    match=match,
                    method=method.upper() if method else None,
                    times=times,
                    error_code=error_code,
                )
            )

    def clear_faults(self) -> None:
        """Undo corruption, truncation and injected errors."""
        with self._lock:
            self._blobs.update(self._pristine)
            self._pristine.clear()
            self._faults.clear()
            self._errors.clear()

    # ------------------------------------------------------------------ internals: state

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{_URL_PREFIXES.get(repo_type, '')}{repo_id}"

    def _has_repo(self, repo_type: str, repo_id: str) -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(self.missing_repo_status, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> str:
        rev = revision
        for prefix, refs in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags)):
            if rev.startswith(prefix) and rev[len(prefix) :] in refs:
                return refs[rev[len(prefix) :]]
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        low = rev.lower()
        if _HEX40.fullmatch(low) and low in repo.commits:
            return low
        if _HEX_PREFIX.fullmatch(low):
            matches = [oid for oid in repo.commits if oid.startswith(low)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _entry(self, repo_type: str, repo_id: str, revision: str, path: str) -> _Entry:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = repo.commits[self._resolve(repo, revision)]
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(
                    404,
                    f"{path} does not exist on {revision}",
                    "EntryNotFound",
                    {"X-Repo-Commit": commit.oid},
                )
            return entry

    def _store(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._blobs.setdefault(digest, data)
        return digest

    def _entry_for(self, path: str, data: bytes, lfs: bool) -> _Entry:
        digest = self._store(data)
        if lfs:
            return _Entry.large(path, digest, len(data))
        return _Entry.regular(path, data)

    def _new_commit(
        self,
        repo: _Repo,
        parents: tuple[str, ...],
        title: str,
        message: str,
        files: Mapping[str, _Entry],
    ) -> _Commit:
        self._seq += 1
        listing = "\n".join(f"{p} {files[p].git_oid}" for p in sorted(files))
        seed = f"{repo.repo_type}/{repo.repo_id}\n{self._seq}\n{parents}\n{title}\n{listing}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = _Commit(
            oid=oid,
            parents=parents,
            title=title,
            message=message,
            date=_now(),
            files=dict(files),
        )
        repo.commits[oid] = commit
        return commit

    def _apply_commit(
        self,
        repo: _Repo,
        branch: str,
        title: str,
        message: str,
        adds: Mapping[str, _Entry],
        deleted_files: list[str],
        deleted_folders: list[str],
        parent_commit: str | None,
    ) -> str:
        with self._lock:
            if branch not in repo.branches:
                if branch in repo.tags or _HEX40.fullmatch(branch):
                    raise HubError(400, f"Can only commit to a branch, not to {branch}")
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.branches[branch]
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[head].files)
            for path in deleted_files:
                if path not in files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[path]
            for folder in deleted_folders:
                prefix = folder.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, "A folder with this name doesn't exist", "EntryNotFound")
                for path in doomed:
                    del files[path]
            files.update(adds)
            commit = self._new_commit(repo, (head,), title, message, files)
            repo.branches[branch] = commit.oid
            return commit.oid

    def _dirs_of(self, files: Iterable[str]) -> set[str]:
        dirs: set[str] = set()
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _last_commit(self, repo: _Repo, start: str, path: str) -> _Commit:
        """Most recent first-parent commit that changed ``path`` (file or folder)."""

        def view(commit: _Commit) -> tuple[tuple[str, str], ...]:
            return tuple(
                (p, e.git_oid)
                for p, e in sorted(commit.files.items())
                if p == path or p.startswith(path + "/")
            )

        commit = repo.commits[start]
        while commit.parents:
            parent = repo.commits[commit.parents[0]]
            if view(parent) != view(commit):
                return commit
            commit = parent
        return commit

    def _path_info(
        self, repo: _Repo, commit: _Commit, path: str, is_dir: bool, expand: bool
    ) -> dict[str, Any]:
        if is_dir:
            inner = sorted(
                (p, e.git_oid) for p, e in commit.files.items() if p.startswith(path + "/")
            )
            info: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(repr(inner).encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        else:
            entry = commit.files[path]
            info = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
            if entry.lfs:
                info["lfs"] = {
                    "oid": entry.sha256,
                    "size": entry.size,
                    "pointerSize": len(entry.pointer),
                }
        if expand:
            last = self._last_commit(repo, commit.oid, path)
            info["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return info

    # ------------------------------------------------------------------ internals: HTTP

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        if self.require_token is None:
            return
        if headers.get("authorization", "") != f"Bearer {self.require_token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _injected_error(self, method: str, path: str) -> _InjectedError | None:
        with self._lock:
            for err in self._errors:
                if err.match in path and (err.method is None or err.method == method):
                    if err.times is not None:
                        err.times -= 1
                        if err.times <= 0:
                            self._errors.remove(err)
                    return err
        return None

    def _take_fault(self, sha256: str) -> _Fault | None:
        with self._lock:
            fault = self._faults.get(sha256)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[sha256]
            return fault


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`HubServer`; one instance per connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server_version = "berg-onnx-hubserver/1"
    timeout = 30  # idle keep-alive connections do not pin threads forever
    server: _ThreadingServer
    _body_consumed = False

    # silence the default stderr access log; requests go to hub.request_log instead
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _read_body(self) -> bytes:
        self._body_consumed = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        body = self._read_body()
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from exc

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode())

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        has_body = self.headers.get("Content-Length", "0") not in ("", "0") or (
            self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        )
        if has_body and not self._body_consumed:
            # the unread body would be parsed as the next request: hang up, and say so, or
            # the client reuses the connection and sees "Server disconnected"
            headers["Connection"] = "close"
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers=headers)

    def _dispatch(self) -> None:
        self._body_consumed = False
        split = urlsplit(self.path)
        headers = self._headers()
        method = self.command
        hub = self.hub
        with hub._lock:
            hub.request_log.append(RequestRecord(method=method, path=self.path, headers=headers))
        try:
            injected = hub._injected_error(method, split.path)
            if injected is not None:
                # drain the body so the connection stays usable
                if method in ("POST", "PUT"):
                    self._read_body()
                raise HubError(injected.status, "Injected failure", injected.error_code)
            hub._check_auth(headers)
            segs = [unquote(s) for s in split.path.split("/")[1:]]
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            self._route(method, split.path, segs, query)
        except HubError as err:
            self._send_error(err)

    def _route(self, method: str, raw_path: str, segs: list[str], query: dict[str, str]) -> None:
        if segs[:1] == ["api"]:
            self._route_api(method, segs[1:], query)
            return
        if segs[:1] == ["_lfs"]:
            self._route_lfs_storage(method, segs[1:], query)
            return
        if raw_path.endswith(".git/info/lfs/objects/batch") and method == "POST":
            repo_part = raw_path[1 : -len(".git/info/lfs/objects/batch")]
            repo_type, repo_id = self._split_prefixed_repo(
                [unquote(s) for s in repo_part.split("/")]
            )
            self._lfs_batch(repo_type, repo_id)
            return
        if "resolve" in segs[1:4] and method in ("GET", "HEAD"):
            self._resolve_route(segs)
            return
        raise HubError(404, "Sorry, we can't find the page you are looking for.")

    @staticmethod
    def _split_prefixed_repo(parts: list[str]) -> tuple[str, str]:
        repo_type = "model"
        if parts and parts[0] in _REPO_TYPES and parts[0] != "models" and len(parts) > 1:
            repo_type = _REPO_TYPES[parts[0]]
            parts = parts[1:]
        return repo_type, "/".join(parts)

    # ------------------------------------------------------------------ /api

    def _route_api(self, method: str, segs: list[str], query: dict[str, str]) -> None:
        hub = self.hub
        if segs == ["repos", "create"] and method == "POST":
            self._create_repo()
            return
        if segs == ["repos", "delete"] and method == "DELETE":
            body = self._json_body()
            repo_type = body.get("type") or "model"
            name = body.get("name", "")
            org = body.get("organization")
            hub.delete_repo(f"{org}/{name}" if org else name, repo_type=repo_type)
            self._send_json({})
            return
        if segs == ["whoami-v2"] and method == "GET":
            self._send_json(
                {
                    "type": "user",
                    "name": "test-user",
                    "fullname": "Test User",
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"role": "write"}},
                }
            )
            return
        if segs == ["validate-yaml"] and method == "POST":
            self._read_body()
            self._send_json({"errors": [], "warnings": []})
            return
        if not segs or segs[0] not in _REPO_TYPES or len(segs) < 2:
            raise HubError(404, "Sorry, we can't find the page you are looking for.")
        repo_type = _REPO_TYPES[segs[0]]
        rest = segs[1:]
        if len(rest) >= 2 and hub._has_repo(repo_type, f"{rest[0]}/{rest[1]}"):
            n = 2
        elif len(rest) == 1 or rest[1] in _API_SUBPATHS:
            n = 1
        else:
            n = 2
        repo_id, tail = "/".join(rest[:n]), rest[n:]
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
        verb = tail[0] if tail else ""
        if method == "GET" and (not tail or verb == "revision"):
            revision = "/".join(tail[1:]) if tail else "main"
            self._repo_info(repo, revision, query)
        elif method == "GET" and verb == "tree" and len(tail) >= 2:
            self._tree(repo, tail[1], "/".join(tail[2:]).strip("/"), query)
        elif method == "POST" and verb == "paths-info" and len(tail) == 2:
            self._paths_info(repo, tail[1])
        elif method == "GET" and verb == "refs":
            self._refs(repo, query)
        elif method == "GET" and verb == "commits" and len(tail) >= 2:
            self._commits(repo, "/".join(tail[1:]))
        elif method == "POST" and verb == "preupload" and len(tail) >= 2:
            self._preupload(repo, "/".join(tail[1:]), query)
        elif method == "POST" and verb == "commit" and len(tail) >= 2:
            self._commit(repo, "/".join(tail[1:]), query)
        elif verb == "tag" and len(tail) >= 2 and method in ("POST", "DELETE"):
            self._tag(repo, method, "/".join(tail[1:]))
        elif verb == "branch" and len(tail) >= 2 and method in ("POST", "DELETE"):
            self._branch(repo, method, "/".join(tail[1:]))
        elif verb in ("xet-write-token", "xet-read-token"):
            raise HubError(
                501,
                "HubServer does not speak Xet storage: set HF_HUB_DISABLE_XET=1 (or "
                "huggingface_hub.constants.HF_HUB_DISABLE_XET = True) so uploads use LFS",
            )
        else:
            raise HubError(404, "Sorry, we can't find the page you are looking for.")

    def _create_repo(self) -> None:
        body = self._json_body()
        name = body.get("name")
        if not name:
            raise HubError(400, "Missing repo name")
        org = body.get("organization")
        repo_id = f"{org}/{name}" if org else name
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIXES and repo_type != "model":
            raise HubError(400, f"Invalid repo type {repo_type}")
        private = bool(body.get("private")) or body.get("visibility") == "private"
        hub = self.hub
        if hub._has_repo(repo_type, repo_id):
            err = HubError(409, f"You already created this {repo_type} repo")
            self._send(
                409,
                json.dumps(
                    {"error": err.message, "url": hub._repo_url(repo_type, repo_id)}
                ).encode(),
                headers={"X-Error-Message": err.message},
            )
            return
        url = hub.create_repo(repo_id, repo_type=repo_type, private=private)
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo: _Repo, revision: str, query: dict[str, str]) -> None:
        hub = self.hub
        blobs = query.get("blobs", "").lower() in ("1", "true")
        with hub._lock:
            oid = hub._resolve(repo, revision)
            commit = repo.commits[oid]
            siblings = []
            for path in sorted(commit.files):
                entry = commit.files[path]
                sibling: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sibling["size"] = entry.size
                    sibling["blobId"] = entry.git_oid
                    if entry.lfs:
                        sibling["lfs"] = {
                            "sha256": entry.sha256,
                            "size": entry.size,
                            "pointerSize": len(entry.pointer),
                        }
                siblings.append(sibling)
            payload = {
                "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
                "sha": oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        self._send_json(payload)

    def _tree(self, repo: _Repo, revision: str, path: str, query: dict[str, str]) -> None:
        hub = self.hub
        recursive = query.get("recursive", "").lower() in ("1", "true")
        expand = query.get("expand", "").lower() in ("1", "true")
        with hub._lock:
            commit = repo.commits[hub._resolve(repo, revision)]
            dirs = hub._dirs_of(commit.files)
            if path and path not in dirs:
                raise HubError(
                    404,
                    f"{path} does not exist on {revision}",
                    "EntryNotFound",
                    {"X-Repo-Commit": commit.oid},
                )
            prefix = f"{path}/" if path else ""
            items = []
            for name in sorted(set(commit.files) | dirs):
                if not name.startswith(prefix):
                    continue
                if not recursive and "/" in name[len(prefix) :]:
                    continue
                items.append(hub._path_info(repo, commit, name, name in dirs, expand))
        self._send_json(items)

    def _paths_info(self, repo: _Repo, revision: str) -> None:
        hub = self.hub
        body = self._read_body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            data = json.loads(body or b"{}")
            paths = data.get("paths", [])
            expand = bool(data.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        with hub._lock:
            commit = repo.commits[hub._resolve(repo, revision)]
            dirs = hub._dirs_of(commit.files)
            items = [
                hub._path_info(repo, commit, p.strip("/"), p.strip("/") in dirs, expand)
                for p in paths
                if p.strip("/") in commit.files or p.strip("/") in dirs
            ]
        self._send_json(items)

    def _refs(self, repo: _Repo, query: dict[str, str]) -> None:
        with self.hub._lock:
            payload: dict[str, Any] = {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
                    for n, o in sorted(repo.branches.items())
                ],
                "tags": [
                    {"name": n, "ref": f"refs/tags/{n}", "targetCommit": o}
                    for n, o in sorted(repo.tags.items())
                ],
                "converts": [],
            }
        if query.get("include_prs"):
            payload["pullRequests"] = []
        self._send_json(payload)

    def _commits(self, repo: _Repo, revision: str) -> None:
        hub = self.hub
        with hub._lock:
            commit: _Commit | None = repo.commits[hub._resolve(repo, revision)]
            items = []
            while commit is not None:
                items.append(
                    {
                        "id": commit.oid,
                        "title": commit.title,
                        "message": commit.message,
                        "authors": [{"user": "test-user"}],
                        "date": commit.date,
                    }
                )
                commit = repo.commits[commit.parents[0]] if commit.parents else None
        self._send_json(items)

    def _preupload(self, repo: _Repo, revision: str, query: dict[str, str]) -> None:
        hub = self.hub
        body = self._json_body()
        with hub._lock:
            if query.get("create_pr"):
                head_files: Mapping[str, _Entry] = {}
            else:
                head_files = repo.commits[hub._resolve(repo, revision)].files
            answers = []
            for item in body.get("files", []):
                path = item["path"]
                size = int(item.get("size", 0))
                mode = "lfs" if hub.should_use_lfs(path, size) else "regular"
                existing = head_files.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else existing.git_oid
                answers.append(
                    {"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid}
                )
        self._send_json({"files": answers, "commitOid": None})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        hub = self.hub
        with hub._lock:
            hub._get_repo(repo_type, repo_id)
        body = self._json_body()
        operation = body.get("operation", "upload")
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            with hub._lock:
                present = oid in hub._blobs
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if operation == "upload":
                if not present:
                    answer["actions"] = {
                        "upload": {"href": f"{hub.endpoint}/_lfs/upload/{oid}?size={size}"},
                        "verify": {"href": f"{hub.endpoint}/_lfs/verify/{oid}"},
                    }
            elif present:
                answer["actions"] = {"download": {"href": f"{hub.endpoint}/_lfs/objects/{oid}"}}
            else:
                answer["error"] = {"code": 404, "message": "Object does not exist"}
            objects.append(answer)
        payload = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})
        self._send(200, payload.encode(), content_type="application/vnd.git-lfs+json")

    def _route_lfs_storage(self, method: str, segs: list[str], query: dict[str, str]) -> None:
        hub = self.hub
        if len(segs) != 2:
            raise HubError(404, "Not found")
        action, oid = segs
        if action == "upload" and method == "PUT":
            data = self._read_body()
            digest = hashlib.sha256(data).hexdigest()
            if digest != oid:
                raise HubError(400, f"sha256 mismatch: got {digest}, expected {oid}")
            if "size" in query and int(query["size"]) != len(data):
                raise HubError(400, "size mismatch")
            hub._store(data)
            self._send(200)
        elif action == "verify" and method == "POST":
            body = self._json_body()
            with hub._lock:
                data = hub._blobs.get(oid)
            if data is None or int(body.get("size", len(data))) != len(data):
                raise HubError(404, "Object does not exist")
            self._send_json({})
        elif action == "objects" and method in ("GET", "HEAD"):
            with hub._lock:
                data = hub._blobs.get(oid)
            if data is None:
                raise HubError(404, "Object does not exist")
            self._send(200, data, content_type="application/octet-stream")
        else:
            raise HubError(404, "Not found")

    def _commit(self, repo: _Repo, revision: str, query: dict[str, str]) -> None:
        hub = self.hub
        body = self._read_body()
        if query.get("create_pr"):
            raise HubError(400, "HubServer does not implement pull requests (create_pr)")
        title, description, parent = "", "", None
        adds: dict[str, _Entry] = {}
        deleted_files: list[str] = []
        deleted_folders: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                title = value.get("summary", "")
                description = value.get("description", "")
                parent = value.get("parentCommit")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, "Only base64 file content is supported")
                data = base64.b64decode(value["content"])
                adds[value["path"]] = hub._entry_for(value["path"], data, lfs=False)
            elif key == "lfsFile":
                oid = value["oid"]
                with hub._lock:
                    data = hub._blobs.get(oid)
                if data is None:
                    raise HubError(422, f"LFS object {oid} was not uploaded")
                if "size" in value and int(value["size"]) != len(data):
                    raise HubError(422, f"LFS object {oid} size mismatch")
                adds[value["path"]] = _Entry.large(value["path"], oid, len(data))
            elif key == "deletedFile":
                deleted_files.append(value["path"])
            elif key == "deletedFolder":
                deleted_folders.append(value["path"])
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        if not title:
            raise HubError(400, "Commit summary is required")
        oid = hub._apply_commit(
            repo, revision, title, description, adds, deleted_files, deleted_folders, parent
        )
        prefix = _URL_PREFIXES.get(repo.repo_type, "")
        self._send_json(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{hub.endpoint}/{prefix}{repo.repo_id}/commit/{oid}",
                "pullRequestUrl": None,
                "hookOutput": "",
            }
        )

    def _tag(self, repo: _Repo, method: str, name: str) -> None:
        hub = self.hub
        if method == "POST":
            body = self._json_body()
            tag = body.get("tag")
            if not tag:
                raise HubError(400, "Missing tag name")
            hub.create_tag(repo.repo_id, tag, name, repo_type=repo.repo_type)
            self._send_json({})
        else:
            with hub._lock:
                if name not in repo.tags:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                del repo.tags[name]
            self._send_json({})

    def _branch(self, repo: _Repo, method: str, name: str) -> None:
        hub = self.hub
        if method == "POST":
            body = self._json_body()
            start = body.get("startingPoint") or "main"
            hub.create_branch(repo.repo_id, name, start, repo_type=repo.repo_type)
            self._send_json({})
        else:
            with hub._lock:
                if name not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                if name == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del repo.branches[name]
            self._send_json({})

    # ------------------------------------------------------------------ resolve

    def _resolve_route(self, segs: list[str]) -> None:
        hub = self.hub
        idx = segs.index("resolve", 1)
        repo_type, repo_id = self._split_prefixed_repo(segs[:idx])
        if len(segs) < idx + 3:
            raise HubError(404, "Missing revision or file path")
        revision = segs[idx + 1]
        path = "/".join(segs[idx + 2 :])
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            oid = hub._resolve(repo, revision)
            entry = repo.commits[oid].files.get(path)
            if entry is None:
                raise HubError(
                    404,
                    f"{path} does not exist on {revision}",
                    "EntryNotFound",
                    {"X-Repo-Commit": oid},
                )
            data = hub._blobs[entry.sha256]
        headers = {
            "X-Repo-Commit": oid,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        if self.command == "HEAD":
            self._write_head(200, headers, entry.size)
            return
        self._serve_bytes(data, headers, hub._take_fault(entry.sha256))

    def _write_head(self, status: int, headers: Mapping[str, str], length: int) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _serve_bytes(self, data: bytes, headers: dict[str, str], fault: _Fault | None) -> None:
        total = len(data)
        start, end = 0, total - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header:
            match = _RANGE.fullmatch(range_header.strip())
            if match is None or (not match.group(1) and not match.group(2)):
                raise HubError(416, f"Unsupported range {range_header}")
            if match.group(1):
                start = int(match.group(1))
                if match.group(2):
                    end = min(int(match.group(2)), total - 1)
            else:  # suffix range: last N bytes
                start = max(total - int(match.group(2)), 0)
            if start >= total or start > end:
                raise HubError(
                    416,
                    "Requested range not satisfiable",
                    headers={"Content-Range": f"bytes */{total}"},
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        body = data[start : end + 1]
        if fault is None:
            self._write_head(status, headers, len(body))
            rate = self.hub.throttle_bytes_per_s
            if rate:  # a slow link: 64 KiB at a time, paced (cache soak kills a client mid-file)
                for at in range(0, len(body), 1 << 16):
                    self.wfile.write(body[at : at + (1 << 16)])
                    self.wfile.flush()
                    time.sleep((1 << 16) / rate)
                return
            self.wfile.write(body)
            return
        cut = max(0, fault.keep_bytes - start)
        if fault.mode == "short":
            self._write_head(status, headers, min(cut, len(body)))
            self.wfile.write(body[:cut])
            return
        # "close": promise everything, deliver part, hang up
        self._write_head(status, headers, len(body))
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
