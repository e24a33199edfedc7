"""``ModelGateway``: the service's link to the registry and what it knows about models.

It holds the upstream client and the admin's settings, and answers "what are this
model's policy attributes?" from the registry (read with the service's own
credentials), caching each answer for ``GuardService.mlflow_cache_seconds``. The
gateway forgets a model as soon as it changes the model's tags or deletes it, so
this replica never decides on attributes it has just replaced.

It also remembers, for as long, the entity each read was last decided on (a model,
or one of its versions): the guess a read is decided on early, while the registry
answers (see :class:`~nbguard.hub_plugin.guard.mlflow.base.EarlyDecision`).
"""

from __future__ import annotations

import time
from typing import Any

from nbguard.hub_plugin.guard.mlflow.attributes import (
    ModelAttributes,
    ModelSettings,
    model_attributes,
    tag_map,
)
from nbguard.hub_plugin.guard.mlflow.upstream import MLflowUpstream, UpstreamAnswer

_GET_MODEL = "api/2.0/mlflow/registered-models/get"


class ModelGateway:
    """The registry behind the gateway, and the attributes of its models."""

    def __init__(
        self, upstream: MLflowUpstream, settings: ModelSettings, *, cache_seconds: float
    ) -> None:
        self.upstream = upstream
        self.settings = settings
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ModelAttributes | None]] = {}
        self._entities: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def attributes_of(self, registered_model: dict[str, Any]) -> ModelAttributes:
        """The attributes of a registered model as the registry returned it (cached)."""
        name = str(registered_model.get("name", ""))
        attrs = model_attributes(name, tag_map(registered_model.get("tags")), self.settings)
        self._cache[name] = (time.monotonic(), attrs)
        return attrs

    async def model(self, name: str) -> ModelAttributes | None:
        """The attributes of model ``name``, None if the registry has no such model."""
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        answer = await self.upstream.call("GET", _GET_MODEL, query={"name": name})
        if answer.status == 404:
            self._cache[name] = (time.monotonic(), None)
            return None
        found = answer.body.get("registered_model")
        if not answer.ok or not isinstance(found, dict):
            return None
        return self.attributes_of(found)

    def forget(self, name: str) -> None:
        """Drop what is cached of ``name`` (its tags changed, or it is gone)."""
        self._cache.pop(name, None)
        for key in [key for key in self._entities if key[0] == name]:
            del self._entities[key]

    def guess(self, name: str, version: str = "") -> dict[str, Any] | None:
        """The entity a read of the model (or of its ``version``) was last decided on,
        while it is fresh; None otherwise."""
        found = self._entities.get((name, version))
        if found is None or time.monotonic() - found[0] >= self.cache_seconds:
            return None
        return found[1]

    def remember(self, name: str, version: str, item: dict[str, Any]) -> None:
        """Keep ``item``, the entity a read of the model (or ``version``) was decided on."""
        if self.cache_seconds > 0:
            self._entities[(name, version)] = (time.monotonic(), item)

    async def call(self, method: str, path: str, **kw: Any) -> UpstreamAnswer:
        """A JSON call to the registry."""
        return await self.upstream.call(method, path, **kw)
