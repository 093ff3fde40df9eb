"""Shaping logic on small in-memory relations (no I/O): nested field resolution, expansion of a
list inside a struct, ordering ties. The export-level behaviour is in test_row_shaping.py."""

import duckdb
import pytest

from export_pipelines.engine import shaping
from export_pipelines.engine.request import InvalidRequest


@pytest.fixture
def relation() -> duckdb.DuckDBPyRelation:
    return duckdb.sql(
        "SELECT * FROM (VALUES (1, {'tags': ['a', 'b'], 'n': 1}, 'x'), (2, {'tags': [], 'n': 2}, 'y'),"
        " (3, NULL, 'z'), (4, {'tags': NULL, 'n': 2}, 'q')) AS t(id, meta, q)"
    )


def test_nested_list_expands_into_a_column_named_by_its_path(relation) -> None:
    expanded = shaping.expand_array(relation, "meta.tags")
    assert expanded.columns == ["id", "meta", "q", "meta.tags"]
    assert [(row[0], row[3]) for row in expanded.order("id").fetchall()] == [
        (1, "a"), (1, "b"), (2, None), (3, None), (4, None)
    ]  # fmt: skip
    assert shaping.select_columns(expanded, ["meta.tags"]).columns == ["meta.tags"]


def test_fields_resolve_through_structs_but_not_plumbing(relation) -> None:
    assert shaping.resolve_field(relation, "meta.n") is not None
    assert shaping.resolve_field(relation, "meta.nope") is None
    assert shaping.resolve_field(relation, "id.x") is None
    assert shaping.resolve_field(relation, "q") is None


def test_order_breaks_ties_by_row_key(relation) -> None:
    assert [row[0] for row in shaping.order_rows(relation, ["-meta.n"]).fetchall()] == [2, 4, 1, 3]
    with pytest.raises(InvalidRequest, match="order_by: unknown field nope"):
        shaping.order_rows(relation, ["nope"])
