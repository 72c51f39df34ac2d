"""Every input a fuzzer ever found (tests/fuzz/regressions/TARGET/*) keeps the property.

Each file made its target raise something other than a BERGError (or run too
long) before the fix named in the commit that added it; replaying it through
the same target must now either load or raise a BERGError, within a second.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent / "regressions"
CASES = sorted((p.parent.name, p) for p in HERE.glob("*/*") if p.is_file())
NEEDS_EXPORT = {"checkpoint", "pickle", "metadata"}


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_regression_input_keeps_the_property(target, path):
    if target in NEEDS_EXPORT and importlib.util.find_spec("export") is None:
        pytest.skip("the export stage is not importable here")
    run, _seeds = TARGETS[target]
    start = time.process_time()
    run(path.read_bytes())
    assert time.process_time() - start < 1.0


def test_every_target_accepts_its_real_seeds():
    """The seeds from real files must load (not merely raise a BERGError)."""
    from export.checkpoint import load_pickled_npy
    from tests.fuzz import targets

    metadata = [s for s in targets.metadata_seeds() if s.startswith(b"\x93NUMPY")][:1]
    path = targets.scratch(metadata[0], ".npy")
    assert isinstance(load_pickled_npy(path), dict)
    for name, (run, seeds) in TARGETS.items():
        for data in list(seeds())[:2]:
            run(data)  # raises only on a property violation
        assert name
