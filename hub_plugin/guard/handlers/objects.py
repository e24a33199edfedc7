"""``/api/v1/datasets/{name}/objects[/{path}]``: the dataset broker.

Users never hold storage credentials: they list, read, write and delete a
dataset's files here. Each request is decided once (``dataset.read`` or
``dataset.write``) and recorded in the ledger with the cell that asked, before
any byte moves; a multi-gigabyte read is one record, not one per chunk.

Reads stream from storage in ``GuardService.stream_chunk_bytes`` pieces, read in
a worker thread and flushed one at a time, so a slow client holds one chunk of
memory, not the file. They honour a single ``Range`` (see
:mod:`~nbguard.hub_plugin.guard.http_range`). Uploads are streamed to a
temporary file that replaces the target only when the whole body has arrived:
a refused, oversized or aborted upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

from tornado import iostream, web

from nbguard.catalog.models import Dataset, check_dataset_name
from nbguard.catalog.paths import check_object_path, check_object_prefix
from nbguard.catalog.storage import ObjectInfo, StorageError
from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.handlers.base import GuardError, http_error
from nbguard.hub_plugin.guard.handlers.datasets import CatalogHandler
from nbguard.hub_plugin.guard.http_range import RangeNotSatisfiable, parse_range
from nbguard.policy import EntityRef

T = TypeVar("T")

#: A chunked upload may declare this much beyond the limit before tornado itself cuts
#: the connection; the broker counts delivered bytes and answers 413 first.
_CHUNKED_SLACK = 64 * 1024**2
#: Uploads being discarded after their client left (kept so the tasks are not collected).
_DISCARDING: set[asyncio.Task[None]] = set()


class UploadAborted(Exception):
    """The upload did not complete (client gone, too large, refused): keep nothing."""


def dataset_ref(dataset: Dataset) -> EntityRef:
    """The policy resource of ``dataset``."""
    return EntityRef.of("Dataset", dataset.name)


async def in_thread(handler: CatalogHandler, call: Callable[..., T], *args: Any) -> T:
    """Run a storage call in a worker thread; its errors as JSON 4xx/503, locations hidden."""
    try:
        return await asyncio.to_thread(call, *args)
    except StorageError as error:
        handler.guard.log.error("nbguard guard: %s", error)
        raise GuardError(503, "storage_unavailable", error.user_message) from None
    except NBGuardError as error:
        raise http_error(error) from error


class ObjectListHandler(CatalogHandler):
    """GET /api/v1/datasets/{name}/objects?prefix=P: the files and folders in folder P."""

    async def get(self, name: str) -> None:
        """``{"dataset", "prefix", "objects": [ObjectInfo]}``; one recorded ``dataset.read``."""
        check_name(name)
        try:
            prefix = check_object_prefix(self.get_query_argument("prefix", ""))
        except NBGuardError as error:
            raise http_error(error) from error
        dataset = self.dataset(name)
        await self.decide_or_deny(await self.caller_context(), "dataset.read", dataset_ref(dataset))
        found = await in_thread(self, self.guard.storage.listing, dataset, prefix)
        objects = [info.to_dict() for info in found]
        self.write_json({"dataset": name, "prefix": prefix, "objects": objects})


def check_name(name: str) -> None:
    """400 unless ``name`` is a valid dataset name."""
    try:
        check_dataset_name(name)
    except NBGuardError as error:
        raise http_error(error) from error


class _Upload:
    """One upload in progress: the storage's atomic writer, a buffer, and a byte count."""

    def __init__(self, writer: AbstractContextManager[IO[bytes]], file: IO[bytes], chunk: int):
        self.writer = writer
        self.file = file
        self.chunk = chunk
        self.buffer = bytearray()
        self.received = 0
        self.done = False
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, handler: CatalogHandler, dataset: Dataset, path: str) -> _Upload:
        writer = handler.guard.storage.open_write(dataset, path)
        file = await in_thread(handler, writer.__enter__)
        return cls(writer, file, handler.guard.stream_chunk_bytes)

    async def feed(self, data: bytes) -> None:
        """Take the next piece of the body; written to storage a chunk at a time."""
        self.received += len(data)
        self.buffer += data
        if len(self.buffer) >= self.chunk:
            async with self.lock:
                if not self.done:
                    piece, self.buffer = bytes(self.buffer), bytearray()
                    await asyncio.to_thread(self.file.write, piece)

    async def commit(self) -> None:
        """Write what is left and put the file in place (it replaces any old one)."""
        async with self.lock:
            if self.done:
                raise UploadAborted("the upload was already discarded")
            self.done = True
            piece, self.buffer = bytes(self.buffer), bytearray()

            def finish() -> None:
                try:
                    self.file.write(piece)
                except BaseException as error:
                    self.writer.__exit__(type(error), error, error.__traceback__)
                    raise
                self.writer.__exit__(None, None, None)

            await asyncio.to_thread(finish)

    async def discard(self) -> None:
        """Drop the upload: the temporary file is removed, the target is untouched."""
        async with self.lock:
            if self.done:
                return
            self.done = True
            self.buffer = bytearray()
            error = UploadAborted("upload discarded")
            with suppress(UploadAborted):
                await asyncio.to_thread(self.writer.__exit__, UploadAborted, error, None)


@web.stream_request_body
class ObjectHandler(CatalogHandler):
    """GET, HEAD, PUT and DELETE /api/v1/datasets/{name}/objects/{path}."""

    _upload: _Upload | None = None
    _failure: BaseException | None = None

    def target(self, name: str, path: str) -> tuple[Dataset, str]:
        """The dataset and checked path a request names; 400 or 404 otherwise."""
        check_name(name)
        try:
            check_object_path(path)
        except NBGuardError as error:
            raise http_error(error) from error
        return self.dataset(name), path

    # -- upload ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Authenticate; for an upload, check its size and decide before any byte is read."""
        await super().prepare()
        if self.request.method != "PUT":
            return
        dataset, path = self.target(*self.path_args)
        limit = self.guard.max_upload_bytes
        declared = self.request.headers.get("Content-Length")
        if declared is not None and int(declared) > limit:
            raise too_large(limit)
        self.request.connection.set_max_body_size(limit + _CHUNKED_SLACK)
        who = await self.caller_context()
        await self.decide_or_deny(who, "dataset.write", dataset_ref(dataset))
        self._upload = await _Upload.open(self, dataset, path)

    async def data_received(self, chunk: bytes) -> None:
        """Stream the body to storage; 413 as soon as it passes the limit."""
        upload = self._upload
        if upload is None:
            return
        limit = self.guard.max_upload_bytes
        if upload.received + len(chunk) > limit:
            self._upload = None
            await upload.discard()
            error = too_large(limit)
            self.send_error(413, exc_info=(type(error), error, None))
            return
        try:
            await upload.feed(chunk)
        except Exception as error:  # storage failed mid-upload: answered in put()
            self._upload = None
            self._failure = error
            await upload.discard()

    async def put(self, name: str, path: str) -> None:
        """201 with the new file's ObjectInfo, once the whole body is stored."""
        upload, self._upload = self._upload, None
        if self._failure is not None or upload is None:
            self.guard.log.error("nbguard guard: upload failed: %r", self._failure)
            raise GuardError(503, "storage_unavailable", StorageError.default_user_message)
        dataset, path = self.target(name, path)
        try:
            await upload.commit()
        except NBGuardError as error:
            raise _storage_error(self, error) from None
        except OSError as error:
            raise _storage_error(self, StorageError(repr(error))) from None
        info: ObjectInfo = await in_thread(self, self.guard.storage.info, dataset, path)
        self.write_json(info.to_dict(), status=201)

    def on_connection_close(self) -> None:
        """A client that leaves mid-upload leaves nothing behind."""
        super().on_connection_close()
        self._discard_upload()

    def on_finish(self) -> None:
        """An upload the answer did not use (an error) is discarded."""
        self._discard_upload()
        super().on_finish()

    def _discard_upload(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            task = asyncio.ensure_future(upload.discard())
            _DISCARDING.add(task)
            task.add_done_callback(_DISCARDING.discard)

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, name: str, path: str) -> None:
        """Remove one file (``dataset.write``); 204."""
        dataset, path = self.target(name, path)
        who = await self.caller_context()
        await self.decide_or_deny(who, "dataset.write", dataset_ref(dataset))
        await in_thread(self, self.guard.storage.delete, dataset, path)
        self.set_status(204)
        self.finish()

    # -- read ------------------------------------------------------------------------------

    async def get(self, name: str, path: str) -> None:
        """The file's bytes (200), or the one range asked for (206)."""
        await self._send(name, path, body=True)

    async def head(self, name: str, path: str) -> None:
        """The headers GET would send, without the bytes (still one recorded decision)."""
        await self._send(name, path, body=False)

    async def _send(self, name: str, path: str, *, body: bool) -> None:
        dataset, path = self.target(name, path)
        who = await self.caller_context()
        await self.decide_or_deny(who, "dataset.read", dataset_ref(dataset))
        file = await in_thread(self, self.guard.storage.open_read, dataset, path)
        try:
            size, etag, modified = await asyncio.to_thread(_describe, file)
            self.set_header("Accept-Ranges", "bytes")
            if etag is not None:
                self.set_header("ETag", etag)
            if modified is not None:
                self.set_header("Last-Modified", modified)
            try:
                wanted = parse_range(self._range_header(etag), size)
            except RangeNotSatisfiable:
                self.set_header("Content-Range", f"bytes */{size}")
                message = f"The file has {size} bytes; the range asked for is outside it."
                error = {"status": 416, "code": "range_not_satisfiable", "message": message}
                self.write_json({"error": error}, status=416)
                return
            start, length = (0, size) if wanted is None else (wanted.start, wanted.length)
            if wanted is not None:
                self.set_status(206)
                self.set_header("Content-Range", wanted.content_range())
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", length)
            if body:
                await self._stream(file, start, length)
        finally:
            file.close()

    def _range_header(self, etag: str | None) -> str | None:
        """``Range``, unless an ``If-Range`` validator says the file has changed."""
        validator = self.request.headers.get("If-Range")
        if validator is not None and validator not in (etag, self._headers.get("Last-Modified")):
            return None
        return self.request.headers.get("Range")

    async def _stream(self, file: IO[bytes], start: int, length: int) -> None:
        """Send ``length`` bytes from ``start``, one chunk in memory at a time."""
        chunk = self.guard.stream_chunk_bytes
        remaining = length
        try:
            await asyncio.to_thread(file.seek, start)
            while remaining > 0:
                data = await asyncio.to_thread(file.read, min(chunk, remaining))
                if not data:
                    raise EOFError(f"the file ended {remaining} bytes early")
                remaining -= len(data)
                self.write(data)
                await self.flush()
        except iostream.StreamClosedError:
            return  # the client left; the file is closed by the caller
        except (OSError, EOFError, NBGuardError) as error:
            # Headers promised a length that can no longer be met: cut the connection
            # so the client sees a truncated response, not a short file.
            self.guard.log.warning(
                "nbguard guard: read of %s stopped: %r", self.request.path, error
            )
            self.request.connection.close()


def too_large(limit: int) -> GuardError:
    """The 413 of an upload over ``GuardService.max_upload_bytes``."""
    return GuardError(413, "too_large", f"The upload exceeds the limit of {limit} bytes.")


def _storage_error(handler: CatalogHandler, error: NBGuardError) -> GuardError:
    if isinstance(error, StorageError):
        handler.guard.log.error("nbguard guard: %s", error)
        return GuardError(503, "storage_unavailable", error.user_message)
    return http_error(error)


def _describe(file: IO[bytes]) -> tuple[int, str | None, datetime | None]:
    """Size, ETag and modification time of an open file (validators only when cheap)."""
    size = file.seek(0, os.SEEK_END)
    try:
        st = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError):  # not a local file
        return size, None, None
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    return size, etag, datetime.fromtimestamp(int(st.st_mtime), UTC)
