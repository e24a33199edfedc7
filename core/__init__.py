"""nbguard: privileged-access management and zero-trust access control for JupyterHub.

This top-level package is the framework-free core (policy engine, ledger, CLI). It
never imports jupyterhub, jupyter_server, IPython, ipykernel or tornado; the
integrations live in ``nbguard.hub_plugin``, ``nbguard.server_extension`` and
``nbguard.kernel_hooks``. Submodules are imported on demand to keep start-up cheap.
"""

from nbguard.errors import NBGuardError

__version__ = "0.1.0.dev0"

__all__ = ["NBGuardError", "__version__"]
