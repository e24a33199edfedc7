"""The demo hub's JupyterHub configuration (``jupyterhub_config.py``), run by ``nbguard demo``."""
