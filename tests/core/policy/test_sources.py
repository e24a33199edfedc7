"""Policy files: statement splitting, stable ids, and file:line for every problem."""

from __future__ import annotations

from pathlib import Path

import cedarpy
import pytest

from nbguard.errors import PolicyLoadError
from nbguard.policy import SCHEMA_PATH
from nbguard.policy.sources import build_policy_set, load_policy_files, split_statements

from .conftest import write_file

SCHEMA = cedarpy.Schema.from_str(SCHEMA_PATH.read_text())
READ = 'nbguard::Action::"dataset.read"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("permit(principal, action, resource);", [1], id="one-line"),
        pytest.param(
            "\n\n  permit(principal,\n action, resource);\nforbid(principal, action, resource);",
            [3, 5],
            id="lines",
        ),
        pytest.param(
            "// a comment; with a semicolon\npermit(principal, action, resource);",
            [2],
            id="comment-semicolon",
        ),
        pytest.param(
            'permit(principal, action, resource) when { "a;b" == "c\\";d" };\npermit(principal, action, resource);',
            [1, 2],
            id="string-semicolons",
        ),
        pytest.param(
            '@id("x")\npermit(principal, action, resource);', [1], id="annotation-starts-statement"
        ),
        pytest.param("permit(principal, action, resource)", [1], id="unterminated-kept"),
    ],
)
def test_split_statements_finds_start_lines(text: str, expected: list[int]) -> None:
    """Statements are cut at semicolons outside strings and comments, with their start lines."""
    assert [s.line for s in split_statements(text)] == expected


def test_ids_come_from_annotation_or_location(tmp_path: Path) -> None:
    """A policy is known by its @id, or by file:line without one."""
    path = write_file(
        tmp_path,
        "a.cedar",
        f'@id("named")\npermit (principal, action == {READ}, resource);\n\n'
        f"permit (principal, action == {READ}, resource);\n",
    )
    sources = load_policy_files([path], SCHEMA)
    assert [(s.id, s.line) for s in sources] == [("named", 1), ("a.cedar:4", 4)]
    assert len(build_policy_set(sources)) == 2


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    """Two policies with one @id in different files are both located in the error."""
    first = write_file(
        tmp_path, "a.cedar", f'@id("same") permit (principal, action == {READ}, resource);'
    )
    second = write_file(
        tmp_path, "b.cedar", f'\n@id("same") forbid (principal, action == {READ}, resource);'
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy_files([first, second], SCHEMA)
    (problem,) = raised.value.problems
    assert (Path(problem.path).name, problem.line) == ("b.cedar", 2)
    assert "a.cedar:1" in problem.message


def test_syntax_error_names_the_failing_statement(tmp_path: Path) -> None:
    """A syntax error is reported at the line of the statement that fails to parse."""
    path = write_file(
        tmp_path,
        "a.cedar",
        f"permit (principal, action == {READ}, resource);\n\npermit (principal, action, resource) when {{ 1 + }};\n",
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy_files([path], SCHEMA)
    (problem,) = raised.value.problems
    assert problem.line == 3
    assert problem.message.startswith("syntax error")


def test_problems_in_all_files_are_reported_together(tmp_path: Path) -> None:
    """Every broken file is reported in one pass, so an admin fixes them all at once."""
    first = write_file(tmp_path, "a.cedar", "permit (principal, action, resource")
    second = write_file(
        tmp_path,
        "b.cedar",
        f"permit (principal, action == {READ}, resource) when {{ context.nope }};",
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy_files([first, second], SCHEMA)
    assert {Path(p.path).name for p in raised.value.problems} == {"a.cedar", "b.cedar"}


def test_unknown_action_is_a_validation_error(tmp_path: Path) -> None:
    """A policy naming an action the schema lacks is refused at load time."""
    path = write_file(
        tmp_path,
        "a.cedar",
        'permit (principal, action == nbguard::Action::"dataset.steal", resource);',
    )
    with pytest.raises(PolicyLoadError, match=r"dataset\.steal"):
        load_policy_files([path], SCHEMA)


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported as a problem with its path."""
    path = tmp_path / "a.cedar"
    path.write_bytes(b"\xff\xfe permit")
    with pytest.raises(PolicyLoadError, match="cannot read"):
        load_policy_files([path], SCHEMA)
