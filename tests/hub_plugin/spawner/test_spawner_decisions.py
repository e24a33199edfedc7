"""Spawn decisions on a real hub: allowed profiles start real servers, refusals are clean."""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

import pytest
import requests

from nbguard.ledger import verify_store

from .conftest import (
    GRANTS,
    age_mfa,
    api_spawn,
    ledger_records,
    logged_in,
    spawn_form,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Text that belongs in the log and the ledger, never on a user's page.
INTERNAL = (
    "Denied:",
    "nbguard:",
    "forbidden by",
    "context.prod",
    "user:user",
    "profile:prod",
    "Traceback",
    "policy_ids",
    "SpawnRefused",
    "SpawnException",
)


def assert_clean(text: str) -> None:
    """No internal decision text in a page or event."""
    for marker in INTERNAL:
        assert marker not in text, f"{marker!r} leaked into: {text[:500]}"


async def test_allowed_profile_starts_a_real_server_and_records_it(spawn_hub: Any) -> None:
    """A data scientist's dev spawn starts jupyterhub-singleuser, reachable, and is recorded."""
    name, browser = await logged_in(spawn_hub)
    page = await spawn_form(browser, name, "dev")
    assert page.status == 200
    spawner = spawn_hub.users[name].spawner
    await wait_for(lambda: spawner.ready)
    status = await asyncio.to_thread(requests.get, f"{spawner.server.url}api/status", timeout=10)
    assert status.status_code in (200, 403)  # up; the status API itself wants a token
    assert await spawner.poll() is None
    record = ledger_records(spawn_hub, "spawn", name)[-1]
    assert record["body"]["allowed"] is True
    assert record["body"]["profile"] == "dev"
    assert record["body"]["policy_ids"] == ["server.spawn.nonprod"]
    assert record["body"]["max_lifetime_s"] == spawner.max_lifetime
    assert record["session"] == spawner._nbguard_lease.session_id
    await stop_server(spawn_hub, name)
    assert spawner.server is None
    stops = ledger_records(spawn_hub, "server_stop", name)
    assert [s["body"]["reason"] for s in stops] == ["requested"]
    assert stops[0]["body"]["correlation_id"] == record["body"]["correlation_id"]
    report = verify_store(
        spawn_hub.authenticator.nbguard.ledger.store, {}, allow_unsigned_tail=10**6
    )
    assert report.records >= 2


async def test_prod_without_grant_is_refused_with_what_would_allow_it(spawn_hub: Any) -> None:
    """Prod with fresh MFA on a trusted device but no grant: refused, naming the grant."""
    name, browser = await logged_in(spawn_hub, device=True)
    page = await spawn_form(browser, name, "prod")
    assert page.status == 403
    assert (
        "Your server was not started: the prod profile needs an approved elevation grant"
        in page.text
    )
    assert_clean(page.text)
    assert not spawn_hub.users[name].spawner.active
    record = ledger_records(spawn_hub, "spawn", name)[-1]["body"]
    assert record["allowed"] is False
    assert record["policy_ids"] == []
    assert "grant" in record["reason"]


async def test_prod_with_stale_mfa_points_to_step_up(spawn_hub: Any) -> None:
    """With a grant and a trusted device, an hour-old second factor is refused with a step-up link."""
    name, browser = await logged_in(spawn_hub, device=True)
    GRANTS[name] = {("server.spawn", "profile:prod")}
    await age_mfa(spawn_hub, name, 3600)
    page = await spawn_form(browser, name, "prod")
    assert page.status == 403
    text = html.unescape(page.text)
    assert "needs a second factor within the last 15 minutes" in text
    assert f"nbguard/mfa/step-up?next=%2Fprefix%2Fhub%2Fspawn%2F{name}" in text
    assert_clean(page.text)
    record = ledger_records(spawn_hub, "spawn", name)[-1]["body"]
    assert record["policy_ids"] == ["context.prod-fresh-mfa"]


async def test_prod_from_untrusted_device_is_refused(spawn_hub: Any) -> None:
    """With a grant and fresh MFA but no device assertion, prod asks for a trusted device."""
    name, browser = await logged_in(spawn_hub)
    GRANTS[name] = {("server.spawn", "profile:prod")}
    page = await spawn_form(browser, name, "prod")
    assert page.status == 403
    assert "the prod profile needs a trusted, managed device" in page.text
    assert_clean(page.text)
    record = ledger_records(spawn_hub, "spawn", name)[-1]["body"]
    assert record["policy_ids"] == ["context.prod-spawn-trusted-device"]


async def test_prod_with_grant_device_and_fresh_mfa_starts(spawn_hub: Any) -> None:
    """Grant, trusted device and a fresh factor together allow prod; the server gets it in env."""
    name, browser = await logged_in(spawn_hub, device=True)
    GRANTS[name] = {("server.spawn", "profile:prod")}
    page = await spawn_form(browser, name, "prod")
    assert page.status == 200
    spawner = spawn_hub.users[name].spawner
    await wait_for(lambda: spawner.ready)
    env = spawner.get_env()
    assert env["NBGUARD_PROFILE"] == "prod"
    assert env["NBGUARD_SESSION_ID"] == spawner._nbguard_lease.session_id
    record = ledger_records(spawn_hub, "spawn", name)[-1]["body"]
    assert (record["allowed"], record["policy_ids"]) == (True, ["grant.server.spawn"])
    await stop_server(spawn_hub, name)


async def test_refusal_is_clean_on_every_page_jupyterhub_shows(spawn_hub: Any) -> None:
    """The REST API, the progress stream and the not-running page show only the clean message."""
    name, browser = await logged_in(spawn_hub)
    response = await api_spawn(browser, name, {"profile": "prod"})
    assert response.status_code == 403
    assert response.json()["message"].startswith("Your server was not started: the prod profile")
    assert_clean(response.text)
    progress = await asyncio.to_thread(
        browser.session.get, browser.url(f"api/users/{name}/server/progress"), timeout=30
    )
    events = [
        json.loads(line[5:]) for line in progress.text.splitlines() if line.startswith("data:")
    ]
    assert events[-1]["failed"] is True
    assert events[-1]["message"].startswith("Spawn failed: Your server was not started")
    assert_clean(progress.text)
    page = await browser.get(f"spawn-pending/{name}")
    assert "Your server was not started" in page.text
    assert_clean(page.text)


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        pytest.param({"profile": ["prod"]}, "the profile must be given by its name", id="list"),
        pytest.param(
            {"profile": {"$ne": ""}}, "the profile must be given by its name", id="object"
        ),
        pytest.param({"profile": 7}, "the profile must be given by its name", id="number"),
        pytest.param({"profile": "gpu-huge"}, "there is no profile named gpu-huge", id="unknown"),
        pytest.param(
            {"profile": 'prod" || true || "'}, "not a valid profile name", id="cedar-injection"
        ),
        pytest.param({"profile": "<script>x</script>"}, "not a valid profile name", id="html"),
        pytest.param({"profile": "dev\ud800"}, "not a valid profile name", id="lone-surrogate"),
        pytest.param({"profile": "../prod"}, "not a valid profile name", id="path"),
        pytest.param({"profile": "p" * 300}, "not a valid profile name", id="long"),
    ],
)
async def test_hostile_profile_names_are_refused_cleanly(
    spawn_hub: Any, options: dict[str, Any], shown: str
) -> None:
    """user_options profiles that are not a known slug are refused, recorded, never echoed raw."""
    name, browser = await logged_in(spawn_hub)
    response = await api_spawn(browser, name, options)
    assert response.status_code == 403
    message = response.json()["message"]
    assert shown in message
    assert "<script>" not in response.text
    assert "||" not in message
    assert not spawn_hub.users[name].spawner.active
    record = ledger_records(spawn_hub, "spawn", name)[-1]["body"]
    assert record["allowed"] is False
    assert record["profile"].isascii()


async def test_spawn_without_profile_uses_the_default(spawn_hub: Any) -> None:
    """An API spawn with no options is decided for PolicySpawnerMixin.default_profile."""
    name, browser = await logged_in(spawn_hub)
    response = await api_spawn(browser, name, {})
    assert response.status_code in (201, 202)
    spawner = spawn_hub.users[name].spawner
    await wait_for(lambda: spawner.ready)
    assert spawner.user_options["profile"] == "dev"
    assert ledger_records(spawn_hub, "spawn", name)[-1]["body"]["profile"] == "dev"
    await stop_server(spawn_hub, name)
