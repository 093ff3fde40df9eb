"""The REST API of a live deployment (started like `make dev`: the API beside the Dagster
webserver and a real daemon): an export created over HTTP is run by the daemon and answered by a
synchronous create; a RUNNING export is cancelled over HTTP (CANCELLED, no object left) and
another one deleted while running (cancelled first, then gone, artifacts and record)."""

import hashlib

import requests

from export_pipelines.store.api_keys import ApiKeyStore
from export_pipelines.store.database import engine_for
from export_pipelines_tests.conftest import download
from export_pipelines_tests.live import Deployment
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
