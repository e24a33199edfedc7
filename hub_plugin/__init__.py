"""nbguard's hub zone: authenticator wrapper, spawner mixin and the guard service.

This package runs inside the trusted hub zone (see docs/architecture.md). It is
importable only with the ``nbguard[hub]`` extra installed. In
``jupyterhub_config.py``::

    from nbguard.hub_plugin import guarded_authenticator, guarded_spawner
    c.JupyterHub.authenticator_class = guarded_authenticator("generic-oauth")
    c.JupyterHub.spawner_class = guarded_spawner("kubespawner")
"""

from __future__ import annotations

from typing import Any

__all__ = ["guarded_authenticator", "guarded_spawner"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing a small part (the MFA rules, say) does not import
    # JupyterHub, and the spawn path imports only what it uses.
    if name == "guarded_authenticator":
        from nbguard.hub_plugin.authenticator import guarded_authenticator

        return guarded_authenticator
    if name == "guarded_spawner":
        from nbguard.hub_plugin.spawner import guarded_spawner

        return guarded_spawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
