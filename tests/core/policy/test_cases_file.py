"""Case files: a malformed case is reported at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbguard.errors import PolicyLoadError
from nbguard.policy.cases import load_cases

from .conftest import write_file


def test_case_that_is_not_a_mapping_is_located(tmp_path: Path) -> None:
    """A case written as a plain string is reported with the file and the case's line."""
    path = write_file(tmp_path, "cases.yaml", "cases:\n  - just a string\n")
    with pytest.raises(PolicyLoadError) as raised:
        load_cases(path)
    (problem,) = raised.value.problems
    assert (problem.path, problem.line) == (str(path), 2)
    assert "must be a mapping" in problem.message
