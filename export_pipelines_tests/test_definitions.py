"""Smoke test of the code location: it loads, and `export_job` has the shape users rely on.

Covers the job graph, its top-level run config (the export request) and its executor. Running
exports is covered by test_export_*.py.
"""

import dagster as dg

from export_pipelines.definitions import defs


def test_definitions_load_with_export_job() -> None:
    job = defs.resolve_job_def("export_job")
    assert {node.name for node in job.nodes} == {
        "resolve_request",
        "shape_rows",
        "select_columns",
        "apply_row_rules",
        "serialize",
        "verify_upload",
        "record_result",
    }
    assert job.executor_def is dg.in_process_executor


def test_run_config_is_the_request_at_top_level() -> None:
    fields = defs.resolve_job_def("export_job").run_config_schema.config_type.fields
    for name in ("export_id", "project_id", "source", "format", "compression", "columns", "limit", "csv_options"):
        assert name in fields, name
    assert fields["source"].description
    assert fields["format"].default_value == "CSV"
    assert fields["format"].description


def test_sensors_are_on_by_default() -> None:
    names = {sensor.name: sensor for sensor in defs.sensors}
    assert set(names) == {
        "export_request_sensor",
        "export_failure_sensor",
        "export_cancel_sensor",
        "export_reconciliation_sensor",
        "cache_refresh_sensor",
        "cache_refresh_failure_sensor",
        "interrupted_launch_sensor",
    }
    assert all(sensor.default_status == dg.DefaultSensorStatus.RUNNING for sensor in names.values())


def test_cached_tables_refresh_in_one_process_per_entry_partition() -> None:
    job = defs.resolve_job_def("cache_refresh_job")
    assert job.executor_def is dg.in_process_executor
    assert isinstance(job.partitions_def, dg.DynamicPartitionsDefinition) and job.partitions_def.name == "cache_entries"
    assert defs.resolve_assets_def("cached_tables").group_names_by_key[dg.AssetKey("cached_tables")] == "cache"
