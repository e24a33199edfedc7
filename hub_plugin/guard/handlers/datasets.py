"""``/api/v1/datasets``: the dataset catalog as each caller may see it, and its admin API.

A caller sees only the datasets the policy lets them list (``dataset.list``),
each with the actions (``dataset.read``, ``dataset.write``, ``dataset.export``)
they are allowed right now. These per-item checks answer "what may I do?" and
are not recorded; the accesses themselves are (see
:mod:`~nbguard.hub_plugin.guard.handlers.objects`). A dataset the caller may not
list answers exactly like one that does not exist, so names cannot be probed.

Admins (``guard.admin``) create, replace and remove entries, and only they see
where a dataset's files live (``storage``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbguard.catalog.models import Dataset, check_dataset_name
from nbguard.errors import NBGuardError, NotFoundError
from nbguard.hub_plugin.guard.handlers.base import (
    APIHandler,
    GuardError,
    http_error,
    require_fields,
)
from nbguard.policy import EntityRef

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.contexts import CallerContext

#: The actions shown in each dataset's ``actions`` list.
SHOWN_ACTIONS = ("dataset.read", "dataset.write", "dataset.export")
#: The body of ``PUT /api/v1/datasets/{name}``.
DATASET_FIELDS: dict[str, type] = {
    "description": str,
    "team": str,
    "owner": str,
    "sensitivity": str,
    "environment": str,
    "storage": str,
}


def no_such_dataset(name: str) -> GuardError:
    """The 404 for a dataset that is absent or hidden from the caller (one answer for both)."""
    return GuardError(404, "not_found", f"There is no dataset {name!r}.")


class CatalogHandler(APIHandler):
    """Shared by the catalog and broker routes: the current catalog, one dataset by name."""

    def dataset(self, name: str) -> Dataset:
        """The dataset ``name`` after loading other replicas' changes; 400 or 404 otherwise."""
        try:
            check_dataset_name(name)
            self.guard.sync_catalog()
            return self.guard.catalog.get(name)
        except NBGuardError as error:
            raise http_error(error) from error

    def allowed(self, who: CallerContext, action: str, dataset: Dataset) -> bool:
        """Whether the policy allows ``action`` on ``dataset`` now (asked, not recorded)."""
        if who.locks:
            return False
        ref = EntityRef.of("Dataset", dataset.name)
        return self.guard.engine.decide(who.principal, action, ref, who.context).allowed

    def shown(self, who: CallerContext, dataset: Dataset) -> dict[str, Any]:
        """A dataset as seen by a caller who may list it: its fields and their actions."""
        actions = [a for a in SHOWN_ACTIONS if self.allowed(who, a, dataset)]
        return {**dataset.to_dict(), "actions": actions}


class DatasetListHandler(CatalogHandler):
    """GET /api/v1/datasets: the datasets the caller may list."""

    async def get(self) -> None:
        """``{"datasets": [...]}``, sorted by name, each with the caller's actions."""
        who = await self.caller_context()
        try:
            self.guard.sync_catalog()
            datasets = self.guard.catalog.list()
        except NBGuardError as error:
            raise http_error(error) from error
        shown = [self.shown(who, d) for d in datasets if self.allowed(who, "dataset.list", d)]
        self.write_json({"datasets": shown})


class DatasetHandler(CatalogHandler):
    """GET, PUT and DELETE /api/v1/datasets/{name}."""

    async def get(self, name: str) -> None:
        """One dataset as the listing shows it; 404 if absent or not listable."""
        who = await self.caller_context()
        try:
            dataset = self.dataset(name)
        except GuardError as error:
            if error.status_code == 404:
                raise no_such_dataset(name) from None
            raise
        if not self.allowed(who, "dataset.list", dataset):
            raise no_such_dataset(name)
        self.write_json(self.shown(who, dataset))

    async def put(self, name: str) -> None:
        """Create (201) or replace (200) the entry; admins only. Answers with ``storage``."""
        who = await self.caller_context()
        await self.require_admin(who)
        body = self.json_body()
        require_fields(body, DATASET_FIELDS, optional=("description", "owner", "storage"))
        try:
            check_dataset_name(name)
            dataset = Dataset(name=name, **body)
            existed = self._exists(name)
            self.guard.catalog.upsert([dataset])
            self.guard.sync_catalog()
        except NBGuardError as error:
            raise http_error(error) from error
        self.guard.log.info(
            "nbguard guard: %s %s dataset %s", who.name, "replaced" if existed else "created", name
        )
        self.write_json(dataset.to_dict(include_storage=True), status=200 if existed else 201)

    def _exists(self, name: str) -> bool:
        try:
            self.guard.catalog.get(name)
        except NotFoundError:
            return False
        return True

    async def delete(self, name: str) -> None:
        """Remove the entry (its files are kept); admins only. 204, or 404 if absent."""
        who = await self.caller_context()
        await self.require_admin(who)
        try:
            check_dataset_name(name)
            self.guard.catalog.remove(name)
            self.guard.sync_catalog()
        except NBGuardError as error:
            raise http_error(error) from error
        self.guard.log.info("nbguard guard: %s removed dataset %s", who.name, name)
        self.set_status(204)
        self.finish()
