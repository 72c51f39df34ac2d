"""The one progress bar: tqdm on stderr when shown, else a silent bar with the same methods.

Why one helper: every long loop (encode, the experiment engines, downloads) draws
the same kind of bar, and code that receives a bar never checks whether it got
one; a silent bar takes the calls and does nothing. tqdm is imported only when a
bar is shown, so ``import berg_onnx`` stays cheap.
"""

from __future__ import annotations

import sys
from typing import Protocol


class ProgressBar(Protocol):
    """What loops call on a bar: tqdm's methods, or the silent bar's."""

    def update(self, n: int = 1) -> object: ...

    def set_description(self, desc: str) -> None: ...

    def close(self) -> None: ...


class SilentBar:
    """A bar that draws nothing: the value of every bar not shown."""

    def update(self, n: int = 1) -> None:
        """Nothing to draw."""

    def set_description(self, desc: str) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def progress_bar(
    total: int, desc: str, *, show: bool = True, initial: int = 0, unit: str = "img"
) -> ProgressBar:
    """A tqdm bar on stderr counting ``unit`` up to ``total``, or a SilentBar.

    Silent when ``show`` is false or the process has no stderr (pythonw, some
    services), where tqdm would fail.
    """
    if not show or sys.stderr is None:
        return SilentBar()
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.05,
    )
