"""The server extension's OpenAPI document and its handlers describe the same routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import HTTPClientError
from tornado.web import RequestHandler

from nbguard.server_extension import handlers, orders

#: The document shipped in the package, parsed.
SPEC: dict[str, Any] = yaml.safe_load(Path(handlers.__file__).with_name("openapi.yaml").read_text())
VERBS = ("get", "head", "post", "put", "patch", "delete")


def test_document_and_handlers_name_the_same_operations() -> None:
    """Paths and verbs in openapi.yaml are exactly those the routed handlers implement."""
    documented = {(path, verb) for path, item in SPEC["paths"].items() for verb in item}
    served = {
        (f"/{path}", verb)
        for path, handler in [*handlers.ROUTES, orders.ROUTE]
        for verb in VERBS
        if getattr(handler, verb) is not getattr(RequestHandler, verb)
    }
    assert documented == served


@pytest.mark.parametrize(
    ("path", "verb"),
    [(path, verb) for path, item in SPEC["paths"].items() for verb in item],
)
def test_operation_documents_success_and_errors(path: str, verb: str) -> None:
    """An operation has a summary, its success, 403 (unauthenticated or denied) and 503."""
    operation = SPEC["paths"][path][verb]
    assert operation["summary"]
    codes = set(operation["responses"])
    assert {"403", "503"} <= codes
    assert any(code.startswith("2") for code in codes)


def test_every_handler_declares_its_auth_resource() -> None:
    """Every routed handler names the resource Jupyter's authorizer is asked about."""
    for _, handler in handlers.ROUTES:
        assert handler.auth_resource == "nbguard"


def test_new_request_schema_matches_the_checked_fields() -> None:
    """The documented request body has exactly the fields the handler checks and forwards."""
    schema = SPEC["components"]["schemas"]["NewRequest"]
    assert set(schema["properties"]) == set(handlers.REQUEST_FIELDS)


@pytest.mark.parametrize("path", [path for path, _ in handlers.ROUTES])
async def test_routes_need_jupyters_authentication(jp_fetch: Any, path: str) -> None:
    """Without Jupyter's token every route is refused with the documented 403 (never forwarded)."""
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch(*path.split("/"), headers={"Authorization": ""})
    assert caught.value.code == 403
