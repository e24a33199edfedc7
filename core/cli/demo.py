"""``nbguard demo``: a local JupyterHub guarded by nbguard, to try it in a browser.

The first run creates a state directory (mode 0700) and generates every secret
the hub needs into it: JupyterHub's cookie secret and auth-state key, the Fernet
key that seals TOTP secrets, the Ed25519 key that signs ledger checkpoints, and
the demo users' password. The SQLite databases (hub, ledger, MFA) and the users'
home folders live there too. Later runs reuse it; deleting it starts over.
Secrets stay in files: none travels in the environment, so neither the proxy nor
the users' servers inherit one.

The hub is a child process, ``jupyterhub -f`` the packaged demo configuration
(``nbguard/hub_plugin/demo/jupyterhub_config.py``, which finds the state through
:meth:`DemoState.from_environ`), started in its own session so that this command
alone decides how it stops: Ctrl-C or SIGTERM asks the hub to shut down, which
stops its proxy and the users' servers; a second Ctrl-C kills it. This module
imports no Jupyter framework.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import http.client
import importlib.resources
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError
from nbguard.ledger.keys import generate_key_pair

#: Where the hub configuration finds the state directory.
STATE_DIR_ENV = "NBGUARD_DEMO_STATE_DIR"
#: Where the demo's guard service listens (picked free by ``nbguard demo``).
GUARD_PORT_ENV = "NBGUARD_DEMO_GUARD_PORT"
#: The demo users; they match the users of the example policies.
USERS = ("alice", "bob", "carol", "dave")
ADMIN_USERS = ("dave",)
#: The executables the demo runs, all installed by ``nbguard[demo]``.
EXECUTABLES = ("jupyterhub", "jupyterhub-singleuser", "configurable-http-proxy")

EXIT_OK = 0
EXIT_FAILED = 1
#: Seconds the hub gets to stop its servers and proxy before it is killed.
STOP_GRACE_SECONDS = 60.0
_POLL_SECONDS = 0.25
_MARKER_TEXT = "nbguard demo state: secrets and databases of a local demo hub. Delete to reset.\n"


#: The demo catalog's files (``hub_plugin/demo/catalog.yaml``), by dataset/path.
DEMO_DATA = {
    "weather/2025.csv": "day,city,max_c\n2025-01-01,Basel,4\n2025-01-02,Basel,6",
    "sales/2025.csv": "region,quarter,revenue\nnorth,Q1,120000\nsouth,Q1,98000",
    "features/train.csv": "customer,tenure_months,churned\nc1,14,0\nc2,3,1",
    "claims/2025.csv": "claim,region,payout\nk1,north,1200.50\nk2,south,310.00",
    "customers/customers.csv": "customer,name,iban\nc1,Ada Example,CH00 0000 0000 0000 0001",
    "ledger-prod/entries.csv": "entry,account,amount\ne1,4000,-250.00",
}


class DemoState:
    """The files of a demo hub's state directory. Nothing is created before :meth:`prepare`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.marker = self.root / "NBGUARD_DEMO"
        self.cookie_secret_file = self.root / "jupyterhub_cookie_secret"
        self.crypt_key_file = self.root / "jupyterhub_crypt_key"
        self.secret_keys_file = self.root / "nbguard_secret_keys"
        self.password_file = self.root / "password"
        self.ledger_key_file = self.root / "ledger.key"
        self.ledger_public_key_file = self.root / "ledger.key.pub"
        self.ledger_witness_file = self.root / "ledger-witness.jsonl"
        self.hub_db = self.root / "jupyterhub.sqlite"
        self.ledger_db = self.root / "ledger.sqlite"
        self.mfa_db = self.root / "mfa.sqlite"
        self.guard_db = self.root / "guard.sqlite"
        #: The guard service's dataset store (only the hub's OS user can read it).
        self.datasets = self.root / "datasets"
        self.proxy_pid_file = self.root / "jupyterhub-proxy.pid"
        self.homes = self.root / "home"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> DemoState:
        """The state directory named by ``NBGUARD_DEMO_STATE_DIR``, checked to be prepared."""
        root = environ.get(STATE_DIR_ENV)
        if not root:
            raise ConfigError(f"{STATE_DIR_ENV} is not set: start the demo hub with `nbguard demo`")
        state = cls(root)
        state.check()
        return state

    @staticmethod
    def sqlite_url(path: Path) -> str:
        """The SQLAlchemy URL of an SQLite database file."""
        return f"sqlite:///{path}"

    @property
    def secret_files(self) -> tuple[Path, ...]:
        """Every file holding a secret (each mode 0600)."""
        return (
            self.cookie_secret_file,
            self.crypt_key_file,
            self.secret_keys_file,
            self.password_file,
            self.ledger_key_file,
        )

    @property
    def password(self) -> str:
        """The demo users' password."""
        return self.read(self.password_file)

    @property
    def crypt_key(self) -> str:
        """JupyterHub's auth-state key (32 bytes, hex)."""
        return self.read(self.crypt_key_file)

    @property
    def secret_keys(self) -> list[str]:
        """The Fernet keys for ``NBGuard.secret_keys``, one a line, the sealing key first."""
        return self.read(self.secret_keys_file).split()

    def read(self, path: Path) -> str:
        """The text of a state file, without surrounding whitespace."""
        try:
            return path.read_text(encoding="ascii").strip()
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from None

    def prepare(self) -> bool:
        """Create the directory and its secrets if new, else check them; return whether new."""
        if self.marker.exists():
            self.check()
            return False
        self._make_root()
        _write_private(self.cookie_secret_file, secrets.token_hex(32))
        _write_private(self.crypt_key_file, secrets.token_hex(32))
        _write_private(self.secret_keys_file, SecretBox.generate_key())
        _write_private(self.password_file, secrets.token_urlsafe(12))
        generate_key_pair(self.ledger_key_file, self.ledger_public_key_file)
        self.homes.mkdir(mode=0o700)
        self.seed_datasets()
        # Written last: a directory without it was never completely prepared.
        self.marker.write_text(_MARKER_TEXT, encoding="ascii")
        return True

    def seed_datasets(self) -> None:
        """Write the demo catalog's sample files (once; existing files are kept)."""
        self.datasets.mkdir(mode=0o700, exist_ok=True)
        for relative, text in DEMO_DATA.items():
            path = self.datasets / relative
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                _write_private(path, text)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the state for one hub: ConfigError if another ``nbguard demo`` holds it.

        The lock goes with this process (even on SIGKILL), and the hub does not inherit it.
        """
        with self.marker.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{self.root} is in use by another `nbguard demo`; stop it first, "
                    "or choose another --state-dir"
                ) from None
            yield

    def check(self) -> None:
        """Raise ConfigError unless the directory is a complete state others cannot read."""
        _check_private(self.root)
        if not self.marker.exists():
            raise ConfigError(f"{self.root} is not an nbguard demo state directory")
        for path in (*self.secret_files, self.ledger_public_key_file):
            if not path.exists():
                raise ConfigError(
                    f"{path} is missing; restore it, or delete {self.root} to start over"
                )
        for path in self.secret_files:
            _check_private(path)

    def _make_root(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self.root.is_dir() or any(self.root.iterdir()):
                raise ConfigError(
                    f"{self.root} exists and is not an nbguard demo state directory; "
                    "choose another --state-dir"
                ) from None
        except OSError as error:
            raise ConfigError(f"cannot create {self.root}: {error.strerror}") from None
        # mkdir's mode is filtered by the umask; set it exactly.
        self.root.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    # O_EXCL: never follow a planted symlink or clobber a file created meanwhile.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")


def _check_private(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{path} is a symbolic link; the demo state must be real files")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{path} belongs to another user")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is open to other users (mode {info.st_mode & 0o777:o}); "
            f"chmod go-rwx {path}, or delete the state directory to start over"
        )


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo``."""
    demo = subparsers.add_parser(
        "demo",
        help="run a local demo JupyterHub guarded by nbguard",
        description="Run a JupyterHub with nbguard's second factor, policies and ledger on "
        "this machine, with demo users alice, bob, carol and dave (admin). The first run "
        "generates its secrets into the state directory. Ctrl-C stops the hub, its proxy "
        "and the users' servers.",
    )
    demo.add_argument(
        "--state-dir",
        default=".demo",
        metavar="DIR",
        help="where secrets, databases and home folders live (created 0700; default .demo)",
    )
    demo.add_argument(
        "--port", type=_port, default=8000, help="port of the hub's web address (default 8000)"
    )
    demo.add_argument(
        "--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)"
    )
    demo.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow an --ip that is not loopback (other machines can then reach the demo)",
    )
    demo.add_argument(
        "--config",
        metavar="FILE",
        help="a JupyterHub config file to run instead of the packaged demo config",
    )
    demo.set_defaults(handler=_demo)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def check_listen_address(ip: str, allow_remote: bool) -> None:
    """Raise ConfigError for an --ip that is not an address, or not loopback without consent."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ConfigError(f"--ip {ip!r} is not an IP address") from None
    if not address.is_loopback and not allow_remote:
        raise ConfigError(
            f"--ip {ip} is not a loopback address; the demo's users and password are "
            "printed in plain text, so pass --allow-remote to expose it anyway"
        )


def check_port_free(ip: str, port: int) -> None:
    """Raise ConfigError, in one line, if nothing can listen on ``ip``:``port``."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the proxy will: a socket lingering in TIME_WAIT does not block the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {ip} is already in use; stop what is using it "
                    "or choose another with --port"
                ) from None
            raise ConfigError(f"cannot listen on {ip} port {port}: {error.strerror}") from None


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_executables() -> dict[str, str]:
    """The demo's executables by name, preferring those beside this Python (its venv)."""
    here = Path(sys.executable).parent
    found = {}
    for name in EXECUTABLES:
        local = here / name
        path = str(local) if os.access(local, os.X_OK) else shutil.which(name)
        if path is None:
            raise ConfigError(
                f"`{name}` is not installed; install the demo extra: pip install 'nbguard[demo]'"
            )
        found[name] = path
    return found


def packaged_config() -> Path:
    """The demo hub's JupyterHub configuration file shipped in ``nbguard.hub_plugin.demo``."""
    try:
        folder = importlib.resources.files("nbguard.hub_plugin.demo")
    except ImportError as error:
        raise ConfigError(
            f"the demo hub cannot load ({error}); install the demo extra: "
            "pip install 'nbguard[demo]'"
        ) from None
    return Path(str(folder.joinpath("jupyterhub_config.py")))


def _demo(args: argparse.Namespace) -> int:
    check_listen_address(args.ip, args.allow_remote)
    check_port_free(args.ip, args.port)
    executables = find_executables()
    config = Path(args.config).absolute() if args.config else packaged_config()
    if not config.is_file():
        raise ConfigError(f"{config} is not a file")
    state = DemoState(args.state_dir)
    created = state.prepare()
    with state.lock():
        state.seed_datasets()
        print(f"{'created' if created else 'using'} demo state in {state.root}", flush=True)
        return _run_hub(args, executables["jupyterhub"], config, state)


def _run_hub(args: argparse.Namespace, jupyterhub: str, config: Path, state: DemoState) -> int:
    """Run ``jupyterhub -f config`` on the state until it exits; return the exit status."""
    # Internal ports are picked free, so a second demo or a busy 8081 does not clash.
    hub_port = _free_loopback_port()
    command = [
        jupyterhub,
        "-f",
        str(config),
        f"--JupyterHub.ip={args.ip}",
        f"--JupyterHub.port={args.port}",
        f"--JupyterHub.hub_port={hub_port}",
        f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{_free_loopback_port()}",
    ]
    env = dict(os.environ)
    env[STATE_DIR_ENV] = str(state.root)
    env[GUARD_PORT_ENV] = str(_free_loopback_port())
    # The hub finds the proxy, and the spawner jupyterhub-singleuser, on PATH.
    bin_dir = str(Path(jupyterhub).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    health_host = "127.0.0.1" if ipaddress.ip_address(args.ip).is_unspecified else args.ip

    def on_ready() -> None:
        print(banner(state, args.ip, args.port), flush=True)

    # The hub's own port first: it listens only once the proxy runs, and asking the
    # proxy earlier makes it log a 404 for a route the hub has not added yet.
    probes = [("127.0.0.1", hub_port), (health_host, args.port)]
    return HubProcess(command, env=env, cwd=state.root).run(probes, on_ready=on_ready)


def banner(state: DemoState, ip: str, port: int) -> str:
    """What to do once the hub answers: where to go, who to be, how to check the ledger."""
    host = f"[{ip}]" if ":" in ip else ip
    db, key, witness = (
        _shown(path)
        for path in (state.ledger_db, state.ledger_public_key_file, state.ledger_witness_file)
    )
    rule = "=" * 78
    return f"""
{rule}
 nbguard demo hub: http://{host}:{port}/
 Log in as alice, bob, carol or dave (admin), password: {state.password}
 The first login enrols a second factor: scan the QR code with any TOTP app,
 or compute a code from the secret shown under it:
     python -c 'import pyotp; print(pyotp.TOTP("SECRET").now())'
 Keep the recovery codes it shows, then start your server (JupyterLab).
 The guard service (datasets, access requests, approvals) answers at
     http://{host}:{port}/services/nbguard-guard/api/v1/me  (with a hub API token)
 The ledger records every login and decision; prove it intact (checkpoints are
 signed every few seconds, and when the hub stops) with:
     nbguard verify {db} \\
         --key {key} --witness {witness}
 Secrets, databases, home folders: {_shown(state.root)} (delete it to start over).
 Ctrl-C stops the hub, its proxy and the users' servers.
{rule}
"""


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it, for shorter lines."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class HubProcess:
    """The hub as a child process, stopped cleanly on SIGINT, SIGTERM or SIGHUP.

    It runs in its own session, so a Ctrl-C at the terminal reaches only this
    process, which forwards one SIGTERM: JupyterHub then stops the users' servers
    and its proxy (both in sessions of their own) before it exits. A second
    signal, or :data:`STOP_GRACE_SECONDS` without exit, kills it.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, command: list[str], *, env: Mapping[str, str], cwd: Path) -> None:
        self.command = command
        self.env = dict(env)
        self.cwd = cwd
        self.stop_requested_at: float | None = None
        self.killed = False
        self._process: subprocess.Popen[bytes] | None = None

    def run(self, probes: Sequence[tuple[str, int]], *, on_ready: Callable[[], None]) -> int:
        """Start the hub, call ``on_ready()`` once it is up, return when it has exited.

        It is up once ``/hub/health`` has answered at each probe ``(host, port)``, in turn.
        """
        previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        for signum in self.SIGNALS:
            signal.signal(signum, self._on_signal)
        try:
            self._process = subprocess.Popen(  # noqa: S603 (our own argument list, no shell)
                self.command, env=self.env, cwd=self.cwd, start_new_session=True
            )
            return self._supervise(self._process, probes, on_ready)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _supervise(
        self,
        process: subprocess.Popen[bytes],
        probes: Sequence[tuple[str, int]],
        on_ready: Callable[[], None],
    ) -> int:
        waiting = list(probes)
        ready = False
        while True:
            try:
                status = process.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            else:
                return self._exited(status, ready)
            if self.stop_requested_at is not None:
                if time.monotonic() - self.stop_requested_at > STOP_GRACE_SECONDS:
                    self._kill(process)
            elif not ready:
                while waiting and hub_answers(*waiting[0]):
                    waiting.pop(0)
                if not waiting:
                    ready = True
                    on_ready()

    def _exited(self, status: int, ready: bool) -> int:
        if self.stop_requested_at is not None:
            if self.killed:
                print(
                    "nbguard: killed the hub; its proxy and users' servers may still run "
                    "(the next `nbguard demo` with this state directory stops them)",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            print("nbguard: demo hub stopped", file=sys.stderr)
            return EXIT_OK
        when = "" if ready else " before it was ready"
        print(
            f"nbguard: error: jupyterhub exited with status {status}{when}; see its log above",
            file=sys.stderr,
        )
        return EXIT_FAILED

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        process = self._process
        if process is None:  # not started yet: nothing to stop but ourselves
            raise KeyboardInterrupt
        if process.poll() is not None:  # already gone; the supervisor sees it
            return
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            print(
                "\nnbguard: stopping the hub, its proxy and the users' servers "
                "(Ctrl-C again to kill it)",
                file=sys.stderr,
                flush=True,
            )
            process.terminate()
        else:
            self._kill(process)

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        self.killed = True
        process.kill()


def hub_answers(host: str, port: int) -> bool:
    """Whether the hub answers ``/hub/health`` through its proxy."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/hub/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()
