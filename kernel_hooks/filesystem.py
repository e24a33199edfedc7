"""``nbguard://``: governed datasets as an fsspec filesystem, through the guard service.

``nbguard://sales/2025.csv`` names the file ``2025.csv`` of dataset ``sales``, so
``pandas.read_csv("nbguard://sales/2025.csv")``, ``fsspec.open``, ``fs.ls``,
``fs.info``, ``fs.cat`` (whole or a byte range), ``fs.put`` and writing a file
work as with any fsspec filesystem. Every request goes to the guard's dataset
broker with the server's token; the guard decides and records each one.

- **Reads stream.** Opening a file sends one ``GET`` and reads its body as the
  caller reads, a block at a time: a sequential read of any size is one request
  (one recorded decision) and holds one block in memory. A seek elsewhere sends a
  ranged ``GET`` (``Range: bytes=N-``) with ``If-Range``, so a file that changed
  meanwhile is an error, not a silently mixed read.
- **Writes are atomic.** Written bytes collect in a temporary file (in memory up
  to 8 MiB, then on disk) and go in one streamed ``PUT`` when the file is closed;
  a ``with`` block left by an exception uploads nothing.
- **Paths are checked here first.** A path the broker would refuse (``..``,
  absolute, wildcards, control characters; see ``nbguard.catalog.paths``) raises
  :class:`GuardRequestError` before any request is sent.
- Denials raise :class:`GuardPermissionError` (a ``PermissionError``) that says
  what would allow the access and where to ask; an unreachable guard raises
  :class:`GuardUnavailable` (a ``ConnectionError``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from nbguard.catalog.paths import check_object_path, check_object_prefix
from nbguard.errors import RequestError
from nbguard.kernel_hooks.client import GuardClient
from nbguard.kernel_hooks.errors import GuardRequestError, GuardTransferError, GuardUnavailable

if TYPE_CHECKING:
    import requests

#: Dataset names, as ``nbguard.catalog.models.DATASET_NAME`` has them (not imported:
#: that module loads the policy engine, which a kernel does not need).
DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Bytes held in memory per read block, and kept in memory by a write before it
#: moves to a temporary file.
READ_BLOCK = 4 * 1024 * 1024
WRITE_IN_MEMORY = 8 * 1024 * 1024


class NBGuardFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Governed datasets (``nbguard://DATASET/PATH``) read and written through the guard."""

    protocol = "nbguard"
    root_marker = ""
    # A new instance per call keeps no state that could outlive a revoked grant.
    cachable = False
    #: Class-wide default client, replaceable in tests.
    client_factory: ClassVar[Any] = None

    def __init__(self, client: GuardClient | None = None, **storage_options: Any) -> None:
        super().__init__(**storage_options)
        self._client = client

    @property
    def client(self) -> GuardClient:
        """The guard client (from the server's environment unless one was given)."""
        if self._client is None:
            factory = type(self).client_factory or GuardClient.from_environ
            self._client = factory()
        return self._client

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``nbguard://sales/a.csv`` -> ``sales/a.csv`` (no leading or trailing ``/``)."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        stripped: str = super()._strip_protocol(path)
        return stripped.strip("/")

    # -- paths -------------------------------------------------------------------------

    def split(self, path: str, *, folder: bool = False) -> tuple[str, str]:
        """``(dataset, path inside it)``, checked; GuardRequestError before any request."""
        stripped = self._strip_protocol(path)
        dataset, _, inner = stripped.partition("/")
        shown = f"nbguard://{stripped}"
        if not DATASET_NAME.match(dataset):
            raise GuardRequestError(
                f"nbguard: {shown} does not name a dataset: a dataset name has 1 to 63 "
                "lower-case letters, digits, '_' or '-' (nbguard://DATASET/PATH)."
            )
        try:
            inner = check_object_prefix(inner) if folder else check_object_path(inner)
        except RequestError as error:
            raise GuardRequestError(
                f"nbguard: refused {shown} before sending it: {error.user_message}"
            ) from None
        return dataset, inner

    @staticmethod
    def object_path(dataset: str, inner: str) -> str:
        """The broker's API path of one file."""
        return f"api/v1/datasets/{dataset}/objects/{quote(inner, safe='/')}"

    def file_request(
        self, method: str, stripped: str, doing: str, **kwargs: Any
    ) -> requests.Response:
        """One broker request about the file ``stripped`` (``doing``: "reading", ...)."""
        dataset, inner = self.split(stripped)
        return self.client.request(
            method,
            self.object_path(dataset, inner),
            what=f"{doing} nbguard://{stripped}",
            resource=f"dataset:{dataset}",
            **kwargs,
        )

    # -- listing and info ----------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Datasets (at the root) or the files and folders in a folder of a dataset."""
        stripped = self._strip_protocol(path)
        if not stripped:
            entries = [self._dataset_entry(d) for d in self._datasets()]
        else:
            dataset, prefix = self.split(stripped, folder=True)
            entries = self._objects(dataset, prefix)
            if not entries and prefix:
                entries = [self.info(stripped)]
        return entries if detail else [entry["name"] for entry in entries]

    def _datasets(self) -> list[dict[str, Any]]:
        answer = self.client.get_json("api/v1/datasets", what="listing the datasets")
        datasets = answer.get("datasets") if isinstance(answer, dict) else None
        return [d for d in datasets or [] if isinstance(d, dict)]

    @staticmethod
    def _dataset_entry(dataset: dict[str, Any]) -> dict[str, Any]:
        return {**dataset, "name": dataset.get("name", ""), "type": "directory", "size": 0}

    def _objects(self, dataset: str, prefix: str) -> list[dict[str, Any]]:
        shown = f"nbguard://{dataset}/{prefix}".rstrip("/")
        answer = self.client.get_json(
            f"api/v1/datasets/{dataset}/objects",
            params={"prefix": prefix},
            what=f"listing {shown}",
            resource=f"dataset:{dataset}",
        )
        found = answer.get("objects") if isinstance(answer, dict) else None
        entries = []
        for item in found or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                entries.append(
                    {
                        "name": f"{dataset}/{item['name']}",
                        "size": item.get("size") or 0,
                        "type": item.get("type", "file"),
                        "modified": item.get("modified"),
                    }
                )
        return entries

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Name, size, type (``file`` or ``directory``), and for files ETag and time."""
        stripped = self._strip_protocol(path)
        if not stripped:
            return {"name": "", "size": 0, "type": "directory"}
        if "/" not in stripped:
            self.split(stripped, folder=True)
            answer = self.client.get_json(
                f"api/v1/datasets/{stripped}", what=f"looking up nbguard://{stripped}"
            )
            return self._dataset_entry(answer if isinstance(answer, dict) else {})
        dataset, inner = self.split(stripped)
        try:
            response = self.file_request("HEAD", stripped, "looking up")
        except FileNotFoundError:
            if self._objects(dataset, inner):
                return {"name": stripped, "size": 0, "type": "directory"}
            raise FileNotFoundError(
                f"nbguard://{stripped}: no such file or folder (or its dataset is not "
                "visible to you)"
            ) from None
        return _file_info(stripped, response)

    def ukey(self, path: str) -> str:
        """The file's ETag: changes whenever its content does."""
        info = self.info(path)
        return str(info.get("ETag") or info.get("modified"))

    # -- reading -------------------------------------------------------------------------

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AbstractBufferedFile:
        stripped = self._strip_protocol(path)
        self.split(stripped)
        if mode == "rb":
            response = self.file_request("GET", stripped, "reading", stream=True)
            return NBGuardReadFile(
                self, stripped, response=response, block_size=block_size or READ_BLOCK
            )
        if mode in ("wb", "xb"):
            return NBGuardWriteFile(self, stripped, mode="wb", block_size=block_size)
        raise ValueError(f"nbguard://: mode {mode!r} is not supported (use 'rb' or 'wb')")

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """The file's bytes, or those from ``start`` to ``end`` (exclusive), in one request."""
        if (start is not None and start < 0) or (end is not None and end < 0):
            data: bytes = super().cat_file(path, start=start, end=end, **kwargs)
            return data
        stripped = self._strip_protocol(path)
        headers = {}
        if start or end is not None:
            first = start or 0
            if end is not None and end <= first:
                return b""
            headers["Range"] = f"bytes={first}-{'' if end is None else end - 1}"
        try:
            response = self.file_request(
                "GET", stripped, "reading", headers=headers, expected=(200, 206)
            )
        except GuardRequestError:
            if "Range" in headers:  # 416: the range starts past the end
                return b""
            raise
        return response.content

    # -- writing -------------------------------------------------------------------------

    def send_file(self, path: str, body: Any) -> dict[str, Any]:
        """PUT ``body`` (bytes or a binary file) as the file at ``path``; its new info."""
        response = self.file_request(
            "PUT",
            self._strip_protocol(path),
            "writing",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            expected=(200, 201),
        )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        return answer if isinstance(answer, dict) else {}

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write ``value`` as the whole file."""
        self.send_file(path, bytes(value))

    def put_file(
        self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Upload a local file, streamed from disk."""
        if os.path.isdir(lpath):
            return  # folders exist implicitly
        with open(lpath, "rb") as source:
            self.send_file(rpath, source)

    def rm_file(self, path: str) -> None:
        """Delete one file."""
        self.file_request("DELETE", self._strip_protocol(path), "deleting", expected=(200, 204))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files (with ``recursive``, every file under a folder; folders are implicit)."""
        for found in reversed(self.expand_path(path, recursive=recursive, maxdepth=maxdepth)):
            if recursive and self.isdir(found):
                continue
            self.rm_file(found)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: a folder exists once a file is written in it."""
        self.split(path, folder=True)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Nothing to do: a folder exists once a file is written in it."""
        self.split(path, folder=True)

    def rmdir(self, path: str) -> None:
        """Nothing to do: a folder disappears with its last file."""


def _file_info(name: str, response: requests.Response) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": name,
        "size": int(response.headers.get("Content-Length", 0)),
        "type": "file",
    }
    if response.headers.get("ETag"):
        info["ETag"] = response.headers["ETag"]
    if response.headers.get("Last-Modified"):
        info["modified"] = response.headers["Last-Modified"]
    return info


class NBGuardReadFile(AbstractBufferedFile):  # type: ignore[misc]
    """A dataset file being read: one streaming GET, continued while reads are sequential."""

    def __init__(
        self,
        fs: NBGuardFileSystem,
        path: str,
        *,
        response: requests.Response,
        block_size: int,
    ) -> None:
        self._response: requests.Response | None = response
        self._position = 0
        self._etag = response.headers.get("ETag")
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            response.close()
            raise GuardTransferError(
                f"nbguard: the guard did not say how large nbguard://{path} is; try again."
            )
        size = int(length)
        super().__init__(
            fs, path, mode="rb", block_size=block_size, cache_type="readahead", size=size
        )
        self.details = _file_info(path, response)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        if self._response is None or self._position != start:
            self._reopen(start)
        return self._read_exactly(end - start)

    def _reopen(self, start: int) -> None:
        """A ranged GET from ``start`` to the end, refused if the file has changed."""
        self._drop_response()
        headers = {"Range": f"bytes={start}-"}
        if self._etag:
            headers["If-Range"] = self._etag
        response = self.fs.file_request(
            "GET", self.path, "reading", headers=headers, expected=(200, 206), stream=True
        )
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if response.status_code != 206 or total != str(self.size):
            response.close()
            raise GuardTransferError(
                f"nbguard: nbguard://{self.path} changed while it was being read; open it again."
            )
        self._response = response
        self._position = start

    def _read_exactly(self, count: int) -> bytes:
        import urllib3

        response = self._response
        if response is None:
            raise GuardTransferError(f"nbguard: nbguard://{self.path} is closed.")
        pieces = []
        remaining = count
        try:
            while remaining > 0:
                piece = response.raw.read(min(remaining, 1024 * 1024))
                if not piece:
                    break
                pieces.append(piece)
                remaining -= len(piece)
        except (OSError, urllib3.exceptions.HTTPError):
            self._drop_response()
            raise GuardUnavailable(
                f"nbguard: the transfer of nbguard://{self.path} broke off; try again."
            ) from None
        if remaining:
            self._drop_response()
            raise GuardTransferError(
                f"nbguard: the transfer of nbguard://{self.path} ended {remaining} bytes early; "
                "try again."
            )
        self._position += count
        return b"".join(pieces)

    def _drop_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def close(self) -> None:
        """Close the file and its connection."""
        self._drop_response()
        super().close()


class NBGuardWriteFile(AbstractBufferedFile):  # type: ignore[misc]
    """A dataset file being written: bytes collect locally, one PUT on close."""

    def _initiate_upload(self) -> None:
        self._spooled = tempfile.SpooledTemporaryFile(max_size=WRITE_IN_MEMORY)  # noqa: SIM115

    def _upload_chunk(self, final: bool = False) -> bool:
        self._spooled.write(self.buffer.getvalue())
        if final:
            self._spooled.seek(0)
            try:
                self.fs.send_file(self.path, self._spooled)
            finally:
                self._spooled.close()
        return True

    def discard(self) -> None:
        """Drop what was written; nothing is uploaded."""
        spooled = getattr(self, "_spooled", None)
        if spooled is not None:
            spooled.close()
        self.buffer = io.BytesIO()
        self.forced = True
        self.closed = True

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        """Upload on a clean exit only: an exception inside ``with`` uploads nothing."""
        if kind is not None:
            with contextlib.suppress(Exception):
                self.discard()
            return
        self.close()
