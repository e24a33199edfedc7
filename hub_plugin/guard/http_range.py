"""The ``Range`` request header (RFC 9110, section 14), for the dataset broker.

Only single byte ranges are served. What a header means for a file of ``size``
bytes:

- absent, malformed, another unit, or more than one range: the whole file
  (200). RFC 9110 lets a server ignore ``Range``; serving several ranges as
  ``multipart/byteranges`` would buy clients little and cost a second code path;
- ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` that overlaps the file: that
  part (206), ``b`` and ``n`` clamped to the file;
- a well-formed single range that does not overlap the file (``bytes=a-`` with
  ``a >= size``, ``bytes=-0``, any range of an empty file):
  :class:`RangeNotSatisfiable` (416 with ``Content-Range: bytes */size``).

This module is pure: no I/O, no framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: ``first-pos "-" [last-pos]`` or ``"-" suffix-length``; at most 19 digits (< 2**63).
_SPEC = re.compile(r"^(?:(\d{1,19})-(\d{0,19})|-(\d{1,19}))$")


class RangeNotSatisfiable(Exception):
    """A single, well-formed range that selects no byte of the file."""

    def __init__(self, size: int) -> None:
        super().__init__(f"no byte of a {size}-byte file is in the range")
        self.size = size


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start + 1

    def content_range(self) -> str:
        """The ``Content-Range`` header value of a 206 answer."""
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` asks of a ``size``-byte file, or None for the whole file.

    Raises RangeNotSatisfiable for a well-formed range outside the file.
    """
    if header is None:
        return None
    unit, equals, ranges = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    # A list may hold empty elements ("a, , b"): RFC 9110 section 5.6.1.
    specs = [spec.strip(" \t") for spec in ranges.split(",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:
        return None
    match = _SPEC.match(specs[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        wanted = int(suffix)
        if wanted == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(size - wanted, 0), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignore the header
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end, size)
