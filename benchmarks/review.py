"""Review: the session list on a big ledger, against plain indexed reads in the same run.

Usage: python benchmarks/review.py [--quick] [--records N]

Builds an SQLite ledger of N records (default 1,000,000; ``--quick`` 100,000) in
sessions of about 50 records (cells, access decisions, an elevation now and
then) of 200 users, indexes it once, then times:

- ``list_*``: one page (50 sessions) of the session list: unfiltered, by user,
  privileged only, by dataset, and a deep page (keyset ``before``);
- ``baseline_select``: a plain SELECT of 50 ledger rows by primary key, the
  cheapest read of the same number of rows this database can do;
- ``refresh_1000``: bringing the index up to date after 1,000 new records;
- ``timeline``: one session's records read, re-hashed and built into a timeline
  (without the whole-ledger verification, which ``benchmarks/ledger.py`` measures);
- ``index_build``: the first indexing pass over the whole ledger (records/s).

Each query figure is the median of repeated runs; ratios are against the baseline
measured here. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from nbguard.ledger import Ledger
from nbguard.ledger.keys import generate_key_pair
from nbguard.ledger.store import LedgerStore
from nbguard.review.index import SessionFilter, SessionIndex
from nbguard.review.integrity import LedgerStatus
from nbguard.review.replay import refresh_index, review_from_store

PER_SESSION = 50
USERS = 200


def records(start: int, count: int) -> list[tuple[str, dict[str, Any], str, str]]:
    """``count`` records from position ``start``: sessions of PER_SESSION records."""
    out = []
    for n in range(start, start + count):
        session_number = n // PER_SESSION
        session = f"{session_number:032x}"
        user = f"user{session_number % USERS}"
        position = n % PER_SESSION
        if position % 10 == 3:
            body: dict[str, Any] = {
                "principal": f"user:{user}",
                "action": "dataset.read",
                "resource": f"dataset:ds{session_number % 40}",
                "allowed": True,
                "policy_ids": ["read"],
                "correlation_id": f"c{n}",
            }
            out.append(("access", body, user, session))
        elif position == 7 and session_number % 25 == 0:
            body = {
                "event": "approve",
                "request_id": f"r{session_number}",
                "requester": user,
                "grant": "dataset.read on dataset:restricted",
                "expires_at": "2099-01-01T00:00:00Z",
            }
            out.append(("elevation", body, user, session))
        else:
            body = {
                "kernel_id": f"k{session_number}",
                "seq": position,
                "msg_id": f"m{n}",
                "code": f"x = {n}",
                "code_sha256": "0" * 64,
                "status": "ok",
                "duration_ms": 5,
                "privileged": False,
                "witness": "kernel",
            }
            out.append(("cell_execution", body, user, session))
    return out


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``call`` in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print figures and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 records")
    parser.add_argument("--records", type=int, help="ledger size (default 1,000,000)")
    args = parser.parse_args(argv)
    total = args.records or (100_000 if args.quick else 1_000_000)
    repeat = 50
    with tempfile.TemporaryDirectory(prefix="nbguard-bench-review-") as folder:
        root = Path(folder)
        generate_key_pair(root / "k", root / "k.pub")
        url = f"sqlite:///{root / 'ledger.db'}"
        started = time.perf_counter()
        with Ledger(
            url=url, signing_key_file=str(root / "k"), synchronous="normal", checkpoint_every=50_000
        ) as ledger:
            for start in range(0, total, 20_000):
                ledger.append_many(records(start, min(20_000, total - start)))
        build_s = time.perf_counter() - started
        print(f"ledger: {total:,} records written in {build_s:.1f} s", file=sys.stderr)

        store = LedgerStore(url, create=False)
        index = SessionIndex(store.engine)
        started = time.perf_counter()
        refresh_index(store, index)
        index_s = time.perf_counter() - started
        sessions = -(-total // PER_SESSION)

        def page(where: SessionFilter, before: int | None = None) -> Callable[[], Any]:
            return lambda: index.list_sessions(where, limit=50, before=before)

        def baseline() -> None:
            with store.engine.connect() as connection:
                connection.execute(
                    text(
                        "SELECT seq, core FROM nbguard_ledger_records WHERE seq > :s "
                        "ORDER BY seq LIMIT 50"
                    ),
                    {"s": total // 2},
                ).all()

        figures: dict[str, float] = {"baseline_select_ms": median_ms(baseline, repeat)}
        middle = index.list_sessions(SessionFilter(), limit=200).sessions[-1]["last_seq"]
        cases = {
            "list_first_page_ms": page(SessionFilter()),
            "list_user_ms": page(SessionFilter(user="user7")),
            "list_privileged_ms": page(SessionFilter(privileged=True)),
            "list_dataset_ms": page(SessionFilter(resource="dataset:ds3")),
            "list_deep_page_ms": page(SessionFilter(), before=middle),
        }
        for name, call in cases.items():
            figures[name] = median_ms(call, repeat)
        check = index.list_sessions(SessionFilter(), limit=50)
        assert check.total == sessions, (check.total, sessions)

        with Ledger(url=url, signing_key_file=str(root / "k"), synchronous="normal") as ledger:
            ledger.append_many(records(total, 1_000))
        started = time.perf_counter()
        refreshed = refresh_index(store, index)
        figures["refresh_1000_ms"] = (time.perf_counter() - started) * 1000
        assert refreshed == 1_000, refreshed

        status = LedgerStatus(True, total, "", total, None)
        one = f"{(sessions // 2):032x}"
        figures["timeline_ms"] = median_ms(lambda: review_from_store(store, index, one, status), 10)
        store.close()

    figures["index_build_records_per_s"] = round(total / index_s)
    baseline_ms = figures["baseline_select_ms"]
    print(f"records {total:,}, sessions {sessions:,}; index built in {index_s:.1f} s")
    for name, value in figures.items():
        if name.endswith("_ms") and name != "baseline_select_ms":
            print(f"{name:28s} {value:9.3f} ms  ({value / baseline_ms:6.1f}x baseline)")
        else:
            print(f"{name:28s} {value:9.3f}")
    print(json.dumps({"records": total, "sessions": sessions, **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
