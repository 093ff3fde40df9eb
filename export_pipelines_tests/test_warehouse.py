"""The warehouse connection: hardening against reaching outside the warehouse, hostile source
names, the bounded retry while another process holds the file for writing, and the in-memory
catalog copy the doors check requests against."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse
from export_pipelines.engine.request import ExportRequest, SourceConfig, UnknownSource
from export_pipelines.engine.steps import validate
from export_pipelines.engine.warehouse import WarehouseResource, WarehouseUnavailable, open_hardened
from export_pipelines_tests.conftest import ExportEnvironment


@pytest.fixture
def small_warehouse(tmp_path: Path) -> Path:
    return build_demo_warehouse(tmp_path / "small.duckdb", charges_rows=1_000)


def test_connection_cannot_read_files_load_extensions_or_unlock_itself(small_warehouse: Path) -> None:
    connection = open_hardened(small_warehouse, timeout_seconds=5)
    try:
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            connection.sql("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error, match="locked"):
            connection.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error):
            connection.execute("INSTALL httpfs")
        with pytest.raises(duckdb.Error):
            connection.execute("LOAD httpfs")
        with pytest.raises(duckdb.Error, match="read-only"):
            connection.execute("DROP TABLE payment.charges")
        assert connection.sql("SELECT count(*) FROM payment.charges").fetchall() == [(1_000,)]
    finally:
        connection.close()


@pytest.mark.parametrize(
    "table",
    [
        "payment.charges; DROP TABLE payment.charges",
        'payment."charges"',
        "read_csv('/etc/passwd')",
        "payment.charges UNION SELECT * FROM payment.customers",
    ],
)
def test_hostile_source_names_are_unknown_tables(export_env: ExportEnvironment, table: str) -> None:
    result = export_env.run({"source": {"table": table}})
    assert not result.success
    record = export_env.record(result)
    assert record["status"] == "FAILED"
    assert record["error"].startswith(("unknown table", 'source table must be "schema.table"'))


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process opens the warehouse for writing; returns once it holds the lock."""
    script = (
        "import duckdb, sys, time\n"
        "connection = duckdb.connect(sys.argv[1])\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "connection.close()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
    return writer


@pytest.mark.parametrize(
    ("held_seconds", "timeout_seconds", "status", "error"),
    [
        (60, 1, "FAILED", "stayed locked by another process for 1s"),  # fails clearly after the timeout
        (1.5, 60, "SUCCEEDED", None),  # waits for a short writer
    ],
)
def test_export_retries_while_another_process_writes(
    export_env: ExportEnvironment,
    small_warehouse: Path,
    held_seconds: float,
    timeout_seconds: float,
    status: str,
    error: str | None,
) -> None:
    writer = hold_write_lock(small_warehouse, held_seconds)
    try:
        result = export_env.run(
            {"source": {"table": "payment.charges"}},
            warehouse=WarehouseResource(path=str(small_warehouse), open_timeout_seconds=timeout_seconds),
        )
    finally:
        writer.kill()
        writer.wait()
    record = export_env.record(result)
    assert record["status"] == status
    if error is None:
        assert record["row_count"] == 1_000
    else:
        assert error in record["error"]
        assert export_env.keys() == []


def test_catalog_copy_checks_requests_like_the_file_and_follows_its_changes(tmp_path: Path) -> None:
    warehouse = build_demo_warehouse(tmp_path / "warehouse.duckdb", charges_rows=100)
    resource = WarehouseResource(path=str(warehouse))
    request = ExportRequest(source=SourceConfig(table="payment.charges"), columns=["id", "metadata.title", "embedding"])
    with resource.catalog_connection() as copy, resource.connect() as original:
        assert validate(request, "x", copy).description == validate(request, "x", original).description
        assert (
            copy.sql("SELECT * FROM queries.charges_view").types
            == original.sql("SELECT * FROM queries.charges_view").types
        )
        assert copy.sql("SELECT count(*) FROM payment.charges").fetchall() == [(0,)]  # no rows, only the catalog
        with pytest.raises(UnknownSource, match="unknown table 'payment.later'"):
            validate(ExportRequest(source=SourceConfig(table="payment.later")), "x", copy)
    with duckdb.connect(str(warehouse)) as writer:
        writer.execute("CREATE TABLE payment.later AS SELECT 1 AS id")
    with resource.catalog_connection() as copy:
        assert validate(ExportRequest(source=SourceConfig(table="payment.later")), "x", copy).base_name == "later"
    warehouse.unlink()
    with pytest.raises(WarehouseUnavailable, match="does not exist"), resource.catalog_connection():
        pass
