"""The warehouse file replaced (a new file renamed over it, as a deployment of new data does) while an
export reads it: the export finishes with exactly the rows of the file it began with (its connection
holds that file), and the next export reads the new file."""

import os
import shutil
import uuid
from pathlib import Path

import duckdb

from export_pipelines.orchestration.jobs import export_job
from export_pipelines.orchestration.progress import ProgressReporter
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines_tests.conftest import BUCKET, use_settings
from export_pipelines_tests.faults.conftest import LARGE_ROWS

CHECK = "SELECT count(*), sum(id) FROM {}"
KEPT = 500_000  # rows of payment.large_charges in the new file


def test_the_warehouse_replaced_under_a_reading_export(
    tmp_path: Path, monkeypatch, s3_server, fault_warehouse: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(fault_warehouse, warehouse)
    replacement = tmp_path / "new-warehouse.duckdb"
    shutil.copy(fault_warehouse, replacement)
    with duckdb.connect(str(replacement)) as connection:
        connection.execute(f"DELETE FROM payment.large_charges WHERE id >= {KEPT}")
    prefix = f"replaced-{uuid.uuid4().hex[:6]}/"
    database_url = use_settings(monkeypatch, s3_server, warehouse, tmp_path, prefix, max_rows=LARGE_ROWS)
    store = ExportStore(engine_for(database_url))

    report, replaced_at = ProgressReporter.__call__, []

    def replace_once_writing(reporter: ProgressReporter, rows_written: int) -> None:
        if rows_written > 0 and replacement.exists():  # the first report of rows written: mid-export
            os.replace(replacement, warehouse)
            replaced_at.append(rows_written)
        report(reporter, rows_written)

    monkeypatch.setattr(ProgressReporter, "__call__", replace_once_writing)
    request = {"source": {"table": "payment.large_charges"}, "format": "PARQUET"}
    during = store.find_by_run(export_job.execute_in_process(run_config=request, raise_on_error=False).run_id)
    assert 0 < replaced_at[0] < LARGE_ROWS, "the file was replaced during the export"
    after = store.find_by_run(export_job.execute_in_process(run_config=request, raise_on_error=False).run_id)

    client = s3_server.client()
    with duckdb.connect(str(fault_warehouse), read_only=True) as old:
        [old_figures] = old.sql(CHECK.format("payment.large_charges")).fetchall()
    with duckdb.connect(str(warehouse), read_only=True) as new:
        [new_figures] = new.sql(CHECK.format("payment.large_charges")).fetchall()
    for record, expected in [(during, old_figures), (after, new_figures)]:
        assert record["status"] == "SUCCEEDED", record["error"]
        paths = []
        for index, file in enumerate(record["files"]):
            paths.append(tmp_path / f"{record['id']}-{index}.parquet")
            client.download_file(BUCKET, file["key"], str(paths[-1]))
        listed = ", ".join(f"'{path}'" for path in paths)
        assert duckdb.sql(CHECK.format(f"read_parquet([{listed}])")).fetchall() == [expected]
    assert new_figures[0] == KEPT
