"""The guard service's URL map: every route under the service prefix, and its API paths.

Pages and their forms are listed with their handlers (``handlers/pages.py``).

The OpenAPI document (``openapi.yaml``) describes each ``/api/v1`` route here; a
test checks the two against each other.
"""

from __future__ import annotations

from typing import Any

from nbguard.hub_plugin.guard.handlers.alerts import AlertsHandler
from nbguard.hub_plugin.guard.handlers.datasets import DatasetHandler, DatasetListHandler
from nbguard.hub_plugin.guard.handlers.decisions import DecisionHandler, MeHandler
from nbguard.hub_plugin.guard.handlers.elevation import (
    BreakGlassHandler,
    GrantReviewHandler,
    GrantRevokeHandler,
    GrantsHandler,
    RequestCancelHandler,
    RequestDecisionHandler,
    RequestHandler,
    RequestsHandler,
)
from nbguard.hub_plugin.guard.handlers.entitlements import (
    EntitlementKeyHandler,
    EntitlementsHandler,
)
from nbguard.hub_plugin.guard.handlers.executions import ExecutionsHandler
from nbguard.hub_plugin.guard.handlers.locks import LockHandler, LocksHandler
from nbguard.hub_plugin.guard.handlers.objects import ObjectHandler, ObjectListHandler
from nbguard.hub_plugin.guard.handlers.pages import PAGE_ROUTES
from nbguard.hub_plugin.guard.handlers.review import REVIEW_API_ROUTES, REVIEW_PAGE_ROUTES
from nbguard.hub_plugin.guard.handlers.sessions import SessionsHandler, SessionTerminateHandler
from nbguard.hub_plugin.guard.mlflow.catalog import ModelListHandler
from nbguard.hub_plugin.guard.mlflow.handler import MLflowGatewayHandler

#: ``(path under the prefix, handler)``; paths use OpenAPI-style ``{name}`` placeholders
#: mapped to tornado groups in :func:`routes`.
API_ROUTES: list[tuple[str, Any]] = [
    ("api/v1/me", MeHandler),
    ("api/v1/decisions", DecisionHandler),
    ("api/v1/datasets", DatasetListHandler),
    ("api/v1/datasets/{name}", DatasetHandler),
    ("api/v1/datasets/{name}/objects", ObjectListHandler),
    ("api/v1/datasets/{name}/objects/{path}", ObjectHandler),
    ("api/v1/requests", RequestsHandler),
    ("api/v1/requests/{id}", RequestHandler),
    ("api/v1/requests/{id}/decision", RequestDecisionHandler),
    ("api/v1/requests/{id}/cancel", RequestCancelHandler),
    ("api/v1/break-glass", BreakGlassHandler),
    ("api/v1/grants", GrantsHandler),
    ("api/v1/grants/{id}/revoke", GrantRevokeHandler),
    ("api/v1/grants/{id}/review", GrantReviewHandler),
    ("api/v1/locks", LocksHandler),
    ("api/v1/locks/{id}", LockHandler),
    ("api/v1/sessions", SessionsHandler),
    ("api/v1/sessions/{user}/terminate", SessionTerminateHandler),
    ("api/v1/executions", ExecutionsHandler),
    ("api/v1/alerts", AlertsHandler),
    ("api/v1/entitlements", EntitlementsHandler),
    ("api/v1/entitlements/key", EntitlementKeyHandler),
    # Review of recorded sessions (handlers/review.py).
    *REVIEW_API_ROUTES,
    ("api/v1/models", ModelListHandler),
    # The MLflow REST API (the model-registry gateway; see mlflow/endpoints.py).
    ("mlflow/{path}", MLflowGatewayHandler),
]

#: Placeholder patterns: a path segment, or the rest of the path.
_SEGMENT = r"([^/]+)"
_REST = r"(.+)"


def tornado_pattern(path: str) -> str:
    """``api/v1/requests/{id}`` as a tornado regex (``{path}`` takes the rest)."""
    out = path
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        name = out[start + 1 : end]
        out = out[:start] + (_REST if name == "path" else _SEGMENT) + out[end + 1 :]
    return out


def routes(prefix: str) -> list[tuple[str, Any]]:
    """Tornado routes for a service mounted at ``prefix`` (ending in ``/``): the
    token-only API, and the OAuth-signed-in pages with their forms."""
    return [
        (prefix + tornado_pattern(path) + "$", handler)
        for path, handler in (*API_ROUTES, *PAGE_ROUTES, *REVIEW_PAGE_ROUTES)
    ]
