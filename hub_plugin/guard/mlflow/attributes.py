"""What the policy knows about a registered model and its versions, and where it comes from.

The attributes that drive decisions (a model's team, sensitivity, environment and
owner; a version's registrant) live in the registry as tags under the reserved
``nbguard.`` prefix. The gateway writes them when a model or version is created
through it and refuses any user's attempt to set or delete them: only callers the
policy lets administer the guard (``guard.admin``) may. Otherwise a user allowed to
register a model could tag it ``public`` and read it where ``restricted`` would
stop them. ``GuardService.mlflow_models`` overrides the tags per model, for
models an admin keeps outside the registry's reach.

A version's environment follows its stage and aliases (``Production`` or a prod
alias such as ``champion``: ``prod``; ``Staging``: ``test``); a promotion is
decided on the version as it would be afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbguard.errors import RequestError
from nbguard.policy import EntityRef
from nbguard.policy.entities import Entity, entity
from nbguard.policy.vocabulary import ENVIRONMENTS, SENSITIVITIES

#: Tags under this prefix are written by the gateway or by admins, never by users.
RESERVED_PREFIX = "nbguard."
TAG_TEAM = "nbguard.team"
TAG_SENSITIVITY = "nbguard.sensitivity"
TAG_ENVIRONMENT = "nbguard.environment"
TAG_OWNER = "nbguard.owner"
#: On a model version: the hub user who registered it through the gateway (MLflow's
#: own ``user_id`` is whatever the client claims).
TAG_REGISTERED_BY = "nbguard.registered_by"
#: On a logged model (an upload not yet, or not only, registered): who created it.
TAG_CREATED_BY = "nbguard.created_by"
#: The registrant of a version the gateway did not record (registered upstream).
UNKNOWN_USER = "nbguard:unknown"

#: Registered model names the gateway accepts: no ``/`` (version ids are
#: ``NAME/VERSION``), no control characters, no leading or trailing space.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,126}[A-Za-z0-9_.\-]$|^[A-Za-z0-9]$")
_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")
_NAME_TEXT = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
STAGES = ("None", "Staging", "Production", "Archived")


def check_model_name(name: Any) -> str:
    """``name`` if it is a model name the gateway serves; RequestError otherwise."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise RequestError(
            f"bad model name {name!r}",
            user_message=(
                "Model names served by nbguard are 1 to 128 letters, digits, spaces, "
                "'.', '_' or '-' (no '/')."
            ),
        )
    return name


def check_version(version: Any) -> str:
    """``version`` (a positive whole number, as text) or RequestError."""
    text = str(version) if isinstance(version, int | str) and not isinstance(version, bool) else ""
    if not _VERSION.fullmatch(text):
        raise RequestError(f"bad version {version!r}", user_message="A version is a number >= 1.")
    return text


def tag_map(tags: Any) -> dict[str, str]:
    """MLflow's ``[{"key", "value"}]`` tags as a dict (malformed entries ignored)."""
    out: dict[str, str] = {}
    if isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, Mapping) and isinstance(tag.get("key"), str):
                value = tag.get("value")
                out[tag["key"]] = value if isinstance(value, str) else ""
    return out


def reserved_keys(keys: Iterable[Any]) -> list[str]:
    """The keys among ``keys`` under the reserved prefix (any case)."""
    return sorted(
        str(k) for k in keys if isinstance(k, str) and k.lower().startswith(RESERVED_PREFIX)
    )


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """The admin's settings the attributes are built from (``GuardService.mlflow_*``)."""

    default_sensitivity: str = "confidential"
    default_environment: str = "train"
    default_team: str = "unassigned"
    prod_aliases: frozenset[str] = frozenset({"champion", "production", "prod"})
    #: Per model: ``{"team", "sensitivity", "environment", "owner"}`` over the tags.
    models: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelAttributes:
    """A registered model's policy attributes."""

    name: str
    team: str
    sensitivity: str
    environment: str
    owner: str = ""

    def entity(self) -> Entity:
        """The ``Model`` entity."""
        return entity(EntityRef.of("Model", self.name), self._attrs(f"model:{self.name}"))

    def _attrs(self, key: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "key": key,
            "sensitivity": self.sensitivity,
            "environment": self.environment,
            "team": {"__entity": EntityRef.of("Team", self.team).to_cedar()},
        }
        if self.owner:
            attrs["owner"] = {"__entity": EntityRef.of("User", self.owner).to_cedar()}
        return attrs

    def version_entity(
        self,
        version: str,
        *,
        registered_by: str,
        stage: str,
        aliases: Iterable[str],
        settings: ModelSettings,
        entity_id: str = "",
    ) -> Entity:
        """A ``ModelVersion`` entity (child of the model); ``entity_id`` names a
        hypothetical state (a promotion's target) under the same grant key."""
        name = f"{self.name}/{version}"
        aliases = sorted(set(aliases))
        attrs = self._attrs(f"modelversion:{name}")
        attrs.pop("owner", None)  # versions have a registrant, not an owner
        attrs["environment"] = version_environment(stage, aliases, self.environment, settings)
        attrs["registered_by"] = {"__entity": EntityRef.of("User", registered_by).to_cedar()}
        attrs["stage"] = stage
        attrs["aliases"] = aliases
        ref = EntityRef.of("ModelVersion", entity_id or name)
        return entity(ref, attrs, [EntityRef.of("Model", self.name)])


def version_environment(
    stage: str, aliases: Iterable[str], model_environment: str, settings: ModelSettings
) -> str:
    """Where a version is deployed: prod for Production or a prod alias, test for Staging.

    Aliases compare without case, so ``Champion`` cannot slip past ``champion``.
    """
    prod = {a.lower() for a in settings.prod_aliases}
    if stage == "Production" or prod & {a.lower() for a in aliases}:
        return "prod"
    if stage == "Staging":
        return "test"
    return model_environment


def model_attributes(
    name: str, tags: Mapping[str, str], settings: ModelSettings
) -> ModelAttributes:
    """A model's attributes: the admin's settings, else its reserved tags, else defaults.

    A value outside the vocabulary counts as the strictest one (fail closed).
    """
    fixed = settings.models.get(name, {})

    def pick(attr: str, tag: str, default: str) -> str:
        value = fixed.get(attr) or tags.get(tag) or default
        return str(value)

    sensitivity = pick("sensitivity", TAG_SENSITIVITY, settings.default_sensitivity)
    if sensitivity not in SENSITIVITIES:
        sensitivity = "restricted"
    environment = pick("environment", TAG_ENVIRONMENT, settings.default_environment)
    if environment not in ENVIRONMENTS:
        environment = "prod"
    team = pick("team", TAG_TEAM, settings.default_team)
    if not _NAME_TEXT.fullmatch(team):
        team = settings.default_team
    owner = pick("owner", TAG_OWNER, "")
    if owner and not _NAME_TEXT.fullmatch(owner):
        owner = ""
    return ModelAttributes(name, team, sensitivity, environment, owner)


def registrant(version_tags: Mapping[str, str]) -> str:
    """The hub user who registered a version, as the gateway recorded it."""
    value = version_tags.get(TAG_REGISTERED_BY, "")
    return value if _NAME_TEXT.fullmatch(value) else UNKNOWN_USER


def new_model_tags(creator: str, teams: list[str], settings: ModelSettings) -> dict[str, str]:
    """The reserved tags the gateway gives a model a user creates through it."""
    return {
        TAG_TEAM: teams[0] if teams else settings.default_team,
        TAG_SENSITIVITY: settings.default_sensitivity,
        TAG_ENVIRONMENT: settings.default_environment,
        TAG_OWNER: creator,
    }
