"""``nbguard replay SESSION``: one recorded session as a notebook or JSON Lines.

The source is a ledger database (URL or SQLite file; its session index is brought
up to date in the same database) or an export file (indexed in a temporary
database). With ``--key`` the whole ledger is verified too and the verdict goes
into the export's provenance; exit status 1 when records shown are not proven
intact, so a script cannot miss it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbguard.cli.ledger import _bar, _database_url, _progress_option, key_option
from nbguard.errors import ConfigError
from nbguard.ledger.ledger import DEFAULT_LEDGER_FILE

EXIT_OK = 0
EXIT_BROKEN = 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``replay``."""
    replay = subparsers.add_parser(
        "replay",
        help="export one recorded session as a notebook (.ipynb) or JSON Lines",
        description="Write a recorded session (login, spawns, cells with outputs, access "
        "decisions, elevations, alerts) with its provenance. Exit 1 if any record shown "
        "is not proven intact.",
    )
    replay.add_argument("session", metavar="SESSION", help="the session id")
    replay.add_argument(
        "-s",
        "--source",
        default=DEFAULT_LEDGER_FILE,
        metavar="SOURCE",
        help="the ledger: database URL, SQLite file, or JSONL export (default: "
        f"{DEFAULT_LEDGER_FILE}, where a hub without Ledger.url records)",
    )
    replay.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    replay.add_argument(
        "-f",
        "--format",
        choices=("ipynb", "jsonl"),
        help="output format (default: from the output file's suffix, else ipynb)",
    )
    key_option(
        replay,
        ". Without one, each record's own hash is checked but no checkpoint is.",
    )
    _progress_option(replay)
    replay.set_defaults(handler=_replay)


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.output and args.output.endswith(".jsonl"):
        return "jsonl"
    return "ipynb"


def _replay(args: argparse.Namespace) -> int:
    from nbguard.ledger.keys import load_public_keys
    from nbguard.review.entries import is_export
    from nbguard.review.exports import write_jsonl, write_notebook
    from nbguard.review.replay import open_store_review, review_from_export

    keys = load_public_keys(args.key)
    url = _database_url(args.source)
    bar = _bar(args, "indexing")
    try:
        if url is not None:
            review = open_store_review(url, args.session, keys, progress=bar.update)
        elif is_export(args.source):
            review = review_from_export(args.source, args.session, keys, progress=bar.update)
        else:
            raise ConfigError(f"{args.source} is neither a ledger database nor an export")
    finally:
        bar.finish()
    write = write_jsonl if _format(args) == "jsonl" else write_notebook
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            write(review, out)
    else:
        write(review, sys.stdout)
    first, last = review.seq_range
    where = f" to {args.output}" if args.output else ""
    print(
        f"session {review.session}: {len(review.entries)} records ({first}..{last}){where}",
        file=sys.stderr,
    )
    if review.broken:
        print(
            "FAILED: records not proven intact: " + ", ".join(map(str, review.broken)),
            file=sys.stderr,
        )
        return EXIT_BROKEN
    if not review.status.verified:
        print(f"note: ledger not verified ({review.status.message})", file=sys.stderr)
    return EXIT_OK
