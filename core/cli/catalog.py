"""``nbguard catalog``: manage the guard service's dataset catalog.

nbguard catalog import FILE [--db URL]     add or replace every dataset in a catalog YAML file
nbguard catalog list [--db URL] [--json]   every dataset, as a table or JSON
nbguard catalog show NAME [--db URL]       one dataset, with its storage location
nbguard catalog remove NAME [--db URL]     remove a dataset from the catalog (its files stay)

``--db`` defaults to the environment variable ``NBGUARD_GUARD_DB_URL``, the guard
service's database. This is an admin tool: it shows storage locations.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from nbguard.catalog.files import load_catalog_file
from nbguard.catalog.models import Dataset
from nbguard.catalog.store import CatalogStore
from nbguard.cli import EXIT_OK
from nbguard.cli.policy import _print_problems
from nbguard.errors import ConfigError, PolicyLoadError

DB_ENV = "NBGUARD_GUARD_DB_URL"
_TABLE_COLUMNS = ("name", "team", "owner", "sensitivity", "environment", "description")
_DESCRIPTION_WIDTH = 50


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``nbguard catalog ...``."""
    catalog = subparsers.add_parser("catalog", help="manage the dataset catalog")
    commands = catalog.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND")
    commands.required = True

    load = commands.add_parser("import", help="add or replace the datasets of a catalog file")
    load.add_argument("file", type=Path, help="catalog YAML file")
    _db_option(load)
    load.set_defaults(handler=_import)

    listing = commands.add_parser("list", help="list the datasets")
    _db_option(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="show one dataset, with its storage location")
    show.add_argument("name")
    _db_option(show)
    show.add_argument("--json", action="store_true", help="print a JSON object")
    show.set_defaults(handler=_show)

    remove = commands.add_parser("remove", help="remove a dataset (its files are kept)")
    remove.add_argument("name")
    _db_option(remove)
    remove.set_defaults(handler=_remove)


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get(DB_ENV, ""),
        help=f"the guard service's database URL (default: ${DB_ENV})",
    )


def _store(args: argparse.Namespace) -> CatalogStore:
    if not args.db:
        raise ConfigError(f"no catalog database: pass --db URL or set {DB_ENV}")
    return CatalogStore(args.db)


def _import(args: argparse.Namespace) -> int:
    try:
        datasets = load_catalog_file(args.file)
    except PolicyLoadError as error:
        return _print_problems(error)
    with _store(args) as store:
        count = store.upsert(datasets)
    print(f"Imported {count} dataset{'s' if count != 1 else ''} from {args.file}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        datasets = store.list()
    if args.json:
        print(json.dumps([d.to_dict(include_storage=True) for d in datasets], indent=2))
        return EXIT_OK
    rows = [[h.upper() for h in _TABLE_COLUMNS]] + [_table_row(d) for d in datasets]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_COLUMNS))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


def _table_row(dataset: Dataset) -> list[str]:
    values = dataset.to_dict()
    description = " ".join(values["description"].split())
    if len(description) > _DESCRIPTION_WIDTH:
        description = description[: _DESCRIPTION_WIDTH - 3] + "..."
    values["description"] = description
    return [values[c] or "-" for c in _TABLE_COLUMNS]


def _show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        dataset = store.get(args.name)
    values = dataset.to_dict(include_storage=True)
    if args.json:
        print(json.dumps(values, indent=2))
        return EXIT_OK
    values["storage"] = values["storage"] or "(the default store)"
    for key, value in values.items():
        print(f"{key + ':':<13}{value}")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.remove(args.name)
    print(f"Removed dataset {args.name!r} from the catalog; its files were not touched")
    return EXIT_OK
