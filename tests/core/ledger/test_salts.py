"""Salts: every record gets a fresh one for its personal part, across threads and forks."""

from __future__ import annotations

import os
import threading
import warnings

from nbguard.ledger.records import personal_values, prepare_record
from nbguard.ledger.schemas import packaged_schemas

from .conftest import access_body


def _salts_of(count: int) -> list[str]:
    schemas = packaged_schemas()
    salts = []
    for index in range(count):
        record = prepare_record(schemas, "access", access_body(index), actor="a", session=None)
        _values, salt = personal_values(record.personal)
        assert salt is not None
        salts.append(salt)
    return salts


def test_salts_are_never_reused_across_threads() -> None:
    """Records prepared at once on several threads never share a salt."""
    results: list[list[str]] = []

    def work() -> None:
        results.append(_salts_of(700))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    salts = [salt for batch in results for salt in batch]
    assert len(salts) == 4 * 700
    assert len(set(salts)) == len(salts)
    assert all(len(salt) == 32 and int(salt, 16) >= 0 for salt in salts)


def test_forked_child_does_not_reuse_the_parents_salts() -> None:
    """A child forked after salts were drawn gets fresh ones, not the rest of its parent's pool."""
    _salts_of(3)  # the pool now holds unused salts
    reader, writer = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about forking with threads about
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(writer, "\n".join(_salts_of(20)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = _salts_of(20)
    assert len(child) == 20
    assert not set(child) & set(parent)
