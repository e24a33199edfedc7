"""Entity references and action names, parsed from what admins and callers write.

Accepted forms for an entity: Cedar's ``nbguard::User::"alice"`` (namespace
optional: ``User::"alice"``) and the short ``user:alice`` that case files and the
CLI use. Actions are written by name (``dataset.read``) or in Cedar form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbguard.errors import RequestError

NAMESPACE = "nbguard"

#: Entity types of the nbguard schema, by their short lower-case names.
ENTITY_TYPES = {
    name.lower(): name
    for name in (
        "User",
        "Role",
        "Team",
        "Group",
        "Dataset",
        "Model",
        "ModelVersion",
        "Profile",
        "Server",
        "ElevationRequest",
        "Hub",
        "Settings",
    )
}

_CEDAR_UID = re.compile(
    r'^(?:(?P<ns>[A-Za-z_][A-Za-z0-9_]*)::)?(?P<type>[A-Za-z_]\w*)::"(?P<id>.*)"$'
)
_ACTION_NAME = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")
_MAX_ID_LENGTH = 512


@dataclass(frozen=True, slots=True)
class EntityRef:
    """A reference to one entity: its schema type (without namespace) and its id."""

    type: str
    id: str

    @property
    def cedar_type(self) -> str:
        """The fully qualified Cedar type, ``nbguard::User``."""
        return f"{NAMESPACE}::{self.type}"

    def to_cedar(self) -> dict[str, str]:
        """The ``{"type", "id"}`` form cedarpy takes for a request or a parent."""
        return {"type": self.cedar_type, "id": self.id}

    def __str__(self) -> str:
        return f"{self.type.lower()}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> EntityRef:
        """Parse ``user:alice`` or ``nbguard::User::"alice"``; raise RequestError if neither."""
        if not isinstance(text, str) or not text.strip():
            raise RequestError(f"expected an entity like user:alice, got {text!r}")
        match = _CEDAR_UID.match(text)
        if match:
            namespace = match.group("ns")
            if namespace not in (None, NAMESPACE):
                raise RequestError(f"entity {text!r} is not in the {NAMESPACE} namespace")
            type_name, entity_id = match.group("type"), match.group("id")
            if (
                type_name.lower() not in ENTITY_TYPES
                or ENTITY_TYPES[type_name.lower()] != type_name
            ):
                raise RequestError(f"unknown entity type {type_name!r} in {text!r}")
            return cls.of(type_name, entity_id)
        type_name, sep, entity_id = text.partition(":")
        if not sep:
            raise RequestError(f"expected an entity like user:alice, got {text!r}")
        canonical = ENTITY_TYPES.get(type_name.lower())
        if canonical is None:
            known = ", ".join(sorted(ENTITY_TYPES))
            raise RequestError(f"unknown entity type {type_name!r} in {text!r} (known: {known})")
        return cls.of(canonical, entity_id)

    @classmethod
    def of(cls, type_name: str, entity_id: str) -> EntityRef:
        """Build a reference after checking the id is usable (non-empty, bounded, printable)."""
        if (
            not entity_id
            or len(entity_id) > _MAX_ID_LENGTH
            or not entity_id.isprintable()
            or entity_id != entity_id.strip()
        ):
            # No normalisation: "sales " must never silently mean "sales".
            raise RequestError(
                f"invalid {type_name} id {entity_id!r}: ids are 1 to {_MAX_ID_LENGTH} "
                "printable characters, without leading or trailing spaces"
            )
        return cls(type_name, entity_id)

    @classmethod
    def from_cedar(cls, uid: dict[str, str]) -> EntityRef:
        """Convert cedarpy's ``{"type": "nbguard::User", "id": ...}`` back to a reference."""
        type_name = uid["type"].removeprefix(f"{NAMESPACE}::")
        return cls(type_name, uid["id"])


def parse_action(text: str) -> str:
    """Return the action name (``dataset.read``) from its name or Cedar form."""
    if not isinstance(text, str):
        raise RequestError(f"expected an action name like dataset.read, got {text!r}")
    text = text.strip()
    match = _CEDAR_UID.match(text)
    if match:
        if match.group("type") != "Action" or match.group("ns") not in (None, NAMESPACE):
            raise RequestError(f"{text!r} is not an nbguard action")
        text = match.group("id")
    if not _ACTION_NAME.match(text):
        raise RequestError(f"expected an action name like dataset.read, got {text!r}")
    return text


def action_uid(name: str) -> dict[str, str]:
    """The cedarpy form of an action name."""
    return {"type": f"{NAMESPACE}::Action", "id": name}
