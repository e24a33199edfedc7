"""nbguard's hub zone: authenticator wrapper, spawner mixin and the guard service.

This package runs inside the trusted hub zone (see docs/architecture.md). It is
importable only with the ``nbguard[hub]`` extra installed.
"""
