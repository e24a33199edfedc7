"""A demo-hub configuration without nbguard's wrapper: it tests the launcher alone.

Same state directory and loopback layout as the packaged demo config, with
JupyterHub's plain DummyAuthenticator and SimpleLocalProcessSpawner, and a
service token (from NBGUARD_TEST_SERVICE_TOKEN) that may start users' servers.
"""

import os

from nbguard.cli.demo import USERS, DemoState

c = get_config()  # noqa: F821 (traitlets defines get_config for config files)
state = DemoState.from_environ()

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.hub_ip = "127.0.0.1"
c.ConfigurableHTTPProxy.pid_file = str(state.proxy_pid_file)
c.JupyterHub.db_url = state.sqlite_url(state.hub_db)
c.JupyterHub.cookie_secret_file = str(state.cookie_secret_file)

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set(USERS)
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(state.homes / "{username}")
c.Spawner.default_url = "/lab"
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]

c.JupyterHub.services = [
    {"name": "launcher-test", "api_token": os.environ["NBGUARD_TEST_SERVICE_TOKEN"]}
]
c.JupyterHub.load_roles = [
    {
        "name": "launcher-test",
        "scopes": ["admin:users", "admin:servers"],
        "services": ["launcher-test"],
    }
]
