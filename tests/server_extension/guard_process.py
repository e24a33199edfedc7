"""A real hub and guard service in their own process, for the server-extension tests.

Usage: ``python guard_process.py TMPDIR``. It runs the guard tests' own setup
(tests/hub_plugin/guard/conftest.py, imported by path): JupyterHub's MockHub with
the real proxy, nbguard's authenticator and guarded spawner, and the real
``GuardService``. It prints one JSON line (``{"control": URL}``) and then
serves a small control API on loopback for the test process:

- ``POST /servers {"roles": [...]}``: a new user who logged in with a second
  factor, with a running server; answers ``{"name", "token", "guard_url"}``:
  the server's own token and the guard service's own URL (where a spawned
  server reaches it);
- ``GET /records?kind=&actor=``: ledger record bodies, oldest first;
- ``POST /mfa-age {"user", "seconds"}``: age a user's last second factor;
- ``POST /server-url {"user", "url"}``: the hub's address of the user's server
  becomes ``url`` (the Jupyter server under test), where the guard sends orders;
- ``POST /orders {"user", "server"}``: an interrupt order signed by the guard;
- ``POST /admin-locks {"user", "interrupt_kernels"}``: lock through the guard's
  real lock API, as an admin; answers the API's status and body;
- ``POST /guard/down``, ``POST /guard/up``: stop and resume the guard's listener;
- ``POST /stop``: stop everything and exit.

It is a separate process because the hub's fixtures run on pytest-asyncio's
loop and pytest-jupyter's server on its own: in one process one of them would
be stopped whenever the other runs.

The test side is here too (:class:`GuardProcess`, :func:`running_guard`), for
every test folder that needs a real guard beside a Jupyter server
(tests/server_extension, tests/labextension).
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import secrets
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

TESTS = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SpawnedServer:
    """A server the hub spawned: its user, its own token, and the guard's URL for it."""

    name: str
    token: str
    guard_url: str

    def guard_call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the guard directly with this server's token (what the extension forwards to)."""
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, self.guard_url + path, headers=headers, timeout=30, **kw)


class GuardProcess:
    """The hub and guard service process, driven through its control API."""

    def __init__(self, process: subprocess.Popen[str], control: str) -> None:
        self.process = process
        self.control = control

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """A control call; its JSON answer."""
        response = requests.request(method, self.control + path, timeout=120, **kw)
        response.raise_for_status()
        return response.json()

    def new_server(self, *roles: str) -> SpawnedServer:
        """A new signed-in user with ``roles`` and a running server."""
        answer = self.call("POST", "/servers", json={"roles": list(roles)})
        return SpawnedServer(answer["name"], answer["token"], answer["guard_url"])

    def records(self, kind: str, actor: str) -> list[dict[str, Any]]:
        """The ledger's record bodies of ``kind`` by ``actor``, oldest first."""
        return list(self.call("GET", "/records", params={"kind": kind, "actor": actor})["records"])

    def lock(self, user: str) -> str:
        """Lock ``user`` (as an admin would); the lock's id."""
        return str(self.call("POST", "/locks", json={"user": user})["id"])

    def unlock(self, lock_id: str) -> None:
        """Lift a lock made by :meth:`lock`."""
        self.call("DELETE", f"/locks/{lock_id}")

    def point_server(self, user: str, url: str) -> None:
        """Make the hub's address of ``user``'s server ``url``."""
        self.call("POST", "/server-url", json={"user": user, "url": url})

    def order(self, user: str, server: str) -> str:
        """An interrupt order for the server named ``server`` (``alice``, ``alice/gpu``)."""
        return str(self.call("POST", "/orders", json={"user": user, "server": server})["order"])

    def admin_lock(self, user: str, **options: Any) -> tuple[int, dict[str, Any]]:
        """Lock ``user`` through the guard's lock API as an admin; its status and body."""
        answer = self.call("POST", "/admin-locks", json={"user": user, **options})
        return int(answer["status"]), dict(answer["body"])

    def age_mfa(self, user: str, seconds: float) -> None:
        """Make ``user``'s last second factor ``seconds`` old, as if time had passed."""
        self.call("POST", "/mfa-age", json={"user": user, "seconds": seconds})

    def down(self) -> None:
        """Stop the guard service's listener (connections are refused)."""
        self.call("POST", "/guard/down")

    def up(self) -> None:
        """Listen again."""
        self.call("POST", "/guard/up")


@contextmanager
def running_guard(tmp: Path) -> Iterator[GuardProcess]:
    """Start this module as a process (hub and guard in ``tmp``); stop it on exit."""
    log = (tmp / "guard.log").open("w")
    process = subprocess.Popen(
        [sys.executable, __file__, str(tmp)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(30)
        raise RuntimeError(f"the guard process did not start; see {tmp / 'guard.log'}")
    guard = GuardProcess(process, json.loads(line)["control"])
    try:
        yield guard
    finally:
        try:
            guard.call("POST", "/stop")
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            process.stdout.close()
            log.close()


def guard_fixtures() -> Any:
    """tests/hub_plugin/guard/conftest.py as a module (its relative imports resolved)."""
    root = types.ModuleType("nbguard_test_tree")
    root.__path__ = [str(TESTS)]
    sys.modules[root.__name__] = root
    return importlib.import_module("nbguard_test_tree.hub_plugin.guard.conftest")


def ledger_bodies(service: Any, kind: str, actor: str) -> list[dict[str, Any]]:
    """The guard ledger's record bodies of ``kind`` by ``actor``, oldest first."""
    out = io.StringIO()
    service.ledger.export(out)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    found = [line["record"] for line in lines if line.get("type") == "record"]
    return [r["body"] for r in found if r["kind"] == kind and r.get("actor") == actor]


async def main(tmp: Path) -> None:
    """Run the hub, the guard and the control API until ``POST /stop``."""
    from jupyterhub.tests.utils import public_url
    from jupyterhub.utils import random_port
    from tornado import web

    fixtures = guard_fixtures()
    url = f"http://127.0.0.1:{random_port()}"
    token = secrets.token_hex(32)
    db_url = f"sqlite:///{tmp / 'guard.sqlite'}"
    config = fixtures.guard_hub_config(tmp, url=url, token=token, db_url=db_url)
    stop = asyncio.Event()
    async with fixtures.running_hub(config) as app:
        service = fixtures.new_service(config, app, tmp, url=url, token=token)
        service.init_components()
        service.listen()
        guard = fixtures.Guard(app, service, public_url(app) + f"services/{fixtures.SERVICE}/", tmp)

        class Servers(web.RequestHandler):
            async def post(self) -> None:
                roles = json.loads(self.request.body or b"{}").get("roles", [])
                client = await fixtures.server_client(guard, *roles)
                own_url = url + service.service_prefix
                self.write({"name": client.name, "token": client.token, "guard_url": own_url})

        class Records(web.RequestHandler):
            def get(self) -> None:
                kind = self.get_query_argument("kind")
                actor = self.get_query_argument("actor")
                self.write({"records": ledger_bodies(service, kind, actor)})

        class Listener(web.RequestHandler):
            def post(self, state: str) -> None:
                if state == "down":
                    service.http_server.stop()
                else:
                    where = urlparse(url)
                    service.http_server = service.web_app.listen(where.port, where.hostname)
                self.write({"state": state})

        class Locks(web.RequestHandler):
            # The lock API and its checks are tested in tests/hub_plugin/guard; this
            # only puts a lock in the store, as the admin's form would.
            def post(self) -> None:
                user = json.loads(self.request.body)["user"]
                made = service.elevations.lock(kind="user", value=user, reason="test", by="admin")
                self.write({"id": made.id})

            def delete(self, lock_id: str) -> None:
                service.elevations.unlock(lock_id, by="admin")
                self.write({})

        class ServerURL(web.RequestHandler):
            def post(self) -> None:
                body = json.loads(self.request.body)
                where = urlparse(body["url"])
                server = app.users[body["user"]].spawners[""].server
                server.ip, server.port, server.base_url = where.hostname, where.port, where.path
                server.connect_ip = ""
                app.db.commit()
                self.write({})

        class Orders(web.RequestHandler):
            def post(self) -> None:
                body = json.loads(self.request.body)
                made = service.entitlements.order(
                    user=body["user"], server=body["server"], order="interrupt", reason="test"
                )
                self.write({"order": made})

        class AdminLocks(web.RequestHandler):
            async def post(self) -> None:
                body = json.loads(self.request.body)
                admin = await fixtures.user_client(guard, "admin")
                lock = {"kind": "user", "value": body.pop("user"), "reason": "test", **body}
                response = await admin.call("POST", "api/v1/locks", json=lock)
                self.write({"status": response.status_code, "body": response.json()})

        class MFAAge(web.RequestHandler):
            async def post(self) -> None:
                body = json.loads(self.request.body)
                await fixtures.age_mfa(guard, body["user"], float(body["seconds"]))
                self.write({})

        class Stop(web.RequestHandler):
            def post(self) -> None:
                self.write({})
                stop.set()

        control = web.Application(
            [
                (r"/servers", Servers),
                (r"/records", Records),
                (r"/guard/(down|up)", Listener),
                (r"/locks", Locks),
                (r"/locks/([^/]+)", Locks),
                (r"/mfa-age", MFAAge),
                (r"/server-url", ServerURL),
                (r"/orders", Orders),
                (r"/admin-locks", AdminLocks),
                (r"/stop", Stop),
            ]
        )
        port = random_port()
        control.listen(port, "127.0.0.1")
        print(json.dumps({"control": f"http://127.0.0.1:{port}"}), flush=True)
        try:
            await stop.wait()
        finally:
            for name, server in guard.servers:
                if app.users[name].spawners[server].active:
                    await app.users[name].stop(server)
            await service.notifier.drain()
            service.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
