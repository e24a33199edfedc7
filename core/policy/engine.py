"""The policy engine: Cedar policies and entities loaded once, decisions as values.

Configure it like any Jupyter component::

    c.PolicyEngine.policy_dir = "/etc/nbguard/policies"
    c.PolicyEngine.settings = {"restricted_mfa_max_age_seconds": 600}

It refuses to start on any problem in the schema, policies or entities, naming
the file and line. ``decide`` never raises for a request it can represent: an
unknown principal or resource, or any evaluation error, is a denial. Malformed
input (an unknown entity type, a context value of the wrong type) raises
:class:`~nbguard.errors.RequestError`.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cedarpy
from traitlets import Bool, Dict, Int, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from nbguard.errors import ConfigError, PolicyLoadError, RequestError, SourceProblem
from nbguard.policy import entities as build
from nbguard.policy.analysis import ContextUsage, analyse_context, lint
from nbguard.policy.cache import ContextKey, DecisionCache, context_key_function
from nbguard.policy.context import Grant, RequestContext
from nbguard.policy.decision import Decision, Verdict
from nbguard.policy.entities import Entity, EntityStore
from nbguard.policy.entity_files import load_entity_file
from nbguard.policy.refs import EntityRef, action_uid, parse_action
from nbguard.policy.remedies import find_remedies
from nbguard.policy.sources import PolicySource, build_policy_set, load_policy_files

#: The schema shipped with nbguard.
SCHEMA_PATH = Path(__file__).with_name("nbguard.cedarschema")
#: The example policy set admins copy (``nbguard policy init``).
DEFAULT_POLICY_DIR = Path(__file__).with_name("default")
ENTITY_FILE_NAMES = ("entities.yaml", "entities.yml", "entities.json")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything one decision reads, swapped atomically on reload."""

    policies: cedarpy.PolicySet
    sources: dict[str, PolicySource]
    usage: ContextUsage
    context_key: ContextKey
    cache: DecisionCache
    #: The entity store generation the cache was built on.
    entity_generation: int


class PolicyEngine(LoggingConfigurable):
    """Decides requests with Cedar policies validated against the nbguard schema."""

    policy_dir = Unicode(
        "",
        help="""Directory of Cedar policy files (``*.cedar``) to load.

        Required. Every ``*.cedar`` file in it is loaded, in name order; each
        policy is known by its ``@id("...")`` annotation, or by ``file:line``.
        Start from the shipped example with ``nbguard policy init DIR``. If the
        directory holds ``entities.yaml`` (or ``.json``) and ``entity_files`` is
        empty, that file is loaded too.
        """,
    ).tag(config=True)

    schema_file = Unicode(
        "",
        help="""Cedar schema (``.cedarschema``) the policies are validated against.

        Default: the schema shipped with nbguard. Replace it only to extend it;
        the hub plugin and guard service build requests for the shipped types.
        """,
    ).tag(config=True)

    entity_files = List(
        Unicode(),
        help="""Entity files to load at start (``.yaml`` in nbguard's friendly form, or
        Cedar ``.json``).

        Default: ``entities.yaml``/``.yml``/``.json`` in ``policy_dir``, if present.
        Entities can also be added and changed at run time with
        ``upsert_entities``; those changes are incremental.
        """,
    ).tag(config=True)

    settings = Dict(
        help="""Hub-wide numbers policies read from ``nbguard::Settings::"global"``.

        Keys: ``restricted_mfa_max_age_seconds`` (default 900: MFA age allowed for
        restricted data) and ``prod_mfa_max_age_seconds`` (default 900: MFA age
        allowed for prod promotion and prod servers). Values are whole seconds.
        """,
    ).tag(config=True)

    cache_size = Int(
        65536,
        help="""Maximum number of cached decisions; 0 disables the cache.

        The cache key holds every input that can change a decision, and the cache
        is emptied whenever policies, entities or settings change.
        """,
    ).tag(config=True)

    explain_denials = Bool(
        True,
        help="""Search for what would allow a denied request (a role, a grant, fresh MFA,
        a trusted device, a network zone) and attach it to the decision.

        The search re-evaluates the policies a few dozen times for an uncached
        denial; allowed requests never pay for it.
        """,
    ).tag(config=True)

    @default("policy_dir")
    def _default_policy_dir(self) -> str:
        return os.environ.get("NBGUARD_POLICY_DIR", "")

    @validate("cache_size")
    def _check_cache_size(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise ConfigError(f"PolicyEngine.cache_size must be 0 or more, got {value}")
        return value

    @validate("settings")
    def _check_settings(self, proposal: dict[str, Any]) -> dict[str, int]:
        value = dict(proposal["value"])
        unknown = sorted(set(value) - set(build.DEFAULT_SETTINGS))
        if unknown:
            raise ConfigError(
                f"PolicyEngine.settings: unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(build.DEFAULT_SETTINGS))}"
            )
        for key, number in value.items():
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise ConfigError(
                    f"PolicyEngine.settings[{key!r}] must be a whole number of seconds, "
                    f"got {number!r}"
                )
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._schema = self._load_schema()
        self._store = EntityStore(self._schema)
        self._actions = self._schema_actions()
        self._snapshot = self._load()

    # -- loading -------------------------------------------------------------

    def _load_schema(self) -> cedarpy.Schema:
        path = Path(self.schema_file) if self.schema_file else SCHEMA_PATH
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"PolicyEngine.schema_file: cannot read {path}: {error}") from error
        try:
            return cedarpy.Schema.from_str(text)
        except ValueError as error:
            raise PolicyLoadError([SourceProblem(str(path), None, str(error))]) from error

    def _schema_actions(self) -> frozenset[str]:
        """Action names the schema declares (cedarpy lists them as entities)."""
        listed = json.loads(str(cedarpy.Entities.from_json_str("[]", self._schema)))
        return frozenset(e["uid"]["id"] for e in listed if e["uid"]["type"].endswith("::Action"))

    def _policy_paths(self) -> list[Path]:
        if not self.policy_dir:
            raise ConfigError(
                "PolicyEngine.policy_dir is not set. Copy the example policies with "
                "`nbguard policy init DIR` and point PolicyEngine.policy_dir at DIR."
            )
        directory = Path(self.policy_dir)
        if not directory.is_dir():
            raise ConfigError(f"PolicyEngine.policy_dir: {directory} is not a directory")
        return sorted(directory.glob("*.cedar"))

    def _entity_paths(self) -> list[Path]:
        if self.entity_files:
            return [Path(p) for p in self.entity_files]
        directory = Path(self.policy_dir)
        return [directory / n for n in ENTITY_FILE_NAMES if (directory / n).is_file()][:1]

    def _load(self) -> _Snapshot:
        sources = load_policy_files(self._policy_paths(), self._schema)
        file_entities: list[Entity] = []
        problems: list[SourceProblem] = []
        for path in self._entity_paths():
            try:
                file_entities.extend(load_entity_file(path))
            except PolicyLoadError as error:
                problems.extend(error.problems)
        if problems:
            raise PolicyLoadError(problems)
        self._store.upsert([*file_entities, build.settings(self.settings), build.hub()])
        policies = build_policy_set(sources)
        usage = analyse_context(sources, {**build.DEFAULT_SETTINGS, **self.settings})
        self._report(sources)
        return _Snapshot(
            policies=policies,
            sources={s.id: s for s in sources},
            usage=usage,
            context_key=context_key_function(usage),
            cache=DecisionCache(self.cache_size),
            entity_generation=self._store.generation,
        )

    def _report(self, sources: list[PolicySource]) -> None:
        permits = sum(1 for s in sources if s.est.get("effect") == "permit")
        self.log.info(
            "nbguard policy: %d policies (%d permit, %d forbid) from %s, %d entities; "
            "anything not permitted is denied",
            len(sources),
            permits,
            len(sources) - permits,
            self.policy_dir,
            len(self._store),
        )
        for finding in lint(sources):
            log = self.log.error if finding.level == "error" else self.log.warning
            log("nbguard policy: %s", finding.message)

    def reload(self) -> None:
        """Re-read policies and entity files; on any error keep the current ones and raise."""
        with self._lock:
            self._snapshot = self._load()

    # -- entities ------------------------------------------------------------

    @property
    def sources(self) -> dict[str, PolicySource]:
        """The loaded policies by id, with their file, line and text."""
        return self._snapshot.sources

    @property
    def entities(self) -> EntityStore:
        """The entity store. Any change to it empties the decision cache."""
        return self._store

    def upsert_entities(self, items: Iterable[Entity]) -> None:
        """Add or replace entities, validated as one batch."""
        self._store.upsert(items)

    def remove_entities(self, refs: Iterable[EntityRef]) -> None:
        """Remove entities."""
        self._store.remove(refs)

    def _current(self) -> _Snapshot:
        """The snapshot, with a fresh cache if the entities changed since it was made."""
        snapshot = self._snapshot
        generation = self._store.generation
        if snapshot.entity_generation != generation:
            with self._lock:
                snapshot = replace(
                    self._snapshot,
                    cache=DecisionCache(self.cache_size),
                    entity_generation=generation,
                )
                self._snapshot = snapshot
        return snapshot

    # -- decisions -----------------------------------------------------------

    def decide(
        self,
        principal: EntityRef | str,
        action: str,
        resource: EntityRef | str,
        context: RequestContext | None = None,
        *,
        correlation_id: str | None = None,
    ) -> Decision:
        """Decide one request. Denials carry remedies when ``explain_denials`` is on."""
        snapshot = self._current()
        p = principal if isinstance(principal, EntityRef) else EntityRef.parse(principal)
        r = resource if isinstance(resource, EntityRef) else EntityRef.parse(resource)
        if action not in self._actions:
            action = parse_action(action)
            if action not in self._actions:
                raise RequestError(f"unknown action {action!r}")
        ctx = context if context is not None else RequestContext()
        key = (p, action, r, snapshot.context_key(ctx))
        verdict = snapshot.cache.get(key)
        cached = verdict is not None
        if verdict is None:
            verdict = self._evaluate(snapshot, p, action, r, ctx)
            snapshot.cache.put(key, verdict)
        return Decision(
            p, action, r, verdict, correlation_id or self._correlation_id(), cached=cached
        )

    def _correlation_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _evaluate(
        self, snapshot: _Snapshot, p: EntityRef, action: str, r: EntityRef, ctx: RequestContext
    ) -> Verdict:
        missing = [str(ref) for ref in (p, r) if ref not in self._store]
        if missing:
            return Verdict(False, (), tuple(f"unknown entity {m}" for m in missing))
        verdict = self._authorize(snapshot, p, action, r, ctx)
        if verdict.allowed or verdict.errors or not self.explain_denials:
            return verdict

        def allows(trial: RequestContext) -> bool:
            return self._authorize(snapshot, p, action, r, trial).allowed

        remedies = find_remedies(
            allows,
            ctx,
            roles=self._candidate_roles(p),
            grant=self._grant_for(action, r),
            zones=snapshot.usage.zones,
        )
        return Verdict(False, verdict.policy_ids, (), remedies)

    def _authorize(
        self, snapshot: _Snapshot, p: EntityRef, action: str, r: EntityRef, ctx: RequestContext
    ) -> Verdict:
        request = {
            "principal": p.to_cedar(),
            "action": action_uid(action),
            "resource": r.to_cedar(),
            "context": ctx.to_cedar(),
        }
        result = cedarpy.is_authorized(request, snapshot.policies, self._store.handle, self._schema)
        errors = tuple(result.diagnostics.errors)
        # Fail closed: an error in any policy (a forbid among them) denies.
        policy_ids = tuple(sorted(result.diagnostics.reasons))  # cedarpy order varies
        return Verdict(result.allowed and not errors, policy_ids, errors)

    def _candidate_roles(self, p: EntityRef) -> list[str]:
        held = set(self._store.roles_of(p))
        return [ref.id for ref in self._store.refs("Role") if ref.id not in held]

    def _grant_for(self, action: str, r: EntityRef) -> Grant | None:
        entity = self._store.get(r) or {}
        key = entity.get("attrs", {}).get("key")
        return Grant(action, key) if isinstance(key, str) else None
