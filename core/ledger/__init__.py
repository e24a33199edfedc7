"""The tamper-evident ledger: hash-chained, signed, durable, verifiable offline.

``Ledger`` appends schema-validated records; ``verify_store`` and ``verify_export``
prove a ledger intact; the byte format is specified in ``docs/ledger-format.md``.
"""

from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.ledger import Ledger
from nbguard.ledger.verify import VerifyReport, verify_export, verify_store
from nbguard.ledger.writer import PendingReceipt, Receipt

__all__ = [
    "Checkpoint",
    "Ledger",
    "PendingReceipt",
    "Receipt",
    "VerifyReport",
    "verify_export",
    "verify_store",
]
