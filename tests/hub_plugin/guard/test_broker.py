"""The broker's Range header parsing (pure: no server)."""

from __future__ import annotations

import pytest

from nbguard.hub_plugin.guard.http_range import ByteRange, RangeNotSatisfiable, parse_range

SIZE = 100


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("bytes=0-9", (0, 9), id="first-last"),
        pytest.param("bytes=10-", (10, 99), id="open-ended"),
        pytest.param("bytes=-10", (90, 99), id="suffix"),
        pytest.param("bytes=-1000", (0, 99), id="suffix-longer-than-file"),
        pytest.param("bytes=90-1000", (90, 99), id="last-clamped"),
        pytest.param("bytes=99-99", (99, 99), id="last-byte"),
        pytest.param("BYTES=0-0", (0, 0), id="unit-case-insensitive"),
        pytest.param("bytes= 5-6 ", (5, 6), id="whitespace"),
        pytest.param("bytes=5-6,", (5, 6), id="empty-list-element"),
        pytest.param("bytes=0-1,5-6", None, id="multiple-ranges-served-whole"),
        pytest.param("bytes=9-3", None, id="last-before-first-ignored"),
        pytest.param("bytes=a-b", None, id="not-numbers"),
        pytest.param("bytes=-", None, id="no-numbers"),
        pytest.param("bytes=1-2-3", None, id="extra-dash"),
        pytest.param("bytes=+1-2", None, id="signed"),
        pytest.param("bytes=0x10-", None, id="hex"),
        pytest.param("bytes=" + "9" * 30 + "-", None, id="absurdly-long-number"),
        pytest.param("items=0-9", None, id="other-unit"),
        pytest.param("bytes 0-9", None, id="no-equals"),
        pytest.param("bytes=", None, id="empty-set"),
        pytest.param("", None, id="empty"),
    ],
)
def test_range_header_cases(header: str | None, expected: tuple[int, int] | None) -> None:
    """Single ranges are served clamped; malformed or multiple ranges mean the whole file."""
    found = parse_range(header, SIZE)
    if expected is None:
        assert found is None
    else:
        assert found == ByteRange(expected[0], expected[1], SIZE)
        assert found.length == expected[1] - expected[0] + 1
        assert found.content_range() == f"bytes {expected[0]}-{expected[1]}/{SIZE}"


@pytest.mark.parametrize(
    ("header", "size"),
    [
        pytest.param("bytes=100-", 100, id="start-at-end"),
        pytest.param("bytes=500-600", 100, id="start-past-end"),
        pytest.param("bytes=-0", 100, id="empty-suffix"),
        pytest.param("bytes=0-", 0, id="empty-file"),
        pytest.param("bytes=-5", 0, id="suffix-of-empty-file"),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    """A well-formed single range outside the file is refused with the file's size."""
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, size)
    assert caught.value.size == size
