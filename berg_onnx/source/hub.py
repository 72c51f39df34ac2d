"""Models from a Hugging Face Hub repository: pinned revision, per-file, verified cache.

Each file the requested model needs is fetched on its own with
``hf_hub_download`` (never a whole-repo snapshot) into the Hugging Face cache
or ``$BERG_ONNX_CACHE``. The repo's manifest.json, read at the pinned
revision, gives every file's sha256 and size; huggingface_hub itself checks
only sizes, so each file is hashed after download and on first use from the
cache. A mismatch deletes the bad file and fetches it once more; a second
mismatch is an error. All later files are read at the commit the manifest came
from, so a branch that moves mid-session cannot mix two exports.
"""

from __future__ import annotations

import re
from pathlib import Path

from berg_onnx.constants import ENV_CACHE, ENV_REPO, ENV_REVISION, env_str
from berg_onnx.errors import ModelLoadError, ModelNotFoundError, ResourceError
from berg_onnx.source.catalog import load_catalog
from berg_onnx.source.manifest import FileEntry, Manifest
from berg_onnx.utils.verified import check_file, stamp

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_settings(
    repo_id: str | None = None, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[str, str, Path | None]:
    """(repo_id, revision, cache_dir): arguments, then environment, then models.json."""
    catalog = load_catalog()
    repo = repo_id or env_str(ENV_REPO) or catalog.hub_repo_id
    rev = revision or env_str(ENV_REVISION) or catalog.hub_revision
    cache = cache_dir or env_str(ENV_CACHE)
    return repo, rev, Path(cache).expanduser() if cache else None


def placeholder_hint(repo_id: str) -> str:
    """A sentence for errors and listings when ``repo_id`` is the catalogue's placeholder
    repo (models.json ``hub.placeholder``: nothing is published there yet); else ""."""
    catalog = load_catalog()
    if not (catalog.hub_placeholder and repo_id == catalog.hub_repo_id):
        return ""
    return (
        f"{repo_id} is the default Hub repo, a placeholder: no export has been published "
        "there yet. Use a local export instead (--berg-dir DIR, or BERG(berg_dir=DIR); "
        "`python -m export demo` writes one to berg-onnx-demo/export), or name a published "
        f"export with --repo-id or {ENV_REPO}."
    )


def _repo_folder(path: Path) -> Path:
    """The cache's folder of one repo, from a snapshot path <repo>/snapshots/<commit>/<file>."""
    return path.parent.parent.parent


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _outside_cache(path: Path) -> str | None:
    """Why a cached snapshot entry points out of its repo's cache folder, or None.

    huggingface_hub's snapshot files are links into the repo's ``blobs/``; an
    entry resolving anywhere else (a link planted to another file) is damaged
    and is never read, hashed or deleted through.
    """
    repo = _repo_folder(path).resolve()
    target = path.resolve()
    if not _inside(target, repo):
        return f"{path} is a link out of the cache (to {target})"
    return None


def _remove_cached(path: Path) -> None:
    """Delete a damaged cache entry: the snapshot link, and its blob when that lies in the
    repo's own ``blobs/`` folder. Nothing outside the cache is ever removed: a link to
    elsewhere is itself the damaged entry, and only the link goes."""
    if path.is_dir() and not path.is_symlink():
        raise ModelLoadError(
            f"{path} is a folder where the cache holds a file; remove it (it is left as it is)"
        )
    blobs = _repo_folder(path).resolve() / "blobs"
    blob = path.resolve() if path.is_symlink() else None
    path.unlink(missing_ok=True)  # the link itself (unlink never follows it)
    if blob is not None and blob.parent == blobs and not blob.is_symlink():
        blob.unlink(missing_ok=True)


class HubStore:
    """Exported models in a Hub repo, downloaded on first use into a verified cache."""

    def __init__(
        self,
        repo_id: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.repo_id, self.revision, self.cache_dir = hub_settings(repo_id, revision, cache_dir)
        self.endpoint = endpoint
        self._manifest: Manifest | None = None
        self._commit: str | None = None  # the commit the manifest was read at
        self._verified: dict[Path, list[int]] = {}  # path -> verified.stamp checked
        #: Fail at once when the Hub cannot be reached at all (no connection), instead of
        #: huggingface_hub's ~23 s of retries; the CLI sets it, a batch job may not.
        self.fail_fast = False

    def describe(self) -> str:
        return f"Hub repo {self.repo_id}@{self.revision}"

    @property
    def commit(self) -> str | None:
        return self._commit

    def _check_reachable(self, filename: str, revision: str) -> None:
        """With ``fail_fast``, one quick request before a download that is not cached: a
        Hub that cannot be reached at all is a ResourceError now, not after the retries."""
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError

        if constants.is_offline_mode() or self._cached_path(filename, revision) is not None:
            return
        url = hf_hub_url(self.repo_id, filename, revision=revision, endpoint=self.endpoint)
        try:
            get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except HfHubHTTPError:
            return  # the server answered: hf_hub_download reports what it said
        except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, TLS
            raise ResourceError(
                f"The Hub at {self._where()} could not be reached ({type(e).__name__}: "
                f"{' '.join(str(e).split()) or 'no answer'}) and {filename} of {self.repo_id}@"
                f"{revision} is not cached. Check the network or HF_ENDPOINT, or work from a "
                "local export with --berg-dir."
            ) from None

    def _cached_path(self, filename: str, revision: str) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            self.repo_id, filename, cache_dir=self.cache_dir, revision=revision
        )
        return Path(found) if isinstance(found, str) and Path(found).is_file() else None

    def _download(self, filename: str, revision: str, force: bool = False) -> Path:
        """One file into the cache; an error about the placeholder repo says it is one."""
        try:
            return self._download_once(filename, revision, force)
        except (ResourceError, ModelNotFoundError) as e:
            hint = placeholder_hint(self.repo_id)
            if not hint:
                raise
            raise type(e)(f"{e} {hint}") from None

    def _download_once(self, filename: str, revision: str, force: bool) -> Path:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub import errors as hf_errors

        if self.fail_fast:
            self._check_reachable(filename, revision)
        try:
            return Path(
                hf_hub_download(
                    self.repo_id,
                    filename,
                    revision=revision,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                    force_download=force,
                    library_name="berg-onnx",
                )
            )
        except hf_errors.RepositoryNotFoundError:
            raise ModelNotFoundError(
                f"Hub repository {self.repo_id!r} not found (or not accessible with the "
                f"current token) at {self._where()}."
            ) from None
        except hf_errors.RevisionNotFoundError:
            raise ModelNotFoundError(
                f"Revision {revision!r} not found in Hub repository {self.repo_id!r}."
            ) from None
        except hf_errors.RemoteEntryNotFoundError:
            raise ModelNotFoundError(
                f"{filename} is not in Hub repository {self.repo_id!r} at revision {revision!r}."
            ) from None
        except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as e:
            if constants.is_offline_mode():
                raise ResourceError(
                    f"Offline mode (HF_HUB_OFFLINE=1) and {filename} of {self.repo_id}@"
                    f"{revision} is not in the cache ({self.cache_dir or 'Hugging Face cache'}). "
                    "While online, prefetch it with `berg-onnx download --subject N --roi ROI`."
                ) from None
            raise ResourceError(
                f"Cannot download {filename} from {self._where()} and it is not cached: {e}. "
                "Check the network or HF_ENDPOINT, or work from a local export with --berg-dir."
            ) from None
        except (hf_errors.HfHubHTTPError, OSError) as e:
            raise ResourceError(
                f"Downloading {filename} from {self._where()} failed: {e}"
            ) from None
        except ValueError as e:  # huggingface_hub refuses an argument combination
            raise ResourceError(f"Cannot download {filename} from {self._where()}: {e}") from None

    def _where(self) -> str:
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    def manifest(self) -> Manifest:
        if self._manifest is None:
            name = load_catalog().manifest_name
            path = self._download(name, self.revision)
            outside = _outside_cache(path)
            if outside:
                raise ModelLoadError(f"{outside}; refusing to read it as the manifest.")
            self._manifest = Manifest.load(path, source=f"{self.describe()}/{name}")
            commit = path.parent.name
            self._commit = commit if _COMMIT.match(commit) else None
        return self._manifest

    def fetch(self, entry: FileEntry) -> Path:
        self.manifest()
        revision = self._commit or self.revision
        path = self._download(entry.name, revision)
        for attempt in (1, 2):
            seen = stamp(path.stat())  # the same stamp the user-cache records use
            if self._verified.get(path) == seen:
                return path
            problem = _outside_cache(path) or check_file(path, entry.size, entry.sha256)
            if problem is None:
                self._verified[path] = seen
                return path
            _remove_cached(path)
            if attempt == 1 and _offline():
                raise ModelLoadError(
                    f"The cached copy of {entry.name} is damaged ({problem}) and was deleted; "
                    "offline mode (HF_HUB_OFFLINE=1) cannot fetch it again. While online, run "
                    "`berg-onnx download --subject N --roi ROI` (or unset HF_HUB_OFFLINE)."
                )
            if attempt == 1:
                path = self._download(entry.name, revision, force=True)
        raise ModelLoadError(
            f"{entry.name} from {self.describe()} does not match the manifest twice in a row "
            f"({problem}); the bad copy was deleted from the cache. The repository content "
            "may be corrupt."
        )

    def cached(self, entry: FileEntry) -> bool:
        """Whether ``entry`` is in the cache already (no network)."""
        return self._cached_path(entry.name, self._commit or self.revision) is not None


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()
