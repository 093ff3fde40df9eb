"""`export_request_sensor` and the status sensors, evaluated with `build_sensor_context` on a
persistent test instance, against the request table on SQLite and on PostgreSQL.

Covers ordering, the batch bound, the cursor, same-timestamp rows, late commits, poison rows,
retries and status follow-through of failed, cancelled and vanished runs. Runs launched by a
live daemon are not covered here.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.engine.warehouse import WarehouseResource
from export_pipelines.orchestration import sensors
from export_pipelines.orchestration.jobs import export_job
from export_pipelines.orchestration.sensors import (
    export_failure_sensor,
    export_reconciliation_sensor,
    export_request_sensor,
)
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import FRESH_CLAIM, ExportStore, ExportStoreResource
from export_pipelines.store.tables import ExportStatus, export_requests
from export_pipelines_tests.conftest import fresh_postgres_database

VALID = {"source": {"table": "payment.charges"}, "format": "csv", "limit": 10}
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path):
    """A request table of its own for each test (the sensor reads the whole table)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'exports.db'}"
        return
    with fresh_postgres_database("sensor") as url:
        yield url


@pytest.fixture
def store(database_url: str) -> ExportStore:
    return ExportStore(engine_for(database_url))


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def insert(store: ExportStore, export_id: str, request, created_at: datetime, **columns) -> None:
    """What a producer does: a row with its request JSON (and here an explicit created_at)."""
    with store.engine.begin() as connection:
        connection.execute(
            export_requests.insert().values(
                id=export_id,
                project_id=columns.pop("project_id", "default"),
                request=request if isinstance(request, str) else json.dumps(request),
                created_at=created_at,
                **columns,
            )
        )


def tick(instance, database_url: str, demo_warehouse: Path, cursor: str | None = None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "export_store": ExportStoreResource(database_url=database_url),
            "warehouse": WarehouseResource(path=str(demo_warehouse)),
            "cache": CachedTablesResource(database_url=database_url),
        },
    ) as context:
        return export_request_sensor(context)


def keys(result: dg.SensorResult) -> list[str]:
    return [request.run_key for request in result.run_requests]


def test_oldest_first_with_valid_run_config_and_tags(instance, database_url, store, demo_warehouse) -> None:
    for index, offset in enumerate([3, 1, 2]):
        insert(store, f"r{index}", VALID, T0 + timedelta(seconds=offset), user_id="u7", project_id="acme")
    result = tick(instance, database_url, demo_warehouse)
    assert keys(result) == ["r1", "r2", "r0"]
    request = result.run_requests[0]
    assert request.tags == {
        "export_id": "r1",
        "export_attempt": "0",
        "project_id": "acme",
        "client_source": "table",
        "user_id": "u7",
    }
    assert request.run_config["export_id"] == "r1"
    assert request.run_config["requested_by"] == {"user_id": "u7", "client_source": "table"}
    dg.validate_run_config(export_job, request.run_config)  # a tick never yields config Dagster refuses


def test_batch_bound_and_cursor(instance, database_url, store, demo_warehouse, monkeypatch) -> None:
    monkeypatch.setattr(sensors, "BATCH_SIZE", 4)
    for index in range(6):
        insert(store, f"b{index}", VALID, T0 + timedelta(seconds=index))
    first = tick(instance, database_url, demo_warehouse)
    assert keys(first) == ["b0", "b1", "b2", "b3"]
    second = tick(instance, database_url, demo_warehouse, first.cursor)
    assert keys(second) == ["b4", "b5"]
    third = tick(instance, database_url, demo_warehouse, second.cursor)
    assert keys(third) == []  # still PENDING (not started), never requested twice


def test_rows_sharing_a_timestamp_and_late_commits(instance, database_url, store, demo_warehouse, monkeypatch) -> None:
    monkeypatch.setattr(sensors, "BATCH_SIZE", 2)
    for name in ("s-c", "s-a", "s-b"):
        insert(store, name, VALID, T0)
    first = tick(instance, database_url, demo_warehouse)
    assert keys(first) == ["s-a", "s-b"]
    insert(store, "late", VALID, T0 - timedelta(minutes=3))  # committed after a newer row was seen
    second = tick(instance, database_url, demo_warehouse, first.cursor)
    assert keys(second) == ["late", "s-c"]


@pytest.mark.parametrize(
    ("request_json", "message"),
    [
        ("{not json", "request is not valid JSON"),
        (json.dumps({"source": {"table": "payment.charges"}, "format": "xml"}), "not in enum type ExportFormat"),
        (json.dumps({"source": {"table": "payment.nope"}}), "unknown table 'payment.nope'"),
        (json.dumps({"source": {"table": "payment.charges"}, "columns": ["id", "zzz"]}), "unknown column zzz"),
        (json.dumps({"source": {"table": "payment.charges"}, "limit": "ten"}), "Invalid scalar at limit"),
        (json.dumps({"source": {"table": "payment.charges"}, "project_id": "other"}), "differs from the row's"),
        (json.dumps({"source": {"table": "payment.charges"}, "filters": {"AND": []}}), "empty group"),
        (
            json.dumps({"source": {"table": "payment.charges"}, "filters": {"AND": None}}),
            "filters.AND is null: leave it out",
        ),
    ],
)
def test_poison_row_fails_alone_and_never_blocks_the_rows_behind(
    instance, database_url, store, demo_warehouse, request_json: str, message: str
) -> None:
    insert(store, "poison", request_json, T0)
    insert(store, "good", VALID, T0 + timedelta(seconds=1))
    result = tick(instance, database_url, demo_warehouse)
    assert keys(result) == ["good"]
    record = store.get("poison")
    assert record["status"] == "FAILED" and message in record["error"] and record["finished_at"] is not None


def test_straggler_older_than_the_look_back_is_launched_once(instance, database_url, store, demo_warehouse) -> None:
    insert(store, "now", VALID, T0)
    first = tick(instance, database_url, demo_warehouse)
    insert(store, "ancient", VALID, T0 - timedelta(days=2))
    second = tick(instance, database_url, demo_warehouse, first.cursor)
    assert keys(second) == ["ancient"]
    instance.add_run(  # the run Dagster would create for it (queued: the row stays PENDING)
        dg.DagsterRun(job_name="export_job", run_id=str(uuid.uuid4()), tags=second.run_requests[0].tags)
    )
    third = tick(instance, database_url, demo_warehouse, second.cursor)
    assert keys(third) == []


def test_a_row_a_door_is_launching_is_left_to_it_until_its_claim_is_stale(
    instance, database_url, store, demo_warehouse
) -> None:
    """A door (the API, the CLI, the table watch) that claimed a row's launch creates its run within
    a second or two; were the sensor to launch it too, each could create a run before seeing the
    other's (seen in a live test). A claim older than FRESH_CLAIM stands for a door that died. What the
    sensor requests it takes: no door claims it after."""
    reserved = store.insert("reserved", "default", VALID, reserve_launch=True)
    insert(store, "claimed", VALID, datetime.now(UTC))
    assert store.claim_launch("claimed", 0)
    insert(store, "free", VALID, datetime.now(UTC))
    first = tick(instance, database_url, demo_warehouse)
    assert keys(first) == ["free"]
    assert not store.claim_launch("free", 0), "the sensor took it: no door launches it too"
    stale = datetime.now(UTC) - FRESH_CLAIM - timedelta(seconds=1)
    with store.engine.begin() as connection:
        connection.execute(sa.update(export_requests).values(launch_claimed_at=stale))
    second = tick(instance, database_url, demo_warehouse, first.cursor)
    assert sorted(keys(second)) == sorted([reserved, "claimed"])
    assert not store.claim_launch(reserved, 0) and not store.claim_launch("claimed", 0)


def test_retry_gets_its_own_attempt_key(instance, database_url, store, demo_warehouse) -> None:
    insert(store, "again", VALID, T0)
    first = tick(instance, database_url, demo_warehouse)
    assert keys(first) == ["again"]
    store.finish_unfinished("again", ExportStatus.FAILED, "boom")
    assert store.retry("again") == 1
    second = tick(instance, database_url, demo_warehouse, first.cursor)
    assert keys(second) == ["again.attempt-1"]
    assert store.get("again")["status"] == "PENDING" and store.get("again")["error"] is None


def test_unreachable_warehouse_leaves_checks_to_the_run(instance, database_url, store, tmp_path) -> None:
    insert(store, "w1", VALID, T0)
    result = tick(instance, database_url, tmp_path / "missing.duckdb")
    assert keys(result) == ["w1"]


def test_failure_and_reconciliation_sensors_finish_rows(instance, database_url, store, demo_warehouse) -> None:
    resources = {
        "export_store": ExportStoreResource(database_url=database_url),
        "warehouse": WarehouseResource(path=str(demo_warehouse)),
    }
    result = export_job.execute_in_process(
        run_config={"export_id": "dies", "source": {"table": "payment.nope"}},
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    # As if the run had died before its failure hook could record anything:
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(export_requests).where(export_requests.c.id == "dies").values(status="RUNNING", error=None)
        )
    failure_event = result.get_run_failure_event()
    context = dg.build_run_status_sensor_context(
        sensor_name="export_failure_sensor",
        dagster_event=failure_event,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"export_store": ExportStoreResource(database_url=database_url)},
    ).for_run_failure()
    export_failure_sensor(context)
    assert store.get("dies")["status"] == "FAILED"

    insert(store, "orphan", VALID, T0, status="RUNNING", run_id="no-such-run")
    store.finish_unfinished("dies", ExportStatus.FAILED, "x")
    with store.engine.begin() as connection:
        connection.execute(sa.update(export_requests).where(export_requests.c.id == "dies").values(status="RUNNING"))
    with dg.build_sensor_context(
        instance=instance, resources={"export_store": ExportStoreResource(database_url=database_url)}
    ) as context:
        export_reconciliation_sensor(context)
    assert store.get("orphan")["status"] == "FAILED" and "no longer exists" in store.get("orphan")["error"]
    assert store.get("dies")["status"] == "FAILED" and "ended FAILURE" in store.get("dies")["error"]


PRODUCER = """
import json, sys, uuid
from export_pipelines.store.exports import ExportStore
from export_pipelines.store.database import engine_for
store = ExportStore(engine_for(sys.argv[1]))
for index in range(int(sys.argv[3])):
    store.insert(f"{sys.argv[2]}-{index:04d}-{uuid.uuid4().hex[:6]}", "default", json.loads(sys.argv[4]))
"""


def test_concurrent_producers_every_request_gets_exactly_one_run(
    instance, database_url, store, demo_warehouse, monkeypatch
) -> None:
    import subprocess
    import sys
    import time

    monkeypatch.setattr(sensors, "BATCH_SIZE", 40)
    producers = [
        subprocess.Popen([sys.executable, "-c", PRODUCER, database_url, f"p{n}", "125", json.dumps(VALID)])
        for n in range(4)
    ]
    requested: list[str] = []
    cursor = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        producing = any(producer.poll() is None for producer in producers)
        result = tick(instance, database_url, demo_warehouse, cursor)
        cursor = result.cursor
        requested += keys(result)
        if not producing and not result.run_requests:
            break
    assert all(producer.wait() == 0 for producer in producers)
    with store.engine.connect() as connection:
        ids = {row[0] for row in connection.execute(sa.select(export_requests.c.id))}
    assert len(ids) == 500
    assert len(requested) == len(set(requested)) == 500  # none doubled
    assert set(requested) == ids  # none lost
