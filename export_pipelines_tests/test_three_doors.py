"""The three doors on one live deployment started like a user starts it (`export-pipelines dev`):
Dagster's GraphQL API through the example script, the Launchpad in a real browser, and the
request table, one at a time and all at once."""

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import sqlalchemy as sa
import yaml
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Browser

from export_pipelines.deploy.dev import PROJECT_ROOT
from export_pipelines.store.tables import export_requests
from export_pipelines_tests.browser import Launchpad
from export_pipelines_tests.conftest import download
from export_pipelines_tests.live import Deployment

EXAMPLE = PROJECT_ROOT / "examples" / "graphql_export.py"
SCREENSHOTS = PROJECT_ROOT / "docs"
# The same export through every door: equal requests must give byte-equal artifacts.
DOORS_REQUEST = {
    "source": {"table": "payment.charges"},
    "format": "CSV",
    "compression": "ZSTD",
    "columns": ["id", "created_at", "amount", "currency", "metadata.title"],
    "filters": {"AND": [{"field": "amount", "operator": "gte", "value": 1000}]},
    "order_by": ["-amount"],
    "limit": 20_000,
    "name": "doors",
}


def run_example(deployment: Deployment, request: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), json.dumps(request), "--url", deployment.url],
        env={**os.environ, **deployment.environment},
        capture_output=True,
        text=True,
        timeout=300,
    )


def count_runs(deployment: Deployment) -> int:
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment.port)
    return client._execute("query { runsOrError { ... on Runs { count } } }")["runsOrError"]["count"]


def count_exports(deployment: Deployment) -> int:
    with deployment.store.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(export_requests)).scalar_one()


def all_keys(deployment: Deployment) -> list[str]:
    listing = deployment.s3_client().list_objects_v2(Bucket="exports")
    return [item["Key"] for item in listing.get("Contents", [])]


def test_graphql_example_exports_and_prints_download_links(deployment: Deployment, tmp_path: Path) -> None:
    done = run_example(deployment, {"source": {"table": "payment.invoices"}, "format": "JSONL", "limit": 321})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    run_id = lines[0].split()[2]
    assert lines[0] == f"launched run {run_id} (export {run_id})"
    assert lines[1] == f"run {run_id} ended: SUCCESS"
    record = deployment.store.get(run_id)
    assert record["status"] == "SUCCEEDED" and record["run_id"] == run_id and record["row_count"] == 321
    assert record["client_source"] == "graphql"
    assert lines[2].startswith(f"export {run_id} SUCCEEDED: 321 rows, {record['bytes']:,} bytes in ")
    assert lines[3].split() == ["invoices-00000.jsonl", "321", "rows", f"{record['bytes']:,}", "bytes"]
    artifact = tmp_path / "invoices.jsonl"
    artifact.write_bytes(download(lines[4].strip()))
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == record["files"][0]["sha256"]
    assert lines[5].startswith("links expire at ")
    exported = duckdb.sql(f"SELECT count(*), count(DISTINCT id) FROM read_json('{artifact}')")
    assert exported.fetchall() == [(321, 321)]


def test_graphql_refuses_a_bad_request_with_its_message_and_records_nothing(deployment: Deployment) -> None:
    rows, runs, keys = (
        count_exports(deployment),
        count_runs(deployment),
        all_keys(deployment),
    )
    done = run_example(deployment, {"source": {"table": "payment.charges"}, "format": "xml", "colums": ["id"]})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "refused: RunConfigValidationInvalid",
        '  Received unexpected config entry "colums" in the request. (fields: export_id, project_id, source, '
        "format, compression, columns, limit, include_system_columns, include_vectors, csv_options, filters, "
        "expand_array, order_by, max_rows_per_file, max_bytes_per_file, name, requested_by)",
        "  Value at format not in enum type ExportFormat got xml",
    ]
    assert "Traceback" not in done.stdout + done.stderr
    assert count_exports(deployment) == rows
    assert count_runs(deployment) == runs and all_keys(deployment) == keys


def test_graphql_request_the_catalog_refuses_fails_with_one_message_and_no_artifact(deployment: Deployment) -> None:
    done = run_example(deployment, {"source": {"table": "payment.charges"}, "columns": ["id", "amount_cents"]})
    assert done.returncode == 1, done.stdout + done.stderr
    run_id = done.stdout.splitlines()[0].split()[2]
    record = deployment.store.get(run_id)
    assert record["status"] == "FAILED" and record["client_source"] == "graphql"
    assert record["error"].startswith("unknown column amount_cents; available columns: id, ")
    assert "Traceback" not in record["error"]
    assert done.stdout.splitlines()[-1] == f"export {run_id} FAILED: {record['error']}"
    assert [key for key in all_keys(deployment) if run_id in key] == []


def test_launchpad_opens_on_a_request_that_runs_and_the_run_page_shows_its_figures(
    deployment: Deployment, browser: Browser
) -> None:
    launchpad = Launchpad(browser, deployment.url)
    assert yaml.safe_load(launchpad.config()) == {
        "format": "CSV", "include_system_columns": True, "include_vectors": False, "project_id": "default",
        "source": {"table": "payment.charges"},
    }  # fmt: skip
    run_page = launchpad.launch()  # as it opened: no config written
    run_page.wait_for_success()
    record = deployment.wait_status(run_page.run_id, {"SUCCEEDED", "FAILED"})
    assert record["status"] == "SUCCEEDED" and record["client_source"] == "ui" and record["row_count"] == 100_000
    events = run_page.step_events("record_result")
    for name, value in {
        "rows": record["row_count"],
        "bytes": record["bytes"],
        "duration_ms": record["duration_ms"],
    }.items():
        assert f"\n{name}\n{value}\n" in events
    file = record["files"][0]
    assert f"s3://exports/{file['key']}" in events
    [link] = run_page.download_links()
    assert hashlib.sha256(download(link)).hexdigest() == file["sha256"]
    if os.environ.get("EXPORTS_UPDATE_SCREENSHOTS"):
        run_page.page.screenshot(path=SCREENSHOTS / "run-page.png")


def test_launchpad_offers_the_sources_that_exist(deployment: Deployment, browser: Browser) -> None:
    launchpad = Launchpad(browser, deployment.url)
    assert launchpad.completions("source:\n  pick: ") == [
        "payment.charges", "payment.customers", "payment.invoices", "payment.large_charges", "search.documents",
        "queries.charges_view",
    ]  # fmt: skip
    if os.environ.get("EXPORTS_UPDATE_SCREENSHOTS"):
        launchpad.page.keyboard.press("Control+Space")
        launchpad.page.screenshot(path=SCREENSHOTS / "launchpad-pick.png")


def test_one_export_through_each_door_at_once(deployment: Deployment, browser: Browser, tmp_path: Path) -> None:
    launchpad = Launchpad(browser, deployment.url)
    launchpad.set_config(yaml.safe_dump({**DOORS_REQUEST, "requested_by": {"user_id": "ui-user"}}, sort_keys=False))
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment.port)
    with ThreadPoolExecutor(2) as pool:
        table = pool.submit(deployment.insert, DOORS_REQUEST, user_id="table-user")
        graphql = pool.submit(
            client.submit_job_execution,
            "export_job",
            run_config={**DOORS_REQUEST, "requested_by": {"user_id": "graphql-user"}},
        )
        ui = launchpad.launch().run_id
        ids = {"table": table.result(), "graphql": graphql.result(), "ui": ui}
    records = {
        door: deployment.wait_status(export_id, {"SUCCEEDED", "FAILED", "CANCELLED"}) for door, export_id in ids.items()
    }

    with duckdb.connect(deployment.environment["EXPORTS_WAREHOUSE"], read_only=True) as warehouse:
        expected = warehouse.sql(
            "SELECT id FROM payment.charges WHERE amount >= 1000 ORDER BY amount DESC, id LIMIT 20000"
        ).fetchall()
    artifacts = {}
    for door, record in records.items():
        assert record["status"] == "SUCCEEDED", (door, record["error"])
        assert (record["client_source"], record["user_id"]) == (door, f"{door}-user")
        assert record["row_count"] == len(expected) and record["source"] == 'warehouse.payment."charges"'
        assert (record["format"], record["compression"]) == ("CSV", "ZSTD")
        [link] = deployment.links(record["id"])
        artifacts[door] = download(link["url"])
        assert hashlib.sha256(artifacts[door]).hexdigest() == link["sha256"]
    assert artifacts["table"] == artifacts["graphql"] == artifacts["ui"]
    assert len({record["bytes"] for record in records.values()}) == 1
    artifact = tmp_path / "doors.csv.zst"
    artifact.write_bytes(artifacts["ui"])
    exported = duckdb.sql(f"SELECT id FROM read_csv('{artifact}')").fetchall()
    assert exported == expected
