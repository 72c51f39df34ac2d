"""Test fixture around ``olah``, a third-party Hub mirror that serves local git repositories.

Why: :mod:`hubserver` is our own reading of the Hub protocol; ``olah`` is an independent
implementation. Downloading the same fixtures through both keeps us honest about what
``huggingface_hub`` really needs. olah (PyPI ``olah==0.5.4``) drags in FastAPI, uvicorn,
GitPython and more, so it lives in its own virtual environment and runs as a subprocess; it is
never imported here.

Setup (what CI has to run once; ``.venv*`` is git-ignored)::

    python3 -m venv .venv-olah
    .venv-olah/bin/pip install olah==0.5.4

The executable is ``$BERG_OLAH_BIN`` or, by default, ``<repo>/.venv-olah/bin/olah-cli`` (the
console script olah installs). Tests call :func:`olah_bin_or_skip` to skip cleanly without it.

Layout olah expects in offline mode: a git repository per Hub repo at
``<mirrors-root>/models/<org>/<name>`` (``datasets``/``spaces`` likewise).
:func:`build_fixture_repo` makes one from a folder of files with plain ``git`` -- the
``git-lfs`` binary is not needed: LFS files are written as standard pointer files with their
objects under ``.git/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>``, which is all olah reads.

olah 0.5.4 quirks (found while writing this; tests rely on them being handled here):

* ``mirrors-path`` and ``offline`` can only be set in its TOML file (``--config``), and with
  ``--config`` most other command-line flags are ignored, so everything goes into the file;
  only ``--log-path`` is passed (its default is ``./logs`` in the working directory).
* ``GET /`` answers 500 (missing template), so readiness is probed with a HEAD on a resolve
  URL: any HTTP answer means the server is up.
* Only blobs of 121..149 bytes are checked for being LFS pointers, i.e. pointer files must be
  the standard three-line form (ours are ~130 bytes).
* Regular files get the git blob sha1 as ETag, LFS files the sha256 of the object (unquoted);
  no ``X-Linked-*`` headers. GET responses are chunked (no Content-Length), so the client
  checks the size announced by HEAD.
* Errors differ from the Hub. A missing file asked for by full commit hash: 404
  ``EntryNotFound`` (-> ``RemoteEntryNotFoundError``); the same by branch or tag, and any
  unknown branch/tag name: **401** ``X-Error-Code: RepoNotFound`` (-> huggingface_hub raises
  ``RepositoryNotFoundError``, not ``EntryNotFoundError`` / ``RevisionNotFoundError``). An
  unknown full commit hash gives a bare 500, which hf_hub_download retries with backoff for
  ~23 s before giving up -- avoid it in tests. ``GET /api/models/<repo>`` without a revision
  answers 401; ``.../revision/<rev>`` and ``.../tree/<rev>`` work.
* Even offline it knows an upstream (``hf-netloc``); we point it at a closed loopback port so
  that nothing could ever leave the machine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Self

__all__ = [
    "DEFAULT_LFS_PATTERNS",
    "OlahServer",
    "build_fixture_repo",
    "default_olah_bin",
    "live_group_members",
    "olah_bin_or_skip",
    "tag_fixture_repo",
]

#: Files stored through LFS in fixture repos (matched against the path and the file name).
DEFAULT_LFS_PATTERNS: tuple[str, ...] = ("*.onnx", "*.npz")

_REPO_ROOT = Path(__file__).resolve().parents[2]
# A fixed identity and clock make fixture commit hashes reproducible run to run.
_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "berg-onnx tests",
    "GIT_AUTHOR_EMAIL": "tests@berg-onnx.invalid",
    "GIT_COMMITTER_NAME": "berg-onnx tests",
    "GIT_COMMITTER_EMAIL": "tests@berg-onnx.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}
_FIXED_DATE = 1_700_000_000


def default_olah_bin() -> Path:
    """``$BERG_OLAH_BIN`` if set, else ``<repo>/.venv-olah/bin/olah-cli``."""
    env = os.environ.get("BERG_OLAH_BIN")
    return Path(env) if env else _REPO_ROOT / ".venv-olah" / "bin" / "olah-cli"


def olah_bin_or_skip() -> Path:
    """The olah executable, or ``pytest.skip`` with the commands that would install it."""
    import pytest

    path = default_olah_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"olah not installed at {path} (set BERG_OLAH_BIN, or run: python3 -m venv "
            ".venv-olah && .venv-olah/bin/pip install olah==0.5.4)"
        )
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return path


def _git(repo: Path, *args: str, commit_time: int | None = None) -> str:
    env = {**os.environ, **_GIT_ENV}
    if commit_time is not None:
        stamp = f"@{commit_time} +0000"
        env["GIT_AUTHOR_DATE"] = stamp
        env["GIT_COMMITTER_DATE"] = stamp
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise GitError(result.returncode, result.args, result.stdout, result.stderr)
    return result.stdout.strip()


class GitError(subprocess.CalledProcessError):
    """A failed git call whose message carries git's own stderr, not only the exit status."""

    def __str__(self) -> str:
        said = " ".join((self.stderr or "").split()) or "(nothing on stderr)"
        return f"{super().__str__()} git said: {said}"


def _is_lfs(path: str, patterns: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _collect(files: Path | Mapping[str, bytes]) -> dict[str, bytes]:
    if isinstance(files, Mapping):
        return {str(k).strip("/"): bytes(v) for k, v in files.items()}
    root = Path(files)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def build_fixture_repo(
    mirrors_root: Path | str,
    repo_id: str,
    files: Path | Mapping[str, bytes],
    *,
    repo_type: str = "models",
    lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
    message: str = "Add fixture files",
    tag: str | None = None,
) -> str:
    """Commit ``files`` (a folder, or a ``{path: bytes}`` mapping) into the fixture repo.

    Creates ``<mirrors_root>/<repo_type>/<org>/<name>`` as a git repository on branch ``main``
    if needed, else adds a commit on top (files not listed stay as they are). Files matching
    ``lfs_patterns`` are committed as git-lfs pointer files with their content stored as LFS
    objects, and the patterns go into ``.gitattributes``. Optionally tags the new commit.
    Returns the full commit hash.
    """
    org, _, name = repo_id.rpartition("/")
    if not org or not name:
        raise ValueError(f"repo_id must be 'org/name', got {repo_id!r}")
    repo = Path(mirrors_root) / repo_type / org / name
    patterns = tuple(lfs_patterns)
    contents = _collect(files)
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", "main")
    lfs_dir = repo / ".git" / "lfs" / "objects"
    for rel, data in contents.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if _is_lfs(rel, patterns):
            oid = hashlib.sha256(data).hexdigest()
            obj = lfs_dir / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            target.write_bytes(
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n"
                f"size {len(data)}\n".encode()
            )
        else:
            target.write_bytes(data)
    if patterns:
        attributes = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns)
        (repo / ".gitattributes").write_text(attributes)
    _git(repo, "add", "-A")
    count = int(_git(repo, "rev-list", "--all", "--count") or 0) if _has_head(repo) else 0
    _git(
        repo,
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
        commit_time=_FIXED_DATE + count,
    )
    commit = _git(repo, "rev-parse", "HEAD")
    if tag is not None:
        tag_fixture_repo(repo, tag, commit)
    return commit


def _has_head(repo: Path) -> bool:
    try:
        _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    except subprocess.CalledProcessError:
        return False
    return True


def tag_fixture_repo(repo_dir: Path | str, tag: str, revision: str = "HEAD") -> str:
    """Add a lightweight tag to a fixture repo; returns the tagged commit hash."""
    repo = Path(repo_dir)
    _git(repo, "tag", tag, revision)
    return _git(repo, "rev-parse", f"{tag}^{{commit}}")


def live_group_members(pgid: int) -> list[int]:
    """PIDs of processes in group ``pgid`` that are not zombies (Linux ``/proc``).

    Without ``/proc`` it falls back to "does the group exist at all".
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    live = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # fields after "(comm)": state ppid pgrp ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(entry.name))
    return live


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OlahServer:
    """Run olah in offline mode over ``mirrors_root`` on a free 127.0.0.1 port.

    Usage::

        with OlahServer(tmp_path / "mirrors") as olah:
            hf_hub_download("org/name", "model.onnx", revision=sha, endpoint=olah.endpoint, ...)

    The process gets its own process group; leaving the block terminates the whole group
    (SIGTERM, then SIGKILL after ``stop_timeout``) and waits for it, so nothing is left
    behind even if olah spawned workers. Start-up is bounded by ``startup_timeout``; on
    failure the exception carries the tail of olah's log.
    """

    def __init__(
        self,
        mirrors_root: Path | str,
        *,
        olah_bin: Path | str | None = None,
        workdir: Path | str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.mirrors_root = Path(mirrors_root).resolve()
        self.olah_bin = Path(olah_bin) if olah_bin is not None else default_olah_bin()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="olah-"))
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.endpoint = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "olah.out"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def _write_config(self) -> Path:
        config = self.workdir / "olah.toml"
        lines = [
            "[basic]",
            'host = "127.0.0.1"',
            f"port = {self.port}",
            f'repos-path = "{(self.workdir / "repos").as_posix()}"',
            f'mirrors-path = ["{self.mirrors_root.as_posix()}"]',
            # upstream = a closed loopback port: offline mode must never need it
            'hf-scheme = "http"',
            'hf-netloc = "127.0.0.1:9"',
            'hf-lfs-netloc = "127.0.0.1:9"',
            'mirror-scheme = "http"',
            f'mirror-netloc = "127.0.0.1:{self.port}"',
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"',
            "",
            "[accessibility]",
            "offline = true",
            "",
        ]
        config.write_text("\n".join(lines))
        return config

    def start(self) -> Self:
        if self.process is not None:
            raise RuntimeError("olah already started")
        if not self.olah_bin.is_file():
            raise FileNotFoundError(f"olah executable not found: {self.olah_bin}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        config = self._write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OLAH_"))}
        env["NO_PROXY"] = "127.0.0.1,localhost"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - must outlive this method
        self.process = subprocess.Popen(
            [
                str(self.olah_bin),
                "--config",
                str(config),
                "--log-path",
                str(self.workdir / "logs"),
            ],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        probe = f"{self.endpoint}/berg-probe/missing/resolve/main/ready"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"olah exited with {self.process.returncode} during start-up:\n"
                    f"{self.log_tail()}"
                )
            request = urllib.request.Request(probe, method="HEAD")
            try:
                with urllib.request.urlopen(request, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer (olah says 401 here) means it is serving
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TimeoutError(
            f"olah did not answer on {self.endpoint} within {self.startup_timeout}s:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        """Terminate olah's process group and reap it. Idempotent."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
        if proc is not None:
            self._reap_group(proc.pid)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _reap_group(self, pgid: int) -> None:
        """Wait (bounded) until no live process of olah's group is left.

        GitPython inside olah keeps ``git cat-file`` helpers running; they share the group and
        got the same signal. Once olah is gone they are reparented to init, which may take a
        while to reap them: zombies are dead already, so they do not count. While any member
        exists the group id cannot be reused, so signalling it only reaches olah's own
        descendants.
        """
        deadline = time.monotonic() + self.stop_timeout
        while live_group_members(pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
