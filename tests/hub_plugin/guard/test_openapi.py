"""The OpenAPI document and the guard service's handlers describe the same API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nbguard.hub_plugin.guard import routes

DOCUMENT = Path(routes.__file__).with_name("openapi.yaml")
VERBS = ("get", "head", "post", "put", "patch", "delete")


def document() -> dict[str, Any]:
    """The parsed OpenAPI document shipped in the package."""
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def handler_operations() -> set[tuple[str, str]]:
    """``(path, verb)`` for every verb a routed handler implements itself."""
    from tornado.web import RequestHandler

    found = set()
    for path, handler in routes.API_ROUTES:
        for verb in VERBS:
            method = getattr(handler, verb, None)
            if method is not None and method is not getattr(RequestHandler, verb):
                found.add((f"/{path}", verb))
    return found


def test_every_handler_route_is_documented_and_nothing_else() -> None:
    """Paths and verbs in openapi.yaml are exactly those the handlers serve."""
    spec = document()
    documented = {
        (path, verb) for path, item in spec["paths"].items() for verb in item if verb in VERBS
    }
    assert documented == handler_operations()


def test_every_operation_documents_its_errors() -> None:
    """Each operation names its success and the 401 every route can answer, with the error body."""
    spec = document()
    assert spec["openapi"].startswith("3.")
    for path, item in spec["paths"].items():
        for verb, operation in item.items():
            if verb not in VERBS:
                continue
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), (path, verb)
            assert "401" in responses, (path, verb)
            assert operation.get("summary"), (path, verb)
