"""The catalog API and the dataset broker, through the real hub, proxy and service."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import CATALOG, Client, Guard, age_mfa, server_client, user_client
from .test_decisions_api import error_of, ledger_access

pytestmark = pytest.mark.asyncio(loop_scope="module")


def data_dir(guard: Guard, dataset: str) -> Path:
    """Where a dataset without its own storage keeps its files."""
    folder = guard.tmp / "data" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def plant(guard: Guard, dataset: str, content: bytes) -> str:
    """Write a new file into a dataset's store directly; return its path."""
    name = f"f-{secrets.token_hex(4)}.bin"
    (data_dir(guard, dataset) / name).write_bytes(content)
    return name


def leftovers(guard: Guard, dataset: str) -> list[str]:
    """Every name under a dataset's store (uploads in progress included)."""
    root = data_dir(guard, dataset)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def direct(client: Client, method: str, path: str, **kw: Any) -> requests.Response:
    """Call the service on its own port, not through the proxy.

    For what configurable-http-proxy changes on the way: it answers chunked
    request bodies with 400 and zeroes Content-Length of HEAD answers.
    """
    service = client.guard.service
    url = service.service_url + service.service_prefix + path
    headers = {"Authorization": f"token {client.token}"}
    return await asyncio.to_thread(requests.request, method, url, headers=headers, timeout=30, **kw)


async def raw(guard: Guard, method: str, path: str, token: str | None) -> tuple[int, bytes, str]:
    """Send ``path`` to the service exactly as written (no client-side normalisation)."""
    url = urlsplit(guard.url(""))

    def send() -> tuple[int, bytes, str]:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {"Authorization": f"token {token}"} if token else {}
        try:
            connection.request(method, url.path + path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Content-Type", "")
        finally:
            connection.close()

    return await asyncio.to_thread(send)


# -- the catalog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "teams", "expected"),
    [
        pytest.param(
            ("data-scientist",),
            ("analytics",),
            {
                "weather": ["dataset.read", "dataset.write", "dataset.export"],
                "sales": ["dataset.read", "dataset.write"],
                "features": ["dataset.read", "dataset.write"],
                "ledger-prod": [],
            },
            id="data-scientist",
        ),
        pytest.param(
            ("reviewer",),
            ("analytics",),
            {name: [] for name in CATALOG["datasets"]},
            id="reviewer",
        ),
        pytest.param(
            ("admin",),
            ("analytics",),
            {
                "weather": ["dataset.read"],
                "sales": ["dataset.read"],
                "features": [],
                "customers": [],
                "ledger-prod": [],
            },
            id="admin",
        ),
    ],
)
async def test_listing_shows_what_each_role_may_see(
    guard: Guard, roles: tuple[str, ...], teams: tuple[str, ...], expected: dict[str, list[str]]
) -> None:
    """Each role lists only the datasets it may list, with the actions it may take now."""
    client = await user_client(guard, *roles, teams=teams)
    response = await client.call("GET", "api/v1/datasets")
    assert response.status_code == 200, response.text
    shown = {d["name"]: d for d in response.json()["datasets"] if d["name"] in CATALOG["datasets"]}
    assert {name: d["actions"] for name, d in shown.items()} == expected
    for dataset in shown.values():
        assert "storage" not in dataset
    assert shown.get("sales", {}).get("description", "Sales by region") == "Sales by region"


async def test_one_dataset_and_a_hidden_one_answer_alike(guard: Guard) -> None:
    """A dataset the caller may not list is the same 404 as one that does not exist."""
    client = await user_client(guard)
    sales = await client.call("GET", "api/v1/datasets/sales")
    assert sales.status_code == 200
    assert sales.json()["actions"] == ["dataset.read", "dataset.write"]
    hidden = await client.call("GET", "api/v1/datasets/customers")
    missing = await client.call("GET", "api/v1/datasets/customerz")
    assert hidden.status_code == missing.status_code == 404
    hidden_error, missing_error = error_of(hidden), error_of(missing)
    assert hidden_error["message"].replace("customers", "X") == missing_error["message"].replace(
        "customerz", "X"
    )


async def test_admin_creates_replaces_and_deletes_a_dataset(guard: Guard) -> None:
    """Admins create (201), replace (200) and delete (204) entries and see their storage."""
    admin = await user_client(guard, "admin")
    fields = {"team": "analytics", "sensitivity": "internal", "environment": "dev"}
    created = await admin.call("PUT", "api/v1/datasets/scratch-a", json=fields)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "scratch-a",
        "description": "",
        "owner": "",
        "storage": "",
        **fields,
    }
    replaced = await admin.call(
        "PUT", "api/v1/datasets/scratch-a", json={**fields, "description": "Scratch"}
    )
    assert replaced.status_code == 200
    shown = (await admin.call("GET", "api/v1/datasets/scratch-a")).json()
    assert shown["description"] == "Scratch"
    deleted = await admin.call("DELETE", "api/v1/datasets/scratch-a")
    assert deleted.status_code == 204
    assert (await admin.call("GET", "api/v1/datasets/scratch-a")).status_code == 404
    again = await admin.call("DELETE", "api/v1/datasets/scratch-a")
    assert again.status_code == 404


async def test_non_admin_cannot_change_the_catalog(guard: Guard) -> None:
    """A data scientist's PUT and DELETE are 403 with the reason; nothing changes."""
    client = await user_client(guard)
    fields = {"team": "analytics", "sensitivity": "public", "environment": "dev"}
    for method, kw in (("PUT", {"json": fields}), ("DELETE", {})):
        response = await client.call(method, "api/v1/datasets/weather", **kw)
        assert response.status_code == 403, response.text
        error = error_of(response)
        assert error["code"] == "access_denied"
        assert error["message"]
    assert guard.service.catalog.get("weather").sensitivity == "public"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"team": "analytics", "sensitivity": "secret", "environment": "dev"},
                     "sensitivity", id="bad-sensitivity"),
        pytest.param({"team": "analytics", "sensitivity": "public", "environment": "moon"},
                     "environment", id="bad-environment"),
        pytest.param({"team": "a b", "sensitivity": "public", "environment": "dev"}, "team",
                     id="bad-team"),
        pytest.param({"sensitivity": "public", "environment": "dev"}, "team", id="missing-team"),
        pytest.param({"team": "analytics", "sensitivity": "public", "environment": "dev",
                      "storage": "relative/dir"}, "storage", id="bad-storage"),
        pytest.param({"team": "analytics", "sensitivity": "public", "environment": "dev",
                      "name": "other"}, "name", id="smuggled-name"),
        pytest.param({"team": 7, "sensitivity": "public", "environment": "dev"}, "team",
                     id="wrong-type"),
    ],
)  # fmt: skip
async def test_bad_dataset_fields_are_400_naming_the_field(
    guard: Guard, body: dict[str, Any], field: str
) -> None:
    """An admin's invalid entry is a 400 whose message names the field; nothing is stored."""
    admin = await user_client(guard, "admin")
    response = await admin.call("PUT", "api/v1/datasets/scratch-b", json=body)
    assert response.status_code == 400, response.text
    assert field in error_of(response)["message"]
    assert (await admin.call("GET", "api/v1/datasets/scratch-b")).status_code == 404


async def test_admin_with_stale_mfa_is_sent_to_step_up(guard: Guard) -> None:
    """Changing the catalog needs a recent second factor: 403 with the step-up page."""
    admin = await user_client(guard, "admin")
    await age_mfa(guard, admin.name, 20000)
    fields = {"team": "analytics", "sensitivity": "public", "environment": "dev"}
    response = await admin.call("PUT", "api/v1/datasets/scratch-c", json=fields)
    assert response.status_code == 403, response.text
    assert error_of(response)["step_up_url"].endswith("hub/nbguard/mfa/step-up")


# -- reading -----------------------------------------------------------------------------

CONTENT = bytes(range(256)) * 40  # 10240 bytes


@pytest.mark.parametrize(
    ("headers", "status", "part"),
    [
        pytest.param({}, 200, slice(None), id="full"),
        pytest.param({"Range": "bytes=0-99"}, 206, slice(0, 100), id="first-last"),
        pytest.param({"Range": "bytes=10000-"}, 206, slice(10000, None), id="open-ended"),
        pytest.param({"Range": "bytes=-17"}, 206, slice(-17, None), id="suffix"),
        pytest.param({"Range": "bytes=5-5"}, 206, slice(5, 6), id="one-byte"),
        pytest.param({"Range": "bytes=0-1,4-5"}, 200, slice(None), id="multiple-means-whole"),
        pytest.param({"Range": "bytes=9-3"}, 200, slice(None), id="malformed-ignored"),
        pytest.param({"Range": "bytes=0-9", "If-Range": '"stale"'}, 200, slice(None),
                     id="if-range-stale"),
    ],
)  # fmt: skip
async def test_read_whole_and_ranges(
    guard: Guard, headers: dict[str, str], status: int, part: slice
) -> None:
    """Reads answer the exact bytes, with 206 and Content-Range for a single range."""
    client = await user_client(guard)
    path = plant(guard, "sales", CONTENT)
    response = await client.call("GET", f"api/v1/datasets/sales/objects/{path}", headers=headers)
    assert response.status_code == status, response.text
    assert response.content == CONTENT[part]
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert int(response.headers["Content-Length"]) == len(CONTENT[part])
    if status == 206:
        start, stop, _ = part.indices(len(CONTENT))
        assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(CONTENT)}"


async def test_unsatisfiable_range_is_416(guard: Guard) -> None:
    """A range past the end is 416 with the file's size in Content-Range."""
    client = await user_client(guard)
    path = plant(guard, "sales", CONTENT)
    response = await client.call(
        "GET", f"api/v1/datasets/sales/objects/{path}", headers={"Range": "bytes=20000-"}
    )
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(CONTENT)}"
    assert error_of(response)["code"] == "range_not_satisfiable"


async def test_head_and_if_range_with_the_etag(guard: Guard) -> None:
    """HEAD sends GET's headers without a body; If-Range with the current ETag honours Range."""
    client = await user_client(guard)
    path = plant(guard, "sales", CONTENT)
    head = await client.call("HEAD", f"api/v1/datasets/sales/objects/{path}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Last-Modified"]
    head = await direct(client, "HEAD", f"api/v1/datasets/sales/objects/{path}")
    assert int(head.headers["Content-Length"]) == len(CONTENT)
    ranged = await client.call(
        "GET",
        f"api/v1/datasets/sales/objects/{path}",
        headers={"Range": "bytes=1-2", "If-Range": head.headers["ETag"]},
    )
    assert ranged.status_code == 206
    assert ranged.content == CONTENT[1:3]


async def test_listing_objects(guard: Guard) -> None:
    """Listing a folder shows its files with sizes; a missing folder is 404."""
    client = await user_client(guard)
    folder = f"dir-{secrets.token_hex(3)}"
    (data_dir(guard, "sales") / folder).mkdir()
    (data_dir(guard, "sales") / folder / "a.csv").write_bytes(b"x,y\n")
    response = await client.call(
        "GET", "api/v1/datasets/sales/objects", params={"prefix": folder + "/"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dataset"] == "sales"
    assert body["prefix"] == folder
    assert [(o["name"], o["size"], o["type"]) for o in body["objects"]] == [
        (f"{folder}/a.csv", 4, "file")
    ]
    missing = await client.call(
        "GET", "api/v1/datasets/sales/objects", params={"prefix": "nowhere"}
    )
    assert missing.status_code == 404
    assert "nowhere" in error_of(missing)["message"]


async def test_multi_chunk_read_is_one_ledger_record_with_its_cell(guard: Guard) -> None:
    """A read spanning many chunks is one access record, with the cell header's cell."""
    client = await user_client(guard)
    content = os.urandom(1024 * 1024 + 7)
    path = plant(guard, "sales", content)
    cell = {"kernel_id": "k-2", "cell_id": "c-1", "msg_id": "m-1", "seq": 3}
    saved = guard.service.stream_chunk_bytes
    guard.service.stream_chunk_bytes = 64 * 1024
    try:
        response = await client.call(
            "GET",
            f"api/v1/datasets/sales/objects/{path}",
            headers={"X-NBGuard-Cell": json.dumps(cell)},
        )
    finally:
        guard.service.stream_chunk_bytes = saved
    assert response.content == content
    records = [r for r in ledger_access(guard, client.name) if r["action"] == "dataset.read"]
    assert len(records) == 1
    assert records[0]["resource"] == "dataset:sales"
    assert records[0]["allowed"] is True
    assert records[0]["cell"] == cell
    assert records[0]["policy_ids"] == ["data-scientist.datasets.read"]


async def test_prod_data_from_a_train_server_is_403(guard: Guard) -> None:
    """Environment separation holds at the broker: prod data from a train server is refused."""
    client = await server_client(guard, "data-scientist", teams=("risk",))
    path = plant(guard, "ledger-prod", b"secret")
    response = await client.call("GET", f"api/v1/datasets/ledger-prod/objects/{path}")
    assert response.status_code == 403
    error = error_of(response)
    assert "context.environment-separation" in error["decision"]["policy_ids"]
    assert b"secret" not in response.content


# -- writing -----------------------------------------------------------------------------


async def test_write_read_back_and_delete(guard: Guard) -> None:
    """An upload is 201 with its info, reads back byte for byte, and deletes with 204."""
    client = await user_client(guard)
    content = os.urandom(300_000)
    url = "api/v1/datasets/weather/objects/up/new.bin"
    created = await client.call("PUT", url, data=content)
    assert created.status_code == 201, created.text
    info = created.json()
    assert (info["name"], info["size"], info["type"]) == ("up/new.bin", len(content), "file")
    assert info["modified"].endswith("Z")
    assert (await client.call("GET", url)).content == content
    chunked = await direct(client, "PUT", url, data=iter([b"a" * 1000, b"b" * 5]))
    assert chunked.status_code == 201
    assert (data_dir(guard, "weather") / "up" / "new.bin").read_bytes() == b"a" * 1000 + b"b" * 5
    assert (await client.call("DELETE", url)).status_code == 204
    assert (await client.call("GET", url)).status_code == 404
    assert not [p for p in leftovers(guard, "weather") if ".nbguard-" in p]


@pytest.mark.parametrize(
    "chunked", [pytest.param(False, id="content-length"), pytest.param(True, id="chunked")]
)
async def test_upload_over_the_limit_is_413_and_keeps_nothing(guard: Guard, chunked: bool) -> None:
    """Bodies over max_upload_bytes are refused with 413, declared or counted; nothing stays."""
    client = await user_client(guard)
    url = f"api/v1/datasets/weather/objects/big-{chunked}.bin"
    saved = guard.service.max_upload_bytes
    guard.service.max_upload_bytes = 100_000
    try:
        if chunked:
            response = await direct(client, "PUT", url, data=iter([b"x" * 60_000] * 3))
        else:
            response = await client.call("PUT", url, data=b"x" * 100_001)
    finally:
        guard.service.max_upload_bytes = saved
    assert response.status_code == 413, response.text
    assert error_of(response)["code"] == "too_large"
    await settle(guard, "weather")
    assert not (data_dir(guard, "weather") / f"big-{chunked}.bin").exists()


async def settle(guard: Guard, dataset: str) -> None:
    """Wait (briefly) until no upload temporary is left in a dataset's store."""
    for _ in range(100):
        if not [p for p in leftovers(guard, dataset) if ".nbguard-" in p]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"upload temporaries left: {leftovers(guard, dataset)}")


async def test_aborted_upload_leaves_nothing(guard: Guard) -> None:
    """A client that closes its socket mid-body leaves no file and no temporary."""
    client = await user_client(guard)
    url = urlsplit(guard.url("api/v1/datasets/weather/objects/aborted.bin"))

    def send_half() -> None:
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            head = (
                f"PUT {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
                f"Authorization: token {client.token}\r\nContent-Length: 1000000\r\n\r\n"
            )
            sock.sendall(head.encode() + b"x" * 200_000)

    await asyncio.to_thread(send_half)
    await asyncio.sleep(0.5)
    await settle(guard, "weather")
    assert not (data_dir(guard, "weather") / "aborted.bin").exists()


async def test_reviewer_cannot_write(guard: Guard) -> None:
    """A reviewer's upload and delete are 403 and nothing is written or removed."""
    client = await user_client(guard, "reviewer")
    path = plant(guard, "weather", b"keep")
    response = await client.call("PUT", "api/v1/datasets/weather/objects/r.bin", data=b"no")
    assert response.status_code == 403, response.text
    assert error_of(response)["code"] == "access_denied"
    deleted = await client.call("DELETE", f"api/v1/datasets/weather/objects/{path}")
    assert deleted.status_code == 403
    assert not (data_dir(guard, "weather") / "r.bin").exists()
    assert (data_dir(guard, "weather") / path).read_bytes() == b"keep"


# -- attacks -----------------------------------------------------------------------------

SECRET = b"outside-secret-" + secrets.token_hex(8).encode()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("datasets/sales/objects/../../../../etc/passwd", id="dot-dot"),
        pytest.param("datasets/sales/objects/a/%2e%2e/%2e%2e/outside.txt", id="encoded-dot-dot"),
        pytest.param("datasets/sales/objects/..%2F..%2Foutside.txt", id="encoded-slash"),
        pytest.param("datasets/sales/objects/%2e%2e%2f%2e%2e%2foutside.txt", id="encoded-both"),
        pytest.param("datasets/sales/objects/%252e%252e/outside.txt", id="double-encoded"),
        pytest.param("datasets/sales/objects//etc/passwd", id="absolute"),
        pytest.param("datasets/sales/objects/%2Fetc%2Fpasswd", id="encoded-absolute"),
        pytest.param("datasets/sales/objects/..%5C..%5Coutside.txt", id="backslash"),
        pytest.param("datasets/sales/objects/a%00b", id="nul"),
        pytest.param("datasets/sales/objects/" + "a" * 300, id="long-segment"),
        pytest.param("datasets/sales/objects/" + "a/" * 600 + "b", id="long-path"),
        pytest.param("datasets/sales/objects/link/passwd", id="planted-symlink"),
        pytest.param("datasets/sales/objects/link/x/y", id="write-through-symlink"),
        pytest.param("datasets/..%2Fsales/objects/x", id="dataset-traversal"),
        pytest.param("datasets/..%2F..%2Foutside.txt/objects/x", id="dataset-to-outside"),
        pytest.param("datasets/%2e%2e/objects/outside.txt", id="dataset-dot-dot"),
        pytest.param("datasets/sales/objects/%ff", id="invalid-utf8"),
    ],
)
async def test_attacker_paths_stay_inside(guard: Guard, path: str) -> None:
    """Traversal, encodings, links and odd names are 4xx JSON and reach nothing outside."""
    outside = guard.tmp / "data" / "outside.txt"
    outside.write_bytes(SECRET)
    sales = data_dir(guard, "sales")
    if not (sales / "link").is_symlink():
        (sales / "link").symlink_to("/etc")
        (sales / "link-file").symlink_to(outside)
    client = await user_client(guard)
    for method in ("GET", "PUT", "DELETE"):
        status, body, content_type = await raw(guard, method, "api/v1/" + path, client.token)
        assert 400 <= status < 500, (method, status, body[:200])
        assert SECRET not in body
        assert b"root:" not in body
        assert str(guard.tmp).encode() not in body
        # Undecodable URLs and paths no route matches are refused by tornado's router
        # (plain 400 and 404 pages), before any handler runs.
        if "%ff" not in path and status != 404:
            assert content_type.startswith("application/json"), (method, status, body[:200])
    assert outside.read_bytes() == SECRET


async def test_a_link_leading_out_is_never_followed(guard: Guard) -> None:
    """A planted link to an outside file is not read; writing or deleting it touches the link."""
    outside = guard.tmp / "data" / "outside-2.txt"
    outside.write_bytes(SECRET)
    (data_dir(guard, "sales") / "link-out").symlink_to(outside)
    client = await user_client(guard)
    url = "api/v1/datasets/sales/objects/link-out"
    read = await client.call("GET", url)
    assert read.status_code == 404
    assert SECRET not in read.content
    assert (await client.call("PUT", url, data=b"mine")).status_code == 201
    assert (await client.call("DELETE", url)).status_code == 204
    assert outside.read_bytes() == SECRET


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="no-token"),
        pytest.param("forged-" + secrets.token_hex(16), id="forged-token"),
    ],
)
async def test_no_or_forged_token_is_401(guard: Guard, token: str | None) -> None:
    """Without a valid token nothing is listed, read or written."""
    path = plant(guard, "weather", b"data")
    for method, url in (
        ("GET", "api/v1/datasets"),
        ("GET", f"api/v1/datasets/weather/objects/{path}"),
        ("PUT", "api/v1/datasets/weather/objects/anon.bin"),
        ("DELETE", f"api/v1/datasets/weather/objects/{path}"),
    ):
        status, _body, content_type = await raw(guard, method, url, token)
        assert status == 401, (method, url, status)
        assert content_type.startswith("application/json")
    assert not (data_dir(guard, "weather") / "anon.bin").exists()
    assert (data_dir(guard, "weather") / path).exists()


async def test_another_teams_token_reads_nothing(guard: Guard) -> None:
    """A user of another team gets 403 for confidential team data, with no bytes."""
    other = await user_client(guard, teams=("risk",))
    path = plant(guard, "features", b"team-only")
    response = await other.call("GET", f"api/v1/datasets/features/objects/{path}")
    assert response.status_code == 403
    assert b"team-only" not in response.content
    assert error_of(response)["code"] == "access_denied"


async def test_unknown_dataset_is_404_json(guard: Guard) -> None:
    """An object of a dataset that is not in the catalog is a 404 JSON error."""
    client: Client = await user_client(guard)
    response = await client.call("GET", "api/v1/datasets/no-such/objects/a.csv")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
