"""Whether the identity provider already did MFA (OIDC ``amr`` / ``acr`` claims).

OAuthenticator keeps the token response and the userinfo in the auth state.
The ID token there came to the hub directly from the IdP's token endpoint over
TLS (the back channel), so its claims are read without re-checking the
signature, as OpenID Connect Core 3.1.3.7 allows for the code flow. Nothing the
browser sends is read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jwt


def _claim_sets(auth_state: Mapping[str, Any], userinfo_key: str) -> Iterator[Mapping[str, Any]]:
    tokens = [auth_state.get("id_token")]
    response = auth_state.get("token_response")
    if isinstance(response, Mapping):
        tokens.append(response.get("id_token"))
    for token in tokens:
        if isinstance(token, str) and token:
            try:
                claims = jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError:
                continue
            if isinstance(claims, Mapping):
                yield claims
    userinfo = auth_state.get(userinfo_key)
    if isinstance(userinfo, Mapping):
        yield userinfo


def idp_did_mfa(
    auth_state: Mapping[str, Any] | None,
    *,
    amr_values: Iterable[str],
    acr_values: Iterable[str],
    userinfo_key: str = "oauth_user",
) -> bool:
    """True when the ID token or the userinfo shows an accepted ``amr`` value or ``acr`` level.

    ``userinfo_key`` is where the authenticator keeps the userinfo in the auth
    state (OAuthenticator's ``user_auth_state_key``).
    """
    if not isinstance(auth_state, Mapping):
        return False
    amr_ok, acr_ok = set(amr_values), set(acr_values)
    for claims in _claim_sets(auth_state, userinfo_key):
        amr = claims.get("amr")
        if isinstance(amr, list) and amr_ok.intersection(v for v in amr if isinstance(v, str)):
            return True
        acr = claims.get("acr")
        if isinstance(acr, str) and acr in acr_ok:
            return True
    return False
