"""Object paths and listing prefixes: what users may name inside a dataset."""

from __future__ import annotations

import pytest

from nbguard.catalog.paths import check_object_path, check_object_prefix, is_valid_object_path
from nbguard.errors import RequestError

GOOD = [
    pytest.param("sales.csv", id="file"),
    pytest.param("2025/sales.csv", id="nested"),
    pytest.param("a/b/c/d.parquet", id="deep"),
    pytest.param(".hidden", id="dotfile"),
    pytest.param("a..b", id="inner-dots"),
    pytest.param("report~1.csv", id="inner-tilde"),
    pytest.param("x-y_z.csv", id="inner-dash"),
    pytest.param("données/été.csv", id="nfc-unicode"),
    pytest.param("with space.csv", id="inner-space"),
    pytest.param("/".join(["a"] * 32), id="32-parts"),
    pytest.param("é" * 127, id="254-bytes"),
    pytest.param("a" * 255, id="255-bytes"),
]

BAD = [
    pytest.param("", "empty", id="empty"),
    pytest.param("/etc/passwd", "absolute", id="absolute"),
    pytest.param("//server/share", "absolute", id="unc-like"),
    pytest.param("..", "'..' part", id="dotdot"),
    pytest.param("../other/x", "'..' part", id="dotdot-first"),
    pytest.param("a/../../x", "'..' part", id="dotdot-middle"),
    pytest.param("a/..", "'..' part", id="dotdot-last"),
    pytest.param(".", "'.' part", id="dot"),
    pytest.param("./a", "'.' part", id="dot-first"),
    pytest.param("a/./b", "'.' part", id="dot-middle"),
    pytest.param("...", "'...' part", id="three-dots"),
    pytest.param("a//b", "empty part", id="double-slash"),
    pytest.param("a/", "empty part", id="trailing-slash"),
    pytest.param("..\\windows", "backslash", id="backslash-dotdot"),
    pytest.param("a\\b", "backslash", id="backslash"),
    pytest.param("a\x00b", "U+0000", id="nul"),
    pytest.param("a\nb", "U+000A", id="newline"),
    pytest.param("a\rb", "U+000D", id="carriage-return"),
    pytest.param("a\x1b(0b", "U+001B", id="escape"),
    pytest.param("a\x7fb", "U+007F", id="delete"),
    pytest.param("evil\u202egnp.exe", "U+202E", id="bidi-override"),
    pytest.param("a\u200bb", "U+200B", id="zero-width-space"),
    pytest.param("a\u2028b", "U+2028", id="line-separator"),
    pytest.param("a\udcffb", "U+DCFF", id="lone-surrogate"),
    pytest.param("cafe\u0301.csv", "NFC", id="decomposed-unicode"),
    pytest.param("~/.ssh/id_rsa", "starts with '~'", id="home"),
    pytest.param("~root/x", "starts with '~'", id="tilde-user"),
    pytest.param("a/~b", "starts with '~'", id="tilde-segment"),
    pytest.param("-rf", "starts with '-'", id="option-like"),
    pytest.param("a/--help", "starts with '-'", id="option-like-nested"),
    pytest.param("file:///etc/passwd", "':'", id="file-url"),
    pytest.param("file:x", "':'", id="file-scheme"),
    pytest.param("s3://other-bucket/x", "':'", id="s3-url"),
    pytest.param("simplecache::s3://b/x", "':'", id="chained-url"),
    pytest.param("C:/Windows", "':'", id="drive-letter"),
    pytest.param("a.txt:stream", "':'", id="ntfs-stream"),
    pytest.param("*", "'*'", id="glob-star"),
    pytest.param("a/**", "'*'", id="glob-recursive"),
    pytest.param("a?.csv", "'?'", id="glob-question"),
    pytest.param("[ab].csv", "'['", id="glob-class"),
    pytest.param("a]", "']'", id="bracket-close"),
    pytest.param("x#frag", "'#'", id="fragment"),
    pytest.param("%2e%2e/x", "'%'", id="percent-dotdot"),
    pytest.param("%252e", "'%'", id="double-encoded"),
    pytest.param(" a", "space", id="leading-space"),
    pytest.param("a /b", "space", id="trailing-space-segment"),
    pytest.param("a/\u00a0", "space", id="nbsp-only"),
    pytest.param(".nbguard-upload-123", "reserved", id="reserved-name"),
    pytest.param("a" * 1025, "longer than 1024", id="too-long"),
    pytest.param("/".join(["a"] * 33), "more than 32", id="too-many-parts"),
    pytest.param("a" * 256, "255 bytes", id="segment-too-long"),
    pytest.param("é" * 128, "255 bytes", id="segment-too-many-bytes"),
]


@pytest.mark.parametrize("path", GOOD)
def test_good_paths_are_returned_unchanged(path: str) -> None:
    """Plain relative names inside the dataset pass as they are."""
    assert check_object_path(path) == path
    assert is_valid_object_path(path)


@pytest.mark.parametrize(("path", "why"), BAD)
def test_bad_paths_are_refused(path: str, why: str) -> None:
    """Traversal, URL, glob, encoding and control-character tricks raise RequestError saying why."""
    with pytest.raises(RequestError) as caught:
        check_object_path(path)
    assert why in caught.value.user_message
    assert caught.value.user_message.startswith("invalid path")
    assert not is_valid_object_path(path)


def test_non_text_path_is_refused() -> None:
    """A path that is not a string is a RequestError, not a TypeError."""
    with pytest.raises(RequestError, match="path must be text"):
        check_object_path(b"a")


def test_long_path_is_shortened_in_the_message() -> None:
    """The message quotes at most about 100 characters of a long path."""
    with pytest.raises(RequestError) as caught:
        check_object_path("a" * 5000)
    assert len(caught.value.user_message) < 200


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param("", "", id="root"),
        pytest.param("2025", "2025", id="folder"),
        pytest.param("2025/", "2025", id="trailing-slash"),
        pytest.param("a/b/", "a/b", id="nested-trailing-slash"),
    ],
)
def test_prefixes(prefix: str, expected: str) -> None:
    """A prefix is "" for the root, or a path with at most one trailing slash removed."""
    assert check_object_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["/", "//", "a//", "../", "..", "/etc/", "~/", "a/../"], ids=str)
def test_bad_prefixes_are_refused(prefix: str) -> None:
    """Prefixes follow the path rules (one trailing slash aside)."""
    with pytest.raises(RequestError):
        check_object_prefix(prefix)
