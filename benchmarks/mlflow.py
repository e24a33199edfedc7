"""Model-registry gateway speed: MLflow calls through the guard service against direct calls.

Usage: python benchmarks/mlflow.py [--quick]

A real ``mlflow server`` (SQLite backend store, local artifact root, artifact
proxy; started by ``tests/hub_plugin/guard/mlflow_server.py``) and one real hub
(JupyterHub's MockHub with nbguard, set up by ``benchmarks/service_setup.py``)
whose guard service runs as production runs it, a managed process, with
``GuardService.mlflow_tracking_uri`` pointing at the server and the shipped
defaults otherwise (attributes cached ``mlflow_cache_seconds`` = 5 s, ledger
group commit within 2 ms, ``synchronous=full``). The user ``bob`` (an
ml-engineer of ``ml-platform`` in the shipped entities) signs in with a second
factor; his API token is the gateway's bearer token.

A model is set up directly in MLflow (as an admin's pipeline would): a logged
model with one file of random bytes (64 MiB with ``--quick``, else 256 MiB),
registered as version 1 of ``bench`` with nbguard's tags (team ``ml-platform``).

- Metadata latency: ``GET registered-models/get`` and ``GET model-versions/get``,
  each on one keep-alive connection, one request at a time, alternating request
  by request between the gateway (the service's own URL, as servers reach it)
  and the MLflow server directly: p50 and p99, and the ratio of the p50s.
  Through the gateway each call is authenticated (token cached), decided
  (``model.read``) and recorded in the ledger.
- Artifact throughput: the file downloaded (counted into one reused buffer, the
  byte count checked) through the gateway (decided ``model.export`` on the
  version, streamed) and directly, in alternating rounds: GB/s and the ratio.

Targets (issue 8): metadata p50 under 1.3x direct; artifacts at least 0.5x
direct throughput. The last line of output is one JSON object; nothing asserts
on times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import requests
from hub import load_hub_fixtures, load_test_module
from service_setup import MIB, SERVICE, Connection, hub_config, wait_until_up

TARGETS = {"metadata_ratio": 1.3, "artifact_ratio": 0.5}
USER = "bob"
MODEL = "bench"
CALLS = ("registered-models/get?name=bench", "model-versions/get?name=bench&version=1")


def load_mlflow_server() -> ModuleType:
    """Import tests/hub_plugin/guard/mlflow_server.py by path (start and stop the server)."""
    return load_test_module("tests/hub_plugin/guard/mlflow_server.py", "nbguard_bench_mlflow")


def set_up_model(url: str, size: int) -> str:
    """Log a ``size``-byte model file and register it as ``bench`` v1, directly; its path."""
    api = f"{url}/api/2.0/mlflow"
    created = requests.post(
        f"{api}/logged-models", json={"experiment_id": "0", "name": MODEL}, timeout=60
    )
    created.raise_for_status()
    model_id = created.json()["model"]["info"]["model_id"]
    path = f"0/models/{model_id}/artifacts/model.bin"
    block = os.urandom(MIB)
    body = block * (size // MIB)
    stored = requests.put(
        f"{url}/api/2.0/mlflow-artifacts/artifacts/{path}", data=body, timeout=600
    )
    stored.raise_for_status()
    finished = {"model_id": model_id, "status": "LOGGED_MODEL_READY"}
    requests.patch(f"{api}/logged-models/{model_id}", json=finished, timeout=60).raise_for_status()
    tags = {"team": "ml-platform", "sensitivity": "confidential", "environment": "train"}
    model = {"name": MODEL, "tags": [{"key": f"nbguard.{k}", "value": v} for k, v in tags.items()]}
    requests.post(f"{api}/registered-models/create", json=model, timeout=60).raise_for_status()
    version = {
        "name": MODEL,
        "source": f"models:/{model_id}",
        "model_id": model_id,
        "tags": [{"key": "nbguard.registered_by", "value": "frank"}],
    }
    requests.post(f"{api}/model-versions/create", json=version, timeout=60).raise_for_status()
    return path


def call(conn: Connection, path: str) -> float:
    """One GET round trip (its 200 answer read whole): seconds."""
    started = time.perf_counter()
    response = conn.send("GET", path)
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")
    return time.perf_counter() - started


def metadata(gateway: Connection, direct: Connection, count: int) -> dict[str, dict[str, Any]]:
    """Round trips of each metadata call, alternating gateway and direct request by request."""
    times: dict[str, dict[str, list[float]]] = {c: {"gateway": [], "direct": []} for c in CALLS}
    for name in CALLS:  # warm both paths (connections, caches)
        for conn in (gateway, direct):
            for _ in range(20):
                call(conn, f"api/2.0/mlflow/{name}")
    for i in range(count):
        for name in CALLS:
            order = [("gateway", gateway), ("direct", direct)]
            for label, conn in order if i % 2 else order[::-1]:
                times[name][label].append(call(conn, f"api/2.0/mlflow/{name}"))
    return {name: {k: summary(v) for k, v in pair.items()} for name, pair in times.items()}


def artifacts(gateway: Connection, direct: Connection, path: str, size: int, rounds: int) -> Any:
    """GB/s of the model file through the gateway and directly, in alternating rounds."""
    seconds: dict[str, list[float]] = {"gateway": [], "direct": []}
    for i in range(rounds):
        order = [("gateway", gateway), ("direct", direct)]
        for label, conn in order if i % 2 else order[::-1]:
            status, received, took = conn.download(f"api/2.0/mlflow-artifacts/artifacts/{path}")
            if status != 200 or received != size:
                raise RuntimeError(f"{label} download: status {status}, {received} of {size} bytes")
            seconds[label].append(took)
    return {k: size / min(v) / 1e9 for k, v in seconds.items()}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    return {"p50_ms": percentile(values, 0.5) * 1e3, "p99_ms": percentile(values, 0.99) * 1e3}


async def measure(quick: bool) -> dict[str, Any]:
    """Start MLflow, the hub and the service; take every figure; stop everything."""
    fixtures = load_hub_fixtures()
    servers = load_mlflow_server()
    size = (64 if quick else 256) * MIB
    count, rounds = (300, 3) if quick else (1500, 6)
    tmp = Path(tempfile.mkdtemp(prefix="nbguard-bench-mlflow-"))
    (tmp / "mlflow").mkdir()
    mlflow = servers.start_mlflow(tmp / "mlflow")
    try:
        path = await asyncio.to_thread(set_up_model, mlflow.url, size)
        token = secrets.token_hex(32)
        config = hub_config(fixtures, tmp, in_process=False, token=token)
        with (tmp / "guard_config.py").open("a") as extra:
            extra.write(f"c.GuardService.mlflow_tracking_uri = {mlflow.url!r}\n")
        async with fixtures.running_hub(config) as app:
            await fixtures.Browser(app).enrol(USER)
            user_token = app.users[USER].new_api_token(note="benchmark")
            service = app._service_map[SERVICE]
            base = f"{service.url.rstrip('/')}{app.base_url}services/{SERVICE}/"
            await wait_until_up(base, user_token)
            gateway = Connection(base + "mlflow/", user_token)
            direct = Connection(mlflow.url + "/", "none")
            try:
                meta = await asyncio.to_thread(metadata, gateway, direct, count)
                speed = await asyncio.to_thread(artifacts, gateway, direct, path, size, rounds)
            finally:
                gateway.close()
                direct.close()
    finally:
        servers.stop_mlflow(mlflow)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"metadata": meta, "artifacts": speed, "size": size, "count": count, "rounds": rounds}


def report(raw: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Print the figures and ratios; the summary as a dict."""
    print(f"Metadata calls ({raw['count']} each way, alternating; ms):")
    ratios = {}
    for name, pair in raw["metadata"].items():
        ratio = pair["gateway"]["p50_ms"] / pair["direct"]["p50_ms"]
        ratios[name.split("?")[0]] = round(ratio, 2)
        print(
            f"  {name:45s} gateway p50 {pair['gateway']['p50_ms']:6.2f} p99 "
            f"{pair['gateway']['p99_ms']:6.2f} | direct p50 {pair['direct']['p50_ms']:6.2f} "
            f"p99 {pair['direct']['p99_ms']:6.2f} | ratio {ratio:.2f}x "
            f"(target < {TARGETS['metadata_ratio']}x)"
        )
    speed = raw["artifacts"]
    artifact_ratio = speed["gateway"] / speed["direct"]
    print(
        f"Artifact download ({raw['size'] // MIB} MiB, best of {raw['rounds']}): gateway "
        f"{speed['gateway']:.2f} GB/s, direct {speed['direct']:.2f} GB/s, ratio "
        f"{artifact_ratio:.2f}x (target >= {TARGETS['artifact_ratio']}x)"
    )
    return {
        "benchmark": "mlflow",
        "quick": quick,
        "metadata": raw["metadata"],
        "metadata_ratio": ratios,
        "artifact_gb_s": {k: round(v, 3) for k, v in speed.items()},
        "artifact_ratio": round(artifact_ratio, 3),
        "targets_met": {
            "metadata_ratio_lt_1_3": all(r < TARGETS["metadata_ratio"] for r in ratios.values()),
            "artifact_ratio_ge_0_5": artifact_ratio >= TARGETS["artifact_ratio"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about two minutes)")
    args = parser.parse_args()
    raw = asyncio.run(measure(args.quick))
    print(json.dumps(report(raw, args.quick)))


if __name__ == "__main__":
    main()
