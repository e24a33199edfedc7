"""The guard client without a guard: paths refused before any request, a guard that is down."""

from __future__ import annotations

import pytest

from nbguard.kernel_hooks.client import GuardClient
from nbguard.kernel_hooks.errors import GuardRequestError, GuardUnavailable
from nbguard.kernel_hooks.filesystem import DATASET_NAME, NBGuardFileSystem
from nbguard.kernel_hooks.identity import ServerEnvironment

#: Nothing listens on the discard port: any request would fail as GuardUnavailable.
NOWHERE = ServerEnvironment("http://127.0.0.1:9/services/nbguard-guard/", "t" * 32, "", "/")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("nbguard://sales/../customers/all.csv", id="dot-dot"),
        pytest.param("nbguard://sales/a/../../customers/x", id="deep-dot-dot"),
        pytest.param("nbguard://../etc/passwd", id="dataset-dot-dot"),
        pytest.param("nbguard://sales/%2e%2e/x", id="encoded-dot-dot"),
        pytest.param("nbguard://sales/a\\..\\b", id="backslash"),
        pytest.param("nbguard://sales/a//b", id="empty-part"),
        pytest.param("nbguard://sales/*.csv", id="wildcard"),
        pytest.param("nbguard://sales/file:x", id="scheme"),
        pytest.param("nbguard://Sales/a.csv", id="bad-dataset-name"),
        pytest.param("nbguard://sales/a\u202e.csv", id="bidi-override"),
        pytest.param("nbguard://sales/~/x", id="home"),
    ],
)
def test_bad_paths_are_refused_before_any_request(path: str) -> None:
    """Traversal and other unsafe names raise GuardRequestError without contacting the guard
    (the client points at a closed port: any request would be GuardUnavailable)."""
    fs = NBGuardFileSystem(client=GuardClient(NOWHERE, timeout=1))
    with pytest.raises(GuardRequestError) as refused:
        fs.cat_file(path)
    assert "before sending it" in str(refused.value) or "does not name a dataset" in str(
        refused.value
    )


def test_an_unreachable_guard_is_a_clear_connection_error() -> None:
    """A guard that cannot be reached raises GuardUnavailable (a ConnectionError) whose
    message names the guard and says what to do, with no HTTP library internals."""
    fs = NBGuardFileSystem(client=GuardClient(NOWHERE, timeout=1))
    with pytest.raises(ConnectionError) as failed:
        fs.cat_file("nbguard://sales/a.csv")
    assert isinstance(failed.value, GuardUnavailable)
    message = str(failed.value)
    assert "http://127.0.0.1:9" in message
    assert "connection refused" in message
    for internal in ("HTTPConnectionPool", "urllib3", "Max retries", "object at 0x"):
        assert internal not in message
    assert failed.value.__suppress_context__


def test_dataset_names_match_the_catalogs_rule() -> None:
    """The client's dataset-name check is the catalog's own (kept apart to stay light)."""
    from nbguard.catalog.models import DATASET_NAME as CATALOG_RULE

    assert DATASET_NAME.pattern == CATALOG_RULE.pattern
