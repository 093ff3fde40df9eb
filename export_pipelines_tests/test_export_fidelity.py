"""Output fidelity: every format x compression, read back from S3 with DuckDB and compared
with the source row for row.

Values are compared with the source rendered independently by DuckDB (never by Polars, which
wrote the files). CSV options, quoting and ISO-8601 timestamps are checked on the raw text.
"""

import csv
import gzip
import io
import json
import re
from pathlib import Path

import duckdb
import pytest

from export_pipelines.engine.compression import BLOCK_BYTES
from export_pipelines.engine.request import Compression
from export_pipelines.engine.writer import PARQUET_ROW_GROUP_ROWS
from export_pipelines_tests.compressed import streams_in
from export_pipelines_tests.conftest import ExportEnvironment

FORMATS = ["CSV", "JSONL", "PARQUET"]
COMPRESSIONS = ["NONE", "GZIP", "ZSTD"]
EXPORTED = [
    "id", "_id", "_version", "created_at", "service_date", "amount", "currency", "paid",
    "description", "customer_id", "metadata", "tags",
]  # fmt: skip

# The source rendered as CSV text, independently of the exporter.
CSV_EXPECTED = """
SELECT id::VARCHAR AS id, _id, _version::VARCHAR AS _version,
       strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%f') || '+00:00' AS created_at,
       service_date::VARCHAR AS service_date, amount::VARCHAR AS amount, currency,
       paid::VARCHAR AS paid, description, customer_id,
       to_json(metadata)::VARCHAR AS metadata, to_json(tags)::VARCHAR AS tags
FROM wh.payment.charges
"""


def compare(connection: duckdb.DuckDBPyConnection, expected: str, actual: str) -> None:
    """Both directions of EXCEPT ALL are empty: the same rows, duplicates included."""
    missing = connection.sql(f"SELECT count(*) FROM (({expected}) EXCEPT ALL ({actual}))").fetchall()[0][0]
    extra = connection.sql(f"SELECT count(*) FROM (({actual}) EXCEPT ALL ({expected}))").fetchall()[0][0]
    assert (missing, extra) == (0, 0)


def open_comparison(warehouse: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    return connection


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("export_format", FORMATS)
def test_every_format_and_compression_round_trips(
    export_env: ExportEnvironment, export_format: str, compression: str
) -> None:
    result = export_env.run(
        {"source": {"table": "payment.charges"}, "format": export_format, "compression": compression}
    )
    assert result.success
    record = export_env.record(result)
    assert record["status"] == "SUCCEEDED"
    assert record["row_count"] == 100_000
    assert (record["format"], record["compression"]) == (export_format, compression)
    [file] = record["files"]
    suffix = {"NONE": "", "GZIP": ".gz", "ZSTD": ".zst"}[compression] if export_format != "PARQUET" else ""
    assert file["key"].endswith(f"charges-00000.{export_format.lower()}{suffix}")
    path = export_env.download(file["key"])
    assert path.stat().st_size == file["bytes"] == record["bytes"]
    if export_format != "PARQUET" and compression != "NONE":  # compressed in blocks on every core, one stream
        [text] = streams_in(path.read_bytes(), Compression(compression))
        assert len(text) > 4 * BLOCK_BYTES

    connection = open_comparison(export_env.warehouse)
    try:
        assert connection.sql("SELECT count(*) FROM wh.payment.charges").fetchall()[0][0] == file["rows"]
        if export_format == "CSV":
            actual = f"SELECT * FROM read_csv('{path}', all_varchar = true, header = true)"
            assert connection.sql(actual).columns == EXPORTED
            compare(connection, CSV_EXPECTED, actual)
        elif export_format == "JSONL":
            source = connection.sql("SELECT * FROM wh.payment.charges LIMIT 0")
            types = {n: str(t) for n, t in zip(source.columns, source.types, strict=True) if n in EXPORTED}
            columns = "{" + ", ".join(f"'{n}': '{t}'" for n, t in types.items()) + "}"
            actual = f"SELECT * FROM read_json('{path}', format = 'newline_delimited', columns = {columns})"
            compare(connection, f"SELECT {', '.join(EXPORTED)} FROM wh.payment.charges", actual)
        else:
            parquet = connection.sql(f"SELECT * FROM read_parquet('{path}')")
            source = connection.sql(f"SELECT {', '.join(EXPORTED)} FROM wh.payment.charges")
            assert [str(t) for t in parquet.types] == [str(t) for t in source.types]
            compare(
                connection,
                f"SELECT {', '.join(EXPORTED)} FROM wh.payment.charges",
                f"SELECT * FROM read_parquet('{path}')",
            )
            codec = connection.sql(f"SELECT DISTINCT compression FROM parquet_metadata('{path}')").fetchall()
            assert codec == [({"NONE": "UNCOMPRESSED", "GZIP": "GZIP", "ZSTD": "ZSTD"}[compression],)]
            groups = connection.sql(
                f"SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata('{path}') ORDER BY 1"
            ).fetchall()
            per_group = PARQUET_ROW_GROUP_ROWS[Compression(compression)]  # bounds what the writer holds
            assert [rows for _, rows in groups] == [per_group] * (100_000 // per_group)
    finally:
        connection.close()


def first_lines(path: Path, count: int) -> list[str]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode().split("\n")[:count]


def test_csv_quotes_text_and_writes_iso_timestamps_and_json_nesting(export_env: ExportEnvironment) -> None:
    result = export_env.run({"source": {"table": "payment.charges"}, "limit": 20, "compression": "GZIP"})
    record = export_env.record(result)
    path = export_env.download(record["files"][0]["key"])
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    assert len(rows) == 20
    by_id = {int(row["id"]): row for row in rows}
    assert by_id[1]["description"] == 'Refund of "premium", partial'
    assert by_id[2]["description"] == "Line one\nline two"
    assert by_id[3]["description"] == "Café crème ☕ – 東京"
    assert by_id[0]["description"] == ""  # null
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", by_id[1]["created_at"])
    assert json.loads(by_id[1]["metadata"]) == {"title": "Charge #1", "category": "one-off"}
    assert json.loads(by_id[1]["tags"]) == ["tag1", "tag1"]
    assert by_id[5]["tags"] == "[]"
    assert "embedding" not in by_id[1] and "q" not in by_id[1] and "cache" not in by_id[1]


def test_jsonl_keeps_nesting_and_exact_decimals(export_env: ExportEnvironment) -> None:
    record = export_env.record(export_env.run({"source": {"table": "payment.charges"}, "format": "json", "limit": 3}))
    assert record["format"] == "JSONL"
    lines = first_lines(export_env.download(record["files"][0]["key"]), 3)
    first = json.loads(lines[1])
    assert first["metadata"] == {"title": "Charge #1", "category": "one-off"}
    assert first["tags"] == ["tag1", "tag1"]
    assert first["amount"] == "79.19"
    assert first["created_at"] == "2024-01-01T00:00:37+00:00"


def test_csv_options_are_honoured(export_env: ExportEnvironment) -> None:
    options = {
        "delimiter": ";",
        "quote_char": "'",
        "header": False,
        "null_value": "NULL",
        "line_terminator": "\r\n",
        "quote_style": "always",
        "date_format": "%d/%m/%Y",
        "datetime_format": "%Y-%m-%d %H:%M",
    }
    request = {
        "source": {"table": "payment.charges"},
        "columns": ["id", "service_date", "created_at", "description"],
        "limit": 12,
        "csv_options": options,
    }
    record = export_env.record(export_env.run(request))
    text = export_env.download(record["files"][0]["key"]).read_bytes().decode()
    lines = text.split("\r\n")
    assert lines[-1] == "" and len(lines) == 13
    assert lines[0] == "'0';'01/01/2024';'2024-01-01 00:00';'NULL'"  # quote_style always quotes the null marker too
    assert lines[1] == "'1';'02/01/2024';'2024-01-01 00:00';'Refund of \"premium\", partial'"
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar="'"))
    assert parsed[2][3] == "Line one\nline two"
