"""Where the golden files (written by BERG's original code) are: one rule for every test.

``$BERG_GOLDEN_DIR`` if set; else the shared copy beside the checkout
(``../shared/golden``) when it exists; else the copy committed in the repository
(``tests/golden``), so a fresh clone runs the golden-file fidelity tests too.
"""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: The copy committed with the tests (the same files as ../shared/golden).
IN_REPO = TESTS / "golden"
SHARED = TESTS.parent.parent / "shared" / "golden"


def golden_root() -> Path:
    """The golden directory to use (it may be missing only if tests/golden was deleted)."""
    given = os.environ.get("BERG_GOLDEN_DIR")
    if given:
        return Path(given)
    return SHARED if SHARED.is_dir() else IN_REPO
