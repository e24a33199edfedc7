"""``nbguard policy``: validate, test, explain and init, with clear exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbguard.cli import main
from nbguard.policy import DEFAULT_POLICY_DIR

CASES = DEFAULT_POLICY_DIR / "cases.yaml"


def explain_args(principal: str, resource: str, *extra: str) -> list[str]:
    """Arguments for `policy explain` of dataset.read over the example policies."""
    base = ["policy", "explain", str(DEFAULT_POLICY_DIR), "-p", principal]
    return [*base, "-a", "dataset.read", "-r", resource, *extra]


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A private copy of the example policies."""
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    return target


def test_validate_reports_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """validate on the example set succeeds and says what it checked."""
    # Every policy of the set carries an @id, so counting them counts the policies.
    count = sum(f.read_text().count("@id(") for f in DEFAULT_POLICY_DIR.glob("*.cedar"))
    assert count > 30
    assert main(["policy", "validate", str(DEFAULT_POLICY_DIR)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {count} policies")


def test_validate_lists_every_problem(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate exits 1 and prints each problem as file:line: message."""
    (policies / "zz.cedar").write_text(
        '\n@id("x") permit (principal, action == nbguard::Action::"dataset.read", resource)\n'
        '  when { resource.colour == "red" };\n'
    )
    assert main(["policy", "validate", str(policies)]) == 1
    err = capsys.readouterr().err
    assert f"{policies / 'zz.cedar'}:2:" in err
    assert "1 problem found" in err


def test_test_command_passes_shipped_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped cases pass through the CLI and the summary counts them."""
    assert main(["policy", "test", str(DEFAULT_POLICY_DIR), str(CASES)]) == 0
    assert capsys.readouterr().out.strip().endswith("passed, 0 failed")


def test_test_command_shows_a_readable_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong expectation exits 1 with expected/actual lines and the case's location."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - id: wrong\n"
        "    principal: user:alice\n"
        "    action: dataset.read\n"
        "    resource: dataset:customers\n"
        "    expect: allow\n"
    )
    assert main(["policy", "test", str(DEFAULT_POLICY_DIR), str(cases)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL wrong ({cases}:2)" in out
    assert "- expected: allow" in out
    assert "+ actual:   deny" in out
    assert "0 passed, 1 failed" in out


def test_test_command_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one JSON object per case with the decision."""
    assert main(["policy", "test", str(DEFAULT_POLICY_DIR), str(CASES), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows
    assert all(row["passed"] for row in rows)
    assert {"id", "allowed", "policy_ids", "remedies", "correlation_id"} <= set(rows[0])


@pytest.mark.parametrize(
    ("cases_text", "message"),
    [
        pytest.param(
            "cases:\n  - id: a\n    principal: user:alice\n", "missing action", id="missing-keys"
        ),
        pytest.param(
            "cases:\n  - {id: a, principal: user:a, action: dataset.read, resource: dataset:x, expect: maybe}\n",
            "allow or deny",
            id="bad-expect",
        ),
        pytest.param(
            "cases:\n  - {id: a, principal: nobody, action: dataset.read, resource: dataset:x, expect: deny}\n",
            "user:alice",
            id="bad-principal",
        ),
        pytest.param(
            "cases:\n  - {id: a, principal: user:a, action: dataset.read, resource: dataset:x, expect: deny, context: {mfa: 1}}\n",
            "unknown context field",
            id="bad-context",
        ),
        pytest.param("nothing: here\n", "cases", id="no-cases"),
    ],
)
def test_bad_case_files_get_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cases_text: str, message: str
) -> None:
    """A malformed case file exits 1 with located problems and no traceback."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(cases_text)
    assert main(["policy", "test", str(DEFAULT_POLICY_DIR), str(cases)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_explain_prints_decision_and_policy_text(capsys: pytest.CaptureFixture[str]) -> None:
    """explain shows the verdict, the remedy and the deciding policy with its location."""
    context = json.dumps(
        {
            "environment": "train",
            "network_zone": "corporate",
            "device_trusted": True,
            "mfa_age_seconds": 60,
        }
    )
    status = main(explain_args("user:alice", "dataset:customers", "-c", context))
    out = capsys.readouterr().out
    assert status == 1
    assert out.startswith("Denied: user:alice dataset.read dataset:customers")
    assert "an approved elevation grant for dataset.read" in out


def test_explain_json_and_context_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """explain --json reads the context from @FILE and exits 0 for an allow."""
    context = tmp_path / "ctx.json"
    context.write_text(json.dumps({"environment": "train"}))
    status = main(explain_args("user:alice", "dataset:sales", "-c", f"@{context}", "--json"))
    decision = json.loads(capsys.readouterr().out)
    assert (status, decision["allowed"], decision["policy_ids"]) == (
        0,
        True,
        ["data-scientist.datasets.read"],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["policy", "validate", "/no/such/dir"], "is not a directory", id="missing-dir"
        ),
        pytest.param(explain_args("alice", "dataset:x"), "expected an entity", id="bad-principal"),
        pytest.param(
            explain_args("user:a", "dataset:x", "-c", "{bad"),
            "not valid JSON",
            id="bad-context-json",
        ),
        pytest.param(
            explain_args("user:a", "dataset:x", "-c", "@/no/file"),
            "cannot read context",
            id="missing-context-file",
        ),
        pytest.param(
            [
                "policy",
                "validate",
                str(DEFAULT_POLICY_DIR),
                "--setting",
                "prod_mfa_max_age_seconds=soon",
            ],
            "KEY=SECONDS",
            id="bad-setting",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Bad command-line input gives exit 2 and a single 'nbguard: error:' line."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("nbguard: error:")
    assert message in err[0]


def test_init_copies_a_working_policy_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init writes the example set, which then validates; it refuses a non-empty directory."""
    target = tmp_path / "mine"
    assert main(["policy", "init", str(target)]) == 0
    assert main(["policy", "validate", str(target)]) == 0
    assert main(["policy", "init", str(target)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_console_script_gives_no_traceback(tmp_path: Path) -> None:
    """The installed `nbguard` command prints one line, not a traceback, for a bad directory."""
    script = Path(sys.executable).with_name("nbguard")
    result = subprocess.run(
        [str(script), "policy", "validate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
