"""``nbguard ledger ...`` and ``nbguard verify``: export and verify the audit ledger."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ledger commands (being built in issue 3)."""
