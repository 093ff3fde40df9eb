"""The REST API of a live deployment (started like `make dev`: the API beside the Dagster
webserver and a real daemon): an export created over HTTP is run by the daemon and answered by a
synchronous create; a RUNNING export is cancelled over HTTP (CANCELLED, no object left) and
another one deleted while running (cancelled first, then gone, artifacts and record); the progress
of a large export moves in the API, shows in the CLI and on the run page; a create launches its run
at once and the request sensor's own request for it launches nothing more."""

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import requests
import sqlalchemy as sa

from export_pipelines.store.api_keys import ApiKeyStore
from export_pipelines.store.database import engine_for
from export_pipelines.store.tables import export_requests
from export_pipelines_tests.conftest import download, wait_for
from export_pipelines_tests.live import BIG_ROWS, Deployment
from export_pipelines_tests.rest import Client

PROJECT = "api-live"


def _client(deployment: Deployment) -> Client:
    keys = ApiKeyStore(engine_for(deployment.environment["EXPORTS_DATABASE_URL"]))
    return Client(deployment.api_url, keys.create("erin", PROJECT, "Erin")[0])


def _objects(deployment: Deployment, export_id: str) -> list:
    listed = deployment.s3_client().list_objects_v2(Bucket="exports", Prefix=f"{PROJECT}/{export_id}/")
    return listed.get("Contents", [])


def test_a_synchronous_create_is_run_by_the_daemon(deployment: Deployment) -> None:
    client = _client(deployment)
    answer = client.request(
        "POST",
        f"/api/v1/data/projects/{PROJECT}/catalogs/warehouse/schemas/payment/tables/invoices/exports?wait=120",
        json={"format": "PARQUET", "limit": 321},
    )
    assert answer.status_code == 200, answer.text
    export = answer.json()
    assert (export["status"], export["rowCount"], export["clientSource"]) == (
        "SUCCEEDED",
        321,
        "python-requests/" + requests.__version__,
    )
    file = export["files"][0]
    assert hashlib.sha256(download(file["url"])).hexdigest() == file["sha256"]
    run = deployment.store.get(export["id"])["run_id"]
    assert run and deployment.store.get(export["id"])["api_key_prefix"] == client.key.split(".")[0]


def test_cancel_and_delete_of_running_exports_over_http(deployment: Deployment) -> None:
    client = _client(deployment)
    big = {"format": "CSV", "compression": "GZIP"}
    cancelled = client.create_table(PROJECT, "payment.large_charges", big).json()["id"]
    deleted = client.create_table(PROJECT, "payment.large_charges", big).json()["id"]
    deployment.wait_status(cancelled, {"RUNNING"})
    answer = client.cancel(PROJECT, cancelled)
    assert answer.status_code == 200 and answer.json()["status"] == "CANCELLED", answer.text
    assert _objects(deployment, cancelled) == []
    deployment.wait_status(deleted, {"RUNNING"})
    answer = client.delete(PROJECT, deleted)
    assert answer.json() == {"message": "Export deleted successfully"}, answer.text
    assert client.get(PROJECT, deleted).status_code == 404 and deployment.store.get(deleted) is None
    assert _objects(deployment, deleted) == []


def test_progress_moves_in_the_api_the_cli_and_the_run_page(deployment: Deployment) -> None:
    client = _client(deployment)
    body = {"format": "CSV", "compression": "GZIP"}
    export_id = client.create_table(PROJECT, "payment.large_charges", body).json()["id"]
    follower = subprocess.Popen(  # `show --wait` follows it with a progress bar meanwhile
        [sys.executable, "-m", "export_pipelines.cli", "show", export_id, "--wait"],
        env={**os.environ, **deployment.environment, "COLUMNS": "160"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[dict] = []

    def final() -> dict | None:
        export = client.get(PROJECT, export_id).json()
        if export["status"] == "RUNNING" and export["progress"] and export["progress"]["totalRows"]:
            seen.append(export["progress"])
        return export if export["status"] in {"SUCCEEDED", "FAILED", "CANCELLED"} else None

    export = wait_for(final, f"export {export_id} to finish", timeout=300)
    assert export["status"] == "SUCCEEDED" and export["progress"] is None, export
    written = [progress["rowsWritten"] for progress in seen]
    assert {progress["totalRows"] for progress in seen} == {BIG_ROWS} == {export["rowCount"]}
    assert len(set(written)) >= 3 and written == sorted(written), written
    followed, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0 and f"{BIG_ROWS:,} of {BIG_ROWS:,} rows" in followed, followed
    assert "SUCCEEDED" in followed, followed
    run_id = deployment.store.get(export_id)["run_id"]
    with deployment.settings(), dg.DagsterInstance.get() as instance:
        messages = [entry.message for entry in instance.all_logs(run_id)]
    logged = [re.fullmatch(r"([\d,]+) of 3,000,000 rows written \((\d+)%\)", m) for m in messages if "written (" in m]
    assert logged and all(logged), messages  # writing takes seconds: a line a second on the run page
    percents = [int(match.group(2)) for match in logged if match]
    assert percents == sorted(set(percents)) and percents[-1] < 100, percents


def test_a_create_launches_its_run_at_once_and_the_sensor_adds_none(deployment: Deployment) -> None:
    project = f"launch-{uuid.uuid4().hex[:8]}"
    keys = ApiKeyStore(engine_for(deployment.environment["EXPORTS_DATABASE_URL"]))
    client = Client(deployment.api_url, keys.create("lee", project)[0])
    body = {"format": "CSV", "compression": "GZIP", "limit": 600_000}
    # Six at once in one project: its concurrency limit (2) keeps the last ones PENDING for a few
    # of the request sensor's ticks. The sensor leaves them to the API while its claims are fresh;
    # made stale below (a door that stalled), the sensor asks for their runs too, and Dagster's
    # run-key dedupe launches nothing more.
    ids = [client.create_table(project, "payment.large_charges", body).json()["id"] for _ in range(6)]
    with deployment.settings(), dg.DagsterInstance.get() as instance:

        def runs_of(export_id: str) -> list[dg.DagsterRun]:
            return instance.get_runs(dg.RunsFilter(tags={"export_id": export_id}))

        def sensor_requested() -> set[str]:
            [state] = [s for s in instance.all_instigator_state() if s.name == "export_request_sensor"]
            return set(json.loads(state.instigator_data.cursor or "{}").get("requested", {}))

        for export_id in ids:  # launched by the API, before any tick could have
            wait_for(lambda export_id=export_id: runs_of(export_id), f"a run for {export_id}", timeout=60)
        retried = {"headers": {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}}
        ids.append(client.create_table(project, "payment.invoices", {"limit": 10}, **retried).json()["id"])
        wait_for(lambda: runs_of(ids[-1]), f"a run for {ids[-1]}", timeout=60)
        assert client.create_table(project, "payment.invoices", {"limit": 10}, **retried).json()["id"] == ids[-1]
        stale = datetime.now(UTC) - timedelta(hours=1)
        with deployment.store.engine.begin() as connection:
            connection.execute(
                sa.update(export_requests).where(export_requests.c.id.in_(ids)).values(launch_claimed_at=stale)
            )
        wait_for(lambda: sensor_requested() & set(ids), "the request sensor to ask for one of them", timeout=300)
        for export_id in ids:
            assert deployment.wait_status(export_id, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
        for export_id in ids:
            [run] = runs_of(export_id)  # the sensor's requests (and a retried create) launched nothing more
            assert run.tags["client_source"] == "api" and run.tags["dagster/run_key"] == export_id
