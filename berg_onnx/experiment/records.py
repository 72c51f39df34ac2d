"""Per-image records of a file store, and what a resumed run makes of them.

A store over image files keeps, per row (``_images`` in store.py): the sha256
of the bytes the row was computed from, the file's identity then (size,
mtime, ctime, inode) and why it could not be read ('' if it was). They are
written for a chunk's rows before any model's chunk is recorded complete, so a
complete chunk always has its rows' records.

When a store is opened again (``reconcile``), the images given are matched to
the store's rows by label (the path relative to the set's root), whatever the
order they were given in or the folder they are now in:

- an image given that the store has no row for is refused, by name: a store's
  rows are fixed when it is created;
- a row whose file is unchanged (same identity: by stat alone) is trusted;
- a row whose identity changed is hashed: the same bytes (a moved or copied
  folder, a ``touch``) are accepted and the new identity recorded; other bytes
  (a changed or swapped image) make its chunk "changed": recorded not done for
  every model of the store, so it is computed again, and named in the report;
- a row recorded as unreadable is tried again once its file changed;
- a row whose file is no longer given keeps what was computed from it; its
  chunks still to compute record it as failed (``on_error="skip"``) or stop
  the run before anything is written (``"fail"``).
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from berg_onnx.errors import ExperimentError
from berg_onnx.experiment.stimuli import NAMED, StimulusSet
from berg_onnx.utils.fileio import file_identity, sha256_file
from berg_onnx.utils.outputs import label_text, unescape_label

IMAGES = "_images"
SHA256 = f"{IMAGES}/sha256"
IDENTITY = f"{IMAGES}/identity"
ERROR = f"{IMAGES}/error"


@dataclass(frozen=True)
class Reconciled:
    """A resumed file store's rows against the images given now."""

    stimuli: StimulusSet  # in the store's row order, under the root given now
    changed: tuple[int, ...]  # rows whose bytes differ from those computed
    retried: tuple[int, ...]  # rows recorded unreadable whose file changed since
    absent: tuple[int, ...]  # rows whose image was not given
    identities: dict[int, tuple[int, int, int, int]]  # same bytes, new identity
    old_root: str | None

    @property
    def touches_store(self) -> bool:
        """Whether opening the store with these images rewrites any of its records."""
        return bool(self.changed or self.retried or self.identities or self.old_root)


def stored_labels(root: Any) -> list[str]:
    """The store's row labels as the OS gave them (``stimuli`` is ``label_text``-escaped)."""
    return [unescape_label(str(s)) for s in root["stimuli"][:]]


def read_records(root: Any) -> tuple[list[str], np.ndarray, list[str]]:
    """(sha256 per row, identity (N, 4) int64, error per row) of a file store."""
    sha = [str(x) for x in np.asarray(root[SHA256][:]).tolist()]
    identity = np.asarray(root[IDENTITY][:], dtype=np.int64)
    error = [str(x) for x in np.asarray(root[ERROR][:]).tolist()]
    return sha, identity, error


def _names(labels: list[str]) -> str:
    more = f" and {len(labels) - NAMED} more" if len(labels) > NAMED else ""
    return ", ".join(label_text(x) for x in labels[:NAMED]) + more


def reconcile(root: Any, given: StimulusSet, path: str, threads: int = 4) -> Reconciled:
    """The store's rows matched to ``given`` (module docstring); ExperimentError for images
    given that are not rows of the store."""
    labels = stored_labels(root)
    rows = {label: i for i, label in enumerate(labels)}
    extra = [x for x in given.labels if x not in rows]
    absent = sorted(set(range(len(labels))) - {rows[x] for x in given.labels if x in rows})
    if extra:
        gone = (
            f"; {len(absent)} of its images are not given ({_names([labels[i] for i in absent])})"
            if absent
            else ""
        )
        raise ExperimentError(
            f"{len(extra)} of the images given are not in the image set of {path} "
            f"({_names(extra)}){gone}. A store's rows are fixed when it is created: give "
            "the same images (renamed files are new images), write these into another "
            "store, or pass --overwrite (overwrite=True) to start over"
        )
    stimuli = dataclasses.replace(
        given, labels=tuple(labels), fingerprint=root.attrs.get("stimulus_fingerprint", "")
    )
    sha, identity, error = read_records(root)
    absent_set = set(absent)
    to_hash: list[tuple[int, tuple[int, int, int, int]]] = []
    retried = []
    for i in range(len(labels)):
        if i in absent_set or (not sha[i] and not error[i]):
            continue  # not given, or never read yet: nothing to compare
        try:
            current = file_identity(os.stat(stimuli.path(i)))
        except OSError:
            if not error[i]:
                to_hash.append((i, (0, 0, 0, 0)))  # there but unreadable now: changed
            continue
        if current == tuple(int(v) for v in identity[i]):
            continue
        if error[i]:
            retried.append(i)
        else:
            to_hash.append((i, current))

    def same(item: tuple[int, tuple[int, int, int, int]]) -> bool:
        i, current = item
        if current == (0, 0, 0, 0):
            return False
        try:
            return sha256_file(stimuli.path(i)) == sha[i]
        except OSError:
            return False

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="berg-hash") as pool:
        verdicts = list(pool.map(same, to_hash))
    identities = {i: cur for (i, cur), ok in zip(to_hash, verdicts, strict=True) if ok}
    changed = tuple(i for (i, _), ok in zip(to_hash, verdicts, strict=True) if not ok)
    old_root = root.attrs.get("stimulus_root")
    if absent:
        stimuli = dataclasses.replace(stimuli, absent=frozenset(absent))
    return Reconciled(
        stimuli=stimuli,
        changed=changed,
        retried=tuple(retried),
        absent=tuple(absent),
        identities=identities,
        old_root=old_root if old_root != given.root else None,
    )


def notes(rec: Reconciled, path: str, models_elsewhere: bool) -> list[str]:
    """What the run says about a resumed store's images (one line each)."""
    labels = rec.stimuli.labels
    out = []
    if rec.old_root is not None:
        out.append(
            f"{path} was started on images in {rec.old_root}; they are read from "
            f"{rec.stimuli.root} now (the same files, checked by content where they changed)"
        )
    if rec.changed:
        others = " (models of the store not in this run are marked incomplete)"
        out.append(
            f"{len(rec.changed)} images changed since their rows were computed: "
            f"{_names([labels[i] for i in rec.changed])}; their chunks are computed "
            f"again{others if models_elsewhere else ''}"
        )
    if rec.retried:
        out.append(
            f"{len(rec.retried)} images that could not be read before changed and are "
            f"tried again: {_names([labels[i] for i in rec.retried])}"
        )
    if rec.absent:
        out.append(
            f"{len(rec.absent)} of the store's images are not given now "
            f"({_names([labels[i] for i in rec.absent])}): rows computed from them are kept"
        )
    return out
