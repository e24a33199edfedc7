"""The guard service's backing stores: where each dataset's files live, through fsspec.

A dataset whose ``storage`` is ``""`` lives in ``<default_root>/<name>``; any other
dataset at its own fsspec URL. Callers pass paths already checked with
:func:`nbguard.catalog.paths.check_object_path`; on top of that, local stores
resolve symbolic links and refuse any that lead out of the dataset.

Errors keep the backing location out of ``user_message`` (for cloud stores that is
where credentials live): users see the dataset and the path they asked for, the
log (``str(error)``) also sees the location, with any user:password and query
string removed. fsspec is imported on first use so ``import nbguard.catalog`` stays fast.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from nbguard.catalog.models import URL_PATTERN, Dataset
from nbguard.catalog.paths import RESERVED_PREFIX, is_valid_object_path
from nbguard.errors import ConfigError, NBGuardError, NotFoundError, RequestError

_UPLOAD_PREFIX = f"{RESERVED_PREFIX}upload-"
_USERINFO = re.compile(r"(://)[^/@]*@")
#: Keys fsspec backends use for a modification time, most specific first.
_MODIFIED_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in the store must not block a thread
    | getattr(os, "O_CLOEXEC", 0)
)


class StorageError(NBGuardError):
    """A backing store failed or is misconfigured; users see no location or detail."""

    default_user_message = (
        "The dataset's storage is unavailable; try again later or ask your hub admin."
    )


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A file or folder of a dataset. ``name`` is relative to the dataset's root;
    ``size`` and ``modified`` (RFC 3339, ``Z``) are None when not known or not asked for."""

    name: str
    size: int | None
    type: str
    modified: str | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the HTTP layer returns."""
        return {"name": self.name, "size": self.size, "type": self.type, "modified": self.modified}


@dataclass(frozen=True, slots=True)
class _Root:
    """Where one dataset lives: its filesystem, its root path there, and its URL for logs."""

    fs: Any
    path: str
    local: bool
    shown: str

    def join(self, path: str) -> str:
        return f"{self.path.rstrip('/')}/{path}" if path else self.path


def redact_url(url: str) -> str:
    """``url`` without user:password and query string, for log messages."""
    return _USERINFO.sub(r"\1***@", url).split("?", 1)[0]


def _rfc3339(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    else:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


class DatasetStorage:
    """Reads, lists, writes and deletes the files of datasets in their backing stores.

    ``default_root`` is an fsspec URL or a local directory (made absolute); the
    service's default is a directory only its own OS user can read. Local folders
    it creates get mode 0700 and uploaded files 0600.
    """

    def __init__(self, default_root: str) -> None:
        if not default_root or not default_root.strip():
            raise ConfigError("DatasetStorage needs a default root (a directory or fsspec URL)")
        self.default_root = (
            default_root if URL_PATTERN.match(default_root) else os.path.abspath(default_root)
        )

    def location(self, dataset: Dataset) -> str:
        """The URL or directory holding ``dataset``'s files (admins only: may hold credentials)."""
        if dataset.storage:
            return dataset.storage
        if URL_PATTERN.match(self.default_root):
            return f"{self.default_root.rstrip('/')}/{dataset.name}"
        return os.path.join(self.default_root, dataset.name)

    # -- reading -----------------------------------------------------------------------

    def info(self, dataset: Dataset, path: str) -> ObjectInfo:
        """Name, size, type and modification time of one file or folder; NotFoundError if absent."""
        root = self._root(dataset)
        with self._errors(dataset, path, root):
            if root.local:
                found = self._local_info(path, os.stat(self._contained(root, path)))
            else:
                found = self._remote_info(root, root.fs.info(root.join(path)))
        if found is None:
            raise self._not_found(dataset, path, root, "is neither a file nor a folder")
        return found

    def listing(
        self, dataset: Dataset, prefix: str = "", *, detail: bool = True
    ) -> list[ObjectInfo]:
        """The direct children of folder ``prefix`` (``""``: the dataset root), sorted by name.

        A dataset whose root does not exist yet lists as empty; a prefix naming a
        file lists that file (as fsspec's ``ls`` does). Entries whose names break
        the path rules, uploads in progress and links leading out are left out.
        With ``detail=False``, sizes and times are None.
        """
        root = self._root(dataset)
        with self._errors(dataset, prefix, root):
            try:
                found = (
                    self._local_list(root, prefix)
                    if root.local
                    else self._remote_list(root, prefix)
                )
            except FileNotFoundError:
                if prefix:
                    raise
                return []
        if not detail:
            found = [ObjectInfo(i.name, None, i.type, None) for i in found]
        return sorted(found, key=lambda i: i.name)

    def open_read(self, dataset: Dataset, path: str) -> IO[bytes]:
        """A seekable binary file to read; NotFoundError for a missing file or a folder.

        The caller closes it. It may be read from another thread.
        """
        root = self._root(dataset)
        with self._errors(dataset, path, root):
            if root.local:
                return self._local_open(dataset, path, root)
            info = root.fs.info(root.join(path))
            if info.get("type") != "file":
                raise self._not_found(dataset, path, root, "is not a file")
            return root.fs.open(root.join(path), "rb")  # type: ignore[no-any-return]

    # -- writing -----------------------------------------------------------------------

    def open_write(self, dataset: Dataset, path: str) -> AbstractContextManager[IO[bytes]]:
        """A context manager yielding a binary file; the object appears only if the block
        ends without error, replacing any file of that name; parent folders are created.

        Local stores write a temporary file in the same folder, fsync it and
        ``os.replace`` it: readers see the old file or the new one, never a part.
        Other fsspec stores write a temporary ``.nbguard-upload-*`` object and move
        it into place (best effort: atomic where the store's move is, e.g. a rename;
        object stores copy then delete). A failed or aborted upload removes its
        temporary file; one left by a crash is hidden from listings.
        """
        root = self._root(dataset)
        if root.local:
            return self._local_write(dataset, path, root)
        return self._remote_write(dataset, path, root)

    def delete(self, dataset: Dataset, path: str) -> None:
        """Delete one file (a link is removed, never its target); folders are refused."""
        root = self._root(dataset)
        with self._errors(dataset, path, root):
            if root.local:
                parent, _, base = path.rpartition("/")
                target = os.path.join(self._contained(root, parent), base)
                if stat.S_ISDIR(os.lstat(target).st_mode):
                    raise _is_folder(dataset, path)
                os.unlink(target)
                return
            if root.fs.info(root.join(path)).get("type") == "directory":
                raise _is_folder(dataset, path)
            root.fs.rm_file(root.join(path))

    # -- where a dataset lives -----------------------------------------------------------

    def _root(self, dataset: Dataset) -> _Root:
        url = self.location(dataset)
        shown = redact_url(url)
        try:
            from fsspec.core import url_to_fs  # type: ignore[import-untyped]
            from fsspec.implementations.local import (  # type: ignore[import-untyped]
                LocalFileSystem,
            )

            fs, path = url_to_fs(url)
        except Exception as error:  # any backend: unknown protocol, missing package, bad URL
            raise StorageError(
                f"dataset {dataset.name!r}: cannot open storage {shown}: {error!r}"
            ) from error
        if isinstance(fs, LocalFileSystem):
            return _Root(fs, os.path.realpath(path), True, shown)
        return _Root(fs, str(path).rstrip("/") or "/", False, shown)

    @contextmanager
    def _errors(self, dataset: Dataset, path: str, root: _Root) -> Iterator[None]:
        """Backend exceptions as NotFoundError / StorageError, the location kept from users."""
        try:
            yield
        except NBGuardError:
            raise
        except (FileNotFoundError, NotADirectoryError) as error:
            raise self._not_found(dataset, path, root, repr(error)) from error
        except Exception as error:  # backends raise many kinds; none may reach a user as-is
            raise StorageError(
                f"dataset {dataset.name!r} path {path!r} at {root.shown}: {error!r}"
            ) from error

    @staticmethod
    def _not_found(dataset: Dataset, path: str, root: _Root, detail: str) -> NotFoundError:
        return NotFoundError(
            f"dataset {dataset.name!r} has no file {path!r} at {root.shown}: {detail}",
            user_message=f"Dataset {dataset.name!r} has no file or folder {path!r}.",
        )

    @staticmethod
    def _contained(root: _Root, path: str) -> str:
        """The real local path of ``path``, following links only while they stay inside."""
        real = os.path.realpath(os.path.join(root.path, *path.split("/"))) if path else root.path
        if not _inside(root.path, real):
            raise FileNotFoundError(f"{path!r} leads out of the dataset (to {real})")
        return real

    # -- local stores --------------------------------------------------------------------

    @staticmethod
    def _local_info(name: str, st: os.stat_result) -> ObjectInfo | None:
        modified = _rfc3339(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            return ObjectInfo(name, 0, "directory", modified)
        if stat.S_ISREG(st.st_mode):
            return ObjectInfo(name, st.st_size, "file", modified)
        return None  # devices, sockets, FIFOs: not data

    def _local_list(self, root: _Root, prefix: str) -> list[ObjectInfo]:
        folder = self._contained(root, prefix)
        if not os.path.isdir(folder):
            st = os.stat(folder)
            one = self._local_info(prefix, st)
            return [one] if one is not None else []
        found: list[ObjectInfo] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                name = f"{prefix}/{entry.name}" if prefix else entry.name
                if not is_valid_object_path(name):
                    continue
                target = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
                if not _inside(root.path, target):
                    continue
                with suppress(FileNotFoundError):  # a dangling link, or removed meanwhile
                    one = self._local_info(name, os.stat(target))
                    if one is not None:
                        found.append(one)
        return found

    def _local_open(self, dataset: Dataset, path: str, root: _Root) -> IO[bytes]:
        # Open the resolved path without following a link there: a link swapped in
        # after the check is refused rather than followed.
        fd = os.open(self._contained(root, path), _OPEN_FLAGS)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise self._not_found(dataset, path, root, "is not a regular file")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    @contextmanager
    def _local_write(self, dataset: Dataset, path: str, root: _Root) -> Iterator[IO[bytes]]:
        parent, _, base = path.rpartition("/")
        with self._errors(dataset, path, root):
            folder = self._contained(root, parent)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            # A link created in the meantime would have been followed by makedirs.
            if self._contained(root, parent) != folder:
                raise FileNotFoundError(f"{parent!r} changed while uploading")
            target = os.path.join(folder, base)
            if os.path.isdir(target):
                raise _is_folder(dataset, path)
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=_UPLOAD_PREFIX)
        file = os.fdopen(fd, "wb")
        try:
            yield file
            with self._errors(dataset, path, root):
                file.flush()
                os.fsync(file.fileno())
                file.close()
                os.replace(temporary, target)
                _fsync_folder(folder)
        except BaseException:
            file.close()
            with suppress(OSError):
                os.unlink(temporary)
            raise

    # -- other fsspec stores -------------------------------------------------------------

    def _remote_info(self, root: _Root, info: dict[str, Any]) -> ObjectInfo | None:
        name = str(info.get("name", "")).rstrip("/")
        base = root.path.rstrip("/") + "/"
        if not name.startswith(base) or info.get("type") not in ("file", "directory"):
            return None
        modified = next((_rfc3339(info[k]) for k in _MODIFIED_KEYS if info.get(k)), None)
        size = int(info.get("size") or 0) if info["type"] == "file" else 0
        return ObjectInfo(name[len(base) :], size, str(info["type"]), modified)

    def _remote_list(self, root: _Root, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for entry in root.fs.ls(root.join(prefix), detail=True):
            one = self._remote_info(root, entry)
            if one is not None and is_valid_object_path(one.name):
                found.append(one)
        return found

    @contextmanager
    def _remote_write(self, dataset: Dataset, path: str, root: _Root) -> Iterator[IO[bytes]]:
        fs = root.fs
        target = root.join(path)
        parent = target.rpartition("/")[0]
        temporary = f"{parent}/{_UPLOAD_PREFIX}{uuid.uuid4().hex}"
        with self._errors(dataset, path, root):
            if fs.isdir(target):
                raise _is_folder(dataset, path)
            fs.makedirs(parent, exist_ok=True)
            file = fs.open(temporary, "wb")
        try:
            yield file
            with self._errors(dataset, path, root):
                file.close()
                fs.mv(temporary, target)
        except BaseException:
            with suppress(Exception):
                file.close()
            with suppress(Exception):
                fs.rm_file(temporary)
            raise


def _is_folder(dataset: Dataset, path: str) -> RequestError:
    message = f"{path!r} in dataset {dataset.name!r} is a folder, not a file."
    return RequestError(message, user_message=message)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
