"""Device assertions: only a fresh, correctly signed assertion for this user marks a device trusted."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from nbguard.devices import DeviceAssertionVerifier
from nbguard.errors import ConfigError, DeviceAssertionError

MDM_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_KEY = ed25519.Ed25519PrivateKey.generate()


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


VERIFIER = DeviceAssertionVerifier({"mdm-1": public_pem(MDM_KEY)}, issuers=("acme-mdm",))


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "aud": "nbguard",
        "iss": "acme-mdm",
        "iat": now,
        "exp": now + 600,
        "device_id": "laptop-7",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any], key: Any = MDM_KEY, kid: str | None = "mdm-1", alg: str = "EdDSA"
) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with any header, built by hand as an attacker would."""
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part(header)}.{part(payload)}."


def test_valid_assertion_is_accepted() -> None:
    """A fresh assertion for alice, signed by the MDM key, verifies with its device id."""
    assertion = VERIFIER.verify(sign(claims()), "alice")
    assert (assertion.device_id, assertion.key_id, assertion.issuer) == (
        "laptop-7",
        "mdm-1",
        "acme-mdm",
    )
    assert assertion.expires > datetime.now(UTC)


def hs256_with_public_key() -> str:
    """The algorithm-confusion attack: HMAC keyed with the verifier's public key bytes."""
    import hashlib
    import hmac

    header = {"alg": "HS256", "kid": "mdm-1", "typ": "JWT"}
    head = unsigned(claims(), header).rsplit(".", 1)[0]
    mac = hmac.new(public_pem(MDM_KEY).encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("token", "user", "reason"),
    [
        pytest.param(lambda: sign(claims(), key=OTHER_KEY), "alice", "signature", id="wrong-key"),
        pytest.param(
            lambda: sign(claims(iat=int(time.time()) - 700, exp=int(time.time()) - 100)),
            "alice",
            "expired",
            id="expired",
        ),
        pytest.param(lambda: sign(claims()), "bob", "wrong_user", id="another-user"),
        pytest.param(
            lambda: unsigned(claims(), {"alg": "none", "kid": "mdm-1"}),
            "alice",
            "algorithm",
            id="alg-none",
        ),
        pytest.param(
            lambda: unsigned(claims(), {"alg": "None", "kid": "mdm-1"}),
            "alice",
            "algorithm",
            id="alg-None-case",
        ),
        pytest.param(hs256_with_public_key, "alice", "algorithm", id="hs256-with-public-key"),
        pytest.param(lambda: sign(claims(), kid="mdm-9"), "alice", "unknown_key", id="unknown-kid"),
        pytest.param(
            lambda: sign(claims(aud="someone-else")), "alice", "audience", id="wrong-audience"
        ),
        pytest.param(
            lambda: sign(claims(iss="evil-mdm")), "alice", "issuer", id="untrusted-issuer"
        ),
        pytest.param(
            lambda: sign(claims(device_id=None)), "alice", "missing_claim", id="no-device-id"
        ),
        pytest.param(lambda: sign(claims(exp=None)), "alice", "missing_claim", id="no-expiry"),
        pytest.param(
            lambda: sign(claims(iat=int(time.time()) + 3600, exp=int(time.time()) + 4000)),
            "alice",
            "not_yet_valid",
            id="issued-in-future",
        ),
        pytest.param(
            lambda: sign(claims(nbf=int(time.time()) + 3600)),
            "alice",
            "not_yet_valid",
            id="not-before-future",
        ),
        pytest.param(
            lambda: sign(claims(exp=int(time.time()) + 30 * 86400)),
            "alice",
            "lifetime",
            id="month-long",
        ),
        pytest.param(
            lambda: sign(claims(device_id="")), "alice", "malformed", id="empty-device-id"
        ),
        pytest.param(
            lambda: sign(claims(exp="tomorrow")), "alice", "malformed", id="string-expiry"
        ),
        pytest.param(lambda: "a.b.c", "alice", "malformed", id="garbage"),
        pytest.param(lambda: "x" * 9000, "alice", "malformed", id="oversized"),
        pytest.param(
            lambda: sign(claims())[:-4] + "AAAA", "alice", "signature", id="tampered-signature"
        ),
    ],
)
def test_forged_or_stale_assertions_are_refused(token: Any, user: str, reason: str) -> None:
    """Each way to fake a trusted device fails with its own reason code."""
    with pytest.raises(DeviceAssertionError) as raised:
        VERIFIER.verify(token(), user)
    assert raised.value.reason == reason


def test_algorithm_not_matching_the_key_is_refused_cleanly() -> None:
    """An ES256 token naming an Ed25519 key id is refused as algorithm, not a crash."""
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(DeviceAssertionError) as raised:
        VERIFIER.verify(sign(claims(), key=key, alg="ES256"), "alice")
    assert raised.value.reason == "algorithm"


def test_weak_key_types_are_refused_at_start() -> None:
    """Only Ed25519, P-256 and RSA of 2048 bits or more can be configured."""
    weak = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigError, match="Ed25519, P-256 or RSA"):
        DeviceAssertionVerifier({"k": public_pem(weak)})


def test_payload_swap_breaks_the_signature() -> None:
    """Putting bob's name in alice's signed assertion invalidates it."""
    head, _, signature = sign(claims()).split(".")
    forged_payload = unsigned(claims(sub="bob"), {}).split(".")[1]
    with pytest.raises(DeviceAssertionError) as raised:
        VERIFIER.verify(f"{head}.{forged_payload}.{signature}", "bob")
    assert raised.value.reason == "signature"


def test_es256_keys_and_key_files(tmp_path: Path) -> None:
    """ES256 keys work, loaded from a PEM file path."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "mdm.pem"
    path.write_text(public_pem(key))
    verifier = DeviceAssertionVerifier({"ec": str(path)})
    assert (
        verifier.verify(sign(claims(), key=key, kid="ec", alg="ES256"), "alice").device_id
        == "laptop-7"
    )


def test_token_without_kid_needs_a_single_key() -> None:
    """Without a kid, the only configured key is used; with several keys it is refused."""
    single = DeviceAssertionVerifier({"only": public_pem(MDM_KEY)})
    assert single.verify(sign(claims(), kid=None), "alice").key_id == "only"
    double = DeviceAssertionVerifier({"a": public_pem(MDM_KEY), "b": public_pem(OTHER_KEY)})
    with pytest.raises(DeviceAssertionError) as raised:
        double.verify(sign(claims(), kid=None), "alice")
    assert raised.value.reason == "unknown_key"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("not a key", id="missing-file"),
        pytest.param("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="bad-pem"),
    ],
)
def test_bad_key_configuration_names_setting(value: str) -> None:
    """An unreadable or invalid key is a ConfigError naming the setting and key id."""
    with pytest.raises(ConfigError, match=r"device_assertion_keys\['k'\]"):
        DeviceAssertionVerifier({"k": value})
