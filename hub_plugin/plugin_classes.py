"""Resolve a JupyterHub plugin class given as a class or an entry-point name."""

from __future__ import annotations

from importlib.metadata import entry_points

from nbguard.errors import ConfigError


def resolve_plugin_class(base: type | str, group: str, expected: type) -> type:
    """The class ``base`` names: itself, or the entry point ``base`` in ``group``.

    Raises ConfigError for an unknown name or a class that is not an ``expected``.
    """
    if isinstance(base, str):
        found = [ep for ep in entry_points(group=group) if ep.name == base]
        if not found:
            names = ", ".join(sorted(ep.name for ep in entry_points(group=group)))
            raise ConfigError(f"no {group} entry point named {base!r}; known: {names}")
        cls = found[0].load()
    else:
        cls = base
    if not isinstance(cls, type) or not issubclass(cls, expected):
        raise ConfigError(f"{cls!r} is not a subclass of {expected.__name__}")
    return cls
