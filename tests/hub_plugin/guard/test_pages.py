"""The approver and admin pages: JupyterHub OAuth sign-in, forms, and the attacks on them.

A cookie-keeping ``requests`` client plays the browser through the real proxy:
it signs in to the hub (password and TOTP), follows the OAuth redirects to the
service, and posts the pages' forms with their XSRF tokens.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urlparse

import pytest

from ..conftest import Browser, Page, ledger_bodies
from .conftest import Client, Guard, server_client, signed_in, user_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

FEATURES = {"action": "dataset.read", "resource": "dataset:features", "duration_seconds": 3600}


async def page_for(guard: Guard, *roles: str) -> tuple[Browser, Client]:
    """A signed-in browser and an API token of the same new user."""
    browser = await signed_in(guard, *roles)
    name = browser.name  # type: ignore[attr-defined]
    token = guard.hub.users[name].new_api_token(note="pages test")
    return browser, Client(guard, token, name)


async def open_page(guard: Guard, browser: Browser, path: str) -> Page:
    """GET a service page, following the OAuth redirects."""
    return await browser.get(guard.url(path))


async def submit(guard: Guard, browser: Browser, page: Page, target: str, **form: str) -> Page:
    """Post a form of ``page`` to ``target`` (a path under the service), as a browser would."""
    return await browser.post(
        guard.url(target), {"next": urlparse(page.url).path, **form}, xsrf=page.xsrf
    )


async def ask(client: Client, reason: str = "quarterly model refresh") -> dict[str, Any]:
    """Create an elevation request for the features dataset through the API."""
    response = await client.call("POST", "api/v1/requests", json={**FEATURES, "reason": reason})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_browser_without_a_session_is_sent_to_the_hub_to_sign_in(guard: Guard) -> None:
    """No cookie: the page redirects to the hub's OAuth authorization, nothing is shown."""
    browser = Browser(guard.hub)
    page = await browser.get(guard.url("requests"), allow_redirects=False)
    assert page.status == 302
    assert "/hub/api/oauth2/authorize" in page.headers["Location"]
    assert "state=" in page.headers["Location"]
    followed = await open_page(guard, browser, "requests")
    assert urlparse(followed.url).path.endswith("/hub/login")


async def test_signing_in_through_oauth_shows_the_users_own_requests(guard: Guard) -> None:
    """After OAuth the page is in the hub's frame and lists what the user asked for."""
    browser, client = await page_for(guard)
    request = await ask(client)
    page = await open_page(guard, browser, "")
    assert page.status == 200, page.text
    assert urlparse(page.url).path.endswith("/services/nbguard-guard/requests")
    assert "jupyterhub-logo" in page.text  # JupyterHub's own page frame
    assert "static/css/style.min.css" in page.text
    assert f'data-request="{request["id"]}"' in page.text
    assert "Nothing is waiting for you." in page.text
    # Admin tabs are not offered to a data scientist.
    assert ">Locks<" not in page.text


async def test_an_approver_approves_from_the_page_and_it_is_recorded(guard: Guard) -> None:
    """The request waits on the reviewer's page; approving there grants it, once."""
    _alice_browser, alice = await page_for(guard)
    request = await ask(alice, reason="needed for <b>the audit</b>")
    carol, _ = await page_for(guard, "reviewer")
    page = await open_page(guard, carol, "requests")
    assert f'data-request="{request["id"]}"' in page.text
    # Free text from the requester is escaped, never markup.
    assert "needed for &lt;b&gt;the audit&lt;/b&gt;" in page.text
    assert "<b>the audit</b>" not in page.text

    done = await submit(
        guard, carol, page, f"actions/requests/{request['id']}/decision",
        verdict="approve", comment="ok for one hour",
    )  # fmt: skip
    assert done.status == 200, done.text
    assert "done=decision" in done.url
    assert "Your decision is recorded." in done.text
    assert f'data-request="{request["id"]}"' not in done.text  # no longer waiting
    stored = (await alice.call("GET", f"api/v1/requests/{request['id']}")).json()
    assert stored["status"] == "approved"
    assert stored["approvals"][0]["comment"] == "ok for one hour"
    events = [
        b
        for b in ledger_bodies(guard.service.ledger, "elevation")
        if b.get("request_id") == request["id"]
    ]
    assert [e["event"] for e in events] == ["request", "approve"]

    again = await submit(
        guard, carol, page, f"actions/requests/{request['id']}/decision", verdict="approve"
    )
    assert again.status == 409
    assert "already approved" in again.text
    assert again.headers["Content-Type"].startswith("text/html")


async def test_a_form_without_the_xsrf_token_is_refused(guard: Guard) -> None:
    """A cross-site form (the cookie but no XSRF token) changes nothing."""
    _b, alice = await page_for(guard)
    request = await ask(alice)
    carol, _ = await page_for(guard, "reviewer")
    await open_page(guard, carol, "requests")  # signed in: the service cookie is set
    response = await asyncio.to_thread(
        carol.session.post,
        guard.url(f"actions/requests/{request['id']}/decision"),
        data={"verdict": "approve"},
        timeout=30,
    )
    assert response.status_code == 403
    stored = (await alice.call("GET", f"api/v1/requests/{request['id']}")).json()
    assert stored["status"] == "pending"


async def test_an_api_token_does_not_sign_in_to_the_forms(guard: Guard) -> None:
    """Forms need the browser session: a bare token post without XSRF is refused."""
    _b, alice = await page_for(guard)
    request = await ask(alice)
    _c, carol = await page_for(guard, "reviewer")
    response = await carol.call(
        "POST", f"actions/requests/{request['id']}/decision", data={"verdict": "approve"}
    )
    assert response.status_code == 403
    stored = (await alice.call("GET", f"api/v1/requests/{request['id']}")).json()
    assert stored["status"] == "pending"


async def test_self_approval_through_the_page_is_refused_with_a_page(guard: Guard) -> None:
    """A reviewer's own request is not offered to them, and posting the form anyway fails."""
    carol, carol_api = await page_for(guard, "reviewer")
    request = await ask(carol_api)
    page = await open_page(guard, carol, "requests")
    waiting, _, own = page.text.partition('id="mine-title"')
    assert f'data-request="{request["id"]}"' not in waiting
    assert f'data-request="{request["id"]}"' in own
    refused = await submit(
        guard, carol, page, f"actions/requests/{request['id']}/decision", verdict="approve"
    )
    assert refused.status == 403
    assert 'id="nbguard-error"' in refused.text
    assert "Traceback" not in refused.text


async def test_admin_pages_need_the_admin_policy(guard: Guard) -> None:
    """Locks and sessions are refused to a non-admin, as a page with the reason."""
    browser, _ = await page_for(guard)
    for path in ("locks", "sessions"):
        page = await open_page(guard, browser, path)
        assert page.status == 403, path
        assert 'id="nbguard-error"' in page.text
        assert page.headers["Content-Type"].startswith("text/html")


async def test_admin_needs_fresh_mfa_and_is_offered_the_step_up_page(guard: Guard) -> None:
    """An admin whose second factor is old is sent to the hub's step-up page and back."""
    from .conftest import age_mfa

    dave, _ = await page_for(guard, "admin")
    await age_mfa(guard, dave.name, 3600)  # type: ignore[attr-defined]
    page = await open_page(guard, dave, "locks")
    assert page.status == 403
    link = re.search(r'id="nbguard-step-up" class="[^"]*" href="([^"]+)"', page.text)
    assert link, page.text
    href = link.group(1).replace("&amp;", "&")
    assert "/hub/nbguard/mfa/step-up?next=" in href
    assert "%2Fservices%2Fnbguard-guard%2Flocks" in href


async def test_an_admin_locks_and_lifts_from_the_page(guard: Guard) -> None:
    """The lock form locks a user (their next decision is refused); Lift lifts it."""
    _b, bob = await page_for(guard)
    dave, _ = await page_for(guard, "admin")
    page = await open_page(guard, dave, "locks")
    assert page.status == 200, page.text
    assert "No lock is in force." in page.text or 'id="nbguard-locks"' in page.text
    locked = await submit(
        guard, dave, page, "actions/locks", kind="user", value=bob.name, reason="lost laptop",
        until="",
    )  # fmt: skip
    assert locked.status == 200, locked.text
    assert "The lock is in force." in locked.text
    found = re.search(r'data-lock="([^"]+)">\s*<td>user <code>' + re.escape(bob.name), locked.text)
    assert found, locked.text
    refused = await bob.call(
        "POST", "api/v1/decisions", json={"action": "dataset.read", "resource": "dataset:sales"}
    )
    assert refused.status_code == 403

    lifted = await submit(guard, dave, locked, f"actions/locks/{found.group(1)}/lift")
    assert lifted.status == 200, lifted.text
    assert "The lock is lifted." in lifted.text
    allowed = await bob.call(
        "POST", "api/v1/decisions", json={"action": "dataset.read", "resource": "dataset:sales"}
    )
    assert allowed.json()["allowed"] is True


async def lock_with(guard: Guard, user: str, option: str) -> tuple[Browser, Page, Client, str]:
    """A new admin locks ``user`` from the locks page with the checkbox ``option`` ticked:
    the admin's browser, the page the form led to, the admin's API client, the lock id."""
    dave, admin = await page_for(guard, "admin")
    page = await open_page(guard, dave, "locks")
    form = {"kind": "user", "value": user, "reason": "phished", "until": "", option: "on"}
    locked = await submit(guard, dave, page, "actions/locks", **form)
    assert locked.status == 200, locked.text
    found = re.search(r'data-lock="([^"]+)">\s*<td>user <code>' + re.escape(user), locked.text)
    assert found, locked.text
    return dave, locked, admin, found.group(1)


async def test_the_lock_page_says_what_became_of_running_servers(guard: Guard) -> None:
    """Locking with "interrupt kernels" names the server that could not take the order
    (JupyterHub's mock server is not nbguard's), once; a forged outcome cookie is ignored.
    (A real server obeying: tests/hub_plugin/e2e/test_interrupt_story.py.)"""
    alice = await server_client(guard)
    dave, locked, admin, lock_id = await lock_with(guard, alice.name, "interrupt_kernels")
    try:
        notice = re.search(r'id="nbguard-notice"[^>]*>([^<]*)<', locked.text)
        assert notice, locked.text
        assert notice.group(1).startswith("The lock is in force. Could not interrupt ")
        assert f"{alice.name}: the server answered HTTP 4" in notice.group(1)
        assert "Stop the server to be sure." in notice.group(1)
        assert guard.hub.users[alice.name].spawner.active
        # Shown once: the same page again says only that the lock is in force.
        again = await dave.get(locked.url)
        assert "The lock is in force." in again.text
        assert "Could not interrupt" not in again.text
        # Words are never taken from a cookie the service did not sign.
        cookie_path = urlparse(guard.url("")).path
        dave.session.cookies.set("nbguard-outcome", "Interrupted 99 kernels.", path=cookie_path)
        forged = await dave.get(locked.url)
        assert forged.status == 200, forged.text
        assert "99 kernels" not in forged.text
        assert "The lock is in force." in forged.text
    finally:
        await admin.call("DELETE", f"api/v1/locks/{lock_id}")


async def test_stopping_servers_from_the_lock_page_names_them(guard: Guard) -> None:
    """ "Stop servers" on the lock form stops the user's server, and the page says which."""
    alice = await server_client(guard)
    _dave, locked, admin, lock_id = await lock_with(guard, alice.name, "stop_servers")
    try:
        assert f"The lock is in force. Stopped 1 server: {alice.name}/." in locked.text
        assert not guard.hub.users[alice.name].spawner.active
    finally:
        await admin.call("DELETE", f"api/v1/locks/{lock_id}")


async def test_a_bad_lock_form_gets_a_clear_error_page(guard: Guard) -> None:
    """A lock end without a zone is refused with words, and nothing is locked."""
    dave, admin_api = await page_for(guard, "admin")
    page = await open_page(guard, dave, "locks")
    refused = await submit(
        guard, dave, page, "actions/locks", kind="user", value="someone", reason="x",
        until="2030-01-01T10:00",
    )  # fmt: skip
    assert refused.status == 400
    assert "RFC 3339" in refused.text
    listed = (await admin_api.call("GET", "api/v1/locks")).json()["locks"]
    assert "someone" not in [lock["value"] for lock in listed]


async def test_a_foreign_next_url_is_not_followed(guard: Guard) -> None:
    """After a form, the redirect stays on the service whatever ``next`` says."""
    _b, alice = await page_for(guard)
    request = await ask(alice)
    carol, _ = await page_for(guard, "reviewer")
    page = await open_page(guard, carol, "requests")
    response = await carol.post(
        guard.url(f"actions/requests/{request['id']}/decision"),
        {"verdict": "deny", "comment": "no", "next": "https://evil.example/steal"},
        xsrf=page.xsrf,
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"].startswith(guard.service.service_prefix + "requests?")


async def test_an_admin_terminates_a_privileged_session(guard: Guard) -> None:
    """The sessions page lists a server with an active grant first; terminate stops it,
    revokes the grant and records an alert."""
    holder = await server_client(guard)
    request = await ask(holder)
    approver = await user_client(guard, "reviewer")
    decided = await approver.call(
        "POST", f"api/v1/requests/{request['id']}/decision", json={"verdict": "approve"}
    )
    assert decided.status_code == 200, decided.text
    grant_id = decided.json()["grant_id"]

    dave, dave_api = await page_for(guard, "admin")
    listed = (await dave_api.call("GET", "api/v1/sessions?privileged=1")).json()["sessions"]
    mine = [s for s in listed if s["user"] == holder.name]
    assert len(mine) == 1
    assert mine[0]["privileged"]
    assert mine[0]["grants"][0]["id"] == grant_id
    page = await open_page(guard, dave, "sessions")
    assert f'data-session="{holder.name}/"' in page.text

    done = await submit(
        guard, dave, page, f"actions/sessions/{holder.name}/terminate",
        server="", reason="suspicious export", revoke_grants="on",
    )  # fmt: skip
    assert done.status == 200, done.text
    assert "The session is stopping." in done.text
    grants = (await holder.call("GET", "api/v1/grants")).json()["grants"]
    assert grant_id not in [g["id"] for g in grants]
    user = guard.hub.users[holder.name]
    assert not user.spawner.active
    alerts = [
        b for b in ledger_bodies(guard.service.ledger, "alert") if b.get("subject") == holder.name
    ]
    assert alerts[-1]["alert"] == "session-terminated"
    assert alerts[-1]["details"]["by"] == dave.name  # type: ignore[attr-defined]
    assert alerts[-1]["details"]["revoked_grants"] == 1
    again = await dave_api.call(
        "POST", f"api/v1/sessions/{holder.name}/terminate", json={"reason": "again"}
    )
    assert again.status_code == 404


async def test_terminate_api_refuses_bad_bodies_and_non_admins(guard: Guard) -> None:
    """Missing reason, wrong types and non-admin callers get a 4xx JSON error."""
    admin = await user_client(guard, "admin")
    nobody = await user_client(guard)
    for body in ({}, {"reason": 3}, {"reason": "x", "revoke_grants": "yes"}, {"reason": ""}):
        response = await admin.call("POST", f"api/v1/sessions/{nobody.name}/terminate", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == "bad_request"
    refused = await nobody.call(
        "POST", f"api/v1/sessions/{admin.name}/terminate", json={"reason": "x"}
    )
    assert refused.status_code == 403
    assert (await nobody.call("GET", "api/v1/sessions")).status_code == 403


async def test_a_holder_sees_and_revokes_their_grant_on_the_grants_page(guard: Guard) -> None:
    """The grants page lists the caller's active grant; its form revokes it at once."""
    browser, holder = await page_for(guard)
    request = await ask(holder)
    approver = await user_client(guard, "reviewer")
    decided = await approver.call(
        "POST", f"api/v1/requests/{request['id']}/decision", json={"verdict": "approve"}
    )
    grant_id = decided.json()["grant_id"]
    page = await open_page(guard, browser, "grants")
    assert f'data-grant="{grant_id}"' in page.text
    done = await submit(
        guard, browser, page, f"actions/grants/{grant_id}/revoke", reason="finished early"
    )
    assert done.status == 200, done.text
    assert "The grant is revoked." in done.text
    assert f'data-grant="{grant_id}"' not in done.text
    grants = (await holder.call("GET", "api/v1/grants?active=0")).json()["grants"]
    assert [g["revoke_reason"] for g in grants if g["id"] == grant_id] == ["finished early"]


async def test_a_user_asks_for_a_grant_on_the_page_and_an_approver_sees_it(guard: Guard) -> None:
    """The ask form (filled from the query a denial links with) creates a pending request."""
    alice, client = await page_for(guard)
    page = await open_page(guard, alice, "requests?action=dataset.read&resource=dataset:features")
    assert page.status == 200, page.text
    assert 'value="dataset:features"' in page.text
    done = await submit(
        guard, alice, page, "actions/requests",
        action="dataset.read", resource="dataset:features", role="",
        duration_minutes="60", reason="churn features <script>x</script>",
    )  # fmt: skip
    assert done.status == 200, done.text
    assert "Your request is waiting for approval." in done.text
    assert "churn features &lt;script&gt;" not in done.text  # the reason is not echoed here
    mine = (await client.call("GET", "api/v1/requests")).json()["requests"]
    assert [(r["action"], r["target"], r["duration_seconds"], r["status"]) for r in mine] == [
        ("dataset.read", "dataset:features", 3600, "pending")
    ]
    carol, _ = await page_for(guard, "reviewer")
    waiting = await open_page(guard, carol, "requests")
    assert f'data-request="{mine[0]["id"]}"' in waiting.text
    assert "churn features &lt;script&gt;x&lt;/script&gt;" in waiting.text


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        pytest.param({"duration_minutes": "soon"}, 400, "in minutes", id="minutes-not-a-number"),
        pytest.param({"duration_minutes": "-5"}, 400, "in minutes", id="negative-minutes"),
        pytest.param({"resource": "dataset:../etc"}, 400, "", id="bad-resource"),
        pytest.param({"reason": ""}, 400, "reason", id="no-reason"),
        pytest.param({"duration_minutes": "100000"}, 400, "", id="longer-than-the-rule"),
        pytest.param({"role": "admin"}, 403, "", id="admin-role-is-never-asked"),
    ],
)
async def test_a_bad_ask_form_gets_an_error_page_and_nothing_is_stored(
    guard: Guard, form: dict[str, str], status: int, words: str
) -> None:
    """Each bad ask is refused with a page saying why; no request is created."""
    alice, client = await page_for(guard)
    page = await open_page(guard, alice, "requests")
    fields = {
        "action": "dataset.read",
        "resource": "dataset:features",
        "role": "",
        "duration_minutes": "60",
        "reason": "work",
        **form,
    }
    refused = await submit(guard, alice, page, "actions/requests", **fields)
    assert refused.status == status, refused.text
    assert refused.headers["Content-Type"].startswith("text/html")
    assert words in refused.text
    assert (await client.call("GET", "api/v1/requests")).json()["requests"] == []
