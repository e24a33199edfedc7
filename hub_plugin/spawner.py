"""``PolicySpawnerMixin``: nbguard's spawn decision, lifetime cap and server environment.

The mixin composes with any JupyterHub spawner class (local processes,
KubeSpawner, ...) through :func:`guarded_spawner`::

    from nbguard.hub_plugin import guarded_authenticator, guarded_spawner
    c.JupyterHub.authenticator_class = guarded_authenticator("generic-oauth")
    c.JupyterHub.spawner_class = guarded_spawner("kubespawner")

It works through JupyterHub's own stages, in the order JupyterHub 6 calls them:

- ``run_pre_spawn_hook`` (after ``apply_user_options``, before ``start``): pick
  the profile, build the request context from the spawn request and the
  login's encrypted auth state, decide ``server.spawn``, write the ``spawn``
  ledger record, and refuse with a :class:`~.spawner_refusal.SpawnRefused`.
  A refusal here is a spawn failure like any other, so it reaches the spawn
  page, the spawn-pending page's progress stream and the "not running" page;
  only its clean message is shown there. The admin's ``pre_spawn_hook`` runs
  after the decision, and only for allowed spawns.
- ``get_env``: the guard service's URL, the session id, the profile and the
  deadline; the hub's secrets are removed whatever ``env_keep`` says.
- ``start_polling``/``poll``/``stop``: a timer stops the server at its
  deadline, and every ``poll`` checks the deadline too, so a hub restart (the
  deadline is kept in ``get_state``) cannot extend a server's life.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import secrets
import time
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.utils import url_escape_path
from traitlets import Dict, Integer, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from nbguard.errors import ConfigError, LedgerError, NBGuardError
from nbguard.hub_plugin.spawner_context import guard_secrets, spawn_context
from nbguard.hub_plugin.spawner_lease import (
    DEFAULT_ENV_NAMES,
    SERVER_URL_KEY,
    STATE_KEY,
    SpawnLease,
    scrub_env,
    token_digest,
)
from nbguard.hub_plugin.spawner_lifetime import LifetimeCap
from nbguard.hub_plugin.spawner_profile import (
    PROFILE_SLUG,
    checked_profile,
    record_name,
    spawner_default_profile,
)
from nbguard.hub_plugin.spawner_refusal import (
    SpawnRefused,
    bad_profile,
    denied,
    locked,
    misconfigured,
    unrecorded,
)

#: Shortest lifetime cap accepted, in seconds.
MIN_LIFETIME = 1
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# LifetimeCap last: it adds only ``_nbguard_*`` methods, so the wrapped spawner
# class still comes right after the mixin in a guarded class's MRO.
class PolicySpawnerMixin(LoggingConfigurable, LifetimeCap):
    """Adds nbguard's spawn decision, lifetime cap and server environment to a Spawner class."""

    default_profile = Unicode(
        "",
        help="""The profile a spawn is decided for when the user chose none.

        The profile is taken from ``user_options["profile"]`` (KubeSpawner's profile
        form and the REST API put the chosen slug there), else from the spawner's own
        default (KubeSpawner's ``profile_list`` entry marked ``default``), else from
        this setting. It must name a profile entity of the policy (``profile:<slug>``
        in ``entities.yaml``). Default empty: a spawn that names no profile is
        refused, so set it for spawners without a profile form (local processes).
        """,
    ).tag(config=True)

    max_lifetime = Integer(
        8 * 3600,
        help="""Longest a server may run, in seconds, unless its profile has its own cap.

        Counted from the spawn decision. At the cap the hub stops the server (a timer
        in the hub process, and a check at every ``Spawner.poll``, so a hub restart
        does not lose it) and records a ``server_stop`` ledger record. The server
        sees its deadline in ``NBGUARD_SERVER_DEADLINE``. Default 8 hours (a working
        day); at least 1 second.
        """,
    ).tag(config=True)

    profile_max_lifetime = Dict(
        value_trait=Integer(),
        help="""Lifetime caps per profile, in seconds: ``{"prod": 3600}``.

        A profile listed here gets this cap instead of
        ``PolicySpawnerMixin.max_lifetime`` (shorter or longer). Each value is at
        least 1 second. Default: none.
        """,
    ).tag(config=True)

    env_names = Dict(
        value_trait=Unicode(),
        help="""Names of the environment variables nbguard sets in each server.

        Keys: ``guard_url`` (the guard service's URL, ``NBGuard.guard_service_url``),
        ``session_id`` (the login session, for the guard service's records),
        ``profile`` (the profile the spawn was allowed for), ``deadline`` (the
        lifetime cap, RFC 3339 UTC), ``mlflow_uri`` (the guard's MLflow gateway,
        ``<guard_url>mlflow``) and ``mlflow_token`` (the server's own hub API
        token, which the gateway accepts). Defaults: ``NBGUARD_GUARD_URL``,
        ``NBGUARD_SESSION_ID``, ``NBGUARD_PROFILE``, ``NBGUARD_SERVER_DEADLINE``,
        ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN`` (the MLflow client's own
        names, so notebooks need no configuration; both unset without a guard URL);
        keys left out keep their default, and an empty name leaves that variable
        unset. No key, token or database URL of nbguard's is ever passed, nor the
        MLflow server's own credentials.
        """,
    ).tag(config=True)

    @default("env_names")
    def _default_env_names(self) -> dict[str, str]:
        return dict(DEFAULT_ENV_NAMES)

    @validate("default_profile")
    def _check_default_profile(self, proposal: Any) -> str:
        value = proposal["value"]
        if value and not PROFILE_SLUG.match(value):
            raise TraitError(
                f"PolicySpawnerMixin.default_profile must be a profile slug "
                f"(letters, digits, '.', '_', '-'), not {value!r}"
            )
        return str(value)

    @validate("max_lifetime")
    def _check_max_lifetime(self, proposal: Any) -> int:
        return _lifetime("PolicySpawnerMixin.max_lifetime", proposal["value"])

    @validate("profile_max_lifetime")
    def _check_profile_max_lifetime(self, proposal: Any) -> dict[str, int]:
        value = dict(proposal["value"])
        for slug, seconds in value.items():
            if not isinstance(slug, str) or not PROFILE_SLUG.match(slug):
                raise TraitError(
                    f"PolicySpawnerMixin.profile_max_lifetime: {slug!r} is not a profile slug"
                )
            _lifetime(f"PolicySpawnerMixin.profile_max_lifetime[{slug!r}]", seconds)
        return value

    @validate("env_names")
    def _check_env_names(self, proposal: Any) -> dict[str, str]:
        value = {**DEFAULT_ENV_NAMES, **proposal["value"]}
        unknown = sorted(set(value) - set(DEFAULT_ENV_NAMES))
        if unknown:
            raise TraitError(
                f"PolicySpawnerMixin.env_names: unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(DEFAULT_ENV_NAMES))}"
            )
        names = [name for name in value.values() if name]
        for name in names:
            if not _ENV_NAME.match(name) or name.upper().startswith(("JUPYTERHUB_", "JPY_")):
                raise TraitError(
                    f"PolicySpawnerMixin.env_names: {name!r} is not a variable name nbguard "
                    "may set (letters, digits and '_', not JUPYTERHUB_* or JPY_*)"
                )
        if len(set(names)) != len(names):
            raise TraitError("PolicySpawnerMixin.env_names: two values share one name")
        return value

    # Plain attributes, not traits: per-instance run-time state.
    _nbguard_lease: SpawnLease | None = None
    _nbguard_stop_reason = "requested"
    _nbguard_capping = False
    _nbguard_announced = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cls = type(self)
        if not cls._nbguard_announced:
            cls._nbguard_announced = True
            self._nbguard_announce()

    def _nbguard_announce(self) -> None:
        caps = ", ".join(f"{k} {v}s" for k, v in sorted(self.profile_max_lifetime.items()))
        self.log.info(
            "nbguard spawner %s: every spawn is decided by policy (server.spawn); servers "
            "stop after %ss%s",
            type(self).__name__,
            self.max_lifetime,
            f" (per profile: {caps})" if caps else "",
        )
        if not self.default_profile and not getattr(self, "profile_list", None):
            self.log.warning(
                "nbguard spawner: PolicySpawnerMixin.default_profile is empty and there is "
                "no profile_list: spawns that name no profile are refused"
            )

    # -- the guard ------------------------------------------------------------------------

    def nbguard_guard(self) -> Any:
        """The hub's ``NBGuard`` (``authenticator.nbguard``); refuses the spawn without one."""
        guard = getattr(getattr(self, "authenticator", None), "nbguard", None)
        if guard is None or not all(hasattr(guard, a) for a in ("engine", "ledger", "context")):
            raise misconfigured(
                f"{type(self).__name__} needs an nbguard-wrapped authenticator "
                "(c.JupyterHub.authenticator_class = guarded_authenticator(...)); "
                f"spawner.authenticator is {type(getattr(self, 'authenticator', None)).__name__}"
            )
        return guard

    # -- JupyterHub stages ----------------------------------------------------------------

    async def run_pre_spawn_hook(self) -> Any:
        """Decide the spawn (refusing with SpawnRefused), then run the admin's hook."""
        lease = await self.nbguard_authorize()
        result = super().run_pre_spawn_hook()
        if inspect.isawaitable(result):
            result = await result
        if self.user_options.get("profile") != lease.profile:
            self._nbguard_lease = None
            raise bad_profile(
                "the profile changed after it was allowed.",
                f"pre_spawn_hook changed user_options['profile'] after {lease.profile!r} "
                "was allowed",
            )
        return result

    def get_env(self) -> dict[str, str]:
        """The wrapped environment without the hub's secrets, plus nbguard's variables."""
        env = super().get_env()
        lease = self._nbguard_lease
        if lease is None:
            raise misconfigured(
                f"{type(self).__name__}.get_env called for a server no spawn decision allowed"
            )
        guard = self.nbguard_guard()
        env, dropped = scrub_env(env, guard_secrets(guard))
        if dropped:
            self.log.warning(
                "nbguard: not passing %s to %s: they hold the hub's secrets",
                ", ".join(dropped),
                self._log_name,
            )
        env.update(lease.env(self.env_names, guard.guard_service_url, self.api_token or ""))
        return env

    def start_polling(self) -> None:
        """JupyterHub's polling, and the timer that stops the server at its deadline."""
        super().start_polling()
        self._nbguard_arm()

    def stop_polling(self) -> None:
        """Stop JupyterHub's polling and the deadline timer."""
        super().stop_polling()
        self._nbguard_disarm()

    async def poll(self) -> int | None:
        """The wrapped poll; a server still running past its deadline is stopped first."""
        status = await _settle(super().poll())
        lease = self._nbguard_lease
        if status is None and lease is not None and lease.remaining() <= 0:
            # Not while a start or stop is under way (the next poll decides), nor
            # from inside our own stop: spawners' stop() polls too.
            if self.pending or self._nbguard_capping:
                return status
            self._nbguard_capping = True
            try:
                await self._nbguard_stop_at_cap(lease)
            finally:
                self._nbguard_capping = False
            status = await _settle(super().poll())
        return status

    async def stop(self, now: bool = False) -> None:
        """The wrapped stop, then a ``server_stop`` ledger record."""
        lease, reason = self._nbguard_lease, self._nbguard_stop_reason
        self._nbguard_disarm()
        await super().stop(now=now)
        self._nbguard_lease = None
        if lease is not None:
            await self._nbguard_record_stop(lease, reason)

    def get_state(self) -> dict[str, Any]:
        """The wrapped state plus the lease (profile, deadline), so a restart keeps the cap,
        and the running server's own URL, where the guard sends its orders."""
        state: dict[str, Any] = super().get_state()
        if self._nbguard_lease is not None:
            state[STATE_KEY] = self._nbguard_lease.to_state()
            server = self.server
            if server is not None:
                state[SERVER_URL_KEY] = server.url
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """The wrapped state, and the lease if one was kept."""
        super().load_state(state)
        lease = SpawnLease.from_state(state)
        if lease is not None:
            self._nbguard_lease = lease

    def clear_state(self) -> None:
        """Forget the wrapped state and the lease."""
        super().clear_state()
        self._nbguard_lease = None

    # -- the decision ---------------------------------------------------------------------

    async def nbguard_authorize(self) -> SpawnLease:
        """Decide ``server.spawn`` for the requested profile and record it; refuse if denied."""
        from nbguard.hub_plugin.auth_state import read_state
        from nbguard.policy import EntityRef

        guard = self.nbguard_guard()
        username: str = self.user.name
        requested, source = await self.nbguard_requested_profile()
        profiles = guard.engine.entities
        try:
            profile = checked_profile(
                requested, source=source, known=lambda slug: EntityRef("Profile", slug) in profiles
            )
        except SpawnRefused as refusal:
            await self._nbguard_record(
                guard,
                {
                    "allowed": False,
                    "profile": record_name(requested),
                    "policy_ids": [],
                    "correlation_id": f"spawn-{secrets.token_hex(8)}",
                    "reason": refusal.log_message.removeprefix("nbguard: "),
                },
                session=None,
            )
            raise
        state = read_state(await self.user.get_auth_state())
        request = getattr(getattr(self, "handler", None), "request", None)
        observation = guard.context.observe(request, username) if request is not None else None
        device_id = observation.device_id if observation else (state.device_id if state else "")
        locks = await self.nbguard_locks(guard, username, device_id)
        if locks:
            await self._nbguard_record(
                guard,
                {
                    "allowed": False,
                    "profile": profile,
                    "policy_ids": [f"lock:{lock.id}" for lock in locks][:64],
                    "correlation_id": f"spawn-{secrets.token_hex(8)}",
                    "reason": f"locked: {locks[0].reason}"[:512],
                },
                session=state.session_id if state else None,
            )
            raise locked(locks[0].reason)
        roles, grants = await self.nbguard_grants(guard, username)
        context = spawn_context(guard, observation, state, roles, grants)
        cap = self.profile_max_lifetime.get(profile, self.max_lifetime)
        try:
            decision = guard.engine.decide(
                EntityRef.of("User", username),
                "server.spawn",
                EntityRef.of("Profile", profile),
                context,
            )
        except NBGuardError as error:
            raise misconfigured(
                f"could not decide server.spawn for {username!r}: {error}"
            ) from None
        client_ip = observation.client_ip if observation else (state.client_ip if state else "")
        body: dict[str, Any] = {
            "allowed": decision.allowed,
            "profile": profile,
            "policy_ids": list(decision.policy_ids)[:64],
            "correlation_id": decision.correlation_id,
            "max_lifetime_s": cap,
            "reason": decision.explain()[:512],
        }
        if client_ip:
            body["client_ip"] = client_ip[:64]
        session_id = state.session_id if state else ""
        await self._nbguard_record(guard, body, session=session_id or None)
        if not decision.allowed:
            raise denied(decision, profile, self._nbguard_step_up_url())
        now = int(time.time())
        token = getattr(self, "api_token", "") or ""
        lease = SpawnLease(
            profile,
            now + cap,
            decision.correlation_id,
            session_id,
            now,
            token_hash=token_digest(token) if token else "",
        )
        self._nbguard_lease = lease
        # Pin the decided profile: spawners that read it later (KubeSpawner, in
        # start) must start exactly what the policy allowed.
        self.user_options = {**self.user_options, "profile": profile}
        return lease

    async def nbguard_requested_profile(self) -> tuple[Any, str]:
        """The requested profile as given (not yet checked) and where it came from."""
        options = self.user_options if isinstance(self.user_options, dict) else {}
        requested = options.get("profile")
        if requested is not None and requested != "":
            return requested, "user_options"
        slug = await spawner_default_profile(self)
        if slug:
            return slug, "the spawner's default profile"
        return self.default_profile, "PolicySpawnerMixin.default_profile"

    async def nbguard_grants(self, guard: Any, username: str) -> tuple[frozenset[str], Any]:
        """Roles and resource grants ``username`` holds through active elevations.

        Returned as ``(elevated_roles, grants)`` for the request context, read from
        the guard service's database (``NBGuard.guard_db_url``).
        """
        active = await asyncio.to_thread(guard.elevations.active, username)
        return frozenset(active.roles), frozenset(active.grants)

    async def nbguard_locks(self, guard: Any, username: str, device_id: str) -> list[Any]:
        """Active locks on ``username`` or their device, from the guard service's database."""
        return list(
            await asyncio.to_thread(guard.elevations.locks_for, user=username, device_id=device_id)
        )

    async def _nbguard_record(
        self, guard: Any, body: dict[str, Any], *, session: str | None
    ) -> None:
        body = {"server_name": self.name[:256], **body}
        try:
            await guard.ledger.append_async(
                "spawn",
                body,
                actor=self.user.name[:256],
                session=session,
            )
        except (LedgerError, OSError, RuntimeError) as error:
            raise unrecorded(f"spawn record for {self.user.name!r} not written: {error}") from None

    def _nbguard_step_up_url(self) -> str:
        from nbguard.hub_plugin.login_policy import step_up_url

        base = self.hub.base_url
        spawn = f"{base}spawn/{self.user.escaped_name}"
        if self.name:
            spawn += f"/{url_escape_path(self.name)}"
        return step_up_url(base, spawn)


def _lifetime(setting: str, value: Any) -> int:
    seconds = int(value)
    if seconds < MIN_LIFETIME:
        raise TraitError(f"{setting} must be at least {MIN_LIFETIME} seconds, not {seconds}")
    return seconds


async def _settle(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def guarded_spawner(base: type | str) -> type:
    """``base`` with nbguard's policy checks: a Spawner class, a ``jupyterhub.spawners``
    entry-point name (``"simple"``, ``"localprocess"``) or, as JupyterHub accepts, a
    dotted import path (``"kubespawner.KubeSpawner"``: KubeSpawner registers no
    entry point)."""
    from nbguard.hub_plugin.plugin_classes import resolve_plugin_class

    if isinstance(base, str) and "." in base:
        base = _import_class(base)
    cls = resolve_plugin_class(base, "jupyterhub.spawners", Spawner)
    if issubclass(cls, PolicySpawnerMixin):
        return cls
    return _guarded(cls)


def _import_class(path: str) -> Any:
    from traitlets.utils.importstring import import_item

    try:
        return import_item(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"cannot import spawner class {path!r}: {error}") from None


_GUARDED: dict[type, type] = {}


def _guarded(cls: type) -> type:
    # One class per base: evaluating the config twice yields the same class.
    if cls not in _GUARDED:
        _GUARDED[cls] = type(
            f"NBGuard{cls.__name__}", (PolicySpawnerMixin, cls), {"__module__": __name__}
        )
    return _GUARDED[cls]
