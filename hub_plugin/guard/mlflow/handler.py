"""``/mlflow/...``: the MLflow REST API as the gateway serves it.

One route takes every path under the gateway's mount point; :mod:`.endpoints`
says which operation serves each method and path, and everything else is
refused with MLflow's ``ENDPOINT_NOT_FOUND`` before anything is forwarded.
"""

from __future__ import annotations

from typing import Any

from nbguard.hub_plugin.guard.mlflow.base import mlflow_error
from nbguard.hub_plugin.guard.mlflow.endpoints import REFUSED, find_endpoint
from nbguard.hub_plugin.guard.mlflow.registry import RegistryOperations


class MLflowGatewayHandler(RegistryOperations):
    """Every method on ``<prefix>mlflow/<path>``."""

    async def prepare(self) -> None:
        """404 when no tracking server is configured; then authenticate as the API does."""
        if getattr(self.guard, "mlflow", None) is None:
            raise mlflow_error(
                404,
                "The model registry gateway is not configured (GuardService.mlflow_tracking_uri).",
                "ENDPOINT_NOT_FOUND",
            )
        await super().prepare()

    async def _serve(self, path: str) -> None:
        method = self.request.method or "GET"
        if path in REFUSED:
            raise mlflow_error(403, REFUSED[path])
        found = find_endpoint(method, path)
        if found is None:
            raise mlflow_error(
                404,
                f"{method} /{path} is not an MLflow endpoint nbguard serves (the model "
                "registry and logging, registering and loading models are).",
                "ENDPOINT_NOT_FOUND",
            )
        endpoint, rest = found
        operation = getattr(self, endpoint.operation)
        args = {} if method == "PUT" else self.args()
        if rest:
            await operation(args, rest)
        else:
            await operation(args)

    async def get(self, path: str) -> None:
        """GET endpoints."""
        await self._serve(path)

    async def post(self, path: str) -> None:
        """POST endpoints."""
        await self._serve(path)

    async def patch(self, path: str) -> None:
        """PATCH endpoints."""
        await self._serve(path)

    async def delete(self, path: str) -> None:
        """DELETE endpoints."""
        await self._serve(path)

    async def put(self, path: str) -> None:
        """PUT endpoints (artifact uploads)."""
        await self._serve(path)

    def check_etag_header(self) -> Any:
        """Never 304: each answer is decided anew."""
        return False
