"""The export_requests table on SQLite and on PostgreSQL: schema, transitions, and an export
recorded end to end on PostgreSQL. PostgreSQL must be reachable (see conftest.postgres_url)."""

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest
import sqlalchemy as sa

from export_pipelines.orchestration.run_outcome import MOST_LOST_RUNS, settle_lost_run
from export_pipelines.store.database import engine_for, migrate
from export_pipelines.store.exports import ExportConflict, ExportStore
from export_pipelines.store.tables import ExportStatus
from export_pipelines_tests.conftest import ExportEnvironment, table_columns

SPEC_COLUMNS = {
    "id", "project_id", "status", "request", "source", "format", "compression", "created_at", "started_at",
    "finished_at", "row_count", "bytes", "duration_ms", "files", "error", "run_id", "user_id", "user_name",
    "api_key_prefix", "client_source", "attempt", "name", "rows_written", "total_rows", "launched_attempt",
    "launch_claimed_at", "lost_runs",
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'exports.db'}"
    return request.getfixturevalue("postgres_url")


def test_table_has_the_spec_columns(database_url: str) -> None:
    engine_for(database_url)
    assert table_columns(database_url) == SPEC_COLUMNS


def test_older_table_is_migrated_without_losing_rows(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        for table in ("export_requests", "api_keys", "idempotency_keys"):
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        connection.execute(
            sa.text(
                "CREATE TABLE export_requests (id VARCHAR(64) PRIMARY KEY, project_id VARCHAR(128) NOT NULL, "
                "status VARCHAR(16) NOT NULL DEFAULT 'PENDING', request TEXT NOT NULL)"
            )
        )
        connection.execute(sa.text("INSERT INTO export_requests VALUES ('old', 'p', 'SUCCEEDED', '{}')"))
    changes = migrate(engine)
    assert "added column export_requests.row_count" in changes
    assert "added index ix_export_requests_status_created" in changes
    assert table_columns(database_url) == SPEC_COLUMNS
    assert migrate(engine) == []
    assert {"api_keys", "idempotency_keys"} <= set(sa.inspect(engine).get_table_names())
    assert ExportStore(engine).get("old")["status"] == "SUCCEEDED"
    engine.dispose()


def test_producer_insert_gets_defaults_and_moves_through_statuses(database_url: str) -> None:
    store = ExportStore(engine_for(database_url))
    export_id = f"prod-{database_url[:6]}-{id(store)}"
    with store.engine.begin() as connection:  # what a producer application does
        connection.execute(
            sa.text("INSERT INTO export_requests (id, project_id, request) VALUES (:id, 'p1', :request)"),
            {"id": export_id, "request": json.dumps({"source": {"table": "payment.charges"}})},
        )
    record = store.get(export_id)
    assert record["status"] == "PENDING" and record["created_at"].tzinfo is not None
    store.start(export_id, "p1", {}, None, run_id="run-1")
    assert store.get(export_id)["status"] == "RUNNING"
    with pytest.raises(ExportConflict, match="already RUNNING"):
        store.start(export_id, "p1", {}, None, run_id="run-2")
    files = [{"key": "k", "bytes": 3, "rows": 1, "sha256": "00"}]
    store.succeed(export_id, row_count=1, byte_count=3, duration_ms=5, files=files)
    record = store.get(export_id)
    assert (record["status"], record["row_count"], record["files"]) == ("SUCCEEDED", 1, files)
    assert record["finished_at"] >= record["started_at"]
    with pytest.raises(ExportConflict, match="already SUCCEEDED"):
        store.start(export_id, "p1", {}, None, run_id="run-3")


def test_one_launcher_claims_each_attempt(database_url: str) -> None:
    """However many processes watch the table, one launches each attempt of an export."""
    store = ExportStore(engine_for(database_url))
    export_id = store.insert(str(uuid.uuid4()), "p-claim", {"source": {"table": "payment.charges"}})
    assert export_id in {record["id"] for record in store.unlaunched(1000)}
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _n: store.claim_launch(export_id, 0), range(8)))
    assert claims.count(True) == 1 and export_id not in {record["id"] for record in store.unlaunched(1000)}
    store.finish_unfinished(export_id, ExportStatus.FAILED, "boom")
    assert store.retry(export_id) == 1  # a new attempt is launched anew
    assert export_id in {record["id"] for record in store.unlaunched(1000)}
    assert store.claim_launch(export_id, 0) is False and store.claim_launch(export_id, 1) is True
    store.finish_unfinished(export_id, ExportStatus.CANCELLED, "cancelled")
    assert store.claim_launch(export_id, 1) is False

    # A door that launches its export itself reserves the launch when it inserts the row: the fast
    # watch of the table leaves the row to it, and the door's own claim still has one winner.
    reserved = store.insert(str(uuid.uuid4()), "p-claim", {"source": {"table": "payment.charges"}}, reserve_launch=True)
    assert reserved not in {record["id"] for record in store.unlaunched(1000)}
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _n: store.claim_launch(reserved, 0), range(4))).count(True) == 1
    store.finish_unfinished(reserved, ExportStatus.FAILED, "boom")
    store.retry(reserved)  # a retry is anyone's to launch
    assert reserved in {record["id"] for record in store.unlaunched(1000)}


def test_the_request_sensor_and_a_door_never_both_launch_an_attempt(database_url: str) -> None:
    """The sensor takes a row's launch with one conditional update, as a door claims it: racing, one
    of the two wins; a row the sensor took is no door's any more, and stays the sensor's."""
    store = ExportStore(engine_for(database_url))
    for _ in range(10):
        record = store.get(store.insert(str(uuid.uuid4()), "p-take", {"source": {"table": "payment.charges"}}))
        with ThreadPoolExecutor(2) as pool:
            sensor, door = pool.submit(store.take_launch, record), pool.submit(store.claim_launch, record["id"], 0)
        assert [sensor.result(), door.result()].count(True) == 1
        assert record["id"] not in {r["id"] for r in store.unlaunched(1000)}
        if sensor.result():
            assert store.take_launch(record) and not store.claim_launch(record["id"], 0)


def test_a_run_lost_before_its_export_began_is_replaced_three_times(database_url: str) -> None:
    store = ExportStore(engine_for(database_url))
    export_id = store.insert(str(uuid.uuid4()), "acme", {"source": {"table": "payment.charges"}})

    def lost(attempt: int) -> str | None:
        tags = {"export_id": export_id, "export_attempt": str(attempt)}
        return settle_lost_run(store, dg.DagsterRun(job_name="export_job", run_id=f"run-{attempt}", tags=tags), "gone")

    for attempt in range(MOST_LOST_RUNS):
        assert "queued again" in lost(attempt)
        assert lost(attempt) is None, "the same lost run seen twice is replaced once"
        record = store.get(export_id)
        assert (record["status"], record["attempt"], record["lost_runs"]) == ("PENDING", attempt + 1, attempt + 1)
    assert "FAILED" in lost(MOST_LOST_RUNS)
    record = store.get(export_id)
    assert record["status"] == "FAILED" and record["error"].endswith("the last: gone")

    started = store.insert(str(uuid.uuid4()), "acme", {"source": {"table": "payment.charges"}})
    store.start(started, "acme", {}, None, "run-0")
    run = dg.DagsterRun(job_name="export_job", run_id="run-0", tags={"export_id": started, "export_attempt": "0"})
    assert settle_lost_run(store, run, "gone") is None and store.get(started)["status"] == "RUNNING"


def test_export_recorded_on_postgresql(export_env: ExportEnvironment, postgres_url: str, monkeypatch) -> None:
    monkeypatch.setenv("EXPORTS_DATABASE_URL", postgres_url)
    result = export_env.run({"source": {"table": "payment.customers"}, "format": "JSONL", "compression": "ZSTD"})
    record = ExportStore(engine_for(postgres_url)).find_by_run(result.run_id)
    assert record["status"] == "SUCCEEDED" and record["row_count"] == 5_000
    assert record["files"][0]["key"].endswith("customers-00000.jsonl.zst")
