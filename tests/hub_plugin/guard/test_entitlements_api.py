"""The entitlements API: a server learns, signed, what its user may do in it; nothing else
can get or fake that answer."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nbguard.elevation.rules import ApprovalRule
from nbguard.entitlements import AUDIENCE, EntitlementError, verify_entitlement

from .conftest import Client, Guard, server_client, user_client
from .witnesses import ledger_bodies

pytestmark = pytest.mark.asyncio(loop_scope="module")

BREAK_GLASS = ApprovalRule(approvals=1, max_duration_seconds=3600, break_glass=True)


async def entitlement(client: Client) -> dict[str, Any]:
    """The client's entitlement answer (it must be a 200)."""
    response = await client.call("GET", "api/v1/entitlements")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def published_key(client: Client) -> str:
    """The PEM the service publishes at /api/v1/entitlements/key."""
    response = await client.call("GET", "api/v1/entitlements/key")
    assert response.status_code == 200, response.text
    return str(response.json()["pem"])


async def test_the_token_verifies_with_the_published_key(guard: Guard) -> None:
    """The server's token verifies with the key any hub token can fetch; it names the user,
    the server, the login session and the permissions; each decision is recorded."""
    alice = await server_client(guard)
    answer = await entitlement(alice)
    key = await published_key(await user_client(guard))
    granted = verify_entitlement(
        answer["token"], key, server=alice.name, issuer=guard.service.service_name
    )
    assert (granted.user, granted.server) == (alice.name, alice.name)
    assert granted.session
    assert granted.expires - granted.issued == answer["expires_in"] == 300
    assert answer["permissions"] == {
        "jupyter.terminal": False,
        "jupyter.contents_write": True,
        "jupyter.kernel_execute": True,
    }
    assert granted.allowed == {a for a, ok in answer["permissions"].items() if ok}
    decided = [
        (b["action"], b["allowed"])
        for b in ledger_bodies(guard, "access", alice.name)
        if b["action"].startswith("jupyter.")
    ]
    assert sorted(decided) == [
        ("jupyter.contents_write", True),
        ("jupyter.kernel_execute", True),
        ("jupyter.terminal", False),
    ]


@pytest.mark.parametrize(
    ("role", "terminal", "write", "execute"),
    [
        pytest.param("reviewer", False, False, True, id="reviewer-read-only"),
        pytest.param("ml-engineer", True, True, True, id="ml-engineer-terminal"),
    ],
)
async def test_permissions_follow_the_policy_per_role(
    guard: Guard, role: str, terminal: bool, write: bool, execute: bool
) -> None:
    """Reviewers get read-only servers; terminals need a role that administers its own
    environment (jupyter.cedar)."""
    client = await server_client(guard, role)
    assert (await entitlement(client))["permissions"] == {
        "jupyter.terminal": terminal,
        "jupyter.contents_write": write,
        "jupyter.kernel_execute": execute,
    }


async def test_an_elevated_role_counts_at_the_next_refresh(guard: Guard) -> None:
    """A reviewer holding an elevated data-scientist grant may write; after revocation not."""
    reviewer = await server_client(guard, "reviewer")
    assert (await entitlement(reviewer))["permissions"]["jupyter.contents_write"] is False
    grant = guard.service.elevations.break_glass(
        user=reviewer.name, role="data-scientist", duration_seconds=600, reason="fix a notebook",
        environment="train", sensitivity="internal", rule=BREAK_GLASS,
    )  # fmt: skip
    assert (await entitlement(reviewer))["permissions"]["jupyter.contents_write"] is True
    guard.service.elevations.revoke(grant.id, by="admin", reason="done")
    assert (await entitlement(reviewer))["permissions"]["jupyter.contents_write"] is False


async def test_only_a_servers_own_token_gets_entitlements(guard: Guard) -> None:
    """A user's own token gets 403 (a script cannot collect a server's entitlement);
    without a token, 401; any user token may read the public key."""
    client = await user_client(guard)
    response = await client.call("GET", "api/v1/entitlements")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    anonymous = Client(guard, "not-a-token", "nobody")
    assert (await anonymous.call("GET", "api/v1/entitlements")).status_code == 401
    assert (await anonymous.call("GET", "api/v1/entitlements/key")).status_code == 401
    document = (await client.call("GET", "api/v1/entitlements/key")).json()
    assert (document["jwk"]["kty"], document["jwk"]["crv"]) == ("OKP", "Ed25519")
    assert "PRIVATE" not in document["pem"]


async def test_a_locked_user_gets_no_entitlement(guard: Guard) -> None:
    """A locked user's server is refused (403), so its extension stays read-only."""
    bob = await server_client(guard)
    lock = guard.service.elevations.lock(kind="user", value=bob.name, reason="x", by="admin")
    try:
        response = await bob.call("GET", "api/v1/entitlements")
        assert response.status_code == 403
        assert response.json()["error"]["decision"]["locked"] is True
    finally:
        guard.service.elevations.unlock(lock.id, by="admin")


async def test_tokens_the_verifier_refuses(guard: Guard) -> None:
    """Against the published key: expired, forged, wrong-audience and other-server tokens are
    refused by the core verifier with their reasons."""
    alice = await server_client(guard)
    key = await published_key(alice)
    signer = guard.service.entitlements
    good = (await entitlement(alice))["token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    expired = signer.issue(
        user=alice.name, server=alice.name, session="", permissions=claims["permissions"],
        now=time.time() - 3600,
    ).token  # fmt: skip
    forged = jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": signer.key_id}
    )
    elsewhere = jwt.encode(
        {**claims, "aud": "jupyterhub"}, signer._key, algorithm="EdDSA",
        headers={"kid": signer.key_id},
    )  # fmt: skip
    for token, reason, server in (
        (expired, "expired", alice.name),
        (forged, "signature", alice.name),
        (elsewhere, "audience", alice.name),
        (good, "server", f"{alice.name}/gpu"),
        (good, "server", "mallory"),
    ):
        with pytest.raises(EntitlementError) as caught:
            verify_entitlement(token, key, server=server, audience=AUDIENCE)
        assert caught.value.reason == reason
