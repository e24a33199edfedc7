"""Entitlements: the guard's key file, signing, and a verifier that refuses every forgery."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nbguard.entitlements import (
    ACTIONS,
    AUDIENCE,
    ORDER_AUDIENCE,
    ORDER_TTL,
    EntitlementError,
    EntitlementSigner,
    load_or_create_key,
    public_pem,
    verify_entitlement,
    verify_order,
)
from nbguard.errors import ConfigError, NBGuardError

PERMISSIONS = {
    "jupyter.terminal": False,
    "jupyter.contents_write": True,
    "jupyter.kernel_execute": True,
}


@pytest.fixture
def signer() -> EntitlementSigner:
    """A signer with a fresh key, as the guard service ``nbguard-guard``, five minutes."""
    return EntitlementSigner(Ed25519PrivateKey.generate(), issuer="nbguard-guard", ttl=300)


def issue(signer: EntitlementSigner, **overrides: Any) -> str:
    """A token for alice's default server, ``alice`` (with ``overrides`` of issue's arguments)."""
    values: dict[str, Any] = {
        "user": "alice", "server": "alice", "session": "s-1", "permissions": PERMISSIONS
    }  # fmt: skip
    values.update(overrides)
    return signer.issue(**values).token


def forged(signer: EntitlementSigner, key: Any, algorithm: str = "EdDSA", **claims: Any) -> str:
    """A token with valid-looking claims (changed by ``claims``) signed by ``key``."""
    now = int(time.time())
    body = {
        "iss": "nbguard-guard", "aud": AUDIENCE, "sub": "alice", "server": "alice", "session": "s-1",
        "iat": now, "nbf": now, "exp": now + 300, "jti": "j", "permissions": PERMISSIONS,
    }  # fmt: skip
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": signer.key_id})


def test_a_token_verifies_with_the_published_key(signer: EntitlementSigner) -> None:
    """The PEM the guard publishes verifies its tokens; the value says who, where, what."""
    token = issue(signer)
    document = signer.key_document()
    entitlement = verify_entitlement(token, document["pem"], server="alice", issuer="nbguard-guard")
    assert (entitlement.user, entitlement.server, entitlement.session) == ("alice", "alice", "s-1")
    assert entitlement.allowed == {"jupyter.contents_write", "jupyter.kernel_execute"}
    assert entitlement.allows("jupyter.kernel_execute")
    assert not entitlement.allows("jupyter.terminal")
    assert entitlement.expires - entitlement.issued == 300
    assert entitlement.key_id == document["kid"] == document["jwk"]["kid"]
    assert document["jwk"]["kty"] == "OKP"
    assert document["jwk"]["crv"] == "Ed25519"
    with pytest.raises(AttributeError):
        entitlement.user = "mallory"  # type: ignore[misc]


def test_the_jwk_is_usable_by_a_standard_library(signer: EntitlementSigner) -> None:
    """PyJWT's own JWK loader reads the published JWK and verifies a token with it."""
    key = jwt.PyJWK.from_json(json.dumps(signer.key_document()["jwk"]))
    claims = jwt.decode(issue(signer), key, algorithms=["EdDSA"], audience=AUDIENCE)
    assert claims["sub"] == "alice"


def reasons() -> list[Any]:
    """Forgeries and the reason each is refused with (built per test: keys are random)."""
    other = Ed25519PrivateKey.generate()
    return [
        pytest.param(lambda s: forged(s, other), "signature", id="other-key"),
        pytest.param(lambda s: issue(s, now=time.time() - 3600), "expired", id="expired"),
        pytest.param(lambda s: forged(s, s._key, iat=int(time.time()) + 600,
                                      nbf=int(time.time()) + 600), "not_yet_valid",
                     id="from-the-future"),
        pytest.param(lambda s: forged(s, s._key, aud="jupyterhub"), "audience",
                     id="wrong-audience"),
        pytest.param(lambda s: forged(s, s._key, iss="someone-else"), "issuer", id="wrong-issuer"),
        pytest.param(lambda s: issue(s, server="alice/gpu"), "server", id="other-server"),
        pytest.param(lambda s: forged(s, s._key, jti=None), "claims", id="no-jti"),
        pytest.param(lambda s: forged(s, s._key, permissions={"jupyter.terminal": "yes"}),
                     "claims", id="bad-permissions"),
        pytest.param(lambda s: forged(s, s._key, sub=""), "claims", id="empty-user"),
        pytest.param(lambda s: forged(s, b"k" * 32, "HS256"), "algorithm", id="hmac"),
        pytest.param(lambda s: forged(s, None, "none"), "algorithm", id="alg-none"),
        pytest.param(lambda s: issue(s)[:-4] + "AAAA", "signature", id="tampered-signature"),
        pytest.param(lambda s: "not.a.token", "malformed", id="garbage"),
        pytest.param(lambda s: "", "malformed", id="empty"),
    ]  # fmt: skip


@pytest.mark.parametrize(("make", "reason"), reasons())
def test_forged_and_stale_tokens_are_refused(
    signer: EntitlementSigner, make: Any, reason: str
) -> None:
    """Each forgery fails with its stable reason, and is an NBGuardError."""
    with pytest.raises(EntitlementError) as caught:
        verify_entitlement(make(signer), signer.public_key, server="alice", issuer="nbguard-guard")
    assert caught.value.reason == reason
    assert isinstance(caught.value, NBGuardError)


def test_a_token_from_another_guard_key_names_the_key_problem(signer: EntitlementSigner) -> None:
    """Verifying with another guard's key says the key is unknown (fetch the key again)."""
    other = EntitlementSigner(Ed25519PrivateKey.generate(), issuer="nbguard-guard", ttl=300)
    with pytest.raises(EntitlementError) as caught:
        verify_entitlement(issue(signer), other.public_key, server="alice")
    assert caught.value.reason == "unknown_key"


def test_the_payload_cannot_be_edited(signer: EntitlementSigner) -> None:
    """Granting oneself a terminal by editing the payload breaks the signature."""
    header, payload, signature = issue(signer).split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["permissions"]["jupyter.terminal"] = True
    edited = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    with pytest.raises(EntitlementError) as caught:
        verify_entitlement(f"{header}.{edited}.{signature}", signer.public_key, server="alice")
    assert caught.value.reason == "signature"


def test_signer_checks_its_inputs() -> None:
    """A lifetime must be whole seconds; permissions must answer exactly the known actions."""
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ConfigError):
        EntitlementSigner(key, issuer="g", ttl=0)
    signer = EntitlementSigner(key, issuer="g", ttl=60)
    with pytest.raises(ValueError, match="exactly"):
        signer.issue(user="a", server="alice", session="", permissions={ACTIONS[0]: True})


def test_the_key_file_is_made_private_once_and_reused(tmp_path: Path) -> None:
    """A missing key file is made 0600; later loads (and racing creators) get the same key."""
    path = tmp_path / "keys" / "entitlement.pem"
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: load_or_create_key(path), range(8)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pems = {public_pem(k.public_key()) for k in [*keys, load_or_create_key(path)]}
    assert len(pems) == 1
    assert [p.name for p in path.parent.iterdir()] == ["entitlement.pem"]


def test_a_readable_key_file_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key others may read still loads, with a warning in the log."""
    path = tmp_path / "key.pem"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        load_or_create_key(path)
    assert "readable by other users" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not a key", id="text"),
        pytest.param(
            generate_private_key(SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            id="p256",
        ),
    ],
)
def test_a_key_file_that_is_not_an_ed25519_key_is_refused(tmp_path: Path, content: bytes) -> None:
    """Anything but an unencrypted Ed25519 private key is a configuration error."""
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        load_or_create_key(path)


def test_a_public_key_that_is_not_ed25519_is_refused(signer: EntitlementSigner) -> None:
    """The verifier accepts only the guard's kind of key."""
    pem = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError):
        verify_entitlement(issue(signer), pem, server="alice")


def order(signer: EntitlementSigner, **overrides: Any) -> str:
    """An interrupt order for alice's default server (``overrides`` of order's arguments)."""
    values: dict[str, Any] = {"user": "alice", "server": "alice", "order": "interrupt",
                              "reason": "lock 7"}  # fmt: skip
    values.update(overrides)
    return signer.order(**values)


def forged_order(
    signer: EntitlementSigner, key: Any, algorithm: str = "EdDSA", **claims: Any
) -> str:
    """An order with valid-looking claims (changed by ``claims``) signed by ``key``."""
    now = int(time.time())
    body = {
        "iss": "nbguard-guard", "aud": ORDER_AUDIENCE, "sub": "alice", "server": "alice",
        "iat": now, "nbf": now, "exp": now + ORDER_TTL, "jti": "j", "order": "interrupt",
        "reason": "lock 7",
    }  # fmt: skip
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": signer.key_id})


def test_an_order_verifies_for_its_server_and_lives_a_minute(signer: EntitlementSigner) -> None:
    """An interrupt order verifies with the published key and says what, why, until when."""
    made = verify_order(order(signer), signer.key_document()["pem"], server="alice")
    assert (made.user, made.server, made.order, made.reason) == ("alice", "alice", "interrupt",
                                                                 "lock 7")  # fmt: skip
    assert 0 < made.expires - time.time() <= ORDER_TTL
    assert made.token_id
    with pytest.raises(ValueError, match="unknown order"):
        order(signer, order="shutdown")


def order_forgeries() -> list[Any]:
    """Orders that must be refused, with their reasons (built per test: keys are random)."""
    other = Ed25519PrivateKey.generate()
    now = int(time.time())
    return [
        pytest.param(lambda s: forged_order(s, other), "signature", id="other-key"),
        pytest.param(lambda s: order(s, now=time.time() - 600), "expired", id="expired"),
        pytest.param(lambda s: order(s, server="alice/gpu"), "server", id="other-server"),
        pytest.param(lambda s: issue(s), "claims", id="an-entitlement"),
        pytest.param(lambda s: forged_order(s, s._key, aud=AUDIENCE), "audience",
                     id="entitlement-audience"),
        pytest.param(lambda s: forged_order(s, s._key, order="run-code"), "claims",
                     id="unknown-order"),
        pytest.param(lambda s: forged_order(s, s._key, exp=now + 86400), "claims",
                     id="long-lived"),
        pytest.param(lambda s: forged_order(s, s._key, reason=None), "claims", id="no-reason"),
        pytest.param(lambda s: forged_order(s, None, "none"), "algorithm", id="alg-none"),
        pytest.param(lambda s: forged_order(s, b"k" * 32, "HS256"), "algorithm", id="hmac"),
    ]  # fmt: skip


@pytest.mark.parametrize(("make", "reason"), order_forgeries())
def test_forged_orders_are_refused(signer: EntitlementSigner, make: Any, reason: str) -> None:
    """A server acts on no order the guard did not sign for it, now; nor on an entitlement."""
    with pytest.raises(EntitlementError) as caught:
        verify_order(make(signer), signer.public_key, server="alice")
    assert caught.value.reason == reason


def test_an_order_is_not_an_entitlement(signer: EntitlementSigner) -> None:
    """An order where an entitlement is expected is refused: for its missing claims, and even
    with every entitlement claim, for its audience."""
    with pytest.raises(EntitlementError) as caught:
        verify_entitlement(order(signer), signer.public_key, server="alice")
    assert caught.value.reason == "claims"
    with pytest.raises(EntitlementError) as caught:
        verify_entitlement(forged(signer, signer._key, aud=ORDER_AUDIENCE), signer.public_key,
                           server="alice")  # fmt: skip
    assert caught.value.reason == "audience"
