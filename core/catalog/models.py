"""A governed dataset as the catalog holds it, checked when it is built.

Dataset names are 1 to 63 characters: lower-case letters, digits, ``_`` and ``-``,
starting with a letter or digit (``^[a-z0-9][a-z0-9_-]{0,62}$``). They appear in
``nbguard://NAME/...`` URLs, in Cedar entity ids and, for the default store, as a
directory name, so they are kept to characters that mean the same everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from nbguard.errors import RequestError
from nbguard.policy import entities
from nbguard.policy.entities import Entity
from nbguard.policy.vocabulary import ENVIRONMENTS, SENSITIVITIES

DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: User and team names as JupyterHub and IdPs produce them (``alice``, ``a.b@example.org``).
PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
MAX_DESCRIPTION = 2000
MAX_STORAGE = 2048
#: ``scheme://`` or a chained fsspec URL (``simplecache::s3://``).
URL_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]*(::[a-z][a-z0-9+.-]*)*://", re.IGNORECASE)
FIELDS = ("name", "description", "team", "owner", "sensitivity", "environment", "storage")


class DatasetFieldError(RequestError):
    """A dataset field is invalid; ``field`` names it. The message is safe to show."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, user_message=message)
        self.field = field


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_dataset_name(name: object) -> str:
    """Return ``name`` if it is a valid dataset name; raise DatasetFieldError otherwise."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise DatasetFieldError(
            "name",
            f"invalid dataset name {_shown(name)}: use 1 to 63 lower-case letters, digits, "
            "'_' or '-', starting with a letter or digit",
        )
    return name


def _check_principal(field: str, value: object, *, required: bool) -> str:
    if value == "" and not required:
        return ""
    if not isinstance(value, str) or not PRINCIPAL_NAME.fullmatch(value):
        raise DatasetFieldError(
            field,
            f"invalid {field} {_shown(value)}: use 1 to 128 letters, digits, '.', '_', '@', "
            "'+' or '-', starting with a letter or digit",
        )
    return value


def _check_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DatasetFieldError(
            field, f"invalid {field} {_shown(value)}: choose one of {', '.join(choices)}"
        )
    return str(value)


def _check_description(value: object) -> str:
    if not isinstance(value, str):
        raise DatasetFieldError("description", "description must be text")
    if len(value) > MAX_DESCRIPTION:
        raise DatasetFieldError(
            "description", f"description is longer than {MAX_DESCRIPTION} characters"
        )
    # Control characters (terminal escapes) have no place in text shown in UIs and the CLI.
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value):
        raise DatasetFieldError("description", "description contains control characters")
    return value


def _check_storage(value: object) -> str:
    # The value is never echoed: a storage URL may carry credentials.
    if value == "":
        return ""
    if not isinstance(value, str) or len(value) > MAX_STORAGE:
        raise DatasetFieldError("storage", f"storage must be a URL of at most {MAX_STORAGE} chars")
    if value != value.strip() or not value.isprintable():
        raise DatasetFieldError("storage", "storage contains spaces or unprintable characters")
    if not (URL_PATTERN.match(value) or value.startswith("/")):
        raise DatasetFieldError(
            "storage",
            "storage must be an fsspec URL (file:///srv/data/x, s3://bucket/x) "
            "or an absolute local directory",
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """A governed dataset: who owns it, how sensitive it is, where its files live.

    Every field is checked at construction; an invalid value raises
    DatasetFieldError (a RequestError) naming the field. ``storage`` is an fsspec
    URL, or ``""`` for the default store's directory named after the dataset. It
    is credentials-adjacent: only admins see it (:meth:`to_dict` leaves it out).
    """

    name: str
    team: str
    sensitivity: str
    environment: str
    description: str = ""
    owner: str = ""
    storage: str = ""

    def __post_init__(self) -> None:
        check_dataset_name(self.name)
        _check_principal("team", self.team, required=True)
        _check_principal("owner", self.owner, required=False)
        _check_choice("sensitivity", self.sensitivity, SENSITIVITIES)
        _check_choice("environment", self.environment, ENVIRONMENTS)
        _check_description(self.description)
        _check_storage(self.storage)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        """Build from :meth:`to_dict` output (with or without ``storage``); unknown keys fail."""
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise DatasetFieldError(unknown[0], f"unknown dataset field(s): {', '.join(unknown)}")
        missing = [f for f in ("name", "team", "sensitivity", "environment") if f not in data]
        if missing:
            raise DatasetFieldError(missing[0], f"missing dataset field(s): {', '.join(missing)}")
        return cls(**data)

    def to_entity(self) -> Entity:
        """The Cedar ``Dataset`` entity the policy engine decides on."""
        return entities.dataset(
            self.name,
            sensitivity=self.sensitivity,
            environment=self.environment,
            team=self.team,
            owner=self.owner or None,
        )

    def to_dict(self, *, include_storage: bool = False) -> dict[str, str]:
        """The fields as JSON; ``storage`` only with ``include_storage`` (admins only)."""
        data = {
            "name": self.name,
            "description": self.description,
            "team": self.team,
            "owner": self.owner,
            "sensitivity": self.sensitivity,
            "environment": self.environment,
        }
        if include_storage:
            data["storage"] = self.storage
        return data
