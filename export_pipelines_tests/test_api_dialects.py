"""The Exelensia and Mixpeek dialects over real HTTP, on SQLite and on PostgreSQL: each seed's own
example request sent unchanged (but for the names of our sources), the answers compared field by
field with the documented shapes, the files read back with DuckDB and compared with the warehouse,
and one export seen through all three dialects with the same id and figures."""

import io
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest
import requests

from export_pipelines_tests.conftest import download
from export_pipelines_tests.rest import BASE, ApiServer, Client, run_queued

EXELENSIA_FIELDS = {"id", "schema_id", "status", "start_date", "end_date", "expand_array", "createdAt", "updatedAt"}
MIXPEEK_FIELDS = {
    "download_url", "s3_path", "format", "document_count", "file_size_bytes", "exported_at",
    "vectors_download_url", "vectors_s3_path",
}  # fmt: skip
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# Exelensia's create example, with our table as the schema.
EXELENSIA_EXAMPLE = {
    "schema_id": "payment.charges",
    "start_date": "2024-01-01T00:00:00.000Z",
    "end_date": "2024-01-31T23:59:59.999Z",
}
# Mixpeek's export example, on search.documents (a table with the example's fields).
MIXPEEK_EXAMPLE = {
    "format": "parquet",
    "include_vectors": False,
    "select_fields": ["document_id", "metadata.title", "metadata.category"],
    "filters": {
        "AND": [
            {"field": "name", "operator": "eq", "value": "John"},
            {"field": "age", "operator": "gte", "value": 30},
        ],
        "OR": [
            {"field": "status", "operator": "eq", "value": "active"},
            {"field": "role", "operator": "eq", "value": "admin"},
        ],
        "NOT": [
            {"field": "department", "operator": "eq", "value": "HR"},
            {"field": "location", "operator": "eq", "value": "remote"},
        ],
        "case_sensitive": True,
    },
    "sample_size": 500000,
}
MIXPEEK_EXPECTED = """
    SELECT document_id, metadata.title, metadata.category FROM search.documents
    WHERE name = 'John' AND age >= 30 AND (status = 'active' OR role = 'admin')
      AND NOT (department = 'HR' OR location = 'remote')
"""


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as test_instance:
        yield test_instance


@pytest.fixture
def project() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def key(api_server: ApiServer, project: str) -> str:
    return api_server.new_key("dana", project, "Dana")


def _exelensia(api_server: ApiServer, key: str, method: str, path: str = "", **kwargs: Any) -> requests.Response:
    """A request as Exelensia's client sends it: the key in x-api-key."""
    headers = {"x-api-key": key, **kwargs.pop("headers", {})}
    return requests.request(method, f"{api_server.url}/v1/exports{path}", headers=headers, timeout=120, **kwargs)


def _warehouse_rows(api_warehouse: Path, query: str) -> pl.DataFrame:
    with duckdb.connect(str(api_warehouse), read_only=True) as connection:
        return connection.sql(query).pl()


def test_exelensia_create_list_download_delete(
    api_server: ApiServer, key: str, project: str, instance, api_warehouse: Path
) -> None:
    created = _exelensia(api_server, key, "POST", json=EXELENSIA_EXAMPLE)
    assert created.status_code == 201, created.text
    export = created.json()
    assert set(export) == EXELENSIA_FIELDS
    assert {k: export[k] for k in ("schema_id", "status", "start_date", "end_date", "expand_array")} == {
        **EXELENSIA_EXAMPLE,
        "status": "PENDING",
        "expand_array": None,
    }
    assert ISO_MS.match(export["createdAt"]) and ISO_MS.match(export["updatedAt"])
    not_yet = _exelensia(api_server, key, "GET", f"/{export['id']}/download")
    assert not_yet.status_code == 409 and "PENDING" in not_yet.json()["error"]

    run_queued(api_server, instance)
    listed = _exelensia(api_server, key, "GET").json()
    assert listed["meta"] == {"page": 1, "limit": 20, "total": 1, "totalPages": 1}
    [item] = listed["data"]
    assert set(item) == EXELENSIA_FIELDS and (item["id"], item["status"]) == (export["id"], "COMPLETED")
    assert item["updatedAt"] >= item["createdAt"]

    link = _exelensia(api_server, key, "GET", f"/{export['id']}/download").json()
    assert set(link) == {"url"}
    written = pl.read_csv(io.BytesIO(download(link["url"])), try_parse_dates=True)
    expected = _warehouse_rows(
        api_warehouse,
        "SELECT id FROM payment.charges WHERE created_at BETWEEN TIMESTAMPTZ '2024-01-01 00:00:00+00' "
        "AND TIMESTAMPTZ '2024-01-31 23:59:59.999+00' ORDER BY id",
    )
    assert len(expected) == 72_390 and written["id"].to_list() == expected["id"].to_list()

    deleted = _exelensia(api_server, key, "DELETE", f"/{export['id']}")
    assert deleted.json() == {"message": "Export deleted successfully"}
    assert _exelensia(api_server, key, "GET", f"/{export['id']}/download").status_code == 404
    assert _exelensia(api_server, key, "DELETE", f"/{export['id']}").status_code == 404


def test_exelensia_dates_with_offsets_and_expand_array(api_server: ApiServer, key: str, instance) -> None:
    body = {
        "schema_id": "payment.charges",
        "start_date": "2024-01-01T01:00:00+01:00",  # = 2024-01-01T00:00:00Z: the first row
        "end_date": "2024-01-01T00:10:00Z",  # 600 s: rows 0..16 (created every 37 s)
        "expand_array": "tags",
    }
    export = _exelensia(api_server, key, "POST", json=body).json()
    assert export["expand_array"] == "tags" and export["start_date"] == body["start_date"]
    run_queued(api_server, instance)
    written = pl.read_csv(
        io.BytesIO(download(_exelensia(api_server, key, "GET", f"/{export['id']}/download").json()["url"]))
    )
    assert sorted(set(written["id"].to_list())) == list(range(17))
    assert set(written["tags"].drop_nulls().to_list()) <= {f"tag{i}" for i in range(7)}  # one tag a row


def test_exelensia_paging_sorting_search_and_errors(api_server: ApiServer, key: str, project: str) -> None:
    ends = ["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-01T12:00:00Z"]
    ids = [
        _exelensia(api_server, key, "POST", json={**EXELENSIA_EXAMPLE, "end_date": end}).json()["id"] for end in ends
    ]
    Client(api_server.url, key).create_table(project, "payment.invoices", {"format": "PARQUET"})  # no date range

    def page(**params: Any) -> dict:
        answer = _exelensia(api_server, key, "GET", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    first, second = page(limit=2), page(limit=2, page=2)
    assert first["meta"] == {"page": 1, "limit": 2, "total": 4, "totalPages": 2} and second["meta"]["page"] == 2
    newest_first = [item["id"] for item in first["data"] + second["data"]]
    assert newest_first[1:] == ids[::-1]
    oldest_first = [item["id"] for item in page(sort_by="createdAt", sort_order="asc")["data"]]
    assert oldest_first == newest_first[::-1]
    by_end = [item["end_date"] for item in page(sort_by="end_date", sort_order="asc")["data"]]
    assert by_end == [None, *sorted(ends)]
    assert [item["id"] for item in page(search=ids[1][:13])["data"]] == [ids[1]]
    assert page(fields="id,status")["data"][0].keys() == {"id", "status"}

    for params, message in [
        ({"sort_by": "bytes"}, "cannot sort by 'bytes'; sort_by takes one of id, schema_id, status"),
        ({"sort_order": "up"}, "sort_order must be asc or desc"),
        ({"limit": 101}, "limit"),
        ({"page": 0}, "page"),
        ({"fields": "id,nope"}, "unknown field(s) nope"),
    ]:
        answer = _exelensia(api_server, key, "GET", params=params)
        assert answer.status_code == 400 and message in answer.json()["error"], (params, answer.text)
    for body, status, message in [
        ({**EXELENSIA_EXAMPLE, "schema_id": "payment.nope"}, 404, "unknown table 'payment.nope'"),
        ({**EXELENSIA_EXAMPLE, "schema_id": "019760a0-0001-7000-8000-000000000001"}, 404, "unknown saved query"),
        ({**EXELENSIA_EXAMPLE, "start_date": "yesterday"}, 400, "start_date: Value error, 'yesterday' is not"),
        ({**EXELENSIA_EXAMPLE, "end_date": "2023-12-31T00:00:00Z"}, 400, "is after end_date"),
        ({"schema_id": "payment.charges"}, 400, "start_date: Field required"),
        ({**EXELENSIA_EXAMPLE, "format": "CSV"}, 400, "format: unknown field"),
        ({**EXELENSIA_EXAMPLE, "schema_id": "payment.invoices"}, 400, "unknown field created_at"),
    ]:
        answer = _exelensia(api_server, key, "POST", json=body)
        assert answer.status_code == status and message in answer.json()["error"], (body, answer.text)
    assert _exelensia(api_server, "nope.nope", "GET").status_code == 401
    partner = api_server.new_key("pat", None)
    assert _exelensia(api_server, partner, "GET").status_code == 403


def _mixpeek(api_server: ApiServer, key: str, collection: str, body: dict, **params: Any) -> requests.Response:
    """A request as Mixpeek's client sends it: the key as Bearer."""
    return requests.post(
        f"{api_server.url}/v1/collections/{collection}/export",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        params=params,
        timeout=400,
    )


def _while_running(api_server: ApiServer, instance, send) -> requests.Response:
    """Send a request that waits for its export, running the queued exports meanwhile (as a worker would)."""
    answers: list[requests.Response] = []
    sender = threading.Thread(target=lambda: answers.append(send()))
    sender.start()
    while sender.is_alive():
        run_queued(api_server, instance)
        sender.join(timeout=0.2)
    return answers[0]


def test_mixpeek_example_answers_with_the_file(
    api_server: ApiServer, key: str, project: str, instance, api_warehouse: Path
) -> None:
    answer = _while_running(
        api_server, instance, lambda: _mixpeek(api_server, key, "search.documents", MIXPEEK_EXAMPLE)
    )
    assert answer.status_code == 200, answer.text
    exported = answer.json()
    assert set(exported) == MIXPEEK_FIELDS and exported["format"] == "parquet"
    expected = _warehouse_rows(api_warehouse, MIXPEEK_EXPECTED + " ORDER BY document_id")
    data = download(exported["download_url"])
    written = pl.read_parquet(io.BytesIO(data))
    assert written.columns == ["document_id", "metadata.title", "metadata.category"]
    assert written.sort("document_id").rows() == expected.rows() and exported["document_count"] == len(expected) > 0
    assert exported["file_size_bytes"] == len(data)
    assert re.fullmatch(rf"s3://exports/api-\w+/{project}/[0-9a-f-]+/documents-00000\.parquet", exported["s3_path"])
    assert exported["vectors_download_url"] is None and exported["vectors_s3_path"] is None
    assert exported["exported_at"].endswith("Z")


def test_mixpeek_vectors_json_sample_and_the_202(api_server: ApiServer, key: str, project: str, instance) -> None:
    body = {
        "format": "json",
        "include_vectors": True,
        "sample_size": 25,
        "select_fields": ["document_id", "name", "embedding"],
    }
    exported = _while_running(api_server, instance, lambda: _mixpeek(api_server, key, "search.documents", body)).json()
    rows = pl.read_ndjson(io.BytesIO(download(exported["download_url"])))
    vectors = pl.read_ndjson(io.BytesIO(download(exported["vectors_download_url"])))
    assert exported["document_count"] == len(rows) == len(vectors) == 25 and rows.columns == ["document_id", "name"]
    assert (
        vectors.columns == ["document_id", "embedding"]
        and rows["document_id"].to_list() == vectors["document_id"].to_list()
    )
    assert exported["vectors_s3_path"].endswith("/documents_vectors.jsonl")

    pending = _mixpeek(api_server, key, "search.documents", {"sample_size": 3}, wait=0)
    assert pending.status_code == 202 and pending.json()["status"] == "PENDING", pending.text
    followed = Client(api_server.url, key).get(project, pending.json()["id"])
    assert followed.status_code == 200 and followed.json()["status"] == "PENDING"

    for collection, body, status, message in [
        ("search.nope", {}, 404, "unknown table 'search.nope'"),
        ("search.documents", {"sample_size": 0}, 400, "sample_size: Input should be greater than or equal to 1"),
        ("search.documents", {"sample_size": 1_000_001}, 400, "sample_size: Input should be less than or equal to"),
        ("search.documents", {"format": "xml"}, 400, "format: Input should be 'json', 'csv' or 'parquet'"),
        ("search.documents", {"select_fields": ["nope"]}, 400, "unknown column nope"),
        (
            "search.documents",
            {"filters": {"AND": [{"field": "x", "operator": "eq", "value": 1}]}},
            400,
            "unknown field x",
        ),
        ("payment.customers", {"include_vectors": True}, 400, "hold no vector column"),
    ]:
        answer = _mixpeek(api_server, key, collection, body, wait=0)
        assert answer.status_code == status and message in answer.json()["error"], (body, answer.text)


def test_one_export_through_three_dialects(api_server: ApiServer, key: str, project: str, instance) -> None:
    exported = _while_running(
        api_server, instance, lambda: _mixpeek(api_server, key, "payment.charges", {"format": "csv", "sample_size": 40})
    ).json()
    client = Client(api_server.url, key)
    [main] = client.list(project).json()
    assert (main["status"], main["rowCount"], main["format"], main["tableName"]) == ("SUCCEEDED", 40, "CSV", "charges")
    assert main["files"][0]["bytes"] == exported["file_size_bytes"] and main["clientSource"].startswith(
        "python-requests"
    )
    [exelensia] = _exelensia(api_server, key, "GET").json()["data"]
    assert (exelensia["id"], exelensia["schema_id"], exelensia["status"]) == (
        main["id"],
        "payment.charges",
        "COMPLETED",
    )
    assert exelensia["start_date"] is None and exelensia["end_date"] is None
    made = _exelensia(api_server, key, "POST", json=EXELENSIA_EXAMPLE).json()
    seen = client.get(project, made["id"]).json()
    assert (seen["id"], seen["status"], seen["format"], seen["schemaName"]) == (made["id"], "PENDING", "CSV", "payment")
    assert client.request("GET", f"{BASE}/{project}/exports/{made['id']}").json()["id"] == made["id"]
