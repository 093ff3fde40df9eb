"""The Python API every door uses (`ExportService`): submit with the job's own validation,
get, list (newest first, clamped pages, keyset cursor, status filter), presigned download links
for the owner of a SUCCEEDED export (downloaded for real from the local S3 server), cancel of a
PENDING export, retry and delete. Cancelling a RUNNING run needs a live daemon: not covered here.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from export_pipelines.engine.artifacts import ExportS3Resource
from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.engine.request import InvalidRequest
from export_pipelines.engine.warehouse import WarehouseResource
from export_pipelines.service.exports import ExportNotFinished, ExportNotFound, ExportService
from export_pipelines.store.exports import ExportConflict
from export_pipelines.store.tables import ExportStatus, export_requests
from export_pipelines_tests.conftest import ExportEnvironment, download


@pytest.fixture
def service(export_env: ExportEnvironment) -> ExportService:
    return ExportService(
        store=export_env.store,
        s3=ExportS3Resource(),
        policy=ExportPolicy(url_ttl_seconds=120),
        warehouse=WarehouseResource(),
    )


def test_submit_queues_a_checked_request(service: ExportService) -> None:
    export_id = service.submit(
        '{"source": {"query": "charges_view"}, "format": "json", "project_id": "acme"}',
        requested_by={"user_id": "u1", "client_source": "api"},
    )
    record = service.get(export_id)
    assert record["status"] == "PENDING" and record["project_id"] == "acme"
    assert (record["user_id"], record["client_source"]) == ("u1", "api")
    assert json.loads(record["request"])["export_id"] == export_id
    with pytest.raises(ExportNotFound):
        service.get(export_id, project_id="someone-else")


@pytest.mark.parametrize(
    ("request_json", "message"),
    [
        ("nope", "request is not valid JSON"),
        ('{"source": {"table": "payment.charges"}, "format": "xml"}', "not in enum type ExportFormat got xml"),
        ('{"source": {"table": "payment.charges"}, "columns": ["zzz"]}', "unknown column zzz"),
        ('{"source": {"table": "payment.charges"}, "order_by": ["-nope"]}', "order_by: unknown field nope"),
    ],
)
def test_submit_refuses_bad_requests_and_records_nothing(
    service: ExportService, request_json: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        service.submit(request_json)
    assert service.list("default") == []


def test_list_is_newest_first_with_clamped_pages_and_keyset_cursor(service: ExportService) -> None:
    with service.store.engine.begin() as connection:
        for index in range(7):
            connection.execute(
                export_requests.insert().values(
                    id=f"e{index}",
                    project_id="p",
                    request="{}",
                    status="FAILED" if index % 2 else "PENDING",
                    created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index),
                )
            )
    first = service.list("p", limit=3)
    assert [r["id"] for r in first] == ["e6", "e5", "e4"]
    second = service.list("p", limit=3, created_before=first[-1]["created_at"])
    assert [r["id"] for r in second] == ["e3", "e2", "e1"]
    assert [r["id"] for r in service.list("p", statuses=["FAILED"], limit=0)] == ["e5"]  # clamped to 1
    assert len(service.list("p", limit=10_000)) == 7
    with pytest.raises(ValueError, match="unknown status"):
        service.list("p", statuses=["DONE"])


def test_download_links_for_the_owner_of_a_finished_export(service: ExportService, export_env) -> None:
    export_id = service.submit({"source": {"table": "payment.customers"}, "project_id": "acme"})
    with pytest.raises(ExportNotFinished, match="is PENDING"):
        service.download_urls(export_id, "acme")
    run_config = json.loads(service.get(export_id)["request"])
    assert export_env.run(run_config).success
    links = service.download_urls(export_id, "acme")
    [link] = links
    body = download(link["url"])
    assert hashlib.sha256(body).hexdigest() == link["sha256"] and len(body) == link["bytes"]
    assert datetime.fromisoformat(link["expires_at"]) > datetime.now(UTC)
    with pytest.raises(ExportNotFound):
        service.download_urls(export_id, "other-project")
    with pytest.raises(ExportNotFound):
        service.download_urls("missing", "acme")
    assert service.delete(export_id, "acme") == 2  # the file and the manifest
    with pytest.raises(ExportNotFound):
        service.get(export_id)
    assert export_env.keys() == []


def test_cancel_pending_then_retry(service: ExportService) -> None:
    export_id = service.submit({"source": {"table": "payment.charges"}})
    assert service.cancel(export_id) == "CANCELLED"
    assert service.get(export_id)["status"] == ExportStatus.CANCELLED
    with pytest.raises(ExportConflict, match="cannot be cancelled"):
        service.cancel(export_id)
    assert service.retry(export_id) == 1
    assert service.get(export_id)["status"] == "PENDING"
    with pytest.raises(ExportConflict, match="only FAILED or CANCELLED"):
        service.retry(export_id)
    with pytest.raises(ExportConflict, match="cancel it before deleting"):
        service.delete(export_id)
