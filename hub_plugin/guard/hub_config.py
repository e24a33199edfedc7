"""One call in ``jupyterhub_config.py`` adds the guard service to a hub::

    from nbguard.hub_plugin.guard.hub_config import guard_service

    guard_service(c, config_file=__file__)

It registers the managed service (started by the hub with the same
configuration file), the hub role the service needs, access to the service for
users and their servers, and tells the hub side of nbguard where the service
and its database are.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlparse

from nbguard.errors import ConfigError

#: The service's name: its URL prefix is ``/services/<name>/``.
SERVICE_NAME = "nbguard-guard"

#: What the service may do at the hub: read users' auth state (MFA time, device,
#: zone, written by the login gate) and server state (spawn leases), and stop
#: servers (terminate a privileged session, revocation with stop).
SERVICE_SCOPES = (
    "list:users",
    "read:users",
    "read:servers",
    "admin:auth_state",
    "admin:server_state",
    "servers",
)


def guard_service(
    c: Any,
    *,
    config_file: str,
    url: str = "http://127.0.0.1:10101",
    name: str = SERVICE_NAME,
    db_url: str | None = None,
    python: str = sys.executable,
    managed: bool = True,
    api_token: str = "",
    environment: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Add the guard service to the hub config ``c``; return its service entry.

    ``config_file`` is the configuration file the service loads (pass
    ``__file__`` from ``jupyterhub_config.py`` to share the policy and ledger
    settings). ``url`` is where the service listens, as single-user servers
    reach it; ``db_url`` its database (default: ``GuardService.db_url`` if set in
    ``c``, else its default SQLite file), which the hub also reads for grants.
    With ``managed=False`` the hub does not start it (run it yourself, e.g. in its
    own pod, with ``JUPYTERHUB_API_TOKEN`` set to ``api_token``). Call it after
    setting ``c.JupyterHub.base_url`` (or ``bind_url``): the URL servers get
    includes the hub's prefix.
    ``environment`` adds variables to the managed service's environment (the hub
    passes it only ``JUPYTERHUB_*`` and a few standard ones).
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not parsed.port:
        raise ConfigError(f"guard_service: url must be http(s)://host:port, not {url!r}")
    service: dict[str, Any] = {
        "name": name,
        "url": url,
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "nbguard: access requests, approvals and sessions"},
    }
    if managed:
        service["command"] = [python, "-m", "nbguard.hub_plugin.guard", "--config", config_file]
        if environment:
            service["environment"] = dict(environment)
    elif len(api_token) < 32:
        raise ConfigError("guard_service: an unmanaged service needs a 32+ character api_token")
    else:
        service["api_token"] = api_token
    services = [s for s in _listed(c.JupyterHub, "services") if s.get("name") != name]
    c.JupyterHub.services = [*services, service]
    access = f"access:services!service={name}"
    roles = [r for r in _listed(c.JupyterHub, "load_roles") if r.get("name") != name]
    roles.append({"name": name, "scopes": list(SERVICE_SCOPES), "services": [name]})
    # Users (their browsers, through OAuth) and their servers' tokens may call it.
    roles = _with_scope(roles, "user", ["self"], access)
    roles = _with_scope(roles, "server", ["users:activity!user", "access:servers!server"], access)
    c.JupyterHub.load_roles = roles
    # The service serves under the hub's prefix (JUPYTERHUB_SERVICE_PREFIX), also at
    # its own URL: servers reach it there, not through the proxy.
    base = str(
        c.JupyterHub.get("base_url") or urlparse(str(c.JupyterHub.get("bind_url") or "")).path
    ).strip("/")
    prefix = f"/{base}/" if base else "/"
    c.NBGuard.guard_service_url = f"{url.rstrip('/')}{prefix}services/{name}/"
    database = db_url or c.GuardService.get("db_url")
    if database:
        c.GuardService.db_url = database
        c.NBGuard.guard_db_url = database
    return service


def _listed(section: Any, key: str) -> list[dict[str, Any]]:
    """A list setting as configured so far (set, appended to, or absent)."""
    value = section.get(key)
    if value is None:
        return []
    if hasattr(value, "get_value"):  # traitlets' LazyConfigValue: .append() before set
        value = value.get_value([])
    return list(value)


def _with_scope(
    roles: list[dict[str, Any]], role: str, defaults: list[str], scope: str
) -> list[dict[str, Any]]:
    """``roles`` with ``scope`` added to ``role`` (created with JupyterHub's defaults)."""
    out = []
    found = False
    for entry in roles:
        if entry.get("name") == role:
            found = True
            scopes = list(entry.get("scopes") or [])
            entry = {**entry, "scopes": scopes if scope in scopes else [*scopes, scope]}
        out.append(entry)
    if not found:
        out.append({"name": role, "scopes": [*defaults, scope]})
    return out
