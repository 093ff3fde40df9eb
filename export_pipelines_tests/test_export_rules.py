"""Row rules, parts and failures of `export_job` against the real S3 server.

Covers column selection (nested, system, plumbing, vectors), the limit clamp, the max_rows
failure, parts with their manifest, every clear validation error, and that a failed export
leaves no object and a FAILED row. Output fidelity per format is in test_export_fidelity.py.
"""

import json

import duckdb
import pytest

from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.engine.request import InvalidRequest
from export_pipelines.orchestration.request_check import parse_request
from export_pipelines_tests.conftest import BUCKET, ExportEnvironment


def read_rows(export_env: ExportEnvironment, record: dict) -> list[dict]:
    rows: list[dict] = []
    for file in record["files"]:
        path = export_env.download(file["key"])
        part = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
        columns = duckdb.sql(f"SELECT * FROM read_parquet('{path}') LIMIT 0").columns
        assert len(part) == file["rows"]
        rows.extend(dict(zip(columns, row, strict=True)) for row in part)
    return rows


def test_columns_in_order_with_nested_fields(export_env: ExportEnvironment) -> None:
    request = {
        "source": {"table": "payment.charges"},
        "format": "PARQUET",
        "columns": ["metadata.title", "id", "metadata.category"],
        "limit": 5,
    }
    record = export_env.record(export_env.run(request))
    rows = read_rows(export_env, record)
    assert list(rows[0]) == ["metadata.title", "id", "metadata.category"]
    assert {row["id"]: row["metadata.title"] for row in rows}[1] == "Charge #1"


def test_system_plumbing_and_vector_columns(export_env: ExportEnvironment) -> None:
    base = {"source": {"table": "payment.charges"}, "format": "PARQUET", "limit": 3}
    with_system = read_rows(export_env, export_env.record(export_env.run(base)))[0]
    assert {"_id", "_version"} <= set(with_system)
    assert not {"q", "cache", "embedding"} & set(with_system)
    without = read_rows(export_env, export_env.record(export_env.run({**base, "include_system_columns": False})))[0]
    assert not any(name.startswith("_") for name in without)
    assert set(with_system) - set(without) == {"_id", "_version"}


@pytest.mark.parametrize(("limit", "expected"), [(0, 1), (-5, 1), (7, 7), (10**9, 2_000)])
def test_limit_is_clamped_to_one_and_max_rows(export_env: ExportEnvironment, limit: int, expected: int) -> None:
    result = export_env.run(
        {"source": {"table": "payment.charges"}, "format": "PARQUET", "limit": limit},
        policy=ExportPolicy(max_rows=2_000),
    )
    record = export_env.record(result)
    assert record["status"] == "SUCCEEDED"
    assert record["row_count"] == expected == len(read_rows(export_env, record))


def test_result_over_max_rows_fails_and_leaves_nothing(export_env: ExportEnvironment) -> None:
    result = export_env.run({"source": {"table": "payment.charges"}}, policy=ExportPolicy(max_rows=99_999))
    assert not result.success
    record = export_env.record(result)
    assert record["status"] == "FAILED"
    assert record["error"] == "Query exceeded the 99,999 row export limit"
    assert record["finished_at"] is not None
    assert export_env.keys() == []


def test_max_rows_env_var_is_read_at_run_start(export_env: ExportEnvironment, monkeypatch) -> None:
    monkeypatch.setenv("EXPORTS_MAX_ROWS", "1000")
    record = export_env.record(export_env.run({"source": {"query": "charges_view"}}))
    assert record["error"] == "Query exceeded the 1,000 row export limit"


def test_parts_split_rows_and_manifest_is_written_last(export_env: ExportEnvironment) -> None:
    request = {
        "export_id": "parts-1",
        "project_id": "acme",
        "source": {"table": "payment.charges"},
        "format": "PARQUET",
        "max_rows_per_file": 30_000,
        "name": "charges_export",
    }
    record = export_env.record(export_env.run(request))
    assert record["status"] == "SUCCEEDED"
    assert [f["key"] for f in record["files"]] == [
        f"{export_env.prefix}acme/parts-1/charges_export-{part:05d}.parquet" for part in range(4)
    ]
    assert [f["rows"] for f in record["files"]] == [30_000, 30_000, 30_000, 10_000]
    rows = read_rows(export_env, record)
    assert [row["id"] for row in rows] == list(range(100_000))  # parts keep the stream's order
    manifest = json.loads(export_env.download(f"{export_env.prefix}acme/parts-1/manifest.json").read_text())
    assert manifest["files"] == record["files"]
    assert manifest["rows"] == 100_000 and manifest["bytes"] == record["bytes"]
    assert {c["name"] for c in manifest["schema"]} >= {"id", "metadata", "tags"}
    assert manifest["request"]["max_rows_per_file"] == 30_000
    objects = export_env.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{export_env.prefix}acme/parts-1/")
    modified = {o["Key"].rsplit("/", 1)[1]: o["LastModified"] for o in objects["Contents"]}
    assert modified["manifest.json"] >= max(modified.values())


@pytest.mark.parametrize(("export_format", "compression"), [("CSV", "NONE"), ("JSONL", "NONE")])
def test_parts_of_about_max_bytes(export_env: ExportEnvironment, export_format: str, compression: str) -> None:
    target = 5 * 2**20
    request = {
        "source": {"table": "payment.charges"},
        "format": export_format,
        "compression": compression,
        "max_bytes_per_file": target,
        "order_by": ["id"],
    }
    record = export_env.record(export_env.run(request))
    assert record["status"] == "SUCCEEDED"
    files = record["files"]
    assert len(files) >= 2 and record["row_count"] == 100_000
    assert len({f["rows"] for f in files[:-1]}) == 1 and files[-1]["rows"] <= files[0]["rows"]
    for file in files[:-1]:  # the rows are alike: the estimate from the first rows holds
        assert 0.8 * target <= file["bytes"] <= 1.1 * target, file
    ids = []
    for file in files:
        path = export_env.download(file["key"])
        reader = "read_csv" if export_format == "CSV" else "read_json"
        part = duckdb.sql(f"SELECT id FROM {reader}('{path}')").fetchall()
        assert len(part) == file["rows"] and path.stat().st_size == file["bytes"]
        ids.extend(row[0] for row in part)
    assert ids == list(range(100_000))
    manifest_key = files[0]["key"].rsplit("/", 1)[0] + "/manifest.json"
    manifest = json.loads(export_env.download(manifest_key).read_text())
    assert manifest["files"] == files and manifest["request"]["max_bytes_per_file"] == target


def test_export_records_figures_and_requester(export_env: ExportEnvironment) -> None:
    request = {
        "source": {"query": "charges_view"},
        "limit": 10,
        "requested_by": {"user_id": "u1", "user_name": "Ada", "client_source": "test"},
    }
    result = export_env.run(request)
    record = export_env.record(result)
    assert record["id"] == result.run_id
    assert record["source"] == 'warehouse.queries."charges_view"'
    assert (record["user_id"], record["user_name"], record["client_source"]) == ("u1", "Ada", "test")
    assert record["row_count"] == 10 and record["bytes"] > 0 and record["duration_ms"] > 0
    assert record["started_at"] <= record["finished_at"]
    assert json.loads(record["request"])["source"] == {"query": "charges_view"}
    outputs = [e for e in result.all_node_events if e.step_key == "record_result" and e.is_successful_output]
    figures = outputs[0].event_specific_data.metadata
    assert figures["rows"].value == 10
    assert figures["bytes"].value == record["bytes"]
    assert figures["file_0"].value.startswith(f"s3://{BUCKET}/{export_env.prefix}default/")


@pytest.mark.parametrize(
    ("request_patch", "message"),
    [
        ({"source": {"table": "payment.nope"}}, "unknown table 'payment.nope'; available: payment.charges"),
        ({"source": {"query": "nope"}}, "unknown saved query 'nope'; available: charges_view"),
        ({"source": {"table": "charges"}}, 'source table must be "schema.table"'),
        ({"columns": ["id", "bogus"]}, "unknown column bogus; available columns: id, _id"),
        ({"columns": ["id", "metadata.nope"]}, "unknown column metadata.nope"),
        ({"columns": ["id", "id"]}, "duplicate columns: id"),
        ({"columns": ["q"]}, "unknown column q"),
        ({"filters": {"AND": []}}, "filters is an empty group"),
        ({"order_by": ["nope"]}, "order_by: unknown field nope"),
        ({"expand_array": "currency"}, "expand_array: currency is VARCHAR, not a list"),
        ({"include_vectors": True, "columns": ["id"]}, "the selected columns hold no vector column"),
        ({"export_id": "../escape"}, "export_id '../escape' must be"),
        ({"name": "a/b"}, "name 'a/b' must be"),
        ({"max_rows_per_file": 0}, "max_rows_per_file must be at least 1"),
        ({"max_bytes_per_file": 5 * 2**20 - 1}, "max_bytes_per_file must be at least 5 MiB (5,242,880 bytes)"),
    ],
)
def test_invalid_requests_fail_with_one_clear_message(
    export_env: ExportEnvironment, request_patch: dict, message: str
) -> None:
    result = export_env.run({"source": {"table": "payment.charges"}, **request_patch})
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure.cls_name == "Failure"
    assert message in failure.message
    record = export_env.store.find_by_run(result.run_id)
    if record is not None:  # an id that cannot be a key segment never gets a row
        assert record["status"] == "FAILED"
        assert message in record["error"]
    assert export_env.keys() == []


def test_bad_format_is_rejected_before_the_run(export_env: ExportEnvironment) -> None:
    from dagster import DagsterInvalidConfigError

    with pytest.raises(DagsterInvalidConfigError, match="not in enum type ExportFormat got xml"):
        export_env.run({"source": {"table": "payment.charges"}, "format": "xml"})
    with pytest.raises(DagsterInvalidConfigError, match="Compression got brotli"):
        export_env.run({"source": {"table": "payment.charges"}, "compression": "brotli"})
    # `source` names one of several shapes ({table}, {query}, {pick}, {catalog, table}): one too few
    # or too many is refused by every door's check, and fails a run launched anyway in its first
    # step, before any row is read or any byte written.
    for source in ({}, {"table": "payment.charges", "query": "charges_view"}, {"catalog": "x", "query": "q"}):
        with pytest.raises(InvalidRequest, match="source"):
            parse_request({"source": source})
        result = export_env.run({"source": source})
        failure = result.get_step_failure_events()[0].step_failure_data.error.message
        assert 'source must name exactly one of "table", "query" or "pick"' in failure or "goes with a" in failure
    assert export_env.keys() == []


def test_finished_export_id_is_never_overwritten(export_env: ExportEnvironment) -> None:
    request = {"export_id": "once", "source": {"table": "payment.charges"}, "limit": 5}
    first = export_env.record(export_env.run(request))
    assert first["status"] == "SUCCEEDED"
    again = export_env.run(request)
    assert not again.success
    record = export_env.store.get("once")
    assert record["status"] == "SUCCEEDED" and record["run_id"] == first["run_id"]
    assert len(export_env.keys("default/once/")) == 2  # the artifact and the manifest survive


def test_damaged_object_fails_the_export_and_removes_everything(export_env: ExportEnvironment, monkeypatch) -> None:
    from export_pipelines.engine import steps

    original = steps.verify_uploaded
    checked = []

    def damage_second(client, bucket, artifact):
        # The second object is replaced by other bytes of the same size: the real check must catch it.
        checked.append(artifact.key)
        if len(checked) == 2:
            client.put_object(Bucket=bucket, Key=artifact.key, Body=b"x" * artifact.bytes)
        original(client, bucket, artifact)

    monkeypatch.setattr(steps, "verify_uploaded", damage_second)
    request = {"source": {"table": "payment.charges"}, "max_rows_per_file": 40_000, "format": "PARQUET"}
    record = export_env.record(export_env.run(request))
    assert record["status"] == "FAILED"
    assert "does not match the written bytes" in record["error"]
    assert len(checked) == 2
    assert export_env.keys() == []
