"""DatasetStorage: info, listing, reads, atomic writes and deletes, local and other fsspec stores."""

from __future__ import annotations

import dataclasses
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbguard.catalog.models import Dataset
from nbguard.catalog.storage import DatasetStorage, ObjectInfo, StorageError, redact_url
from nbguard.errors import NBGuardError, NotFoundError, RequestError


class Boom(Exception):
    """An upload that fails half-way."""


@pytest.fixture(params=["local", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatasetStorage]:
    """Storage over a local directory, or over fsspec's in-memory filesystem."""
    if request.param == "local":
        yield DatasetStorage(str(tmp_path / "store"))
        return
    root = f"memory://nbguard-test-{uuid.uuid4().hex}"
    yield DatasetStorage(root)
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def put(storage: DatasetStorage, dataset: Dataset, path: str, data: bytes) -> None:
    """Write one object through open_write."""
    with storage.open_write(dataset, path) as file:
        file.write(data)


def fail_upload(storage: DatasetStorage, dataset: Dataset, path: str) -> None:
    """Start an upload, write part of it, then fail inside the block."""
    with storage.open_write(dataset, path) as file:
        file.write(b"partial")
        raise Boom


def names(storage: DatasetStorage, dataset: Dataset, prefix: str = "") -> list[str]:
    """The names a listing returns."""
    return [i.name for i in storage.listing(dataset, prefix)]


def test_write_then_read_and_seek(storage: DatasetStorage, sales: Dataset) -> None:
    """What open_write stored reads back; the reader seeks like a Range request needs."""
    data = bytes(range(256)) * 100
    put(storage, sales, "2025/sales.bin", data)
    with storage.open_read(sales, "2025/sales.bin") as file:
        assert file.seekable()
        file.seek(1000)
        assert file.read(10) == data[1000:1010]
        file.seek(-5, os.SEEK_END)
        assert file.read() == data[-5:]


def test_info_of_file_and_folder(storage: DatasetStorage, sales: Dataset) -> None:
    """info gives the dataset-relative name, size, type and an RFC 3339 Z time for files."""
    put(storage, sales, "2025/q1.csv", b"a,b\n")
    info = storage.info(sales, "2025/q1.csv")
    assert (info.name, info.size, info.type) == ("2025/q1.csv", 4, "file")
    assert info.modified is not None
    assert info.modified.endswith("Z")
    assert info.to_dict()["name"] == "2025/q1.csv"
    assert storage.info(sales, "2025").type == "directory"


def test_listing_direct_children(storage: DatasetStorage, sales: Dataset) -> None:
    """listing returns direct children, sorted, named relative to the dataset."""
    for path in ("b.csv", "a/x.csv", "a/deeper/y.csv", "c.csv"):
        put(storage, sales, path, b"1")
    assert names(storage, sales) == ["a", "b.csv", "c.csv"]
    assert names(storage, sales, "a") == ["a/deeper", "a/x.csv"]
    listed = {i.name: i for i in storage.listing(sales, "a")}
    assert listed["a/deeper"].type == "directory"
    assert listed["a/x.csv"].size == 1


def test_listing_without_detail(storage: DatasetStorage, sales: Dataset) -> None:
    """detail=False gives names and types without sizes or times."""
    put(storage, sales, "f.csv", b"123")
    assert storage.listing(sales, detail=False) == [ObjectInfo("f.csv", None, "file", None)]


def test_listing_a_file_lists_it(storage: DatasetStorage, sales: Dataset) -> None:
    """A prefix naming a file lists that file, as fsspec's ls does."""
    put(storage, sales, "f.csv", b"123")
    assert names(storage, sales, "f.csv") == ["f.csv"]


def test_new_dataset_lists_empty(storage: DatasetStorage, sales: Dataset) -> None:
    """A dataset whose directory does not exist yet is empty, not an error."""
    assert storage.listing(sales) == []


@pytest.mark.parametrize(
    ("operation", "path"),
    [("info", "absent.csv"), ("open_read", "absent.csv"), ("listing", "absent"), ("delete", "x/y")],
    ids=str,
)
def test_missing_things_are_not_found(
    storage: DatasetStorage, sales: Dataset, operation: str, path: str
) -> None:
    """Missing files and folders are NotFoundError naming the dataset and path, not the store."""
    put(storage, sales, "present.csv", b"1")
    with pytest.raises(NotFoundError) as caught:
        getattr(storage, operation)(sales, path)
    assert caught.value.user_message == f"Dataset 'sales' has no file or folder {path!r}."
    assert storage.location(sales) in str(caught.value)


def test_folders_cannot_be_read_or_deleted(storage: DatasetStorage, sales: Dataset) -> None:
    """open_read of a folder is NotFoundError; delete and overwrite of a folder are refused."""
    put(storage, sales, "dir/f.csv", b"1")
    with pytest.raises(NotFoundError):
        storage.open_read(sales, "dir")
    with pytest.raises(RequestError, match="is a folder"):
        storage.delete(sales, "dir")
    with pytest.raises(RequestError, match="is a folder"):
        put(storage, sales, "dir", b"x")


def test_failed_upload_leaves_nothing(storage: DatasetStorage, sales: Dataset) -> None:
    """An exception inside open_write leaves no object and no temporary file behind."""
    with pytest.raises(Boom):
        fail_upload(storage, sales, "new/up.csv")
    with pytest.raises(NotFoundError):
        storage.info(sales, "new/up.csv")
    assert names(storage, sales, "new") == []
    assert _all_files(storage, sales) == []


def test_failed_overwrite_keeps_the_old_object(storage: DatasetStorage, sales: Dataset) -> None:
    """A failed upload over an existing file leaves the old content intact."""
    put(storage, sales, "f.csv", b"old")
    with pytest.raises(Boom):
        fail_upload(storage, sales, "f.csv")
    with storage.open_read(sales, "f.csv") as file:
        assert file.read() == b"old"


def test_object_appears_only_when_the_upload_ends(storage: DatasetStorage, sales: Dataset) -> None:
    """During an upload the final name does not exist and the listing hides the temporary."""
    with storage.open_write(sales, "f.csv") as file:
        file.write(b"data")
        with pytest.raises(NotFoundError):
            storage.info(sales, "f.csv")
        assert names(storage, sales) == []
    assert names(storage, sales) == ["f.csv"]


def test_overwrite_replaces(storage: DatasetStorage, sales: Dataset) -> None:
    """Writing an existing name replaces its content."""
    put(storage, sales, "f.csv", b"old")
    put(storage, sales, "f.csv", b"newer")
    with storage.open_read(sales, "f.csv") as file:
        assert file.read() == b"newer"


def test_delete_removes(storage: DatasetStorage, sales: Dataset) -> None:
    """delete removes a file."""
    put(storage, sales, "f.csv", b"1")
    storage.delete(sales, "f.csv")
    assert names(storage, sales) == []


def test_datasets_are_separate(storage: DatasetStorage, sales: Dataset) -> None:
    """Two datasets in the default store do not see each other's files."""
    other = dataclasses.replace(sales, name="sales-2")
    put(storage, sales, "f.csv", b"1")
    assert storage.listing(other) == []


def _all_files(storage: DatasetStorage, dataset: Dataset) -> list[str]:
    location = storage.location(dataset)
    if "://" in location:
        import fsspec

        fs, root = fsspec.core.url_to_fs(location)
        return list(fs.find(root)) if fs.exists(root) else []
    return [str(p) for p in Path(location).rglob("*") if p.is_file()]


# -- local stores only ----------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> DatasetStorage:
    """Storage over a local directory."""
    return DatasetStorage(str(tmp_path / "store"))


def test_default_store_layout_and_modes(
    local: DatasetStorage, sales: Dataset, tmp_path: Path
) -> None:
    """Files land in <root>/<name>; created folders are 0700 and files 0600."""
    put(local, sales, "a/f.csv", b"1")
    target = tmp_path / "store" / "sales" / "a" / "f.csv"
    assert target.read_bytes() == b"1"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


def test_own_storage_url(local: DatasetStorage, sales: Dataset, tmp_path: Path) -> None:
    """A dataset with its own file:// storage lives there, not in the default store."""
    own = tmp_path / "elsewhere"
    dataset = dataclasses.replace(sales, storage=f"file://{own}")
    put(local, dataset, "f.csv", b"1")
    assert (own / "f.csv").read_bytes() == b"1"
    assert local.location(dataset) == f"file://{own}"


@pytest.fixture
def escape(local: DatasetStorage, sales: Dataset, tmp_path: Path) -> Path:
    """A dataset directory with links: one inside, several leading out to a secret."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.pem").write_bytes(b"PRIVATE")
    put(local, sales, "ok/data.csv", b"1")
    root = tmp_path / "store" / "sales"
    (root / "out-dir").symlink_to(secret)
    (root / "out-file.pem").symlink_to(secret / "key.pem")
    (root / "ok" / "up").symlink_to("../..")
    (root / "in-link.csv").symlink_to(root / "ok" / "data.csv")
    return secret


@pytest.mark.parametrize(
    "path", ["out-dir/key.pem", "out-file.pem", "ok/up/secret/key.pem"], ids=str
)
def test_symlinks_out_are_not_followed(
    local: DatasetStorage, sales: Dataset, escape: Path, path: str
) -> None:
    """Links leading out of the dataset are not found for info, read, list, write or delete."""
    with pytest.raises(NotFoundError) as caught:
        local.open_read(sales, path)
    assert str(escape) not in caught.value.user_message
    with pytest.raises(NotFoundError):
        local.info(sales, path)
    assert (escape / "key.pem").read_bytes() == b"PRIVATE"


def test_symlinks_out_are_not_listed_or_written(
    local: DatasetStorage, sales: Dataset, escape: Path
) -> None:
    """Listings omit links leading out; writes through them are refused; inner links work."""
    assert names(local, sales) == ["in-link.csv", "ok"]
    assert names(local, sales, "ok") == ["ok/data.csv"]
    with pytest.raises(NotFoundError):
        local.listing(sales, "out-dir")
    with pytest.raises(NotFoundError):
        put(local, sales, "out-dir/planted.txt", b"x")
    assert not (escape / "planted.txt").exists()
    with local.open_read(sales, "in-link.csv") as file:
        assert file.read() == b"1"


def test_deleting_a_link_keeps_its_target(
    local: DatasetStorage, sales: Dataset, escape: Path
) -> None:
    """Deleting a link removes the link itself, never what it points to."""
    local.delete(sales, "out-file.pem")
    assert (escape / "key.pem").read_bytes() == b"PRIVATE"


def test_fifo_is_not_data(local: DatasetStorage, sales: Dataset, tmp_path: Path) -> None:
    """A FIFO in the store is neither listed nor opened (it would block a reader)."""
    put(local, sales, "f.csv", b"1")
    os.mkfifo(tmp_path / "store" / "sales" / "pipe")
    assert names(local, sales) == ["f.csv"]
    with pytest.raises(NotFoundError):
        local.open_read(sales, "pipe")


def test_badly_named_files_are_not_listed(
    local: DatasetStorage, sales: Dataset, tmp_path: Path
) -> None:
    """Files whose names break the path rules (or are leftover uploads) are left out."""
    put(local, sales, "f.csv", b"1")
    root = tmp_path / "store" / "sales"
    for name in ("-rf", "a:b", ".nbguard-upload-x", "new\nline"):
        (root / name).write_bytes(b"1")
    assert names(local, sales) == ["f.csv"]


# -- errors ---------------------------------------------------------------------------


def test_unknown_protocol_is_a_storage_error(local: DatasetStorage, sales: Dataset) -> None:
    """A storage URL fsspec cannot open is StorageError; users never see the URL."""
    dataset = dataclasses.replace(sales, storage="nosuchproto://user:hunter2@host/x")
    with pytest.raises(StorageError) as caught:
        local.listing(dataset)
    assert "nosuchproto" not in caught.value.user_message
    assert "hunter2" not in str(caught.value)
    assert "nosuchproto://***@host/x" in str(caught.value)


def test_os_failure_is_a_storage_error(
    local: DatasetStorage, sales: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OS failure is StorageError: a clean user message, the location only in the log."""
    put(local, sales, "f.csv", b"1")

    def refuse(path: str, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(StorageError) as caught:
        local.open_read(sales, "f.csv")
    assert str(tmp_path) not in caught.value.user_message
    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://KEY:SECRET@bucket/x", "s3://***@bucket/x"),
        ("abfs://c/x?sig=TOKEN", "abfs://c/x"),
        ("/srv/data", "/srv/data"),
    ],
    ids=["userinfo", "query", "plain"],
)
def test_redact_url(url: str, shown: str) -> None:
    """Log messages show storage URLs without credentials or query strings."""
    assert redact_url(url) == shown


def test_empty_default_root_is_refused() -> None:
    """A storage without a default root is a configuration error."""
    with pytest.raises(NBGuardError, match="default root"):
        DatasetStorage(" ")
