"""The expiry job against the real S3 server: old exports lose their artifacts and become
EXPIRED, vanished ones are marked, leftovers of failed exports go, and a second pass changes
nothing. The schedule is evaluated with build_schedule_context."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from export_pipelines.engine.artifacts import ExportS3Resource
from export_pipelines.orchestration.expiry import expire, expire_exports_job, expire_exports_schedule
from export_pipelines.store.tables import export_requests
from export_pipelines_tests.conftest import BUCKET, ExportEnvironment


def export(export_env: ExportEnvironment, export_id: str) -> dict:
    request = {"export_id": export_id, "source": {"table": "payment.customers"}, "limit": 10}
    return export_env.record(export_env.run(request))


def age(export_env: ExportEnvironment, export_id: str, days: int) -> None:
    finished = datetime.now(UTC) - timedelta(days=days)
    with export_env.store.engine.begin() as connection:
        connection.execute(
            sa.update(export_requests).where(export_requests.c.id == export_id).values(finished_at=finished)
        )


def test_expiry_pass(export_env: ExportEnvironment) -> None:
    export(export_env, "old")
    export(export_env, "fresh")
    export(export_env, "vanished")
    age(export_env, "old", days=8)
    client = export_env.s3.client()
    client.delete_object(Bucket=BUCKET, Key=f"{export_env.prefix}default/vanished/manifest.json")
    failed = export_env.record(export_env.run({"export_id": "failed", "source": {"table": "payment.nope"}}))
    assert failed["status"] == "FAILED"
    client.put_object(Bucket=BUCKET, Key=f"{export_env.prefix}default/failed/leftover.csv", Body=b"x")

    cutoff = datetime.now(UTC) - timedelta(days=7)
    counts = expire(export_env.store, ExportS3Resource(), cutoff, limit=100)
    assert counts == {"expired": 1, "vanished": 1, "cleaned": 1, "objects_deleted": 2 + 1 + 1}
    assert [export_env.store.get(i)["status"] for i in ("old", "fresh", "vanished", "failed")] == [
        "EXPIRED", "SUCCEEDED", "EXPIRED", "FAILED"
    ]  # fmt: skip
    assert export_env.keys("default/old/") == export_env.keys("default/vanished/") == []
    assert export_env.keys("default/failed/") == []
    assert len(export_env.keys("default/fresh/")) == 2
    assert expire(export_env.store, ExportS3Resource(), cutoff, limit=100) == {
        "expired": 0, "vanished": 0, "cleaned": 0, "objects_deleted": 0
    }  # fmt: skip


def test_expiry_job_reports_counts_and_schedule_is_hourly(export_env: ExportEnvironment) -> None:
    export(export_env, "aged")
    age(export_env, "aged", days=30)
    result = expire_exports_job.execute_in_process()
    assert result.success
    [output] = [e for e in result.all_node_events if e.is_successful_output]
    assert output.event_specific_data.metadata["expired"].value == 1
    assert export_env.store.get("aged")["status"] == "EXPIRED"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 1, 1, 5, 0, tzinfo=UTC))
    assert expire_exports_schedule.cron_schedule == "0 * * * *"
    assert expire_exports_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    run_requests = list(expire_exports_schedule.evaluate_tick(context).run_requests or [])
    assert len(run_requests) == 1
