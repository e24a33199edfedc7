"""The guard-service benchmark's environment: a hub, alice's server, the service, its data.

Used by ``benchmarks/service.py`` (see its docstring for what is measured):
a keep-alive client (:class:`Connection`), the hub configuration with the
guard service (managed, or run in this process), the data file, alice's
spawned server and its token, and the in-process reference service whose
engine, decider and resolver are the baselines.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

SERVICE = "nbguard-guard"
USER = "alice"
DATASET = "features"
ACTION = "dataset.read"
RESOURCE = f"dataset:{DATASET}"
JSON = {"Content-Type": "application/json"}
DECISION_BODY = json.dumps({"action": ACTION, "resource": RESOURCE}).encode()
MIB = 1024**2
#: The proxy figure's range: under the PyPI proxy's 100 MiB limit on an answer.


class Connection:
    """One keep-alive HTTP/1.1 connection to a base URL, sending alice's server token."""

    def __init__(self, base: str, token: str) -> None:
        url = urlsplit(base)
        self.prefix = url.path
        self.conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
        self.auth = f"token {token}"

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request (``path`` below the base); the caller reads the answer."""
        headers = {**(headers or {}), "Authorization": self.auth}
        self.conn.request(method, self.prefix + path, body=body, headers=headers)
        return self.conn.getresponse()

    def decide(self) -> bytes:
        """One decision round trip; the body of its 200 answer."""
        response = self.send("POST", "api/v1/decisions", DECISION_BODY, JSON)
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"a decision answered {response.status}: {body[:300]!r}")
        return body

    def download(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, int, float]:
        """GET ``path`` into one reused buffer: status, bytes received, seconds."""
        view = memoryview(bytearray(4 * MIB))
        received = 0
        started = time.perf_counter()
        response = self.send("GET", path, headers=headers)
        while True:
            try:
                got = response.readinto(view)
            except http.client.IncompleteRead as short:
                received += len(short.partial)
                break
            if not got:
                break
            received += got
        return response.status, received, time.perf_counter() - started

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# -- a light load generator, in a process of its own ---------------------------------------


def async_throughput(base: str, token: str, clients: int, total: int) -> float:
    """Decisions per second from ``clients`` asyncio keep-alive connections in a child process.

    The child (this file run as a script) holds no hub and no threads: one event
    loop writes each connection's request and reads its answer, one request at a
    time per connection, exactly as the threaded clients do, at a fraction of
    their CPU. Every answer must be a 200 with a JSON body of its Content-Length.
    """
    order = json.dumps({"base": base, "token": token, "clients": clients, "total": total})
    child = subprocess.run(
        [sys.executable, __file__, "load"],
        input=order,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the load generator failed: {child.stderr[-2000:]}")
    rate: float = json.loads(child.stdout.strip().splitlines()[-1])["rate"]
    return rate


async def _load(base: str, token: str, clients: int, total: int) -> float:
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = (
        f"POST {url.path}api/v1/decisions HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Accept-Encoding: identity\r\n"
        f"Authorization: token {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(DECISION_BODY)}\r\n\r\n"
    ).encode() + DECISION_BODY
    each = total // clients

    async def decide(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status, _, rest = head.partition(b"\r\n")
        length = None
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length or 0)
        if not status.startswith(b"HTTP/1.1 200 ") or length is None or not body.startswith(b"{"):
            raise RuntimeError(f"a decision answered {status!r}: {body[:300]!r}")

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port)
        await decide(reader, writer)  # connected and warm before the clock starts
        return reader, writer

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(each):
            await decide(reader, writer)

    opened = await asyncio.gather(*(connect() for _ in range(clients)), return_exceptions=True)
    try:
        for one in opened:
            if isinstance(one, BaseException):
                raise one
        started = time.perf_counter()
        await asyncio.gather(*(run(*one) for one in opened if not isinstance(one, BaseException)))
        return each * clients / (time.perf_counter() - started)
    finally:
        for one in opened:
            if not isinstance(one, BaseException):
                one[1].close()


@dataclass
class Setup:
    """What the measurements need: where to call, with which token, and the baselines."""

    service_base: str
    proxy_base: str
    token: str
    #: A GuardService from the same configuration, not listening (with
    #: ``--in-process``, the listening service): its engine and decider are the baselines.
    reference: Any
    #: The context the service resolves for ``token``.
    who: Any
    data_file: Path

    def connect(self, *, proxy: bool = False) -> Connection:
        """A connection to the service's own URL, or through the proxy."""
        return Connection(self.proxy_base if proxy else self.service_base, self.token)

    @property
    def object_path(self) -> str:
        """The data file's path in the broker's API."""
        return f"api/v1/datasets/{DATASET}/objects/{self.data_file.name}"


# -- the hub and the service -----------------------------------------------------------


def hub_config(fixtures: ModuleType, tmp: Path, *, in_process: bool, token: str) -> Any:
    """The tests' hub config, the guarded MockSpawner, the guard service and its files."""
    from jupyterhub.tests.mocking import MockSpawner
    from jupyterhub.utils import random_port

    from nbguard.hub_plugin.guard.hub_config import guard_service
    from nbguard.hub_plugin.spawner import guarded_spawner
    from nbguard.policy.engine import DEFAULT_POLICY_DIR

    config = fixtures.hub_config(tmp)
    config.JupyterHub.spawner_class = guarded_spawner(MockSpawner)
    config.JupyterHub.log_level = "WARN"
    config.PolicySpawnerMixin.default_profile = "train"
    config.Ledger.warn_unsigned = False
    config.Ledger.pop("max_delay")  # the tests shorten it; measure the shipped default
    catalog = {"sensitivity": "confidential", "environment": "train", "team": "analytics"}
    (tmp / "catalog.yaml").write_text(yaml.safe_dump({"datasets": {DATASET: catalog}}))
    # The service process's configuration file: the hub's policy and ledger settings
    # (what ``config_file=__file__`` shares in production) and the service's own.
    shared = {
        "PolicyEngine.policy_dir": str(DEFAULT_POLICY_DIR),
        "Ledger.url": config.Ledger.url,
        "Ledger.signing_key_file": config.Ledger.signing_key_file,
        "GuardService.db_url": f"sqlite:///{tmp / 'guard.sqlite'}",
        "GuardService.storage_root": str(tmp / "data"),
        "GuardService.catalog_file": str(tmp / "catalog.yaml"),
        "Application.log_level": "WARN",
    }
    lines = [f"c.{name} = {value!r}\n" for name, value in shared.items()]
    (tmp / "guard_config.py").write_text("c = get_config()  # noqa: F821\n" + "".join(lines))
    entry = guard_service(
        config,
        config_file=str(tmp / "guard_config.py"),
        url=f"http://127.0.0.1:{random_port()}",
        managed=not in_process,
        api_token=token,
    )
    # The hub mints a managed service's token unless one is given; a known one lets
    # this process build the reference service with the same access to the hub.
    entry["api_token"] = token
    return config


def write_data_file(storage: Path, size: int) -> Path:
    """A ``size``-byte file in the dataset's store (one random MiB, repeated)."""
    folder = storage / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{size}.bin"
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(block)
        out.write(block[: size % MIB])
    return path


def reference_service(app: Any, tmp: Path, token: str) -> Any:
    """A GuardService from the service's configuration file, ready but not listening."""
    from nbguard.hub_plugin.guard.app import GuardService

    service = GuardService()
    service.load_config_file("guard_config.py", path=str(tmp))
    service.hub_api_url = app.hub.api_url
    service.api_token = token
    service.service_url = app._service_map[SERVICE].url
    service.service_prefix = f"{app.base_url}services/{SERVICE}/"
    service.hub_base_url = app.base_url
    service.init_components()
    return service


async def spawn_server(fixtures: ModuleType, app: Any) -> str:
    """Sign alice in (password and TOTP enrolment), spawn her server; its API token."""
    await fixtures.Browser(app).enrol(USER)
    user = app.users[USER]
    await user.spawn()
    for _ in range(600):
        if user.spawner.ready:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("alice's server did not start")
    token: str = user.spawner.api_token
    return token


async def wait_until_up(base: str, token: str) -> None:
    """Wait until the service answers an authenticated request (it starts after the hub)."""
    deadline = time.monotonic() + 60
    while True:
        conn = Connection(base, token)
        try:
            response = await asyncio.to_thread(conn.send, "GET", "api/v1/me")
            if response.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError("the guard service did not start")
        await asyncio.sleep(0.2)


async def resolve(reference: Any, app: Any, token: str) -> Any:
    """The context the service resolves for ``token``, resolved by the reference."""
    from nbguard.hub_plugin.guard.identity import caller_from_model

    response = await asyncio.to_thread(
        requests.get,
        f"{app.hub.api_url}/user",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return await reference.resolver.resolve(caller_from_model(response.json(), token))


if __name__ == "__main__" and sys.argv[1:] == ["load"]:
    # The load generator's process (see async_throughput): the order comes on stdin,
    # so the token is not on a command line.
    order = json.loads(sys.stdin.read())
    rate = asyncio.run(_load(order["base"], order["token"], order["clients"], order["total"]))
    print(json.dumps({"rate": rate}))
