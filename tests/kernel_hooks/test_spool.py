"""The spool, the shipper and the record encoding, in this process (no kernel, no network)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbguard.kernel_hooks.identity import ServerEnvironment, Stream
from nbguard.kernel_hooks.recorder import PENDING_SHA256, Cell, Recorder, complete_line
from nbguard.kernel_hooks.shipper import Answer, Shipper
from nbguard.kernel_hooks.spool import QUARANTINE, Spool

ENVIRONMENT = ServerEnvironment("http://guard.invalid/services/nbguard-guard/", "t" * 32, "u", "/")


class FakeGuard:
    """Answers the shipper's requests from a script, keeping what it accepted."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.records: list[dict[str, Any]] = []
        self.batches = 0

    def __call__(self, method: str, url: str, body: bytes | None) -> Answer:
        if method == "GET":
            return Answer(200, b"{}")
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            assert body is not None
            envelope = json.loads(body)
            assert envelope["witness"] == "kernel"
            self.records.extend(envelope["records"])
            self.batches += 1
        return Answer(status, b'{"error": {"message": "scripted"}}')


def spool_in(directory: Path, kernel_id: str = "k-1") -> Spool:
    """An open spool for a stream of ``kernel_id``."""
    spool = Spool(directory, kernel_id, "i-1")
    spool.open()
    return spool


def record(seq: int, **fields: Any) -> bytes:
    """A spool line."""
    return (
        json.dumps({"kernel_id": "k-1", "instance": "i-1", "seq": seq, **fields}) + "\n"
    ).encode()


def test_batches_respect_the_size_limit_and_keep_order(tmp_path: Path) -> None:
    """More records than a batch holds go in several batches, in spool order, once."""
    spool = spool_in(tmp_path)
    for seq in range(23):
        spool.append(record(seq))
    guard = FakeGuard()
    shipper = Shipper(spool, ENVIRONMENT, batch_size=5, send=guard)
    assert shipper.ship_pending() is True
    assert [r["seq"] for r in guard.records] == list(range(23))
    assert guard.batches == 5
    assert shipper.pending() is False


def test_a_failed_batch_is_kept_and_sent_again(tmp_path: Path) -> None:
    """After 503 and a refused connection nothing is acknowledged; the next round sends it."""
    spool = spool_in(tmp_path)
    spool.append(record(0))
    guard = FakeGuard(503, 0)
    shipper = Shipper(spool, ENVIRONMENT, send=guard, retry_initial=1.0, retry_max=8.0)
    assert shipper.ship_pending() is False
    assert shipper.ship_pending() is False
    assert 1.0 <= shipper.backoff() <= 2.0  # 2 s step after two failures: half fixed, half jitter
    assert shipper.ship_pending() is True
    assert [r["seq"] for r in guard.records] == [0]


def test_a_torn_last_line_of_a_dead_kernel_is_quarantined(tmp_path: Path) -> None:
    """A dead writer's partial last line is set aside; its complete lines are shipped."""
    dead = tmp_path / "k-0.i-0.000000.jsonl"
    dead.write_bytes(record(0) + record(1) + b'{"kernel_id": "k-0", "se')
    spool = spool_in(tmp_path)
    guard = FakeGuard()
    shipper = Shipper(spool, ENVIRONMENT, send=guard)
    shipper.ship_pending()
    assert [r["seq"] for r in guard.records] == [0, 1]
    (entry,) = [json.loads(x) for x in (tmp_path / QUARANTINE).read_text().splitlines()]
    assert entry["reason"] == "incomplete record"
    assert not dead.exists()


def test_a_live_kernels_segment_is_not_adopted(tmp_path: Path) -> None:
    """Another process's segment that is still locked is left to its owner."""
    owner = spool_in(tmp_path, "k-live")
    owner.append(record(0))
    other = spool_in(tmp_path, "k-other")
    assert list(other.orphans()) == []
    owner.close(remove_if_done=False)
    (adopted,) = list(other.orphans())
    assert adopted.path.name.startswith("k-live.")
    adopted.close()


def test_the_acked_mark_survives_a_new_owner(tmp_path: Path) -> None:
    """Records accepted before a kernel died are not sent again by the kernel that adopts it."""
    first = spool_in(tmp_path, "k-a")
    for seq in range(4):
        first.append(record(seq))
    segment, committed = first.snapshot()
    assert segment is not None
    lines, _ = segment.lines(committed, 2, 1 << 20)
    segment.ack(lines[-1].end)
    first.close(remove_if_done=False)
    guard = FakeGuard()
    Shipper(spool_in(tmp_path, "k-b"), ENVIRONMENT, send=guard).ship_pending()
    assert [r["seq"] for r in guard.records] == [2, 3]


def test_full_segments_are_shipped_in_order_and_removed(tmp_path: Path) -> None:
    """Records go on in a new segment when one is full; all arrive in order, and the
    full segments are removed once the guard has them."""
    spool = Spool(tmp_path, "k-1", "i-1", segment_bytes=2048)
    spool.open()
    first = spool.current
    assert first is not None
    guard = FakeGuard()
    shipper = Shipper(spool, ENVIRONMENT, send=guard)
    for seq in range(12):
        assert spool.append(record(seq, code="x" * 500))
        if seq == 5:
            shipper.ship_pending()  # prepares the next segment ahead of need, too
    assert len(spool.retired) >= 2
    shipper.ship_pending()
    assert [r["seq"] for r in guard.records] == list(range(12))
    assert spool.retired == []
    assert not first.path.exists()
    spool.close()
    assert list(tmp_path.glob("*.jsonl")) == []


def test_threads_appending_at_once_lose_no_record(tmp_path: Path) -> None:
    """Cells in several threads (subshells) appending while segments fill and switch:
    every record is kept once and whole, in its thread's order."""
    spool = Spool(tmp_path, "k-1", "i-1", segment_bytes=4096)
    spool.open()
    threads, count = 4, 400

    def write(thread: int) -> None:
        for i in range(count):
            assert spool.append(record(i, thread=thread, code="x" * (i % 300)))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    current, committed = spool.snapshot()
    assert current is not None
    segments = [(old, old.sealed) for old in spool.retired] + [(current, committed)]
    seen: dict[int, list[int]] = {t: [] for t in range(threads)}
    for segment, end in segments:
        assert end is not None
        for line in segment.lines(end, 1 << 20, 1 << 30)[0]:
            value = json.loads(line.data)
            seen[value["thread"]].append(value["seq"])
    assert spool.lost == 0
    assert seen == {t: list(range(count)) for t in range(threads)}
    spool.close(remove_if_done=False)


@pytest.fixture
def shell() -> Iterator[Any]:
    """IPython's shell in this process, history in memory."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    yield shell
    InteractiveShell.clear_instance()


def recorded_line(tmp_path: Path, shell: Any, code: str) -> bytes:
    """The spool line a recorder writes for one ``run_cell(code)``."""
    spool = spool_in(tmp_path)
    recorder = Recorder(shell, Stream("k-1"), spool, max_code_bytes=1024)
    recorder.install()
    try:
        shell.run_cell(code, store_history=True)
    finally:
        recorder.uninstall()
    segment, committed = spool.snapshot()
    assert segment is not None
    (line,) = segment.lines(committed, 10, 1 << 20)[0]
    return line.data


@pytest.mark.parametrize(
    "code",
    [
        pytest.param('s = "quote \\" and backslash \\\\"', id="escapes"),
        pytest.param("t = 'line\\nbreak'\nu = 1\t# tab", id="newlines-tabs"),
        pytest.param("v = 'é ü 中文 🙂'", id="non-ascii"),
        pytest.param("w = '\u2028\u2029'", id="line-separators"),
        pytest.param("x = '\x00\x1f'", id="control-characters"),
        pytest.param(f'y = \',"code_sha256":"{PENDING_SHA256}"\'', id="placeholder-in-code"),
    ],
)
def test_record_lines_are_the_json_the_contract_describes(
    tmp_path: Path, shell: Any, code: str
) -> None:
    """A record as shipped is exactly json.dumps of its fields (compact, non-ASCII kept),
    with the SHA-256 of the source, whether the cell path or the shipper took it."""
    line = complete_line(recorded_line(tmp_path, shell, code))
    value = json.loads(line)
    assert line.decode() == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert value["code"] == code
    assert value["code_sha256"] == hashlib.sha256(code.encode()).hexdigest()
    assert value["seq"] == 0


def test_an_ascii_sources_hash_is_left_to_the_shipper(tmp_path: Path, shell: Any) -> None:
    """The cell path spools an ASCII source's record with the hash pending; the shipper
    sends it filled in, and the rest of the line unchanged."""
    spooled = recorded_line(tmp_path, shell, "x = 1")
    assert json.loads(spooled)["code_sha256"] == PENDING_SHA256
    shipped = complete_line(spooled)
    assert shipped == spooled.replace(
        PENDING_SHA256.encode(), hashlib.sha256(b"x = 1").hexdigest().encode()
    )
    assert complete_line(shipped) == shipped


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b'{"seq":0,"code_sha256":"' + b"-" * 64 + b'"}', id="no-code-field"),
        pytest.param(
            b'{"seq":0,"code":"x = \\q","code_sha256":"' + b"-" * 64 + b'"}', id="bad-escape"
        ),
        pytest.param(b'{"seq":0,"code":5,"code_sha256":"' + b"-" * 64 + b'"}', id="not-a-string"),
    ],
)
def test_a_line_whose_hash_cannot_be_filled_in_is_left_for_the_guard_to_refuse(
    line: bytes,
) -> None:
    """A spooled line that does not parse keeps the placeholder, which the guard refuses."""
    assert complete_line(line) == line


def test_the_shipper_sends_records_with_the_hash_filled_in(tmp_path: Path, shell: Any) -> None:
    """Records spooled with a pending hash reach the guard with the source's SHA-256."""
    spool = spool_in(tmp_path)
    recorder = Recorder(shell, Stream("k-1"), spool, max_code_bytes=1024)
    recorder.install()
    try:
        for code in ("a = 1", "b = 'é'", "c = 3"):
            shell.run_cell(code, store_history=True)
    finally:
        recorder.uninstall()
    guard = FakeGuard()
    Shipper(spool, ENVIRONMENT, send=guard).ship_pending()
    assert [r["code"] for r in guard.records] == ["a = 1", "b = 'é'", "c = 3"]
    for shipped in guard.records:
        assert shipped["code_sha256"] == hashlib.sha256(shipped["code"].encode()).hexdigest()


def test_a_lone_surrogate_is_hashed_as_is_and_recorded_replaced(tmp_path: Path, shell: Any) -> None:
    """Source with a lone surrogate (IPython cannot run it, a request can carry it) is
    recorded as valid UTF-8, its hash taken over the original."""
    spool = spool_in(tmp_path)
    recorder = Recorder(shell, Stream("k-1"), spool, max_code_bytes=1024)
    request = {"header": {"msg_id": "m-1"}, "content": {"code": "s = '\ud800'"}}
    recorder._write(Cell(request), None, status="aborted")
    segment, committed = spool.snapshot()
    assert segment is not None
    (line,) = segment.lines(committed, 10, 1 << 20)[0]
    value = json.loads(line.data)
    assert value["code"] == "s = '?'"
    assert (
        value["code_sha256"]
        == hashlib.sha256("s = '\ud800'".encode("utf-8", "surrogatepass")).hexdigest()
    )
    assert "code_truncated" not in value
    assert value["msg_id"] == "m-1"
    assert value["status"] == "aborted"


def test_long_code_is_cut_but_hashed_whole(tmp_path: Path, shell: Any) -> None:
    """Source over max_code_bytes is cut (code_truncated) and code_sha256 covers all of it."""
    code = "# " + "é" * 2000 + "\nz = 1"
    value = json.loads(recorded_line(tmp_path, shell, code))
    assert value["code_truncated"] is True
    assert len(value["code"].encode()) <= 1024
    assert code.startswith(value["code"])
    assert value["code_sha256"] == hashlib.sha256(code.encode()).hexdigest()
