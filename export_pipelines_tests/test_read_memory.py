"""DuckDB's memory limit while an export reads its rows: it keeps a long export's memory flat,
and an export that needs more than the limit (wide rows, large values, long lists, a heavy saved
query) is read again without it, so the limit never costs an export. Whole export_job runs on a
warehouse of such tables; every artifact read back with DuckDB and compared with the source."""

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.engine.request import ExportRequest
from export_pipelines.engine.warehouse import RunConnection
from export_pipelines.orchestration.jobs import export_job
from export_pipelines_tests.conftest import ExportEnvironment

LIMIT = "64MB"
# Each reads fine without a limit and needs more than 64 MB of DuckDB's memory to be read.
NEEDS_MORE = {
    "wide": "300 text columns",
    "big": "values of 48 KB",
    "lists": "lists of 2,000 numbers",
}


@pytest.fixture(scope="module")
def heavy_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("heavy") / "heavy.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA s")
        connection.execute("CREATE SCHEMA queries")
        columns = ", ".join(f"'v' || (i % 1000) || '-{k}' AS c{k}" for k in range(300))
        connection.execute(f"CREATE TABLE s.wide AS SELECT i AS id, {columns} FROM range(100000) t(i)")
        connection.execute(
            "CREATE TABLE s.big AS SELECT i AS id, repeat(chr((65 + i % 26)::INTEGER), 48000) || i AS v "
            "FROM range(2000) t(i)"
        )
        connection.execute(
            "CREATE TABLE s.lists AS SELECT i AS id, [i + j for j in range(2000)] AS v FROM range(20000) t(i)"
        )
        connection.execute(
            "CREATE TABLE s.amounts AS SELECT i AS id, hash(i) % 1000000 AS amount, 'customer ' || (hash(i) % 5000) "
            "AS customer FROM range(1000000) t(i)"
        )
        # A saved query whose count alone needs the values in memory (string_agg does not spill).
        connection.execute(
            "CREATE VIEW queries.joined AS SELECT id % 10 AS k, string_agg(v, ',') AS vs FROM s.big GROUP BY k "
            "HAVING length(vs) > 0"
        )
    return path


@dataclass
class Run:
    result: dg.ExecuteInProcessResult
    warnings: list[str]

    def read_again(self, op: str) -> object:
        """What the op's `read_again` figure says."""
        return self.metadata(op)["read_again"]

    def metadata(self, op: str) -> dict[str, object]:
        """The figures the op's output shows in the UI."""
        (output,) = [
            event
            for event in self.result.all_events
            if event.event_type is dg.DagsterEventType.STEP_OUTPUT and event.step_key == op
        ]
        return {name: value.value for name, value in output.event_specific_data.metadata.items()}


def run_export(request: dict, limit: str = LIMIT) -> Run:
    with dg.instance_for_test() as instance:
        result = export_job.execute_in_process(
            run_config=request,
            resources={"policy": ExportPolicy(read_memory_limit=limit)},
            raise_on_error=False,
            instance=instance,
        )
        warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    return Run(result, warnings)


@pytest.fixture
def heavy_env(
    export_env: ExportEnvironment, heavy_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> ExportEnvironment:
    monkeypatch.setenv("EXPORTS_WAREHOUSE", str(heavy_warehouse))
    export_env.warehouse = heavy_warehouse
    return export_env


def fingerprint(relation_sql: str, connection: duckdb.DuckDBPyConnection) -> tuple:
    """Count and an order-independent hash of every row."""
    return connection.sql(f"SELECT count(*), sum(hash(t)) FROM ({relation_sql}) t").fetchall()[0]


@pytest.mark.parametrize("table", list(NEEDS_MORE))
def test_an_export_that_needs_more_than_the_limit_is_read_again_without_it(
    heavy_env: ExportEnvironment, table: str
) -> None:
    run = run_export({"source": {"table": f"s.{table}"}, "format": "PARQUET", "max_rows_per_file": 7000})
    assert run.result.success, NEEDS_MORE[table]
    assert run.read_again("serialize") == "yes, without a memory limit (needed more than 64.0MB)"
    (warning,) = run.warnings
    assert warning.startswith("Reading the rows needed more than DuckDB's memory limit of 64.0MB (Out of Memory Error")
    record = heavy_env.record(run.result)
    keys = [entry["key"] for entry in record["files"]]
    # Nothing of the first attempt is left: the export's objects are its files and the manifest.
    assert sorted(heavy_env.keys()) == sorted([*keys, keys[0].rsplit("/", 1)[0] + "/manifest.json"])
    files = [str(heavy_env.download(key)) for key in keys]
    with duckdb.connect(str(heavy_env.warehouse), read_only=True) as source:
        expected = fingerprint(f"SELECT * FROM s.{table}", source)
    with duckdb.connect() as reader:
        assert fingerprint(f"SELECT * FROM read_parquet({files!r})", reader) == expected


def test_a_saved_query_whose_count_needs_more_is_read_again_before_writing(heavy_env: ExportEnvironment) -> None:
    run = run_export({"source": {"query": "joined"}, "format": "JSONL"}, "16MiB")  # a saved query: 4x, 67.1MB
    assert run.result.success
    assert run.read_again("apply_row_rules") == "yes, without a memory limit (needed more than 67.1MB)"
    assert run.read_again("serialize") == "no"  # the run reads without the limit from then on
    (key,) = [entry["key"] for entry in heavy_env.record(run.result)["files"]]
    with duckdb.connect(str(heavy_env.warehouse), read_only=True) as source:
        expected = fingerprint("SELECT k, vs FROM queries.joined", source)
    with duckdb.connect() as reader:
        assert fingerprint(f"SELECT k, vs FROM read_json('{heavy_env.download(key)}')", reader) == expected


def test_a_sorted_export_stays_within_its_limit(heavy_env: ExportEnvironment) -> None:
    """A sort gets 4x the limit, and a sort larger than that spills to disk instead of being read again."""
    run = run_export({"source": {"table": "s.amounts"}, "format": "PARQUET", "order_by": ["amount", "id"]}, "24MB")
    assert run.result.success and not run.warnings
    assert run.metadata("resolve_request")["read_memory_limit"] == "96.0MB"
    assert not Path(f"{heavy_env.warehouse}.tmp").exists()  # nothing spilled beside the warehouse
    assert run.read_again("apply_row_rules") == run.read_again("serialize") == "no"
    (key,) = [entry["key"] for entry in heavy_env.record(run.result)["files"]]
    with duckdb.connect() as reader:
        written = reader.sql(f"SELECT amount, id FROM '{heavy_env.download(key)}'").fetchall()
    with duckdb.connect(str(heavy_env.warehouse), read_only=True) as source:
        assert written == source.sql("SELECT amount, id FROM s.amounts ORDER BY amount, id").fetchall()


def test_without_a_limit_nothing_is_read_again(heavy_env: ExportEnvironment) -> None:
    run = run_export({"source": {"table": "s.big"}, "format": "CSV"}, "none")
    assert run.result.success and not run.warnings
    assert run.read_again("serialize") == "no"


def test_a_memory_limit_duckdb_does_not_take_is_refused_by_name(
    heavy_env: ExportEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="read_memory_limit '64XB' is not a memory size"):
        ExportPolicy(read_memory_limit="64XB")
    with pytest.raises(ValueError, match="read_memory_limit '1MB' is under 16 MiB"):
        ExportPolicy(read_memory_limit="1MB")
    monkeypatch.setenv("EXPORTS_READ_MEMORY_LIMIT", "lots")
    result = heavy_env.run({"source": {"table": "s.amounts"}})
    assert not result.success
    assert (
        "EXPORTS_READ_MEMORY_LIMIT 'lots' is not a memory size (e.g. 64MB, 1GiB, none)"
        in heavy_env.record(result)["error"]
    )


def test_sorts_and_saved_queries_get_four_times_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    table, query = {"source": {"table": "s.amounts"}}, {"source": {"query": "joined"}}
    limit_for = ExportPolicy().read_memory_limit_for
    monkeypatch.delenv("EXPORTS_READ_MEMORY_LIMIT", raising=False)
    assert limit_for(ExportRequest(**table)) == "64.0MB"
    assert limit_for(ExportRequest(**table, order_by=["amount"])) == "256.0MB"
    assert limit_for(ExportRequest(**query)) == "256.0MB"
    assert ExportPolicy(read_memory_limit="1GiB").read_memory_limit_for(ExportRequest(**table)) == "1.1GB"
    monkeypatch.setenv("EXPORTS_READ_MEMORY_LIMIT", "none")
    assert limit_for(ExportRequest(**table, order_by=["amount"])) is None


def test_the_run_connection_is_opened_again_only_for_another_limit(heavy_warehouse: Path) -> None:
    run = RunConnection()
    limited = run.get(heavy_warehouse, 5, "64MB")
    assert run.get(heavy_warehouse, 5, "64MB") is limited
    assert limited.sql("SELECT current_setting('memory_limit')").fetchall() == [("61.0 MiB",)]
    unlimited = run.get(heavy_warehouse, 5, None)
    assert unlimited is not limited
    with pytest.raises(duckdb.ConnectionException):
        limited.sql("SELECT 1").fetchall()
    assert unlimited.sql("SELECT current_setting('memory_limit')").fetchall() != [("61.0 MiB",)]
    # Spills go to a folder of the connection's own in the system's temporary folder, removed on close.
    (spills,) = unlimited.sql("SELECT current_setting('temp_directory')").fetchall()[0]
    assert Path(spills).parent == Path(tempfile.gettempdir()) and Path(spills).is_dir()
    run.close()
    assert not Path(spills).exists()
