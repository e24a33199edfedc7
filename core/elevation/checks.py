"""Checks on what callers pass to the elevation store.

Every refusal is a RequestError whose message names the field and says why; it
is shown to users as is (``user_message``), so it never echoes more than the
field's name and the rule broken. Nothing is normalised: ``"alice "`` is refused,
never quietly read as ``"alice"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbguard.elevation.models import KINDS, LOCK_KINDS
from nbguard.elevation.rules import ApprovalRule
from nbguard.errors import RequestError
from nbguard.policy.refs import EntityRef, parse_action
from nbguard.policy.vocabulary import ENVIRONMENTS, NO_ENVIRONMENT, SENSITIVITIES

MAX_NAME = 255
MAX_TEXT = 2000
_TEXT_CONTROLS = "\n\t"


def refuse(message: str) -> RequestError:
    """A RequestError whose message users may see."""
    return RequestError(message, user_message=message)


def name(field: str, value: Any, *, limit: int = MAX_NAME) -> str:
    """A user, role or device name: 1..limit printable characters, no outer spaces."""
    if not isinstance(value, str) or not value:
        raise refuse(f"{field} is required")
    if len(value) > limit:
        raise refuse(f"{field} is longer than {limit} characters")
    if not value.isprintable() or value != value.strip():
        raise refuse(f"{field} must be printable characters without leading or trailing spaces")
    return value


def text(field: str, value: Any, *, required: bool) -> str:
    """Free text (reason, comment): at most MAX_TEXT characters, line breaks and tabs allowed;
    returned stripped. ``required`` refuses text that is empty after stripping."""
    if not isinstance(value, str):
        raise refuse(f"{field} must be text")
    if len(value) > MAX_TEXT:
        raise refuse(f"{field} is longer than {MAX_TEXT} characters")
    if not all(char.isprintable() or char in _TEXT_CONTROLS for char in value):
        raise refuse(f"{field} contains control characters")
    stripped: str = value.strip()
    if required and not stripped:
        raise refuse(f"{field} is required")
    return stripped


def choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise refuse(f"{field} must be one of {', '.join(choices)}")
    return str(value)


def what(role: Any, action: Any, target: Any, sensitivity: Any) -> str:
    """Check what is asked for: a role, or an action on a target; return the kind.

    ``sensitivity`` is the target's; a role request may leave it empty.
    """
    if not all(isinstance(value, str) for value in (role, action, target)):
        raise refuse("role, action and target must be text")
    if role and (action or target):
        raise refuse("ask for either a role, or an action on a target, not both")
    if role:
        name("role", role, limit=128)
        choice("sensitivity", sensitivity, ("", *SENSITIVITIES))
        return KINDS[0]
    if not action or not target:
        raise refuse("ask for a role, or for an action together with its target")
    if _parsed(parse_action, action) != action:
        raise refuse("action must be an action name like dataset.read")
    if _parsed(lambda key: str(EntityRef.parse(key)), target) != target:
        raise refuse("target must be a resource key like dataset:customers")
    choice("sensitivity", sensitivity, SENSITIVITIES)
    return KINDS[1]


def _parsed(parse: Callable[[str], str], value: str) -> str:
    # The parsers accept other spellings; only the canonical one is stored.
    try:
        return parse(value)
    except RequestError:
        return ""


def duration(value: Any, rule: ApprovalRule) -> int:
    """A whole number of seconds from 1 to the rule's maximum."""
    limit = rule.max_duration_seconds
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise refuse(f"duration_seconds must be a whole number from 1 to {limit}")
    return value


def environment(value: Any) -> str:
    """An environment of the vocabulary, or ``none`` (a request made at the hub)."""
    return choice("environment", value, (*ENVIRONMENTS, NO_ENVIRONMENT))


def lock_kind(value: Any) -> str:
    """``user`` or ``device``."""
    return choice("kind", value, LOCK_KINDS)


def same_person(first: str, second: str) -> bool:
    """Whether two names are the same person, ignoring case (a second line of defence
    for authenticators that do not normalise names)."""
    return first.casefold() == second.casefold()
