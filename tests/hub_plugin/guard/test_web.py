"""The guard service's request log: a debug line only where some handler writes it."""

from __future__ import annotations

import logging

import pytest

from nbguard.hub_plugin.guard.web import writes_debug


@pytest.fixture
def loggers() -> tuple[logging.Logger, logging.Logger]:
    """A parent logger and its child, both at DEBUG and without handlers; made outside
    logging's registry, so no other logger (the root, pytest's capture) is on their way."""
    parent = logging.Logger("nbguard-test-web", logging.DEBUG)
    child = logging.Logger("nbguard-test-web.child", logging.DEBUG)
    child.parent = parent
    return parent, child


def _handler(level: int) -> logging.Handler:
    handler = logging.NullHandler()
    handler.setLevel(level)
    return handler


@pytest.mark.parametrize(
    ("child_level", "parent_level", "propagate", "expected"),
    [
        pytest.param(logging.WARNING, None, True, False, id="traitlets-warn-console"),
        pytest.param(logging.DEBUG, None, True, True, id="debug-console"),
        pytest.param(logging.NOTSET, None, True, True, id="handler-without-level"),
        pytest.param(logging.WARNING, logging.DEBUG, True, True, id="debug-parent-handler"),
        pytest.param(logging.WARNING, logging.DEBUG, False, False, id="not-propagated"),
        pytest.param(None, None, True, False, id="no-handler"),
    ],
)
def test_writes_debug_follows_the_handlers(
    loggers: tuple[logging.Logger, logging.Logger],
    child_level: int | None,
    parent_level: int | None,
    propagate: bool,
    expected: bool,
) -> None:
    """A logger kept at DEBUG writes debug lines only if a handler on its way takes them."""
    parent, child = loggers
    if child_level is not None:
        child.addHandler(_handler(child_level))
    if parent_level is not None:
        parent.addHandler(_handler(parent_level))
    child.propagate = propagate
    assert writes_debug(child) is expected


def test_writes_debug_needs_the_logger_at_debug(
    loggers: tuple[logging.Logger, logging.Logger],
) -> None:
    """A logger above DEBUG writes no debug line, whatever its handlers take."""
    _parent, child = loggers
    child.addHandler(_handler(logging.DEBUG))
    child.setLevel(logging.INFO)
    assert not writes_debug(child)
    assert writes_debug(logging.LoggerAdapter(child, {})) is False
