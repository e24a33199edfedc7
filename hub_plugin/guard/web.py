"""The guard service's tornado application: routes, JupyterHub OAuth for the pages,
the pages' templates, and the request log."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyterhub.services.auth import HubOAuth
from tornado import web

from nbguard.hub_plugin.guard.identity import CallerCache
from nbguard.hub_plugin.guard.routes import routes

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.app import GuardService


def make_web_app(service: GuardService) -> web.Application:
    """The tornado application with every route under the service prefix."""
    service.hub_auth = HubOAuth(
        api_url=service.hub_api_url,
        api_token=service.api_token,
        base_url=service.service_prefix,
        hub_prefix=f"{service.hub_base_url}hub/",
        cache_max_age=service.token_cache_seconds,
        access_scopes={f"access:services!service={service.service_name}"},
        # The hub registers every service with a URL as OAuth client
        # ``service-<name>``, redirecting to ``<prefix>oauth_callback``.
        oauth_client_id=os.environ.get("JUPYTERHUB_CLIENT_ID") or f"service-{service.service_name}",
        oauth_redirect_uri=os.environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL")
        or f"{service.service_prefix}oauth_callback",
        parent=service,
    )
    return web.Application(
        routes(service.service_prefix),
        nbguard_guard=service,
        hub_auth=service.hub_auth,
        nbguard_callers=CallerCache(),
        nbguard_templates=page_templates(service.config),
        # Per process: a restart signs everyone out of the pages (the hub's
        # own login stays, so signing in again is a redirect away).
        cookie_secret=os.urandom(32),
        xsrf_cookies=True,
        log_function=lambda handler: log_request(service, handler),
    )


def page_templates(config: Any) -> Any:
    """The pages' Jinja environment: nbguard's templates over the hub's own, so that
    they extend the hub's ``page.html`` (its ``template_paths`` first, if set)."""
    from jinja2 import Environment, FileSystemLoader
    from jupyterhub._data import DATA_FILES_PATH

    hub_paths = list(config.get("JupyterHub", {}).get("template_paths", []) or [])
    paths = [
        str(Path(__file__).with_name("templates")),
        *hub_paths,
        str(Path(DATA_FILES_PATH) / "templates"),
    ]
    return Environment(loader=FileSystemLoader(paths), autoescape=True)


def log_request(service: GuardService, handler: Any) -> None:
    """One line per request: failures as warnings, the rest at debug level.

    A debug line is not even built unless a handler would write it (see
    :func:`writes_debug`): at the default level that record cost about 2% of a
    decision's CPU.
    """
    status = handler.get_status()
    if status >= 400:
        log = service.log.warning
    elif writes_debug(service.log):
        log = service.log.debug
    else:
        return
    log(
        "%d %s %s %.1fms",
        status,
        handler.request.method,
        handler.request.path,
        1000 * handler.request.request_time(),
    )


def writes_debug(log: logging.Logger | logging.LoggerAdapter[Any]) -> bool:
    """Whether a debug record on ``log`` would reach any handler.

    ``Logger.isEnabledFor`` is not enough: traitlets applications keep their
    logger at DEBUG and filter with the console handler's level (``log_level``).
    """
    logger: logging.Logger | None = log if isinstance(log, logging.Logger) else log.logger
    if logger is None or not logger.isEnabledFor(logging.DEBUG):
        return False
    while logger is not None:
        if any(h.level <= logging.DEBUG for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False  # no handler at all: logging's last resort writes warnings only
