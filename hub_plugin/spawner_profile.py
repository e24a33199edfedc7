"""Which profile a spawn asks for, checked before the policy sees it.

The profile comes from ``user_options["profile"]`` (KubeSpawner's form and the
REST API put it there), else from the spawner's own default (KubeSpawner's
``profile_list`` entry marked ``default``), else from
``PolicySpawnerMixin.default_profile``. ``user_options`` is whatever the client
sent, so the name is checked for shape before anything else uses it, and is
never echoed to the user unless it passed.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from nbguard.hub_plugin.spawner_refusal import bad_profile

#: A profile slug: what KubeSpawner's slugs and nbguard's entity ids have in common.
PROFILE_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


async def spawner_default_profile(spawner: Any) -> str:
    """The slug of the spawner's own default profile (KubeSpawner's ``profile_list``), or ""."""
    profiles = getattr(spawner, "profile_list", None)
    if callable(profiles):
        profiles = profiles(spawner)
        if inspect.isawaitable(profiles):
            profiles = await profiles
    if not isinstance(profiles, list) or not profiles:
        return ""
    chosen = next((p for p in profiles if isinstance(p, dict) and p.get("default")), profiles[0])
    slug = chosen.get("slug", "") if isinstance(chosen, dict) else ""
    return slug if isinstance(slug, str) else ""


def checked_profile(value: Any, *, source: str, known: Any) -> str:
    """``value`` as a profile slug the policy knows; SpawnRefused otherwise.

    ``known(slug)`` says whether the policy has a profile entity of that name.
    """
    if value is None or value == "":
        raise bad_profile(
            "no profile was chosen and this hub has no default profile. "
            "Choose a profile, or ask your hub administrator to set one.",
            f"no profile requested and none to assume ({source})",
        )
    if not isinstance(value, str):
        raise bad_profile(
            "the profile must be given by its name.",
            f"profile of type {type(value).__name__} from {source}: {ascii(value)[:200]}",
        )
    if not PROFILE_SLUG.match(value):
        raise bad_profile(
            "the requested profile is not a valid profile name.",
            f"malformed profile from {source}: {ascii(value)[:200]}",
        )
    if not known(value):
        raise bad_profile(
            f"there is no profile named {value}.",
            f"profile {value!r} from {source} is not a Profile entity of the policy",
        )
    return value


def record_name(value: Any) -> str:
    """A form of a requested profile that is safe to store (ASCII, bounded)."""
    if isinstance(value, str) and PROFILE_SLUG.match(value):
        return value
    return ascii(value)[:200]
