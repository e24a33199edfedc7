"""Dataset: validation of every field, the Cedar entity, the JSON forms."""

from __future__ import annotations

from typing import Any

import pytest

from nbguard.catalog.models import Dataset, DatasetFieldError, check_dataset_name
from nbguard.errors import RequestError

VALID: dict[str, Any] = {
    "name": "sales",
    "team": "analytics",
    "sensitivity": "internal",
    "environment": "train",
}


@pytest.mark.parametrize(
    "name", ["a", "sales", "sales_2025", "0day", "x-y", "a" * 63], ids=lambda n: n[:10]
)
def test_good_names_pass(name: str) -> None:
    """Names of 1 to 63 lower-case letters, digits, '_' and '-' are returned unchanged."""
    assert check_dataset_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("Sales", id="upper"),
        pytest.param("-sales", id="leading-dash"),
        pytest.param("_sales", id="leading-underscore"),
        pytest.param("a" * 64, id="too-long"),
        pytest.param("sales/x", id="slash"),
        pytest.param("..", id="dotdot"),
        pytest.param("sales ", id="trailing-space"),
        pytest.param("sales\n", id="newline"),
        pytest.param("sälès", id="non-ascii"),
        pytest.param(7, id="not-text"),
    ],
)
def test_bad_names_fail(name: Any) -> None:
    """Anything else is a RequestError naming the field."""
    with pytest.raises(RequestError, match="invalid dataset name") as caught:
        check_dataset_name(name)
    assert isinstance(caught.value, DatasetFieldError)
    assert caught.value.field == "name"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("team", "", id="team-empty"),
        pytest.param("team", "ana lytics", id="team-space"),
        pytest.param("team", "a" * 129, id="team-long"),
        pytest.param("owner", "dave\x1b[31m", id="owner-escape"),
        pytest.param("owner", ".dave", id="owner-dot"),
        pytest.param("owner", "dave\n", id="owner-newline"),
        pytest.param("sensitivity", "secret", id="sensitivity-unknown"),
        pytest.param("environment", "production", id="environment-unknown"),
        pytest.param("description", "x" * 2001, id="description-long"),
        pytest.param("description", "bell\x07", id="description-control"),
        pytest.param("description", 5, id="description-not-text"),
        pytest.param("storage", "relative/dir", id="storage-relative"),
        pytest.param("storage", " s3://b/x", id="storage-space"),
        pytest.param("storage", "s3://b/x\n", id="storage-newline"),
        pytest.param("storage", "s3://" + "x" * 2048, id="storage-long"),
    ],
)
def test_bad_fields_name_the_field(field: str, value: Any) -> None:
    """Each invalid field raises DatasetFieldError with that field and a message naming it."""
    with pytest.raises(DatasetFieldError) as caught:
        Dataset(**{**VALID, field: value})
    assert caught.value.field == field
    assert field in caught.value.user_message


def test_storage_value_is_never_echoed() -> None:
    """A refused storage URL is not repeated in the error (it may hold credentials)."""
    with pytest.raises(DatasetFieldError) as caught:
        Dataset(**VALID, storage="s3://KEY:SECRET@bucket/x ")
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in caught.value.user_message


@pytest.mark.parametrize(
    "storage",
    ["", "file:///srv/data/sales", "/srv/data/sales", "s3://bucket/sales", "simplecache::s3://b/x"],
    ids=["default", "file-url", "absolute", "s3", "chained"],
)
def test_good_storage_passes(storage: str) -> None:
    """Storage is empty (default store), an fsspec URL or an absolute directory."""
    assert Dataset(**VALID, storage=storage).storage == storage


def test_multiline_description_and_email_owner() -> None:
    """Descriptions may span lines; owners may be e-mail-like JupyterHub names."""
    dataset = Dataset(**VALID, description="line 1\n\tline 2", owner="a.b+c@example.org")
    assert dataset.owner == "a.b+c@example.org"


def test_to_entity_is_the_policy_dataset(sales: Dataset) -> None:
    """to_entity builds the Cedar Dataset entity with team, owner and grant key."""
    entity = sales.to_entity()
    assert entity["uid"] == {"type": "nbguard::Dataset", "id": "sales"}
    assert entity["attrs"]["key"] == "dataset:sales"
    assert entity["attrs"]["owner"] == {"__entity": {"type": "nbguard::User", "id": "dave"}}
    assert entity["attrs"]["team"] == {"__entity": {"type": "nbguard::Team", "id": "analytics"}}


def test_to_entity_without_owner() -> None:
    """A dataset without owner has no owner attribute."""
    assert "owner" not in Dataset(**VALID).to_entity()["attrs"]


def test_to_dict_hides_storage_unless_asked() -> None:
    """to_dict leaves storage out by default and includes it for admins."""
    dataset = Dataset(**VALID, storage="s3://bucket/sales")
    assert "storage" not in dataset.to_dict()
    assert dataset.to_dict(include_storage=True)["storage"] == "s3://bucket/sales"


def test_from_dict_round_trips() -> None:
    """from_dict(to_dict(include_storage=True)) gives back an equal dataset."""
    dataset = Dataset(**VALID, description="d", owner="dave", storage="/srv/x")
    assert Dataset.from_dict(dataset.to_dict(include_storage=True)) == dataset


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({**VALID, "colour": "red"}, "colour", id="unknown"),
        pytest.param(
            {"name": "x", "team": "t", "sensitivity": "public"}, "environment", id="missing"
        ),
    ],
)
def test_from_dict_refuses_unknown_and_missing(data: dict[str, Any], field: str) -> None:
    """from_dict names an unknown or missing field."""
    with pytest.raises(DatasetFieldError, match=field) as caught:
        Dataset.from_dict(data)
    assert caught.value.field == field


def test_dataset_is_frozen(sales: Dataset) -> None:
    """A Dataset cannot be changed after its fields were checked."""
    with pytest.raises(AttributeError):
        sales.name = "../etc"  # type: ignore[misc]
