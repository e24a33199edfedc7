"""JupyterHub configuration of the nbguard demo hub, run by ``nbguard demo``.

Every secret and database comes from the state directory that ``nbguard demo``
prepares and names in ``NBGUARD_DEMO_STATE_DIR`` (see ``nbguard.cli.demo``).
The hub, its proxy and the users' servers listen on loopback only; ``nbguard
demo --ip/--port`` overrides the public address on the command line. Copy this
file to experiment, and run it with ``nbguard demo --config FILE``.

Not for production: every demo user shares one password, and the users' servers
run as the hub's own OS user (SimpleLocalProcessSpawner).
"""

import os
from pathlib import Path

from nbguard.cli.demo import ADMIN_USERS, GUARD_PORT_ENV, STATE_DIR_ENV, USERS, DemoState
from nbguard.hub_plugin import guarded_authenticator, guarded_spawner
from nbguard.hub_plugin.guard.hub_config import guard_service
from nbguard.policy import DEFAULT_POLICY_DIR

c = get_config()  # noqa: F821 (traitlets defines get_config for config files)
state = DemoState.from_environ()

# -- where things listen -----------------------------------------------------------
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
c.JupyterHub.hub_ip = "127.0.0.1"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
# The proxy is `configurable-http-proxy` from PyPI (nbguard[demo]): it takes the
# flags JupyterHub passes (--ip, --port, --api-ip, --api-port, --error-target,
# --log-level) like the npm one, so only its pid file needs placing.
c.ConfigurableHTTPProxy.pid_file = str(state.proxy_pid_file)

# -- JupyterHub's own state and secrets ---------------------------------------------
c.JupyterHub.db_url = state.sqlite_url(state.hub_db)
c.JupyterHub.cookie_secret_file = str(state.cookie_secret_file)
# Auth state holds the MFA time and method; it is encrypted with this key.
c.Authenticator.enable_auth_state = True
c.CryptKeeper.keys = [state.crypt_key]

# -- login: the dummy authenticator wrapped with nbguard's second factor ------------
c.JupyterHub.authenticator_class = guarded_authenticator("dummy")
c.DummyAuthenticator.password = state.password
c.Authenticator.allowed_users = set(USERS)
c.Authenticator.admin_users = set(ADMIN_USERS)
c.NBGuard.mfa_db_url = state.sqlite_url(state.mfa_db)
c.NBGuard.secret_keys = state.secret_keys
# The proxy on loopback forwards the browser's address; on the demo, loopback is
# the "corporate" network the example policies ask for.
c.NBGuard.trusted_proxies = ["127.0.0.1/32", "::1/128"]
c.NBGuard.network_zones = {"corporate": ["127.0.0.0/8", "::1/128"]}

# -- policies: the shipped examples, whose users are the demo users ------------------
c.PolicyEngine.policy_dir = str(DEFAULT_POLICY_DIR)

# -- ledger: every login, decision and spawn, signed every few seconds --------------
c.Ledger.url = state.sqlite_url(state.ledger_db)
c.Ledger.signing_key_file = str(state.ledger_key_file)
c.Ledger.witnesses = [str(state.ledger_witness_file)]
c.Ledger.checkpoint_interval = 5.0

# -- spawn: local processes checked against the example policies --------------------
c.JupyterHub.spawner_class = guarded_spawner("simple")
c.SimpleLocalProcessSpawner.home_dir_template = str(state.homes / "{username}")
c.Spawner.default_url = "/lab"
# A local spawner has no profile form: every spawn is decided for the "train"
# profile of the example policies (alice's and bob's servers work on train data).
c.PolicySpawnerMixin.default_profile = "train"
if os.geteuid() == 0:
    # Containers often run everything as root; jupyter_server refuses that unless told.
    c.Spawner.args = ["--allow-root"]

# -- the guard service: decisions, the dataset broker, elevation --------------------
# Started by the hub with this same file, so it shares the policy and ledger settings.
guard_port = os.environ.get(GUARD_PORT_ENV, "10101")
guard_service(
    c,
    config_file=__file__,
    url=f"http://127.0.0.1:{guard_port}",
    db_url=state.sqlite_url(state.guard_db),
    environment={STATE_DIR_ENV: str(state.root), GUARD_PORT_ENV: guard_port},
)
c.GuardService.storage_root = str(state.datasets)
c.GuardService.catalog_file = str(Path(__file__).with_name("catalog.yaml"))
