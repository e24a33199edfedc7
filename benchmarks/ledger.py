"""Ledger throughput: appends (SQLite, PostgreSQL; group vs per-record commit) and verify.

Usage: python benchmarks/ledger.py [--quick] [--records N]

The targets use the single-append path (``append_nowait`` per record);
``*_group_many`` figures use the batch API ``append_many`` and are extra, as is
``verify_sqlite_1job`` (verification kept to one process; ``verify_sqlite`` uses
the default: helper processes on a multi-core machine for 50,000 records or
more, so in a ``--quick`` run the two measure the same thing). Every
figure is measured in this one run, against the raw speed of SHA-256 over
the very bytes the ledger hashes (the ceiling for anything that hashes every
record). Appends count from the first call until the last record is
acknowledged, i.e. durable: validation, canonical JSON, hashing, the database
and fsync included. Each timed part starts from a collected heap (``gc.collect()``),
so that it does not pay for a full garbage collection the part before it made due
(one costs tens of milliseconds in this process). The PostgreSQL cluster is a
throwaway one with fsync ON, so its figures include real durability. The last line
of output is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from nbguard.ledger import Ledger, verify_export, verify_store
from nbguard.ledger.export import write_export
from nbguard.ledger.keys import generate_key_pair, load_public_keys
from nbguard.ledger.records import GENESIS_HASH, prepare_record, seal
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.store import LedgerStore

TARGETS = {"sqlite_group": 50_000, "postgres_group": 20_000, "verify_sqlite": 300_000}


def load_pgcluster() -> ModuleType:
    """Import tests/pgcluster.py by path (shared with the test fixture)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "pgcluster.py"
    spec = importlib.util.spec_from_file_location("nbguard_bench_pgcluster", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def body(index: int) -> dict[str, Any]:
    """A typical access decision (about 300 bytes of canonical JSON)."""
    return {
        "principal": 'User::"alice"',
        "action": 'Action::"read"',
        "resource": f'Dataset::"customers-{index % 50}"',
        "allowed": index % 3 != 0,
        "policy_ids": ["analysts-read-governed"],
        "correlation_id": f"req-{index:08d}",
        "cell": {"kernel_id": "8f2c", "cell_id": "c-12", "seq": index},
    }


def hash_limit(count: int) -> float:
    """Records/s of SHA-256 alone over the sealed bytes of ``count`` records."""
    schemas = packaged_schemas()
    sealed = []
    for index in range(count):
        record = prepare_record(schemas, "access", body(index), actor="alice", session="s-1")
        sealed.append(
            b'{"personal":"' + record.commitment.encode() + b'","prev":"'
            + GENESIS_HASH.encode() + b'","record":' + record.core.encode()
            + b',"seq":%d}' % (index + 1)
        )  # fmt: skip
    sha256 = hashlib.sha256
    gc.collect()
    start = time.perf_counter()
    for data in sealed:
        sha256(data).hexdigest()
    elapsed = time.perf_counter() - start
    assert seal(1, GENESIS_HASH, b"{}", "0" * 64)  # same construction as the ledger's
    return count / elapsed


def append_rate(url: str, key: Path, count: int, durability: str) -> float:
    """Records/s appended and acknowledged, queued from one thread (as an async server would)."""
    ledger = Ledger(url=url, signing_key_file=str(key), durability=durability)
    try:
        gc.collect()
        start = time.perf_counter()
        pending = [
            ledger.append_nowait("access", body(i), actor="alice", session="s-1")
            for i in range(count)
        ]
        for receipt in pending:
            receipt.result()
        elapsed = time.perf_counter() - start
    finally:
        ledger.close()
    return count / elapsed


def append_many_rate(url: str, key: Path, count: int, batch: int = 1000) -> float:
    """Records/s through ``append_many`` in batches (as the kernel-hook shipper sends them).

    Reported next to, never instead of, the single-append figure the targets use.
    """
    ledger = Ledger(url=url, signing_key_file=str(key))
    try:
        gc.collect()
        start = time.perf_counter()
        for first in range(0, count, batch):
            ledger.append_many(
                ("access", body(i), "alice", "s-1") for i in range(first, min(count, first + batch))
            )
        elapsed = time.perf_counter() - start
    finally:
        ledger.close()
    return count / elapsed


def verify_rate(url: str, key: Path) -> tuple[float, float, float, int]:
    """Records/s verified from the database (default jobs, then one process) and from
    a full JSONL export."""
    keys = load_public_keys([key])
    store = LedgerStore(url, create=False)
    try:
        gc.collect()
        start = time.perf_counter()
        report = verify_store(store, keys)
        from_db = report.records / (time.perf_counter() - start)
        gc.collect()
        start = time.perf_counter()
        verify_store(store, keys, jobs=1)
        one_job = report.records / (time.perf_counter() - start)
        buffer = io.StringIO()
        write_export(store, buffer)
    finally:
        store.close()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write(buffer.getvalue())
    try:
        gc.collect()
        start = time.perf_counter()
        verify_export(handle.name, keys)
        from_file = report.records / (time.perf_counter() - start)
    finally:
        os.unlink(handle.name)
    return from_db, one_job, from_file, report.records


def main() -> int:
    """Run every measurement and print figures, ratios and a closing JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, under 30 s")
    parser.add_argument("--records", type=int, help="records per group-commit run")
    args = parser.parse_args()
    group_n = args.records or (20_000 if args.quick else 200_000)
    single_n = 200 if args.quick else 2_000
    figures: dict[str, Any] = {"records": group_n, "per_record_records": single_n}

    with tempfile.TemporaryDirectory(prefix="nbguard-bench-") as tmp:
        root = Path(tmp)
        generate_key_pair(root / "key.pem", root / "key.pub")
        key = root / "key.pem"
        figures["hash_limit"] = hash_limit(group_n)
        sqlite_url = f"sqlite:///{root / 'group.db'}"
        figures["sqlite_group"] = append_rate(sqlite_url, key, group_n, "group")
        figures["sqlite_group_many"] = append_many_rate(
            f"sqlite:///{root / 'many.db'}", key, group_n
        )
        figures["sqlite_record"] = append_rate(
            f"sqlite:///{root / 'record.db'}", key, single_n, "record"
        )
        db_rate, one_job, file_rate, verified = verify_rate(sqlite_url, root / "key.pub")
        figures["verify_sqlite"], figures["verify_export"] = db_rate, file_rate
        figures["verify_sqlite_1job"] = one_job
        figures["verified_records"] = verified

        cluster = load_pgcluster().PostgresCluster(fsync=True).start()
        try:
            figures["postgres_group"] = append_rate(
                cluster.create_database(), key, group_n, "group"
            )
            figures["postgres_group_many"] = append_many_rate(
                cluster.create_database(), key, group_n
            )
            figures["postgres_record"] = append_rate(
                cluster.create_database(), key, single_n, "record"
            )
        finally:
            cluster.stop()

    limit = figures["hash_limit"]
    ratios = {
        f"{name}_vs_hash": figures[name] / limit
        for name in (
            "sqlite_group",
            "sqlite_group_many",
            "sqlite_record",
            "postgres_group",
            "postgres_group_many",
            "postgres_record",
            "verify_sqlite",
            "verify_sqlite_1job",
            "verify_export",
        )
    }
    ratios["sqlite_group_vs_record"] = figures["sqlite_group"] / figures["sqlite_record"]
    ratios["postgres_group_vs_record"] = figures["postgres_group"] / figures["postgres_record"]
    print(f"hash limit (SHA-256 of sealed bytes): {limit:>12,.0f} records/s")
    appends = ("sqlite_group", "sqlite_group_many", "sqlite_record")
    for name in (*appends, "postgres_group", "postgres_group_many", "postgres_record"):
        print(f"append {name:<24} {figures[name]:>12,.0f} records/s")
    for name in ("verify_sqlite", "verify_sqlite_1job", "verify_export"):
        print(f"{name:<31} {figures[name]:>12,.0f} records/s")
    for name, target in TARGETS.items():
        verdict = "met" if figures[name] >= target else "MISSED"
        print(f"target {name} >= {target:,}/s: {verdict} ({figures[name]:,.0f}/s)")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.4f}")
    met = {name: figures[name] >= target for name, target in TARGETS.items()}
    summary = {
        "figures": {k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()},
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "targets": TARGETS,
        "targets_met": met,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
