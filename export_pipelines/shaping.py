"""Shaping the rows of a source: column selection, system and plumbing columns, the row limit.

Everything here builds DuckDB relations from catalog-checked identifiers and expression
objects; no request value is ever formatted into SQL.
"""

from dataclasses import dataclass

import duckdb
from duckdb import ColumnExpression, ConstantExpression, FunctionExpression
from duckdb.sqltypes import VARCHAR, DuckDBPyType

from export_pipelines.request import InvalidRequest

PLUMBING_COLUMNS = frozenset({"q", "cache"})
_VECTOR_ELEMENT_TYPES = frozenset({"float", "double"})


def is_system_column(name: str) -> bool:
    return name.startswith("_")


def is_vector_type(column_type: DuckDBPyType) -> bool:
    """A vector column: a fixed-size array of floats (DuckDB `FLOAT[n]` / `DOUBLE[n]`)."""
    return column_type.id == "array" and dict(column_type.children)["child"].id in _VECTOR_ELEMENT_TYPES


def is_nested_type(column_type: DuckDBPyType) -> bool:
    return column_type.id in ("struct", "list", "array", "map", "union")


@dataclass(frozen=True)
class ColumnRules:
    """Which columns of a selection leave the main artifact, and why."""

    kept: list[str]
    dropped_plumbing: list[str]
    dropped_system: list[str]
    dropped_vectors: list[str]


def available_columns(relation: duckdb.DuckDBPyRelation) -> list[str]:
    """Every selectable name: top-level columns and, in dot notation, nested struct fields."""
    names: list[str] = []

    def walk(prefix: str, column_type: DuckDBPyType) -> None:
        if column_type.id == "struct":
            for child, child_type in column_type.children:
                names.append(f"{prefix}.{child}")
                walk(f"{prefix}.{child}", child_type)

    for name, column_type in zip(relation.columns, relation.types, strict=True):
        if name in PLUMBING_COLUMNS:
            continue
        names.append(name)
        walk(name, column_type)
    return names


def select_columns(relation: duckdb.DuckDBPyRelation, columns: list[str] | None) -> duckdb.DuckDBPyRelation:
    """Project `columns` in order (dot notation reaches into structs); all columns when None."""
    if columns is None:
        return relation
    if not columns:
        raise InvalidRequest("columns must name at least one column when given")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InvalidRequest(f"duplicate columns: {', '.join(duplicates)}")
    types = dict(zip(relation.columns, relation.types, strict=True))
    expressions = []
    unknown = []
    for requested in columns:
        head, *path = requested.split(".")
        column_type = types.get(head)
        expression = ColumnExpression(head) if column_type is not None else None
        for field in path:
            if column_type is None or column_type.id != "struct":
                column_type = None
                break
            fields = dict(column_type.children)
            column_type = fields.get(field)
            expression = FunctionExpression("struct_extract", expression, ConstantExpression(field))
        if column_type is None or head in PLUMBING_COLUMNS:
            unknown.append(requested)
        else:
            expressions.append(expression.alias(requested))
    if unknown:
        raise InvalidRequest(
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"available columns: {', '.join(available_columns(relation))}"
        )
    return relation.select(*expressions)


def column_rules(relation: duckdb.DuckDBPyRelation, include_system_columns: bool) -> ColumnRules:
    """Sort the columns of a selection into kept and dropped (plumbing, system, vectors)."""
    kept, plumbing, system, vectors = [], [], [], []
    for name, column_type in zip(relation.columns, relation.types, strict=True):
        if name in PLUMBING_COLUMNS:
            plumbing.append(name)
        elif is_vector_type(column_type):
            vectors.append(name)
        elif is_system_column(name) and not include_system_columns:
            system.append(name)
        else:
            kept.append(name)
    return ColumnRules(kept, plumbing, system, vectors)


def project(relation: duckdb.DuckDBPyRelation, names: list[str]) -> duckdb.DuckDBPyRelation:
    """Keep `names` (columns of `relation`) in that order."""
    if list(relation.columns) == names:
        return relation
    return relation.select(*(ColumnExpression(name) for name in names))


def json_encode_nested(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """Nested columns as JSON text (CSV cannot hold nesting)."""
    types = relation.types
    if not any(is_nested_type(t) for t in types):
        return relation
    expressions = []
    for name, column_type in zip(relation.columns, types, strict=True):
        column = ColumnExpression(name)
        if is_nested_type(column_type):
            column = FunctionExpression("to_json", column).cast(VARCHAR).alias(name)
        expressions.append(column)
    return relation.select(*expressions)


def clamp_limit(limit: int | None, max_rows: int) -> int | None:
    """The SPEC's clamp of a requested limit to [1, max_rows]."""
    return None if limit is None else min(max(limit, 1), max_rows)


def count_rows(relation: duckdb.DuckDBPyRelation, limit: int | None, max_rows: int) -> int:
    """Rows the export will write; fails past max_rows when no limit was asked for."""
    if limit is not None:
        return _count(relation.limit(limit))
    rows = _count(relation.limit(max_rows + 1))
    if rows > max_rows:
        raise InvalidRequest(f"Query exceeded the {max_rows:,} row export limit")
    return rows


def _count(relation: duckdb.DuckDBPyRelation) -> int:
    return relation.aggregate("count(*)").fetchall()[0][0]
