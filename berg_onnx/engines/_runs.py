"""Run bookkeeping both engines share: what is left to do, the progress bar, the report.

Why one copy: the local and the Ray engine must agree on what a resumed run
counts as done (the store's completion records), on how the bar starts (rows of
chunks already complete), and on what they report, or a run stopped in one and
resumed in the other would be described differently from the same store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from berg_onnx.utils.progress import progress_bar, resolve_show

if TYPE_CHECKING:
    from berg_onnx.experiment.job import ExperimentJob, ModelPlan
    from berg_onnx.experiment.store import ExperimentStore


@dataclass(frozen=True)
class RunReport:
    """What one run did: the store's geometry, and chunks computed vs found complete."""

    path: str
    n_images: int
    models: tuple[str, ...]
    chunk_size: int
    chunks_written: int
    chunks_already_complete: int
    seconds: float
    #: (label, why) of every row of the store whose image could not be read (NaN rows)
    failed: tuple[tuple[str, str], ...] = ()
    #: What opening the store found: images moved, changed, no longer given; a stale lock
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        total = self.chunks_written + self.chunks_already_complete
        return total == len(self.models) * -(-self.n_images // self.chunk_size)


class RunLedger:
    """The chunks each model of a job still lacks in a store, and the run's progress bar.

    Read once, when the run starts: chunks recorded complete by then are not
    computed again; the bar counts images (rows x models) and starts at those done.
    """

    def __init__(
        self,
        job: ExperimentJob,
        store: ExperimentStore,
        *,
        desc: str,
        show_progress: bool | None,
    ) -> None:
        self._t0 = time.perf_counter()
        self.store = store
        self.models = tuple(job.models)
        self.todo: dict[ModelPlan, set[int]] = {
            plan: set(store.missing_chunks(plan.subject, plan.roi)) for plan in self.models
        }
        self.missing = sum(len(m) for m in self.todo.values())
        total = store.n_images * len(self.models)
        done = total - sum(store.chunk_rows(c) for m in self.todo.values() for c in m)
        self.bar = progress_bar(
            total, desc, show=resolve_show(show_progress) and self.missing > 0, initial=done
        )

    def report(self, chunks_written: int) -> RunReport:
        """This run's report, ``chunks_written`` chunks having been written; closes the bar."""
        self.bar.close()
        return RunReport(
            path=self.store.path,
            n_images=self.store.n_images,
            models=tuple(p.name for p in self.models),
            chunk_size=self.store.chunk_size,
            chunks_written=chunks_written,
            chunks_already_complete=self.store.n_chunks * len(self.models) - self.missing,
            seconds=time.perf_counter() - self._t0,
            failed=tuple(self.store.failed_rows()),
            notes=tuple(self.store.notes),
        )
