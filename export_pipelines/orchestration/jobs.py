"""`export_job`: one export request, end to end."""

from typing import Any

import dagster as dg

from export_pipelines.orchestration.ops import (
    apply_row_rules,
    record_export_failure,
    record_result,
    resolve_request,
    select_columns,
    serialize,
    shape_rows,
    verify_upload,
)
from export_pipelines.orchestration.request_schema import catalog_sources, request_config_schema, with_source_named
from export_pipelines.orchestration.resources import default_resources


def build_export_job(sources: list[str]) -> dg.JobDefinition:
    """`export_job`, whose Launchpad offers `sources` (qualified names) to pick from."""

    @dg.config_mapping(config_schema=request_config_schema(sources))
    def request_as_run_config(request: dict[str, Any]) -> dict[str, Any]:
        """The run config of `export_job` is the export request itself, at the top level."""
        return {"ops": {"resolve_request": {"config": with_source_named(request)}}}

    @dg.job(
        name="export_job",
        config=request_as_run_config,
        executor_def=dg.in_process_executor,
        # Ops hand lazy relations to each other: one process, nothing pickled.
        resource_defs={**default_resources(), "io_manager": dg.mem_io_manager},
        hooks={record_export_failure},
        description="Export rows of a warehouse table or saved query to S3 as CSV, JSONL or Parquet.",
        tags={"kind": "export"},
    )
    def export_job() -> None:
        record_result(verify_upload(serialize(apply_row_rules(select_columns(shape_rows(resolve_request()))))))

    return export_job


# The pick list is the warehouse's catalog when the code location loads.
export_job = build_export_job(catalog_sources())
