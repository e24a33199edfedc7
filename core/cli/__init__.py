"""The ``nbguard`` command line: one entry point, a module per command group.

Each command module exposes ``register(subparsers)``, which adds its commands and
sets a ``handler(args) -> int`` default. Errors nbguard raises on purpose become one
readable line on stderr and exit status 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nbguard import NBGuardError, __version__

#: Command modules under ``nbguard.cli``, imported when the parser is built.
COMMAND_MODULES = ("policy", "ledger", "replay", "demo", "catalog")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="nbguard",
        description="Privileged-access management and zero-trust access control for JupyterHub.",
    )
    parser.add_argument("--version", action="version", version=f"nbguard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"nbguard.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except NBGuardError as error:
        print(f"nbguard: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nbguard: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
