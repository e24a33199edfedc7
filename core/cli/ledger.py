"""``nbguard ledger ...`` and ``nbguard verify``: keys, export and verification of the ledger.

``nbguard verify SOURCE --key PUB`` exits 0 only when the chain and every
checkpoint verify; otherwise it prints the first sequence number not proven
intact and what is wrong, and exits 1. SOURCE is a database URL, an SQLite file,
or a JSONL export (full or redacted).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

from nbguard.errors import ConfigError, LedgerIntegrityError

EXIT_OK = 0
EXIT_FAILED = 1
_SQLITE_MAGIC = b"SQLite format 3\0"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``ledger keygen``, ``ledger export`` and ``verify``."""
    ledger = subparsers.add_parser("ledger", help="manage the audit ledger")
    commands = ledger.add_subparsers(dest="ledger_command", metavar="COMMAND")
    commands.required = True

    keygen = commands.add_parser(
        "keygen",
        help="write a new Ed25519 checkpoint-signing key pair (mode 0600; missing "
        "directories are created with mode 0700)",
    )
    keygen.add_argument("private_key", metavar="PRIVATE_KEY", help="where to write the private key")
    keygen.add_argument(
        "--public", metavar="PUBLIC_KEY", help="where to write the public key (PRIVATE_KEY.pub)"
    )
    keygen.set_defaults(handler=_keygen)

    export = commands.add_parser("export", help="export the ledger as JSON Lines")
    export.add_argument("source", metavar="URL", help="the ledger's database URL or SQLite file")
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.add_argument(
        "--redact",
        action="store_true",
        help="replace personal fields by their commitments (the export still verifies)",
    )
    _progress_option(export)
    export.set_defaults(handler=_export)

    verify = subparsers.add_parser(
        "verify",
        help="prove the audit ledger was not tampered with",
        description="Verify the hash chain and every signed checkpoint of a ledger. "
        "Exit 0 if intact; otherwise print the first broken sequence number and exit 1.",
    )
    verify.add_argument(
        "source", metavar="SOURCE", help="database URL, SQLite file, or JSONL export"
    )
    key_option(verify)
    verify.add_argument(
        "-w",
        "--witness",
        metavar="FILE",
        help="witness file of published checkpoints (detects a rolled-back database)",
    )
    verify.add_argument(
        "--allow-unsigned-tail",
        type=int,
        default=0,
        metavar="N",
        help="accept up to N records after the last checkpoint (a live ledger); default 0",
    )
    verify.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help="processes checking a database's records (default: one per core, up to 4, "
        "for ledgers of 50,000 records or more; 1 for a single process)",
    )
    _progress_option(verify)
    verify.set_defaults(handler=_verify)


def key_option(parser: argparse.ArgumentParser, note: str = "") -> None:
    """Add ``-k/--key PUBLIC_KEY`` (repeatable) to a command that verifies checkpoints."""
    parser.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="PUBLIC_KEY",
        help="public key (PEM) that may have signed checkpoints; repeat for rotated keys" + note,
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )


class ProgressBar:
    """A one-line progress bar on a stream, redrawn at most ten times a second."""

    def __init__(self, label: str, stream: IO[str], enabled: bool) -> None:
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.total = 0
        self._drawn = 0.0

    def set_total(self, total: int) -> None:
        """Set the number of records expected."""
        self.total = total

    def update(self, done: int, *, force: bool = False) -> None:
        """Redraw with ``done`` records processed."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        total = max(self.total, done, 1)
        filled = int(30 * done / total)
        bar = "#" * filled + "-" * (30 - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done:,}/{total:,} records")
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _bar(args: argparse.Namespace, label: str) -> ProgressBar:
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    return ProgressBar(label, sys.stderr, enabled)


def _database_url(source: str) -> str | None:
    """Return the database URL for SOURCE, or None if it names an export file."""
    if "://" in source:
        return source
    path = Path(source)
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise ConfigError(f"cannot read {source}: {error.strerror}") from None
    return f"sqlite:///{path.resolve()}" if magic == _SQLITE_MAGIC else None


def _keygen(args: argparse.Namespace) -> int:
    from nbguard.ledger.keys import generate_key_pair

    public = args.public or f"{args.private_key}.pub"
    key_id = generate_key_pair(args.private_key, public)
    print(f"wrote {args.private_key} (private) and {public} (public), key id {key_id}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from nbguard.ledger.export import write_export
    from nbguard.ledger.store import LedgerStore

    url = _database_url(args.source)
    if url is None:
        raise ConfigError(f"{args.source} is not a database; export reads a ledger database")
    store = LedgerStore(url, create=False)
    bar = _bar(args, "exporting")
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                count = write_export(
                    store, out, redact=args.redact, progress=bar.update, on_total=bar.set_total
                )
        else:
            count = write_export(
                store, sys.stdout, redact=args.redact, progress=bar.update, on_total=bar.set_total
            )
    finally:
        store.close()
        bar.finish()
    if args.output:
        print(f"exported {count} records to {args.output}", file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from nbguard.ledger.keys import load_public_keys
    from nbguard.ledger.store import LedgerStore
    from nbguard.ledger.verify import verify_export, verify_store
    from nbguard.ledger.witness import read_witness_file

    if args.allow_unsigned_tail < 0:
        raise ConfigError("--allow-unsigned-tail must not be negative")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    keys = load_public_keys(args.key)
    url = _database_url(args.source)
    bar = _bar(args, "verifying")
    options: dict[str, Any] = {
        "allow_unsigned_tail": args.allow_unsigned_tail,
        "progress": bar.update,
        "on_total": bar.set_total,
    }
    try:
        witness = read_witness_file(args.witness) if args.witness else []
        if url is None:
            report = verify_export(args.source, keys, witness=witness, **options)
        else:
            store = LedgerStore(url, create=False)
            try:
                report = verify_store(store, keys, witness=witness, jobs=args.jobs, **options)
            finally:
                store.close()
    except LedgerIntegrityError as error:
        bar.finish()
        where = f"record {error.seq}" if error.seq is not None else "input"
        print(f"FAILED at {where}: {error}")
        return EXIT_FAILED
    bar.update(report.records, force=True)
    bar.finish()
    keys_used = ", ".join(sorted(report.key_ids)) or "none"
    print(
        f"OK: {report.records} records intact, head {report.head}; "
        f"{report.checkpoints} checkpoints"
        + (f" (+{report.witness_checkpoints} from the witness)" if args.witness else "")
        + f" signed by {keys_used}"
    )
    if report.unsigned_tail:
        print(
            f"note: records {report.last_signed_seq + 1}..{report.records} are chained "
            "but not covered by a checkpoint yet"
        )
    return EXIT_OK
