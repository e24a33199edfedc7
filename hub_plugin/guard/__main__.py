"""``python -m nbguard.hub_plugin.guard``: run the guard service (JupyterHub starts it)."""

from nbguard.hub_plugin.guard.app import main

if __name__ == "__main__":
    main()
