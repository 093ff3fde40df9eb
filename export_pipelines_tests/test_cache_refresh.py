"""Cached tables end to end on a real PostgreSQL source (catalog `stripe`): batch create with mixed
items, the first full refresh, then inserts, updates, deletes and late-committing rows between
incremental refreshes, each copy checked against the source row for row; a column added at the
source; a failing refresh keeping the copy; exports of the cached table (read back with DuckDB and
compared with the source), also while a full refresh replaces it; the refresh sensor launching
each due refresh once; old versions removed after their grace period.

Refresh and export runs are executed in process on a test instance; the daemon, workers and the
REST routes are covered by test_cache_live and test_cache_api."""

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from export_pipelines.cache.refresh import remove_retired_versions
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.cache.versions import VersionWriter
from export_pipelines.definitions import defs
from export_pipelines.deploy.demo_catalog import build_demo_catalog
from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.orchestration.cache_refresh import cache_entries_partitions, cache_refresh_sensor
from export_pipelines.service.cache import CacheService
from export_pipelines_tests.conftest import CATALOG_ID, CatalogEnvironment

COLUMNS = "id, amount, note, tags, updated_at"
REFRESH_IN_A_PROCESS = """
import sys
from export_pipelines.cache.refresh import refresh
from export_pipelines.cache.resource import CachedTablesResource
cache = CachedTablesResource()
refresh(cache, cache.store().get(sys.argv[1]), full=True)
"""
CREATE_CHARGES = """
    CREATE TABLE public.charges (
        id bigint PRIMARY KEY, amount numeric(12,2), note text, tags text[],
        updated_at timestamptz NOT NULL DEFAULT now()
    )
"""


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def batch(project: str, *items: dict[str, Any]) -> list:
    return CacheService().batch(project, list(items))


def item(table: str = "charges", **schedules: Any) -> dict[str, Any]:
    return {"catalogId": CATALOG_ID, "schemaName": "public", "tableName": table, **schedules}


def run_refresh(instance: dg.DagsterInstance, entry_id: str, full: bool = False) -> dg.ExecuteInProcessResult:
    """One refresh run of the entry's partition, as the sensor would launch it."""
    if not instance.has_dynamic_partition(cache_entries_partitions.name, entry_id):
        instance.add_dynamic_partitions(cache_entries_partitions.name, [entry_id])
    return defs.resolve_job_def("cache_refresh_job").execute_in_process(
        partition_key=entry_id,
        run_config={"ops": {"cached_tables": {"config": {"full": full}}}},
        instance=instance,
        raise_on_error=False,
    )


def figures(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node("cached_tables")
    return {name: value.value for name, value in materialization.metadata.items()}


def assert_figures(result: dg.ExecuteInProcessResult, expected: dict[str, Any]) -> None:
    got = figures(result)
    assert {name: got.get(name) for name in expected} == expected


def copy_rows(entry: dict[str, Any]) -> list[tuple]:
    """The current copy's rows (without plumbing), ordered by id, read with DuckDB."""
    path = CachedTablesResource().version_path(entry["version_path"])
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.sql(f"SELECT {COLUMNS} FROM public.charges ORDER BY id").fetchall()


def source_rows(catalog: CatalogEnvironment) -> list[tuple]:
    return catalog.rows(f"SELECT {COLUMNS} FROM public.charges ORDER BY id")


def entry_of(entry_id: str) -> dict[str, Any]:
    entry = CachedTablesResource().store().get(entry_id)
    assert entry is not None
    return entry


def test_batch_answers_every_item_in_order_and_updates_instead_of_duplicating(catalog_env: CatalogEnvironment) -> None:
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql("CREATE TABLE public.events (seq bigint, updated_at timestamptz)")  # no primary key
    catalog_env.sql("CREATE TABLE public.plain (id bigint PRIMARY KEY, name text)")  # no cursor column
    results = batch(
        "acme",
        item(incrementalCacheSchedule={"type": "BASIC", "expression": "PT6H"}),
        {**item(), "catalogId": "nope"},
        item("missing"),
        {**item(), "schemaName": "private"},
        item(fullRefreshCacheSchedule={"type": "BASIC", "expression": "P1M"}),
        item(incrementalCacheSchedule={"type": "CRON", "expression": "*/5 * * *"}),
        item("events", incrementalCacheSchedule={"type": "BASIC", "expression": "PT1H"}),
        item("plain", incrementalCacheSchedule={"type": "BASIC", "expression": "PT1H"}),
        item("plain", fullRefreshCacheSchedule={"type": "CRON", "expression": "0 3 * * *"}),
        {"catalogId": CATALOG_ID, "tableName": "charges"},
        "not an object",
    )
    assert [r.success for r in results] == [True, False, False, False, False, False, False, False, True, False, False]
    errors = [r.error for r in results]
    assert "unknown catalog 'nope'; catalogs: 627249916703408649" in errors[1]
    assert "has no table public.missing; tables: charges, events, plain" in errors[2]
    assert "has no schema 'private'" in errors[3]
    assert "counts years or months" in errors[4]
    assert "five fields" in errors[5]
    assert "events has no primary key" in errors[6] and "has no cursor column 'updated_at'" in errors[7]
    assert "schemaName: Field required" in errors[9] and "must be an object" in errors[10]
    first = results[0].cache
    assert (first["status"], first["version"], first["project_id"]) == ("PENDING", 0, "acme")
    (again,) = batch("acme", item(fullRefreshCacheSchedule={"type": "CRON", "expression": "0 3 * * *"}))
    assert again.cache["id"] == first["id"] and again.cache["incremental_schedule"] is None
    assert again.cache["full_refresh_schedule"] == {"type": "CRON", "expression": "0 3 * * *"}
    assert again.cache["schedules_set_at"] > first["schedules_set_at"]
    (other_project,) = batch("other", item())
    assert other_project.cache["id"] != first["id"]
    assert len(CacheService().entries("acme")) == 2


def test_incremental_refreshes_follow_inserts_updates_deletes_and_late_commits(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql(
        "INSERT INTO public.charges SELECT g, g / 100.0, 'charge ' || g, ARRAY['a', 'b' || g], "
        "now() - interval '1 hour' + g * interval '1 millisecond' FROM generate_series(1, 5000) g"
    )
    (created,) = batch("acme", item(incrementalCacheSchedule={"type": "BASIC", "expression": "PT1H"}))
    entry_id = created.cache["id"]

    first = run_refresh(instance, entry_id)
    assert first.success
    assert_figures(first, {"kind": "full", "dagster/row_count": 5000, "rows_inserted": 5000, "version": 1})
    assert copy_rows(entry_of(entry_id)) == source_rows(catalog_env)
    watermark = datetime.fromisoformat(entry_of(entry_id)["watermark"])
    assert entry_of(entry_id)["status"] == "READY" and entry_of(entry_id)["row_count"] == 5000

    catalog_env.sql("UPDATE public.charges SET note = 'changed', updated_at = now() WHERE id <= 20")
    catalog_env.sql("DELETE FROM public.charges WHERE id BETWEEN 4001 AND 4030")
    catalog_env.sql(
        "INSERT INTO public.charges VALUES (9001, 1.23, 'new', '{}', now()), (9002, NULL, NULL, NULL, now())"
    )
    # Committed after the last refresh but stamped before its watermark (a long transaction), and a
    # row with the very same cursor value as the watermark: neither is lost.
    catalog_env.sql(
        "INSERT INTO public.charges VALUES (9003, 3.00, 'late', '{x}', %s)", watermark - timedelta(minutes=2)
    )
    catalog_env.sql("INSERT INTO public.charges VALUES (9004, 4.00, 'tie', '{y}', %s)", watermark)
    second = run_refresh(instance, entry_id)
    assert second.success
    assert_figures(second, {
        "kind": "incremental", "dagster/row_count": 4974, "rows_inserted": 4, "rows_updated": 20, "rows_deleted": 30,
        "version": 2,
    })  # fmt: skip
    assert copy_rows(entry_of(entry_id)) == source_rows(catalog_env)

    nothing = run_refresh(instance, entry_id)  # rows re-read within the lag count as unchanged
    assert_figures(nothing, {"kind": "incremental", "rows_inserted": 0, "rows_updated": 0, "rows_deleted": 0})
    assert copy_rows(entry_of(entry_id)) == source_rows(catalog_env)

    # As many rows as before, but one key swapped for another: the key count and sum (checked before
    # the key-only scan, which runs only when they differ) see it, and the deleted row goes.
    catalog_env.sql("DELETE FROM public.charges WHERE id = 100")
    catalog_env.sql("INSERT INTO public.charges VALUES (9100, 9.10, 'swap', '{}', now())")
    swapped = run_refresh(instance, entry_id)
    assert_figures(swapped, {"kind": "incremental", "dagster/row_count": 4974, "rows_inserted": 1, "rows_deleted": 1})
    assert copy_rows(entry_of(entry_id)) == source_rows(catalog_env)

    catalog_env.sql("ALTER TABLE public.charges ADD COLUMN currency text DEFAULT 'EUR'")
    widened = run_refresh(instance, entry_id)
    assert figures(widened)["kind"] == "full" and "changed since the last full refresh" in figures(widened)["why"]
    path = CachedTablesResource().version_path(entry_of(entry_id)["version_path"])
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.sql("SELECT count(*) FILTER (WHERE currency = 'EUR') FROM public.charges").fetchall() == [
            (4974,)
        ]
    assert entry_of(entry_id)["last_full_refresh_at"] == entry_of(entry_id)["last_refresh_at"]


def _refreshed_entry(catalog_env: CatalogEnvironment, instance: dg.DagsterInstance) -> tuple[str, dict[str, Any]]:
    """An entry of `public.charges` (100 rows) in project acme, refreshed once: its id and its record."""
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql("INSERT INTO public.charges (id, amount) SELECT g, g FROM generate_series(1, 100) g")
    (created,) = batch("acme", item())
    entry_id = created.cache["id"]
    assert run_refresh(instance, entry_id).success
    return entry_id, entry_of(entry_id)


def test_a_failing_refresh_keeps_the_copy_and_records_why(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    entry_id, before = _refreshed_entry(catalog_env, instance)

    catalog_env.sql("ALTER TABLE public.charges RENAME TO charges_gone")
    failed = run_refresh(instance, entry_id, full=True)
    assert not failed.success
    after = entry_of(entry_id)
    assert after["status"] == "FAILED" and "has no table public.charges" in after["error"]
    assert (after["version"], after["version_path"], after["row_count"]) == (1, before["version_path"], 100)
    assert CachedTablesResource().version_path(after["version_path"]).exists()

    # An unreachable catalog fails the same way, without its password in the message.
    catalog_env.catalogs_file.write_text(
        f'catalogs:\n  - id: "{CATALOG_ID}"\n    name: stripe\n    url: postgresql://reader:s3cret@127.0.0.1:1/x\n'
    )
    assert not run_refresh(instance, entry_id).success
    error = entry_of(entry_id)["error"]
    assert "cannot be" in error and "s3cret" not in error
    export = catalog_env.exports.run(
        {"source": {"catalog": CATALOG_ID, "table": "public.charges"}, "project_id": "acme"}
    )
    assert export.success  # the old copy is still exported


def test_a_refresh_failing_half_way_keeps_the_copy_and_leaves_no_partial_file(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_id, before = _refreshed_entry(catalog_env, instance)
    catalog_env.sql("UPDATE public.charges SET amount = amount + 1000")

    def disk_full(*_args: Any, **_kwargs: Any) -> None:  # the new rows are written, not yet compared
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VersionWriter, "_compare", disk_full)
    assert not run_refresh(instance, entry_id, full=True).success
    after = entry_of(entry_id)
    assert after["status"] == "FAILED" and "No space left on device" in after["error"]
    assert (after["version"], after["version_path"]) == (before["version"], before["version_path"])
    copy = CachedTablesResource().version_path(before["version_path"])
    assert [path.name for path in copy.parent.iterdir()] == [copy.name], "no partial version file left"
    exported = catalog_env.exports.run(
        {"source": {"catalog": CATALOG_ID, "table": "public.charges"}, "project_id": "acme", "format": "PARQUET"}
    )
    record = catalog_env.exports.record(exported)
    artifact = catalog_env.exports.download(record["files"][0]["key"])
    assert duckdb.sql(f"SELECT sum(amount) FROM '{artifact}'").fetchall() == [(5050,)]  # the copy from before


def test_exports_read_the_current_copy_without_plumbing(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql(
        "INSERT INTO public.charges SELECT g, g / 4.0, 'n' || g, ARRAY['t'], now() FROM generate_series(1, 300) g"
    )
    exports = catalog_env.exports
    source = {"catalog": CATALOG_ID, "table": "public.charges"}

    unknown = exports.run({"source": source, "project_id": "acme"})
    message = unknown.get_step_failure_events()[0].step_failure_data.error.message
    assert "is not cached in project acme" in message
    (created,) = batch("acme", item())
    not_yet = exports.run({"source": source, "project_id": "acme"})
    assert (
        "is not ready yet: its first refresh has not finished"
        in not_yet.get_step_failure_events()[0].step_failure_data.error.message
    )
    assert run_refresh(instance, created.cache["id"]).success

    done = exports.run({"source": source, "project_id": "acme", "format": "PARQUET", "order_by": ["id"]})
    record = exports.record(done)
    assert (
        record["status"] == "SUCCEEDED" and record["source"] == 'stripe.public."charges"' and record["row_count"] == 300
    )
    artifact = exports.download(record["files"][0]["key"])
    with duckdb.connect() as connection:
        written = connection.sql(f"SELECT * FROM '{artifact}'")
        assert written.columns == ["id", "amount", "note", "tags", "updated_at"]  # no q, no cache
        assert written.fetchall() == source_rows(catalog_env)
    other_project = exports.run({"source": source, "project_id": "other"})
    assert not other_project.success


def test_an_export_of_a_copy_that_needs_more_than_the_memory_limit_is_read_again(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    """A cached copy is read under the same memory limit as the warehouse, and read again without
    it when it needs more: here notes of 48 KB, 96 MB in a batch of rows."""
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql(
        "INSERT INTO public.charges SELECT g, g, repeat(chr(65 + g % 26), 48000) || g, ARRAY['t'], now() "
        "FROM generate_series(1, 2000) g"
    )
    (created,) = batch("acme", item())
    assert run_refresh(instance, created.cache["id"]).success
    exports = catalog_env.exports
    done = exports.run(
        {"source": {"catalog": CATALOG_ID, "table": "public.charges"}, "project_id": "acme", "format": "PARQUET"},
        policy=ExportPolicy(read_memory_limit="64MB"),
    )
    assert done.success
    (output,) = [e for e in done.all_events if e.is_successful_output and e.step_key == "serialize"]
    read_again = output.event_specific_data.metadata["read_again"].value
    assert read_again == "yes, without a memory limit (needed more than 64.0MB)"
    artifact = exports.download(exports.record(done)["files"][0]["key"])
    with duckdb.connect() as connection:
        written = connection.sql(f"SELECT id, note FROM '{artifact}' ORDER BY id").fetchall()
    assert written == catalog_env.rows("SELECT id, note FROM public.charges ORDER BY id")


def test_an_export_during_a_full_refresh_reads_one_whole_version(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql(
        "INSERT INTO public.charges SELECT g, g / 100.0, repeat('x', 40) || g, ARRAY['v1'], now() "
        "FROM generate_series(1, 300000) g"
    )
    (created,) = batch("acme", item())
    entry_id = created.cache["id"]
    assert run_refresh(instance, entry_id).success
    version_1 = CachedTablesResource().version_path(entry_of(entry_id)["version_path"])
    catalog_env.sql("UPDATE public.charges SET tags = ARRAY['v2'], amount = amount + 1 WHERE id % 2 = 0")
    catalog_env.sql("DELETE FROM public.charges WHERE id > 290000")

    # The refresh in a process of its own, as a worker runs it, while this process exports.
    refreshing = subprocess.Popen([sys.executable, "-c", REFRESH_IN_A_PROCESS, entry_id])
    request = {"source": {"catalog": CATALOG_ID, "table": "public.charges"}, "project_id": "acme", "format": "CSV"}
    exported = catalog_env.exports.record(catalog_env.exports.run(request))
    assert refreshing.wait(timeout=300) == 0 and exported["status"] == "SUCCEEDED", exported["error"]
    version_2 = CachedTablesResource().version_path(entry_of(entry_id)["version_path"])
    assert version_2 != version_1
    artifact = catalog_env.exports.download(exported["files"][0]["key"])
    with duckdb.connect() as connection:
        connection.execute(
            f"CREATE VIEW exported AS SELECT id, amount, note, tags FROM read_csv('{artifact}', "
            "types={'amount': 'DECIMAL(12,2)', 'tags': 'VARCHAR'})"
        )
        differences = []
        for number, version in enumerate((version_1, version_2)):
            connection.execute(f"ATTACH '{version}' AS v{number} (READ_ONLY)")
            copy = f"SELECT id, amount, note, to_json(tags)::VARCHAR FROM v{number}.public.charges"
            differences.append(
                connection.sql(
                    f"SELECT (SELECT count(*) FROM (FROM exported EXCEPT {copy})) + "
                    f"(SELECT count(*) FROM ({copy} EXCEPT FROM exported))"
                ).fetchall()[0][0]
            )
    assert 0 in differences and differences != [0, 0]  # exactly one of the two versions, whole


def test_the_sensor_launches_each_due_refresh_once(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    catalog_env.sql(CREATE_CHARGES)
    (created,) = batch("acme", item(incrementalCacheSchedule={"type": "BASIC", "expression": "PT1M"}))
    entry_id = created.cache["id"]
    resources = {"cache": CachedTablesResource()}

    def tick(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return cache_refresh_sensor(context)

    first = tick(None)
    assert [r.run_key for r in first.run_requests] == [f"{entry_id}:first:{created.cache['created_at'].isoformat()}"]
    assert first.run_requests[0].partition_key == entry_id and first.run_requests[0].tags["cache_entry"] == entry_id
    assert first.dynamic_partitions_requests[0].partition_keys == [entry_id]
    instance.add_dynamic_partitions(cache_entries_partitions.name, [entry_id])  # as the daemon does with it
    assert tick(first.cursor).run_requests == []
    # A cursor lost with a daemon that died mid-tick: the same key again, which Dagster's run-key
    # dedupe refuses (see test_cache_live for the daemon itself).
    assert [r.run_key for r in tick(None).run_requests] == [first.run_requests[0].run_key]

    CachedTablesResource().store().request_refresh(entry_id, full=True)
    asked = tick(first.cursor)
    (request,) = asked.run_requests
    assert (
        request.run_key.startswith(f"{entry_id}:asked:")
        and request.run_config["ops"]["cached_tables"]["config"]["full"]
    )
    assert tick(asked.cursor).run_requests == []

    CacheService().delete("acme", entry_id)
    gone = tick(asked.cursor)
    assert gone.run_requests == [] and json.loads(gone.cursor) == {}
    (removal,) = gone.dynamic_partitions_requests
    assert isinstance(removal, dg.DeleteDynamicPartitionsRequest) and removal.partition_keys == [entry_id]


def test_replaced_versions_are_removed_after_their_grace(
    catalog_env: CatalogEnvironment, instance: dg.DagsterInstance
) -> None:
    catalog_env.sql(CREATE_CHARGES)
    catalog_env.sql("INSERT INTO public.charges (id) SELECT g FROM generate_series(1, 10) g")
    (created,) = batch("acme", item())
    entry_id = created.cache["id"]
    for _ in range(3):
        assert run_refresh(instance, entry_id, full=True).success
    folder = Path(catalog_env.cache_dir) / entry_id
    assert len(list(folder.glob("*.duckdb"))) == 3  # within the grace period nothing goes
    (folder / "000009-deadbeef.duckdb.tmp").write_bytes(b"left by a refresh that died")
    assert remove_retired_versions(CachedTablesResource(), grace=timedelta(0)) == 3
    assert [p.name for p in folder.iterdir()] == [Path(entry_of(entry_id)["version_path"]).name]
    CacheService().delete("acme", entry_id)
    remove_retired_versions(CachedTablesResource(), grace=timedelta(0))
    assert list(folder.iterdir()) == []


def test_the_demo_catalog_of_the_dev_deployment_refreshes_too(
    export_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    """SQLite (the embedded default's catalog): text timestamps as the cursor, compared as text."""
    monkeypatch.setenv("EXPORTS_CATALOGS", str(build_demo_catalog(tmp_path / "catalog", rows=500)))
    monkeypatch.setenv("EXPORTS_CACHE_DIR", str(tmp_path / "cache"))
    (created,) = CacheService().batch(
        "demo",
        [{"catalogId": "demo", "schemaName": "main", "tableName": "accounts",
          "incrementalCacheSchedule": {"type": "BASIC", "expression": "PT1H"}}],
    )  # fmt: skip
    assert created.success, created.error
    entry_id = created.cache["id"]
    assert_figures(run_refresh(instance, entry_id), {"kind": "full", "dagster/row_count": 500})
    database = tmp_path / "catalog" / "crm.sqlite"
    with sqlite3.connect(database) as source:
        later = "2030-01-01T00:00:00.000000+00:00"
        source.execute("UPDATE accounts SET plan = 'gold', updated_at = ? WHERE id <= 5", (later,))
        source.execute("DELETE FROM accounts WHERE id > 490")
    assert_figures(
        run_refresh(instance, entry_id),
        {"kind": "incremental", "dagster/row_count": 490, "rows_updated": 5, "rows_deleted": 10, "rows_inserted": 0},
    )
    path = CachedTablesResource().version_path(entry_of(entry_id)["version_path"])
    with duckdb.connect(str(path), read_only=True) as copy, sqlite3.connect(database) as source:
        columns = "id, name, plan, seats, monthly_fee, updated_at"
        assert (
            copy.sql(f"SELECT {columns} FROM main.accounts ORDER BY id").fetchall()
            == source.execute(f"SELECT {columns} FROM accounts ORDER BY id").fetchall()
        )
