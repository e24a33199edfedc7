"""The paths of files inside a dataset, as users send them (``2025/sales.csv``).

A path is relative to the dataset's root, ``/``-separated, already URL-decoded
once by the HTTP layer. It is refused (RequestError) unless it is plainly a name
inside the dataset on every backend fsspec may put behind it:

- not empty, at most 1024 characters, 32 segments, and 255 UTF-8 bytes a segment;
- no absolute path, no empty (``a//b``), ``.``, ``..`` or all-dot segments;
- no backslash (a separator on Windows and SMB), no ``:`` (drive letters, URL
  schemes, ``file:``, chained fsspec URLs, NTFS streams);
- no ``*``, ``?``, ``[``, ``]`` (fsspec expands them as globs in some calls), no
  ``#`` (URL fragments on HTTP backends) and no ``%`` (so a backend that decodes
  again cannot turn ``%2e%2e`` into ``..``);
- no control, format (bidi overrides, zero-width) or surrogate characters, and
  only NFC text, so two different strings never name the same file on a
  normalising filesystem, nor display as one another;
- no segment starting with ``~`` (home-directory expansion) or ``-`` (read as an
  option by the shell tools admins run over the store: ``rm``, ``tar``, ``aws s3``),
  no segment with leading or trailing spaces, and none of nbguard's reserved
  ``.nbguard-`` names (uploads in progress).
"""

from __future__ import annotations

import unicodedata

from nbguard.errors import RequestError

MAX_PATH_CHARS = 1024
MAX_SEGMENTS = 32
MAX_SEGMENT_BYTES = 255
#: Names nbguard keeps for itself inside dataset directories (uploads in progress).
RESERVED_PREFIX = ".nbguard-"
_FORBIDDEN = {
    "\\": "a backslash",
    ":": "':'",
    "*": "'*'",
    "?": "'?'",
    "[": "'['",
    "]": "']'",
    "#": "'#'",
    "%": "'%'",
}
# Cc control, Cf format (bidi overrides, zero-width), Cs surrogates (undecodable
# bytes), Co private use, Cn unassigned, Zl/Zp line and paragraph separators.
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _refuse(path: str, why: str) -> RequestError:
    shown = repr(path) if len(path) <= 100 else repr(path[:97]) + "..."
    message = f"invalid path {shown}: {why}"
    return RequestError(message, user_message=message)


def check_object_path(path: object) -> str:
    """Return ``path`` unchanged if it safely names a file or folder inside a dataset.

    Raise RequestError (its user_message says what is wrong) otherwise; see the
    module documentation for the rules.
    """
    if not isinstance(path, str):
        raise RequestError(f"path must be text, got {type(path).__name__}")
    if not path:
        raise _refuse(path, "it is empty")
    if len(path) > MAX_PATH_CHARS:
        raise _refuse(path, f"it is longer than {MAX_PATH_CHARS} characters")
    for char, name in _FORBIDDEN.items():
        if char in path:
            raise _refuse(path, f"it contains {name}")
    for char in path:
        if unicodedata.category(char) in _BAD_CATEGORIES:
            raise _refuse(path, f"it contains the character U+{ord(char):04X}")
    if not unicodedata.is_normalized("NFC", path):
        raise _refuse(path, "it is not in Unicode normal form C (NFC)")
    if path.startswith("/"):
        raise _refuse(path, "it is absolute; give a path inside the dataset")
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise _refuse(path, f"it has more than {MAX_SEGMENTS} parts")
    for segment in segments:
        _check_segment(path, segment)
    return path


def _check_segment(path: str, segment: str) -> None:
    if not segment:
        raise _refuse(path, "it has an empty part ('//' or a trailing '/')")
    if segment.strip(".") == "":
        raise _refuse(path, f"it has a {segment!r} part")
    if segment != segment.strip():
        raise _refuse(path, "a part starts or ends with a space")
    if segment[0] in "~-":
        raise _refuse(path, f"a part starts with {segment[0]!r}")
    if segment.startswith(RESERVED_PREFIX):
        raise _refuse(path, f"names starting with {RESERVED_PREFIX!r} are reserved")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise _refuse(path, f"a part is longer than {MAX_SEGMENT_BYTES} bytes")


def check_object_prefix(prefix: object) -> str:
    """Return the folder a listing names: ``""`` (the dataset root) or a checked path.

    One trailing ``/`` is accepted and removed (``2025/`` lists ``2025``).
    """
    if prefix == "":
        return ""
    if isinstance(prefix, str) and prefix.endswith("/") and prefix != "/":
        prefix = prefix[:-1]
    return check_object_path(prefix)


def is_valid_object_path(path: str) -> bool:
    """Whether ``path`` passes :func:`check_object_path` (for filtering listings)."""
    try:
        check_object_path(path)
    except RequestError:
        return False
    return True
