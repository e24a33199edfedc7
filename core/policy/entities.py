"""Entities the policies talk about (users, roles, teams, datasets, models...) and their store.

Builders here turn admin-friendly values into Cedar entity JSON and check the
closed vocabularies; :class:`EntityStore` keeps the parsed cedarpy handle and
updates it incrementally.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import cedarpy

from nbguard.errors import EntityError
from nbguard.policy.refs import NAMESPACE, EntityRef
from nbguard.policy.vocabulary import ENVIRONMENTS, SENSITIVITIES

Entity = dict[str, Any]

#: The one settings entity policies read hub-wide numbers from.
SETTINGS_REF = EntityRef("Settings", "global")
#: The hub, as the resource of ``hub.login``.
HUB_REF = EntityRef("Hub", "hub")

DEFAULT_SETTINGS: dict[str, int] = {
    "restricted_mfa_max_age_seconds": 900,
    "prod_mfa_max_age_seconds": 900,
}


def entity(ref: EntityRef, attrs: Mapping[str, Any], parents: Iterable[EntityRef] = ()) -> Entity:
    """Cedar entity JSON for ``ref`` with its attributes and parents."""
    return {
        "uid": ref.to_cedar(),
        "attrs": dict(attrs),
        "parents": [p.to_cedar() for p in parents],
    }


def _choice(kind: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise EntityError(f"{kind} {name!r}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _uid(type_name: str, value: Any) -> dict[str, dict[str, str]]:
    """An entity reference attribute in Cedar JSON's ``__entity`` form."""
    ref = EntityRef.of(type_name, value)
    return {"__entity": ref.to_cedar()}


def user(
    name: str,
    *,
    roles: Iterable[str] = (),
    teams: Iterable[str] = (),
    groups: Iterable[str] = (),
    display_name: str | None = None,
    email: str | None = None,
) -> Entity:
    """A user, member of its roles, teams and groups."""
    attrs: dict[str, Any] = {}
    if display_name is not None:
        attrs["display_name"] = display_name
    if email is not None:
        attrs["email"] = email
    parents = [EntityRef.of("Role", r) for r in roles]
    parents += [EntityRef.of("Team", t) for t in teams]
    parents += [EntityRef.of("Group", g) for g in groups]
    return entity(EntityRef.of("User", name), attrs, parents)


def _governed(
    kind: str, name: str, sensitivity: str, environment: str, team: str, owner: str | None
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "key": f"{kind.lower()}:{name}",
        "sensitivity": _choice(kind, name, sensitivity, SENSITIVITIES),
        "environment": _choice(kind, name, environment, ENVIRONMENTS),
        "team": _uid("Team", team),
    }
    if owner is not None:
        attrs["owner"] = _uid("User", owner)
    return attrs


def dataset(
    name: str, *, sensitivity: str, environment: str, team: str, owner: str | None = None
) -> Entity:
    """A governed dataset; its grant key is ``dataset:NAME``."""
    attrs = _governed("Dataset", name, sensitivity, environment, team, owner)
    return entity(EntityRef.of("Dataset", name), attrs)


def model(
    name: str, *, sensitivity: str, environment: str, team: str, owner: str | None = None
) -> Entity:
    """A registered model; its grant key is ``model:NAME``."""
    attrs = _governed("Model", name, sensitivity, environment, team, owner)
    return entity(EntityRef.of("Model", name), attrs)


def model_version(
    model_name: str,
    version: str,
    *,
    sensitivity: str,
    environment: str,
    team: str,
    registered_by: str,
    stage: str = "None",
    aliases: Iterable[str] = (),
) -> Entity:
    """A model version ``MODEL/VERSION``, child of its model; key ``modelversion:MODEL/VERSION``."""
    name = f"{model_name}/{version}"
    attrs = _governed("ModelVersion", name, sensitivity, environment, team, None)
    attrs["registered_by"] = _uid("User", registered_by)
    attrs["stage"] = str(stage)
    attrs["aliases"] = sorted(str(a) for a in aliases)
    return entity(EntityRef.of("ModelVersion", name), attrs, [EntityRef.of("Model", model_name)])


def profile(name: str, *, environment: str, sensitivity: str = "internal") -> Entity:
    """A spawnable server profile; key ``profile:NAME``."""
    attrs = {
        "key": f"profile:{name}",
        "environment": _choice("Profile", name, environment, ENVIRONMENTS),
        "sensitivity": _choice("Profile", name, sensitivity, SENSITIVITIES),
    }
    return entity(EntityRef.of("Profile", name), attrs)


def server(name: str, *, owner: str, environment: str) -> Entity:
    """A user's running server (named like JupyterHub's ``user`` or ``user/name``)."""
    attrs = {
        "key": f"server:{name}",
        "owner": _uid("User", owner),
        "environment": _choice("Server", name, environment, ENVIRONMENTS),
    }
    return entity(EntityRef.of("Server", name), attrs)


def elevation_request(
    request_id: str,
    *,
    requester: str,
    role: str = "",
    action: str = "",
    target: str = "",
    environment: str = "dev",
    sensitivity: str = "internal",
    break_glass: bool = False,
) -> Entity:
    """An elevation request: a role (``role``) or a grant (``action`` on ``target`` key)."""
    if bool(role) == bool(action and target):
        raise EntityError(
            f"elevation request {request_id!r} must name either a role or an action and target"
        )
    attrs = {
        "key": f"elevationrequest:{request_id}",
        "requester": _uid("User", requester),
        "role": role,
        "action": action,
        "target": target,
        "environment": _choice("ElevationRequest", request_id, environment, ENVIRONMENTS),
        "sensitivity": _choice("ElevationRequest", request_id, sensitivity, SENSITIVITIES),
        "break_glass": bool(break_glass),
    }
    return entity(EntityRef.of("ElevationRequest", request_id), attrs)


def settings(values: Mapping[str, int]) -> Entity:
    """The ``Settings::"global"`` entity from DEFAULT_SETTINGS overridden by ``values``."""
    merged = {**DEFAULT_SETTINGS, **values}
    for key, value in merged.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise EntityError(f"setting {key!r} must be a non-negative whole number, got {value!r}")
    return entity(SETTINGS_REF, merged)


def hub() -> Entity:
    """The hub entity that ``hub.login`` requests name as their resource."""
    return entity(HUB_REF, {"key": "hub"})


def ref_of(item: Entity) -> EntityRef:
    """The reference of an entity given as Cedar JSON."""
    try:
        return EntityRef.from_cedar(item["uid"])
    except (KeyError, TypeError) as error:
        raise EntityError(f"entity without a valid uid: {item!r}") from error


class EntityStore:
    """The current entities and their parsed cedarpy handle.

    New entities are added incrementally (cedarpy parses only them). Changing or
    removing an existing entity rebuilds the handle once, on the next read, since
    cedarpy handles are immutable unions; decisions never re-parse entities.
    Every change is validated against the schema before it takes effect: a bad
    batch leaves the store as it was.
    """

    def __init__(self, schema: cedarpy.Schema) -> None:
        self._schema = schema
        self._entities: dict[EntityRef, Entity] = {}
        self._handle: cedarpy.Entities | None = cedarpy.Entities.from_json_str("[]", schema)
        self._lock = threading.Lock()
        #: Increases with every change, so that caches built on the store can tell.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entities)

    def __contains__(self, ref: object) -> bool:
        return ref in self._entities

    def get(self, ref: EntityRef) -> Entity | None:
        """The entity's JSON, or None."""
        return self._entities.get(ref)

    def roles_of(self, ref: EntityRef) -> list[str]:
        """The roles ``ref`` is a direct member of (its standing roles), sorted."""
        entity = self._entities.get(ref) or {}
        return sorted(
            parent["id"]
            for parent in entity.get("parents", [])
            if parent["type"] == f"{NAMESPACE}::Role"
        )

    def refs(self, type_name: str) -> list[EntityRef]:
        """Every stored reference of one type, sorted by id."""
        return sorted((r for r in self._entities if r.type == type_name), key=lambda r: r.id)

    @property
    def handle(self) -> cedarpy.Entities:
        """The parsed entities for cedarpy, rebuilt here if a change required it."""
        handle = self._handle
        if handle is None:
            with self._lock:
                if self._handle is None:
                    self._handle = self._parse(list(self._entities.values()))
                handle = self._handle
        return handle

    def upsert(self, items: Iterable[Entity]) -> None:
        """Add new entities and replace changed ones, validated as one batch."""
        batch: dict[EntityRef, Entity] = {}
        for item in items:
            batch[ref_of(item)] = item
        with self._lock:
            added = [e for r, e in batch.items() if r not in self._entities]
            changed = any(r in self._entities and self._entities[r] != e for r, e in batch.items())
            if changed or self._handle is None:
                candidate = {**self._entities, **batch}
                self._parse(list(candidate.values()))  # validate before committing
                self._entities = candidate
                self._handle = None
                self.generation += 1
            elif added:
                try:
                    self._handle = self._handle.with_added_json_str(json.dumps(added), self._schema)
                except ValueError as error:
                    raise EntityError(f"invalid entities: {error}") from error
                self._entities = {**self._entities, **batch}
                self.generation += 1

    def remove(self, refs: Iterable[EntityRef]) -> None:
        """Remove entities (unknown references are ignored); the handle is rebuilt on next read."""
        with self._lock:
            remaining = dict(self._entities)
            removed = [remaining.pop(r, None) for r in refs]
            if any(item is not None for item in removed):
                self._entities = remaining
                self._handle = None
                self.generation += 1

    def _parse(self, items: list[Entity]) -> cedarpy.Entities:
        try:
            return cedarpy.Entities.from_json_str(json.dumps(items), self._schema)
        except ValueError as error:
            raise EntityError(f"invalid entities: {error}") from error
