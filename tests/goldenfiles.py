"""Golden-file checks for generated job scripts and commands (`MFCL_UPDATE_GOLDEN=1` rewrites them)."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def check_golden(kind: str, name: str, text: str, test_file: str) -> None:
    """Compare `text` with tests/golden/<kind>/<name>; on a change, fail with the diff and how to accept it."""
    path = GOLDEN / kind / name
    if os.environ.get("MFCL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with MFCL_UPDATE_GOLDEN=1 pytest {test_file}")
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"{name} (golden)", f"{name} (generated now)"))
        pytest.fail(f"the generated {kind} script/command changed from golden file {path}.\n"
                    f"If the change is intended, rewrite it with MFCL_UPDATE_GOLDEN=1 pytest {test_file} "
                    f"and review `git diff {path.parent}`.\n{diff}", pytrace=False)
