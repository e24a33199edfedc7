"""Signed checkpoints: a statement that the ledger's record ``seq`` has hash ``head``.

The signed bytes are the canonical JSON of the statement (every field but
``signature``); the signature is Ed25519, base64-encoded. A checkpoint names the
ledger it belongs to, so a checkpoint cannot be replayed against another ledger.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger.canonical import canonical_bytes, format_time
from nbguard.ledger.keys import SigningKey, verify_signature

CHECKPOINT_TYPE = "nbguard.ledger.checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement about the ledger head at one sequence number."""

    ledger: str
    seq: int
    head: str
    time: str
    key_id: str
    signature: str

    def statement(self) -> bytes:
        """Return the canonical bytes the signature covers."""
        return canonical_bytes(
            {
                "head": self.head,
                "key_id": self.key_id,
                "ledger": self.ledger,
                "seq": self.seq,
                "time": self.time,
                "type": CHECKPOINT_TYPE,
                "v": CHECKPOINT_VERSION,
            }
        )

    def to_json(self) -> dict[str, Any]:
        """Return the checkpoint as the JSON object stored in exports and witnesses."""
        return {"type": CHECKPOINT_TYPE, "v": CHECKPOINT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Checkpoint:
        """Parse a checkpoint object; LedgerIntegrityError naming ``where`` if malformed."""
        try:
            if data["type"] != CHECKPOINT_TYPE or data["v"] != CHECKPOINT_VERSION:
                raise ValueError(f"not a v{CHECKPOINT_VERSION} checkpoint")
            checkpoint = cls(**{name: data[name] for name in cls.__dataclass_fields__})
            texts = (checkpoint.ledger, checkpoint.head, checkpoint.time, checkpoint.key_id)
            if type(checkpoint.seq) is not int or not all(isinstance(t, str) for t in texts):
                raise ValueError("field of the wrong type")
            if not isinstance(checkpoint.signature, str):
                raise ValueError("signature must be a string")
        except (KeyError, TypeError, ValueError) as error:
            raise LedgerIntegrityError(f"{where}: malformed checkpoint ({error})") from None
        return checkpoint

    def problem(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """Return why the signature does not verify with ``keys``, or None if it does."""
        key = keys.get(self.key_id)
        if key is None:
            known = ", ".join(sorted(keys)) or "none given"
            return f"signed by unknown key {self.key_id} (known keys: {known})"
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            return "signature is not base64"
        if not verify_signature(key, signature, self.statement()):
            return f"signature does not verify with key {self.key_id}"
        return None


def sign_checkpoint(key: SigningKey, *, ledger: str, seq: int, head: str) -> Checkpoint:
    """Return a checkpoint of ``head`` at ``seq`` signed now with ``key``."""
    unsigned = Checkpoint(ledger, seq, head, format_time(), key.key_id, "")
    signature = base64.b64encode(key.sign(unsigned.statement())).decode("ascii")
    return Checkpoint(ledger, seq, head, unsigned.time, key.key_id, signature)
