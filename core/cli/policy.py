"""``nbguard policy``: write, validate, test and explain access policies without a hub.

nbguard policy init DIR                 copy the example policy set to DIR
nbguard policy validate DIR             check every file against the schema
nbguard policy test DIR CASES.yaml      check expected decisions
nbguard policy explain DIR -p user:alice -a dataset.read -r dataset:sales [...]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from nbguard.cli import EXIT_FAILED, EXIT_OK
from nbguard.errors import ConfigError, PolicyLoadError, RequestError
from nbguard.policy.cases import load_cases, run_cases
from nbguard.policy.context import RequestContext
from nbguard.policy.engine import DEFAULT_POLICY_DIR, PolicyEngine


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``nbguard policy ...``."""
    policy = subparsers.add_parser("policy", help="write, validate, test and explain policies")
    commands = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    commands.required = True

    init = commands.add_parser("init", help="copy the example policy set into a new directory")
    init.add_argument("directory", type=Path)
    init.set_defaults(handler=_init)

    validate = commands.add_parser("validate", help="validate policies and entities")
    _add_engine_arguments(validate)
    validate.set_defaults(handler=_validate)

    test = commands.add_parser("test", help="check a file of expected decisions")
    _add_engine_arguments(test)
    test.add_argument("cases", type=Path, help="YAML file of cases")
    test.add_argument("--json", action="store_true", help="print results as JSON lines")
    test.set_defaults(handler=_test)

    explain = commands.add_parser("explain", help="decide one request and say why")
    _add_engine_arguments(explain)
    explain.add_argument("-p", "--principal", required=True, help="e.g. user:alice")
    explain.add_argument("-a", "--action", required=True, help="e.g. dataset.read")
    explain.add_argument("-r", "--resource", required=True, help="e.g. dataset:customers")
    explain.add_argument(
        "-c", "--context", default="{}", help="context as JSON, or @FILE to read it from a file"
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.set_defaults(handler=_explain)


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="directory of *.cedar policy files")
    parser.add_argument("--schema", type=Path, help="Cedar schema (default: nbguard's)")
    parser.add_argument(
        "--entities",
        type=Path,
        action="append",
        default=[],
        help="entity file (.yaml or Cedar .json); default: entities.yaml in DIRECTORY",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=SECONDS",
        help="override a PolicyEngine.settings value",
    )


def _engine(args: argparse.Namespace) -> PolicyEngine:
    log = logging.getLogger("nbguard.cli")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("nbguard: %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False
    if not args.directory.is_dir():
        raise ConfigError(f"{args.directory} is not a directory")
    settings: dict[str, int] = {}
    for item in args.setting:
        key, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise ConfigError(f"--setting expects KEY=SECONDS, got {item!r}")
        settings[key] = int(value)
    return PolicyEngine(
        policy_dir=str(args.directory),
        schema_file=str(args.schema or ""),
        entity_files=[str(p) for p in args.entities],
        settings=settings,
        log=log,
    )


def _print_problems(error: PolicyLoadError) -> int:
    for problem in error.problems:
        print(f"nbguard: {problem}", file=sys.stderr)
    count = len(error.problems)
    print(f"nbguard: {count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
    return EXIT_FAILED


def _init(args: argparse.Namespace) -> int:
    target: Path = args.directory
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not empty; choose a new directory")
    shutil.copytree(DEFAULT_POLICY_DIR, target, dirs_exist_ok=True)
    print(f"Copied the example policies to {target}. Edit them, then run:")
    print(f"  nbguard policy validate {target}")
    print(f"  nbguard policy test {target} {target / 'cases.yaml'}")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    try:
        engine = _engine(args)
    except PolicyLoadError as error:
        return _print_problems(error)
    sources = engine.sources.values()
    permits = sum(1 for s in sources if s.est.get("effect") == "permit")
    print(
        f"OK: {len(engine.sources)} policies ({permits} permit, {len(engine.sources) - permits} "
        f"forbid) and {len(engine.entities)} entities in {args.directory} are valid"
    )
    return EXIT_OK


def _test(args: argparse.Namespace) -> int:
    try:
        engine = _engine(args)
        cases = load_cases(args.cases)
    except PolicyLoadError as error:
        return _print_problems(error)
    results = run_cases(engine, cases)
    failed = [r for r in results if not r.passed]
    for result in results:
        if args.json:
            row = {"id": result.case.id, "passed": result.passed, **result.decision.to_dict()}
            print(json.dumps(row))
        elif not result.passed:
            where = f" ({args.cases}:{result.case.line})" if result.case.line else ""
            print(f"FAIL {result.case.id}{where}")
            print("\n".join(result.diff()))
    if not args.json:
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    context = _read_context(args.context)
    try:
        engine = _engine(args)
    except PolicyLoadError as error:
        return _print_problems(error)
    decision = engine.decide(args.principal, args.action, args.resource, context)
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
        return EXIT_OK if decision.allowed else EXIT_FAILED
    print(decision.explain())
    for policy_id in decision.policy_ids:
        source = engine.sources.get(policy_id)
        if source is not None:
            print(f"\n{policy_id} ({source.location}):\n{source.text}")
    return EXIT_OK if decision.allowed else EXIT_FAILED


def _read_context(value: str) -> RequestContext:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise RequestError(f"cannot read context file {value[1:]}: {error}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"context is not valid JSON: {error.msg} at column {error.colno}"
        raise RequestError(message) from error
    return RequestContext.from_mapping(data)
