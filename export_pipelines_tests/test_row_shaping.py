"""Row shaping through `export_job`: filters (property-based against an independent DuckDB SQL
evaluation), hostile values, date ranges, array expansion, the vectors artifact and ordering.

Every check reads the artifacts back from the real S3 server.
"""

import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_pipelines_tests.conftest import ExportEnvironment

CHARGES = "wh.payment.charges"


def source(warehouse: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    return connection


def exported_ids(export_env: ExportEnvironment, request: dict[str, Any]) -> list[int]:
    result = export_env.run({"source": {"table": "payment.charges"}, "format": "PARQUET", "columns": ["id"], **request})
    record = export_env.record(result)
    assert record["status"] == "SUCCEEDED", record["error"]
    ids: list[int] = []
    for file in record["files"]:
        ids += [row[0] for row in duckdb.sql(f"SELECT id FROM '{export_env.download(file['key'])}'").fetchall()]
    return ids


def sql_ids(warehouse: Path, condition: str, params: list[Any]) -> list[int]:
    with source(warehouse) as connection:
        return [row[0] for row in connection.execute(f"SELECT id FROM {CHARGES} WHERE {condition}", params).fetchall()]


# Independent evaluation: a filter tree written as SQL text by the test itself.
FIELDS: dict[str, tuple[str, list[Any]]] = {
    "id": ("number", [0, 7, 500, 99_999, -1]),
    "amount": ("number", [0, 79.19, 5000, 9999.99]),
    "currency": ("string", ["EUR", "usd", "JPY", "GBP"]),
    "description": ("string", ["Monthly plan", "line", "CAFÉ", "'; DROP TABLE payment.charges; --", "\\"]),
    "metadata.category": ("string", ["refund", "One-off", "subscription"]),
    "paid": ("boolean", [True, False]),
    "created_at": ("timestamp", ["2024-01-05T00:00:00+00:00", "2024-01-20T12:00:00+02:00", "2024-02-01T00:00:00"]),
    "service_date": ("date", ["2024-03-01", "2024-06-30"]),
    "tags": ("list", ["tag1", "TAG2", "tag6"]),
}
OPERATORS_BY_KIND = {
    "number": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "is_null"],
    "string": ["eq", "ne", "in", "nin", "contains", "starts_with", "ends_with", "regex", "is_null", "gt"],
    "boolean": ["eq", "ne", "is_null"],
    "timestamp": ["gt", "gte", "lt", "lte", "eq", "ne", "is_null"],
    "date": ["gte", "lte", "eq", "is_null"],
    "list": ["contains", "is_null"],
}


@st.composite
def conditions(draw) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    kind, pool = FIELDS[field]
    operator = draw(st.sampled_from(OPERATORS_BY_KIND[kind]))
    if operator == "is_null":
        return {"field": field, "operator": operator, "value": draw(st.booleans())}
    if operator in ("in", "nin"):
        return {"field": field, "operator": operator, "value": draw(st.lists(st.sampled_from(pool), max_size=3))}
    if operator == "regex":
        return {"field": field, "operator": operator, "value": draw(st.sampled_from(["^M", "an$", "[0-9]", "é|e"]))}
    return {"field": field, "operator": operator, "value": draw(st.sampled_from(pool))}


groups = st.recursive(
    conditions(),
    lambda children: st.fixed_dictionaries(
        {},
        optional={
            "AND": st.lists(children, min_size=1, max_size=3),
            "OR": st.lists(children, min_size=1, max_size=3),
            "NOT": st.lists(children, min_size=1, max_size=2),
            "case_sensitive": st.booleans(),
        },
    ).filter(lambda group: any(key in group for key in ("AND", "OR", "NOT"))),
    max_leaves=6,
)


def to_sql(node: dict[str, Any], case_sensitive: bool, params: list[Any]) -> str:
    if "field" in node:
        return condition_sql(node, case_sensitive, params)
    case_sensitive = node.get("case_sensitive", case_sensitive)
    terms = [to_sql(child, case_sensitive, params) for child in node.get("AND", [])]
    if node.get("OR"):
        terms.append("(" + " OR ".join(to_sql(child, case_sensitive, params) for child in node["OR"]) + ")")
    terms += [f"NOT ({to_sql(child, case_sensitive, params)})" for child in node.get("NOT", [])]
    return "(" + " AND ".join(terms) + ")"


def condition_sql(node: dict[str, Any], case_sensitive: bool, params: list[Any]) -> str:
    field, operator, value = node["field"], node["operator"], node["value"]
    kind = FIELDS[field][0]
    column = "metadata.category" if field == "metadata.category" else f'"{field}"'
    if operator == "is_null":
        return f"({column} IS {'' if value else 'NOT '}NULL)"
    fold = kind == "string" and not case_sensitive

    def bind(raw: Any) -> str:
        params.append(raw.lower() if fold else raw)
        cast = {"timestamp": "::TIMESTAMPTZ", "date": "::DATE"}.get(kind, "")
        return f"${len(params)}{cast}"

    subject = f"lower({column})" if fold else column
    if kind == "list":  # of strings: contains ignores case too when asked
        if not case_sensitive:
            params.append(value.lower())
            return f"coalesce(array_has(list_transform({column}, lambda x: lower(x)), ${len(params)}), false)"
        return f"coalesce(array_has({column}, {bind(value)}), false)"
    if operator in ("in", "nin"):
        inside = f"coalesce({subject} IN ({', '.join(bind(v) for v in value)}), false)" if value else "false"
        return inside if operator == "in" else f"NOT {inside}"
    if operator == "regex":
        params.append(value)
        options = "" if case_sensitive else ", 'i'"
        return f"coalesce(regexp_matches({column}, ${len(params)}{options}), false)"
    text = {
        "eq": "{s} = {v}", "ne": "NOT coalesce({s} = {v}, false)", "gt": "{s} > {v}", "gte": "{s} >= {v}",
        "lt": "{s} < {v}", "lte": "{s} <= {v}", "contains": "position({v} IN {s}) > 0",
        "starts_with": "left({s}, length({v})) = {v}", "ends_with": "right({s}, length({v})) = {v}",
    }[operator]  # fmt: skip
    if operator == "ne":
        return text.format(s=subject, v=bind(value))
    if operator in ("starts_with", "ends_with"):
        bound = bind(value)
        return "coalesce(" + text.format(s=subject, v=bound) + ", false)"
    return "coalesce(" + text.format(s=subject, v=bind(value)) + ", false)"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=groups.filter(lambda tree: "field" not in tree))
def test_filters_equal_an_independent_sql_evaluation(export_env: ExportEnvironment, tree: dict[str, Any]) -> None:
    params: list[Any] = []
    condition = to_sql(tree, True, params)
    expected = sql_ids(export_env.warehouse, condition, params)
    assert sorted(exported_ids(export_env, {"filters": tree})) == sorted(expected), condition


def test_date_range_with_time_zones(export_env: ExportEnvironment) -> None:
    filters = {
        "AND": [
            {"field": "created_at", "operator": "gte", "value": "2024-01-10T00:00:00+01:00"},
            {"field": "created_at", "operator": "lte", "value": "2024-01-10T23:59:59Z"},
        ]
    }
    expected = sql_ids(
        export_env.warehouse,
        "created_at >= TIMESTAMPTZ '2024-01-09 23:00:00+00' AND created_at <= TIMESTAMPTZ '2024-01-10 23:59:59+00'",
        [],
    )
    assert len(expected) > 1000
    assert sorted(exported_ids(export_env, {"filters": filters})) == expected


def test_nulls_follow_two_valued_logic(export_env: ExportEnvironment) -> None:
    null_descriptions = sql_ids(export_env.warehouse, "description IS NULL", [])
    ne = exported_ids(export_env, {"filters": {"AND": [{"field": "description", "operator": "ne", "value": "x"}]}})
    assert len(ne) == 100_000  # ne is true for null
    kept = exported_ids(
        export_env, {"filters": {"NOT": [{"field": "description", "operator": "contains", "value": "plan"}]}}
    )
    assert set(null_descriptions) <= set(kept)  # a condition false because of null is kept by NOT
    is_null = exported_ids(export_env, {"filters": {"AND": [{"field": "description", "operator": "is_null"}]}})
    assert sorted(is_null) == null_descriptions


@pytest.mark.parametrize(
    "value",
    [
        "'; DROP TABLE payment.charges; --",
        "trailing backslash \\",
        'Refund of "premium", partial',
        "Café crème ☕ – 東京",
        "x" * 100_000,
        "%",
        "_",
    ],
)
def test_hostile_values_only_ever_compare(export_env: ExportEnvironment, value: str) -> None:
    ids = exported_ids(export_env, {"filters": {"OR": [{"field": "description", "operator": "eq", "value": value}]}})
    assert sorted(ids) == sql_ids(export_env.warehouse, "description = $1", [value])
    with source(export_env.warehouse) as connection:
        assert connection.sql(f"SELECT count(*) FROM {CHARGES}").fetchall() == [(100_000,)]


def test_regex_that_backtracks_elsewhere_runs_in_linear_time(export_env: ExportEnvironment) -> None:
    bomb = {"field": "description", "operator": "regex", "value": "^(a+)+$"}
    assert exported_ids(export_env, {"filters": {"AND": [bomb]}}) == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"AND": [{"field": "nope", "operator": "eq", "value": 1}]}, "unknown field nope; available fields: id"),
        ({"AND": [{"field": "id", "operator": "like", "value": 1}]}, "unknown operator 'like'; operators: eq"),
        (
            {"AND": [{"field": "id", "operator": "eq", "value": "1"}]},
            "does not fit the BIGINT field; expected a number",
        ),
        ({"AND": [{"field": "paid", "operator": "eq", "value": 1}]}, "expected true or false"),
        ({"AND": [{"field": "created_at", "operator": "gt", "value": "yesterday"}]}, "is not an ISO-8601"),
        ({"AND": [{"field": "description", "operator": "regex", "value": "(unclosed"}]}, "invalid regular expression"),
        ({"AND": [{"field": "description", "operator": "regex", "value": "a" * 1001}]}, "longer than 1000"),
        ({"AND": [{"field": "amount", "operator": "contains", "value": 1}]}, "contains needs a text field"),
        ({"AND": [{"field": "tags", "operator": "eq", "value": "x"}]}, "supports contains and is_null only"),
        ({"AND": [{"field": "id", "operator": "in", "value": 3}]}, "value must be a list"),
        ({"AND": [], "OR": []}, "filters is an empty group"),
        ({"AND": [{"OR": []}]}, "filters.AND[0] is an empty group"),
        ({"XOR": []}, "unknown key(s) XOR"),
    ],
)
def test_bad_filters_fail_with_one_clear_message(export_env: ExportEnvironment, filters: dict, message: str) -> None:
    result = export_env.run({"source": {"table": "payment.charges"}, "filters": filters})
    record = export_env.record(result)
    assert record["status"] == "FAILED"
    assert message in record["error"]
    assert export_env.keys() == []


def read_artifact(path: Path) -> list[dict[str, Any]]:
    """Rows of a downloaded artifact, read by DuckDB whatever its format."""
    name = path.name
    if ".parquet" in name:
        relation = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    elif ".jsonl" in name:
        relation = duckdb.sql(f"SELECT * FROM read_json('{path}', format = 'newline_delimited')")
    else:
        relation = duckdb.sql(f"SELECT * FROM read_csv('{path}', header = true, all_varchar = true)")
    columns = relation.columns
    return [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]


@pytest.mark.parametrize("export_format", ["CSV", "JSONL", "PARQUET"])
def test_expand_array_writes_one_row_per_item(export_env: ExportEnvironment, export_format: str) -> None:
    request = {
        "source": {"table": "payment.charges"},
        "format": export_format,
        "compression": "GZIP" if export_format != "PARQUET" else "ZSTD",
        "columns": ["id", "tags"],
        "expand_array": "tags",
        "filters": {"AND": [{"field": "id", "operator": "lt", "value": 40}]},
    }
    record = export_env.record(export_env.run(request))
    rows = read_artifact(export_env.download(record["files"][0]["key"]))
    with source(export_env.warehouse) as connection:
        expected = connection.sql(
            f"SELECT id, unnest(CASE WHEN len(tags) > 0 THEN tags ELSE [NULL] END) AS tag FROM {CHARGES} WHERE id < 40"
        ).fetchall()
    assert record["row_count"] == len(expected) == len(rows)
    assert sorted((int(r["id"]), r["tags"]) for r in rows) == sorted(expected, key=lambda r: (r[0], r[1] or ""))
    assert {int(r["id"]) for r in rows} == set(range(40))  # no source row disappears


def test_expand_array_limit_counts_output_rows_and_nested_lists(export_env: ExportEnvironment) -> None:
    record = export_env.record(
        export_env.run(
            {"source": {"table": "payment.invoices"}, "format": "PARQUET", "expand_array": "lines", "limit": 5}
        )
    )
    assert record["row_count"] == 5
    rows = read_artifact(export_env.download(record["files"][0]["key"]))
    assert len(rows) == 5 and set(rows[0]["lines"]) == {"sku", "qty"}


@pytest.mark.parametrize("export_format", ["CSV", "JSONL", "PARQUET"])
def test_vectors_go_to_their_own_artifact_keyed_by_row(export_env: ExportEnvironment, export_format: str) -> None:
    request = {
        "source": {"table": "payment.charges"},
        "format": export_format,
        "include_vectors": True,
        "limit": 300,
        "name": "charges",
    }
    record = export_env.record(export_env.run(request))
    assert record["status"] == "SUCCEEDED", record["error"]
    main_file, vectors_file = record["files"]
    extension = {"CSV": "csv", "JSONL": "jsonl", "PARQUET": "parquet"}[export_format]
    assert vectors_file["key"].endswith(f"/charges_vectors.{extension}")
    assert vectors_file["rows"] == main_file["rows"] == 300
    main = read_artifact(export_env.download(main_file["key"]))
    vectors = read_artifact(export_env.download(vectors_file["key"]))
    assert "embedding" not in main[0]
    assert list(vectors[0]) == ["id", "embedding"]
    assert sorted(int(r["id"]) for r in vectors) == sorted(int(r["id"]) for r in main)
    with source(export_env.warehouse) as connection:
        embeddings = dict(connection.sql(f"SELECT id, embedding FROM {CHARGES}").fetchall())
    for row in vectors:
        value = json.loads(row["embedding"]) if isinstance(row["embedding"], str) else row["embedding"]
        assert list(value) == pytest.approx(list(embeddings[int(row["id"])]))
    manifest = json.loads(export_env.download(main_file["key"].rsplit("/", 1)[0] + "/manifest.json").read_text())
    assert [f["key"] for f in manifest["files"]] == [main_file["key"], vectors_file["key"]]
    assert vectors_file["sha256"] and vectors_file["bytes"] > 0


def test_order_by_is_deterministic_across_runs_and_parts(export_env: ExportEnvironment) -> None:
    request = {
        "source": {"table": "payment.charges"},
        "format": "CSV",
        "compression": "GZIP",
        "columns": ["id", "currency", "amount"],
        "order_by": ["currency", "-amount"],
        "max_rows_per_file": 30_000,
    }
    first = export_env.record(export_env.run(request))
    second = export_env.record(export_env.run(request))
    assert [f["sha256"] for f in first["files"]] == [f["sha256"] for f in second["files"]]
    rows = []
    for file in first["files"]:
        text = gzip.decompress(export_env.download(file["key"]).read_bytes()).decode()
        rows += [line.split(",") for line in text.splitlines()[1:]]
    with source(export_env.warehouse) as connection:
        expected = connection.sql(
            f"SELECT id, currency, amount FROM {CHARGES} ORDER BY currency, amount DESC, id"
        ).fetchall()
    assert [(int(i), c, a) for i, c, a in rows] == [(i, c, str(a)) for i, c, a in expected]
