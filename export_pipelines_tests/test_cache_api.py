"""The cache routes over real HTTP, on SQLite and on PostgreSQL request tables, with a real
PostgreSQL catalog: batch create with mixed items, list, get (status, figures, next refresh),
refresh now, delete; exporting the cached table through the table route with the catalog id (404
without an entry, 409 before the first copy, the file compared with the source), its preview, and
the project boundary. The refresh sensor is ticked by the test, which runs each refresh in process."""

import uuid
from datetime import datetime
from decimal import Decimal

import dagster as dg
import duckdb
import psycopg2
import pytest

from export_pipelines_tests.conftest import CATALOG_ID, download
from export_pipelines_tests.rest import ApiServer, Client, run_due_refreshes, run_queued

SIX_HOURS = {"type": "BASIC", "expression": "PT6H"}
NIGHTLY = {"type": "CRON", "expression": "0 3 * * *"}
CACHE_FIELDS = {
    "id", "appId", "catalogId", "schemaName", "tableName", "incrementalCacheSchedule", "fullRefreshCacheSchedule",
    "status", "rowCount", "lastRefreshAt", "lastFullRefreshAt", "nextRefreshAt", "error", "createdAt", "updatedAt",
}  # fmt: skip


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def project() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(api_server: ApiServer, project: str) -> Client:
    return api_server.client(api_server.new_key("cara", project, "Cara"))


def charges(**schedules) -> dict:
    return {"catalogId": CATALOG_ID, "schemaName": "public", "tableName": "charges", **schedules}


def test_batch_create_list_get_refresh_delete(
    api_server: ApiServer, client: Client, project: str, instance: dg.DagsterInstance
) -> None:
    answer = client.cache(
        "POST",
        project,
        "/batch",
        json=[
            charges(incrementalCacheSchedule=SIX_HOURS, fullRefreshCacheSchedule=NIGHTLY),
            {**charges(), "tableName": "refunds"},
            {**charges(), "catalogId": "unknown"},
            charges(incrementalCacheSchedule={"type": "BASIC", "expression": "PT10S"}),
            {"catalogId": CATALOG_ID},
        ],
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()
    assert [r["success"] for r in results] == [True, False, False, False, False]
    assert all(set(r) == {"success", "error", "cache"} for r in results)
    assert "has no table public.refunds" in results[1]["error"] and "unknown catalog 'unknown'" in results[2]["error"]
    assert "shorter than the minimum of one minute" in results[3]["error"]
    assert "schemaName: Field required" in results[4]["error"] and results[4]["cache"] is None
    cache = results[0]["cache"]
    assert set(cache) == CACHE_FIELDS and cache["appId"] == project and cache["status"] == "PENDING"
    assert (cache["incrementalCacheSchedule"], cache["fullRefreshCacheSchedule"]) == (SIX_HOURS, NIGHTLY)
    assert cache["nextRefreshAt"] is not None and cache["createdAt"].endswith("Z")

    export_path = f"/api/v1/data/projects/{project}/catalogs/{CATALOG_ID}/schemas/public/tables"
    early = client.request("POST", f"{export_path}/charges/exports", json={})
    assert early.status_code == 409 and "not ready yet" in early.json()["error"]
    missing = client.request("POST", f"{export_path}/refunds/exports", json={})
    assert missing.status_code == 404 and "is not cached in project" in missing.json()["error"]

    def launched() -> list[str]:  # the refreshes run for this entry (other tests share the request table)
        return [
            r.run_key.split(":")[1] for r in run_due_refreshes(api_server, instance) if r.partition_key == cache["id"]
        ]

    assert launched() == ["first"]
    ready = client.cache("GET", project, f"/{cache['id']}").json()
    assert (ready["status"], ready["rowCount"], ready["error"]) == ("READY", 1000, None)
    assert ready["lastRefreshAt"] == ready["lastFullRefreshAt"]
    assert datetime.fromisoformat(ready["nextRefreshAt"]) > datetime.fromisoformat(ready["lastRefreshAt"])
    assert launched() == []  # nothing more is due

    again = client.cache("POST", project, "/batch", json=[charges(incrementalCacheSchedule=SIX_HOURS)]).json()
    assert again[0]["cache"]["id"] == cache["id"] and again[0]["cache"]["fullRefreshCacheSchedule"] is None
    assert [c["id"] for c in client.cache("GET", project).json()] == [cache["id"]]

    refreshed = client.cache("POST", project, f"/{cache['id']}/refresh", params={"full": "true"})
    assert refreshed.status_code == 202 and refreshed.json()["id"] == cache["id"]
    assert launched() == ["asked"]
    after = client.cache("GET", project, f"/{cache['id']}").json()
    assert after["lastFullRefreshAt"] > ready["lastFullRefreshAt"]  # the refresh asked for was a full one

    deleted = client.cache("DELETE", project, f"/{cache['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"message": "Cache deleted successfully"}
    assert client.cache("GET", project, f"/{cache['id']}").status_code == 404
    assert client.cache("POST", project, f"/{cache['id']}/refresh").status_code == 404


def test_export_a_cached_table_through_the_table_route(
    api_server: ApiServer, api_catalog: str, client: Client, project: str, instance: dg.DagsterInstance
) -> None:
    (created,) = client.cache("POST", project, "/batch", json=[charges()]).json()
    run_due_refreshes(api_server, instance)
    path = f"/api/v1/data/projects/{project}/catalogs/{CATALOG_ID}/schemas/public/tables/charges/exports"
    body = {
        "format": "PARQUET",
        "columns": ["id", "amount", "currency"],
        "filters": {"AND": [{"field": "currency", "operator": "eq", "value": "USD"}]},
        "orderBy": ["id"],
    }
    preview = client.request("POST", path, params={"dryRun": "true"}, json=body).json()
    assert preview["rowCount"] == 333 and [c["name"] for c in preview["columns"]] == ["id", "amount", "currency"]
    assert preview["sample"][0] == {"id": 3, "amount": "0.38", "currency": "USD"}

    answer = client.request("POST", path, json=body)
    assert answer.status_code == 202, answer.text
    run_queued(api_server, instance)
    export = client.get(project, answer.json()["id"]).json()
    assert export["status"] == "SUCCEEDED" and export["rowCount"] == 333
    assert (export["catalogId"], export["schemaName"], export["tableName"]) == (CATALOG_ID, "public", "charges")
    assert export["source"] == 'stripe.public."charges"'
    parquet = api_server.log.parent / f"{export['id']}.parquet"
    parquet.write_bytes(download(export["files"][0]["url"]))
    with duckdb.connect() as connection:
        got = connection.sql(f"SELECT * FROM '{parquet}' ORDER BY id").fetchall()
    with psycopg2.connect(api_catalog) as source, source.cursor() as cursor:
        cursor.execute("SELECT id, amount, currency FROM public.charges WHERE currency = 'USD' ORDER BY id")
        assert got == cursor.fetchall()
    assert got[0] == (3, Decimal("0.38"), "USD")

    stranger = api_server.client(api_server.new_key("sam", f"other-{project}"))
    assert stranger.cache("GET", project, f"/{created['cache']['id']}").status_code == 403
    own = stranger.cache("GET", f"other-{project}", f"/{created['cache']['id']}")
    assert own.status_code == 404  # another project's entry id is unknown there
    foreign = path.replace(project, f"other-{project}")
    assert stranger.request("POST", foreign, json={}).status_code == 404
