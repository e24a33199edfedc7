"""The tamper-evident ledger: hash-chained, signed, durable, verifiable offline.

``Ledger`` appends schema-validated records; ``verify_store`` and ``verify_export``
prove a ledger intact; the byte format is specified in ``docs/ledger-format.md``.

The names below are imported on first use: a verification helper process
(``python -m nbguard.ledger.ranges``) imports this package too, and must not pay
for the database layer and the schema validators it never touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbguard.ledger.checkpoints import Checkpoint
    from nbguard.ledger.ledger import Ledger
    from nbguard.ledger.verify import VerifyReport, verify_export, verify_store
    from nbguard.ledger.writer import PendingReceipt, Receipt

_HOMES = {
    "Checkpoint": "nbguard.ledger.checkpoints",
    "Ledger": "nbguard.ledger.ledger",
    "PendingReceipt": "nbguard.ledger.writer",
    "Receipt": "nbguard.ledger.writer",
    "VerifyReport": "nbguard.ledger.verify",
    "verify_export": "nbguard.ledger.verify",
    "verify_store": "nbguard.ledger.verify",
}

__all__ = [
    "Checkpoint",
    "Ledger",
    "PendingReceipt",
    "Receipt",
    "VerifyReport",
    "verify_export",
    "verify_store",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
