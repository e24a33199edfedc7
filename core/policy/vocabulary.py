"""The closed sets of string values the nbguard schema uses (Cedar has no string enums)."""

from __future__ import annotations

SENSITIVITIES = ("public", "internal", "confidential", "restricted")
ENVIRONMENTS = ("dev", "train", "test", "prod")
RISK_LEVELS = ("low", "medium", "high")
MFA_METHODS = ("none", "totp", "recovery-code", "webauthn", "idp")
#: The context's environment outside any server (a request made at the hub).
NO_ENVIRONMENT = "none"
#: ``mfa_age_seconds`` when the user never completed a second factor: larger than
#: any age a policy could accept, so "never" fails every freshness check.
MFA_NEVER = 2**31 - 1
