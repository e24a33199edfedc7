"""Second factors: TOTP (RFC 6238), one-time recovery codes, and lockout after failures.

These modules hold the rules and the cryptography; storing enrolments and
counters is the authenticator's job. They import no web framework.
"""
