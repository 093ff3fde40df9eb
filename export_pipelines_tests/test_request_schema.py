"""The run config schema users see in the Launchpad (source pick list, a default request that runs),
the door recorded for runs launched without a requester, and the run page's figures and links."""

import hashlib
import json

import dagster as dg
import pytest
import yaml
from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

from export_pipelines.engine.request import InvalidRequest
from export_pipelines.orchestration.jobs import build_export_job, export_job
from export_pipelines.orchestration.request_check import parse_request
from export_pipelines.orchestration.request_schema import catalog_sources
from export_pipelines_tests.conftest import ExportEnvironment, download


@pytest.fixture
def catalog_job(export_env: ExportEnvironment) -> dg.JobDefinition:
    """export_job as the code location builds it over the demo warehouse."""
    return build_export_job(catalog_sources())


def launchpad_default(job: dg.JobDefinition) -> dict:
    """The config the Launchpad opens with: the webserver's rootDefaultYaml of the job."""
    snapshot = job.get_job_snapshot()
    schema = snapshot.config_schema_snapshot
    root = schema.get_config_snap(snapshot.mode_def_snaps[0].root_config_key)
    return yaml.safe_load(default_values_yaml_from_type_snap(schema, root))


def test_catalog_lists_tables_and_saved_queries(export_env: ExportEnvironment) -> None:
    assert catalog_sources() == [
        "payment.charges", "payment.customers", "payment.invoices", "search.documents", "queries.charges_view",
    ]  # fmt: skip


def test_launchpad_default_request_runs_as_is(export_env: ExportEnvironment, catalog_job: dg.JobDefinition) -> None:
    default = launchpad_default(catalog_job)
    assert default["source"] == {"table": "payment.charges"}
    assert default["format"] == "CSV" and default["project_id"] == "default"
    record = export_env.record(export_env.run(default, job=catalog_job))
    assert record["status"] == "SUCCEEDED" and record["row_count"] == 100_000


def test_every_field_of_the_launchpad_is_documented(catalog_job: dg.JobDefinition) -> None:
    snapshot = catalog_job.get_job_snapshot()
    schema = snapshot.config_schema_snapshot
    root = schema.get_config_snap(snapshot.mode_def_snaps[0].root_config_key)
    undocumented = [field.name for field in root.fields if not field.description]
    assert undocumented == []


def test_source_can_be_picked_from_the_catalog(export_env: ExportEnvironment, catalog_job: dg.JobDefinition) -> None:
    result = export_env.run({"source": {"pick": "queries.charges_view"}, "limit": 3}, job=catalog_job)
    record = export_env.record(result)
    assert record["status"] == "SUCCEEDED" and record["source"] == 'warehouse.queries."charges_view"'
    assert json.loads(record["request"])["source"] == {"query": "charges_view"}
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type WarehouseSource got payment.nope"):
        export_env.run({"source": {"pick": "payment.nope"}}, job=catalog_job)


def test_a_request_must_name_its_source(export_env: ExportEnvironment, catalog_job: dg.JobDefinition) -> None:
    result = export_env.run({"format": "CSV"}, job=catalog_job)  # the Launchpad's default is not a request's
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert 'source is required: {"table": "schema.table"} or {"query": "name"}' in message
    assert export_env.keys() == [] and export_env.store.find_by_run(result.run_id) is None
    with pytest.raises(InvalidRequest, match="source is required"):
        parse_request({"format": "CSV"})
    with pytest.raises(dg.DagsterInvalidConfigError, match='Missing required config entry "source"'):
        export_env.run({"format": "CSV"}, job=build_export_job([]))  # no catalog: no default either


@pytest.mark.parametrize(
    ("tags", "requested_by", "client_source"),
    [
        ({"dagster/from_ui": "true"}, None, "ui"),
        (None, None, "graphql"),
        ({"dagster/from_ui": "true"}, {"client_source": "notebook"}, "notebook"),
    ],
)
def test_the_door_a_run_came_through_is_recorded(
    export_env: ExportEnvironment, tags: dict | None, requested_by: dict | None, client_source: str
) -> None:
    request = {"source": {"table": "payment.invoices"}, "limit": 2}
    if requested_by:
        request["requested_by"] = requested_by
    assert export_env.record(export_env.run(request, tags=tags))["client_source"] == client_source


def test_run_page_shows_figures_and_download_links(export_env: ExportEnvironment) -> None:
    request = {"source": {"table": "payment.charges"}, "limit": 2500, "max_rows_per_file": 1000, "format": "JSONL"}
    with dg.instance_for_test() as instance:
        result = export_job.execute_in_process(run_config=request, instance=instance)
        tags = instance.get_run_by_id(result.run_id).tags
    record = export_env.record(result)
    output = next(e for e in result.all_node_events if e.step_key == "record_result" and e.is_successful_output)
    metadata = output.event_specific_data.metadata
    assert (metadata["rows"].value, metadata["bytes"].value) == (2500, record["bytes"])
    assert metadata["duration_ms"].value == record["duration_ms"]
    table = metadata["files"].value
    for index, file in enumerate(record["files"]):
        assert f"`s3://exports/{file['key']}` | {file['rows']:,} | {file['bytes']:,}" in table
        assert metadata[f"file_{index}"].value == f"s3://exports/{file['key']}"
        assert hashlib.sha256(download(metadata[f"download_{index}"].value)).hexdigest() == file["sha256"]
        assert metadata[f"download_{index}"].value in table
    assert len(record["files"]) == 3 and "Links expire 3,600 s after the run" in table
    assert (tags["export_rows"], tags["export_bytes"]) == ("2500", str(record["bytes"]))


def test_a_saved_query_can_be_the_default_source() -> None:
    assert launchpad_default(build_export_job(["queries.charges_view"]))["source"] == {"query": "charges_view"}
