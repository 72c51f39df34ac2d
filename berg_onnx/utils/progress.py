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


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (not a pipe, a log file or absent)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def resolve_show(show: bool | None) -> bool:
    """``show_progress`` as the API takes it: None (the default) means "when stderr is a
    terminal", so scripts, notebooks' logs, pipes and CI logs get no bar unless asked."""
    return stderr_is_terminal() if show is None else bool(show)


def progress_bar(
    total: int, desc: str, *, show: bool | None = None, initial: int = 0, unit: str = "img"
) -> ProgressBar:
    """A tqdm bar on stderr counting ``unit`` up to ``total``, or a SilentBar.

    ``show``: True, False, or None for "only when stderr is a terminal". Silent
    too when the process has no stderr (pythonw, some services), where tqdm
    would fail.
    """
    if not resolve_show(show) or sys.stderr is None:
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
