"""Hub latency: what nbguard adds to a login and to a spawn, against the same hub without it.

Usage: python benchmarks/hub.py [--quick] [--logins N]

One real hub (JupyterHub's MockHub: the real handlers, database and proxy) runs
in this process with nbguard's wrapped ``dummy`` authenticator and the guarded
``SimpleLocalProcessSpawner``. The baselines run in the same hub, interleaved
with the measured runs: the hub's ``authenticator`` and ``spawner_class``
settings, which JupyterHub reads per request, are switched between the plain
classes and nbguard's for each repetition.

- Login: hub time, i.e. the time the hub's handlers took (Tornado's
  ``request_time``, what JupyterHub logs), of the POSTs of one login: the
  password form alone for the bare ``DummyAuthenticator``; the password form
  plus the TOTP code form with nbguard. Every user has logged in (and enrolled)
  once before, so neither side pays for creating the user.
- Spawn: from ``User.spawn`` (JupyterHub's spawn: token, pre-spawn hook, start)
  until the real ``jupyterhub-singleuser`` server answers, bare spawner against
  the guarded one, for a user logged in with nbguard.

Targets: nbguard adds under 5 ms of hub time to a login and under 5% to a spawn.
The last line of output is one JSON object; nothing asserts on times.

Instrumentation, not part of the figures above: the time of JupyterHub's own
``User.save_auth_state`` in each login (encryption in its thread pool and the
commit to the hub database). The bare ``DummyAuthenticator`` has no auth state,
so its save writes nothing; nbguard's login stores its MFA section there, so
that commit is part of what nbguard adds. Spawns are also given as the median
of the per-round ratios (each round runs both variants back to back), which
drifts less with the machine's load than the ratio of the two medians.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

TARGETS = {"login_added_ms": 5.0, "spawn_ratio": 1.05}


def load_hub_fixtures() -> ModuleType:
    """Import tests/hub_plugin/conftest.py by path (its hub config and browser client)."""
    return load_test_module("tests/hub_plugin/conftest.py", "nbguard_bench_hub_fixtures")


def load_test_module(relative: str, name: str) -> ModuleType:
    """Import a test helper module by its path in the repository, as module ``name``."""
    path = Path(__file__).resolve().parent.parent / relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class HubClock:
    """Collects the hub-side time of each request, as JupyterHub's request log sees it."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.times: list[tuple[str, str, float]] = []
        wrapped = settings["log_function"]

        def log_function(handler: Any) -> None:
            request = handler.request
            self.times.append((request.method, request.path, request.request_time() * 1e3))
            wrapped(handler)

        settings["log_function"] = log_function

    def mark(self) -> int:
        """A position in the record, to sum what came after it."""
        return len(self.times)

    def posts_since(self, mark: int) -> list[float]:
        """Milliseconds of hub time of each POST since ``mark``."""
        return [ms for method, _, ms in self.times[mark:] if method == "POST"]


def hub_config(fixtures: ModuleType, tmp: Path) -> Any:
    """The test hub config with the guarded dummy authenticator and local spawner."""
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    from nbguard.hub_plugin import guarded_authenticator, guarded_spawner

    config = fixtures.hub_config(tmp)
    config.JupyterHub.authenticator_class = guarded_authenticator("dummy")
    config.JupyterHub.spawner_class = timed(guarded_spawner(SimpleLocalProcessSpawner))
    config.ConfigurableHTTPProxy.pid_file = str(tmp / "proxy.pid")
    config.JupyterHub.log_level = "WARN"
    # After login, go home: no spawn is started by a login being measured.
    config.JupyterHub.redirect_to_server = False
    config.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
    config.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
    config.Spawner.default_url = "/api/status"
    config.Spawner.http_timeout = 60
    config.LocalProcessSpawner.interrupt_timeout = 1
    config.LocalProcessSpawner.term_timeout = 5
    config.SimpleLocalProcessSpawner.home_dir_template = str(tmp / "home" / "{username}")
    config.PolicySpawnerMixin.default_profile = "dev"
    config.Ledger.warn_unsigned = False
    return config


#: Seconds each guarded spawn spent in nbguard's own stage (decision and ledger record).
STAGE_SECONDS: list[float] = []
#: Seconds of each ``User.save_auth_state`` (JupyterHub's), appended as they happen.
SAVE_SECONDS: list[float] = []


def time_auth_state_saves() -> None:
    """Time JupyterHub's ``User.save_auth_state`` into :data:`SAVE_SECONDS` (instrumentation)."""
    from jupyterhub.user import User

    save = User.save_auth_state

    async def timed_save(self: Any, auth_state: Any) -> None:
        started = time.perf_counter()
        try:
            await save(self, auth_state)
        finally:
            SAVE_SECONDS.append(time.perf_counter() - started)

    User.save_auth_state = timed_save


def timed(guarded: type) -> type:
    """``guarded`` with its nbguard stage timed into :data:`STAGE_SECONDS` (instrumentation)."""

    class Timed(guarded):  # type: ignore[valid-type,misc]
        async def nbguard_authorize(self) -> Any:
            started = time.perf_counter()
            try:
                return await super().nbguard_authorize()
            finally:
                STAGE_SECONDS.append(time.perf_counter() - started)

    return Timed


async def password_login(fixtures: ModuleType, app: Any, name: str) -> Any:
    """A browser that has posted the password form for ``name``."""
    browser = fixtures.Browser(app)
    await browser.login(name)
    return browser


async def guarded_login(fixtures: ModuleType, app: Any, name: str, secret: str) -> None:
    """Password, then the next TOTP code (the current one was used at enrolment)."""
    browser = await password_login(fixtures, app, name)
    form = await browser.get("nbguard/mfa")
    page = await browser.post(form.url, {"code": fixtures.later_code(secret)}, xsrf=form.xsrf)
    assert browser.has_login_cookie(), page.url


async def measure(quick: bool, logins: int | None = None) -> dict[str, Any]:
    """Run the interleaved logins and spawns; return the figures."""
    from jupyterhub import crypto
    from jupyterhub.auth import DummyAuthenticator
    from jupyterhub.spawner import SimpleLocalProcessSpawner
    from jupyterhub.tests.mocking import MockHub

    fixtures = load_hub_fixtures()
    default_logins, spawns = (10, 5) if quick else (40, 12)
    logins = logins or default_logins
    time_auth_state_saves()
    tmp = Path(tempfile.mkdtemp(prefix="nbguard-bench-hub-"))
    crypto.CryptKeeper.instance().keys = [os.urandom(32)]
    app = MockHub.instance(config=hub_config(fixtures, tmp))
    await app.initialize([])
    await app.start()
    settings = app.tornado_settings
    guarded_auth, guarded_spawner = settings["authenticator"], settings["spawner_class"]
    bare_auth = DummyAuthenticator(parent=app, allow_all=True)
    clock = HubClock(settings)
    try:
        # Setup (not measured): every user logs in once; nbguard's users enrol TOTP.
        bare_users = [f"bare{i}" for i in range(logins)]
        settings["authenticator"] = bare_auth
        for name in bare_users:
            await password_login(fixtures, app, name)
        settings["authenticator"] = guarded_auth
        guarded_users = []
        for _ in range(logins):
            name = fixtures.new_user(app)
            secret, _, _ = await fixtures.Browser(app).enrol(name)
            guarded_users.append((name, secret))

        login_ms: dict[str, list[float]] = {"bare": [], "nbguard": []}
        save_ms: dict[str, list[float]] = {"bare": [], "nbguard": []}
        steps: dict[str, list[float]] = {"password": [], "code": []}
        for i in range(logins):
            order = ["bare", "nbguard"] if i % 2 == 0 else ["nbguard", "bare"]
            for variant in order:
                saves = len(SAVE_SECONDS)
                mark = clock.mark()
                if variant == "bare":
                    settings["authenticator"] = bare_auth
                    await password_login(fixtures, app, bare_users[i])
                else:
                    settings["authenticator"] = guarded_auth
                    await guarded_login(fixtures, app, *guarded_users[i])
                posts = clock.posts_since(mark)
                login_ms[variant].append(sum(posts))
                save_ms[variant].append(sum(SAVE_SECONDS[saves:]) * 1e3)
                if variant == "nbguard":
                    steps["password"].append(posts[0])
                    steps["code"].append(posts[-1])
        settings["authenticator"] = guarded_auth

        user = app.users[guarded_users[0][0]]
        spawn_s: dict[str, list[float]] = {"bare": [], "nbguard": []}
        classes = {"bare": SimpleLocalProcessSpawner, "nbguard": guarded_spawner}
        for i in range(spawns + 1):
            order = ["bare", "nbguard"] if i % 2 == 0 else ["nbguard", "bare"]
            for variant in order:
                settings["spawner_class"] = classes[variant]
                started = time.perf_counter()
                await user.spawn("", options={"profile": "dev"})
                elapsed = time.perf_counter() - started
                await user.stop("")
                if i:  # the first round warms caches (imports, disk) for both
                    spawn_s[variant].append(elapsed)
    finally:
        settings["authenticator"] = guarded_auth
        settings["spawner_class"] = guarded_spawner
        MockHub.clear_instance()
        proxy = getattr(app.proxy, "proxy_process", None)
        await app.stop()
        if proxy is not None:
            proxy.wait(10)
        guarded_auth.nbguard.close()
    stage = STAGE_SECONDS[-len(spawn_s["nbguard"]) :]
    return {
        "login_ms": login_ms,
        "save_ms": save_ms,
        "spawn_s": spawn_s,
        "steps": steps,
        "stage_s": stage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about two minutes)")
    parser.add_argument(
        "--logins",
        type=int,
        metavar="N",
        help="logins per variant (default 10 with --quick, else 40); spawns are unchanged",
    )
    args = parser.parse_args()
    if args.logins is not None and args.logins < 1:
        parser.error("--logins must be at least 1")
    raw = asyncio.run(measure(args.quick, args.logins))
    login = {k: statistics.median(v) for k, v in raw["login_ms"].items()}
    spawn = {k: statistics.median(v) for k, v in raw["spawn_s"].items()}
    login_added = login["nbguard"] - login["bare"]
    spawn_ratio = spawn["nbguard"] / spawn["bare"]
    runs = len(raw["login_ms"]["bare"]), len(raw["spawn_s"]["bare"])
    print(f"logins: {runs[0]} per variant; spawns: {runs[1]} per variant (interleaved)")
    print(f"login hub time, bare dummy     : median {login['bare']:7.2f} ms")
    print(f"login hub time, nbguard + TOTP : median {login['nbguard']:7.2f} ms")
    steps = {k: statistics.median(v) for k, v in raw["steps"].items()}
    print(f"  of which password POST {steps['password']:.2f} ms, code POST {steps['code']:.2f} ms")
    print(f"nbguard adds {login_added:.2f} ms of hub time per login (target < 5 ms)")
    save = {k: statistics.median(v) for k, v in raw["save_ms"].items()}
    print(
        f"  JupyterHub's save_auth_state in a login: bare {save['bare']:.2f} ms (no auth "
        f"state), nbguard {save['nbguard']:.2f} ms"
    )
    paired = statistics.median(
        g / b for g, b in zip(raw["spawn_s"]["nbguard"], raw["spawn_s"]["bare"], strict=True)
    )
    print(f"spawn to server answering, bare   : median {spawn['bare']:.3f} s")
    print(f"spawn to server answering, nbguard: median {spawn['nbguard']:.3f} s")
    stage = statistics.median(raw["stage_s"])
    print(f"spawn nbguard / bare = {spawn_ratio:.3f} (target < 1.05)")
    print(f"  median of the per-round ratios: {paired:.3f}")
    print(
        f"nbguard's own spawn stage: median {stage * 1e3:.2f} ms "
        f"= {stage / spawn['bare']:.2%} of a bare spawn"
    )
    print(
        json.dumps(
            {
                "benchmark": "hub",
                "quick": args.quick,
                "logins": runs[0],
                "spawns": runs[1],
                "login_bare_ms": round(login["bare"], 2),
                "login_nbguard_ms": round(login["nbguard"], 2),
                "login_added_ms": round(login_added, 2),
                "login_nbguard_password_ms": round(steps["password"], 2),
                "login_nbguard_code_ms": round(steps["code"], 2),
                "login_bare_save_auth_state_ms": round(save["bare"], 2),
                "login_nbguard_save_auth_state_ms": round(save["nbguard"], 2),
                "spawn_bare_s": round(spawn["bare"], 3),
                "spawn_nbguard_s": round(spawn["nbguard"], 3),
                "spawn_ratio": round(spawn_ratio, 3),
                "spawn_ratio_paired_median": round(paired, 3),
                "spawn_stage_ms": round(stage * 1e3, 2),
                "spawn_stage_share": round(stage / spawn["bare"], 5),
                "targets_met": {
                    "login_added_lt_5ms": login_added < TARGETS["login_added_ms"],
                    "spawn_ratio_lt_1_05": spawn_ratio < TARGETS["spawn_ratio"],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
