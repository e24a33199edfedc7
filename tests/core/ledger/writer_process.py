"""A ledger writer run as its own process by the crash and multi-process tests.

Usage: python writer_process.py URL SIGNING_KEY TAG THREADS COUNT
Appends COUNT records per thread (0: forever) and prints ``seq tag-thread-index``
for each acknowledged record, flushed at once, so the parent knows exactly what
was acknowledged even if this process is killed.
"""

from __future__ import annotations

import itertools
import sys
import threading

from nbguard.ledger import Ledger


def main() -> None:
    """Run the writer threads, then close the ledger cleanly (unless killed first)."""
    url, key, tag, threads, count = sys.argv[1:6]
    ledger = Ledger(
        url=url, signing_key_file=key, checkpoint_every=25, synchronous="full", max_delay=0.001
    )
    lock = threading.Lock()

    def work(thread: int) -> None:
        indexes = itertools.count() if int(count) == 0 else range(int(count))
        for index in indexes:
            mark = f"{tag}-{thread}-{index}"
            body = {
                "principal": 'User::"alice"',
                "action": 'Action::"read"',
                "resource": 'Dataset::"customers"',
                "allowed": True,
                "policy_ids": ["p"],
                "correlation_id": mark,
            }
            receipt = ledger.append("access", body, actor=f"user-{tag}")
            with lock:
                sys.stdout.write(f"{receipt.seq} {mark}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(int(threads))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ledger.close()


if __name__ == "__main__":
    main()
