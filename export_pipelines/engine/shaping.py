"""Shaping the rows of a source: column selection, system and plumbing columns, the row limit.

Everything here builds DuckDB relations from catalog-checked identifiers and expression
objects; no request value is ever formatted into SQL.
"""

from dataclasses import dataclass

import duckdb
from duckdb import CaseExpression, ColumnExpression, ConstantExpression, Expression, FunctionExpression
from duckdb.sqltypes import VARCHAR, DuckDBPyType

from export_pipelines.engine.request import InvalidRequest

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


def resolve_field(relation: duckdb.DuckDBPyRelation, name: str) -> tuple[Expression, DuckDBPyType] | None:
    """The expression and type of a field: a column, or a nested struct field in dot notation.

    Plumbing columns are not fields. A column whose own name holds a dot (an expanded nested
    list, say) wins over the struct path of the same spelling.
    """
    types = dict(zip(relation.columns, relation.types, strict=True))
    if name in types:
        return (ColumnExpression(name), types[name]) if name not in PLUMBING_COLUMNS else None
    head, *path = name.split(".")
    column_type = types.get(head)
    if column_type is None or head in PLUMBING_COLUMNS:
        return None
    expression: Expression = ColumnExpression(head)
    for field in path:
        if column_type.id != "struct":
            return None
        column_type = dict(column_type.children).get(field)
        if column_type is None:
            return None
        expression = FunctionExpression("struct_extract", expression, ConstantExpression(field))
    return expression, column_type


def select_columns(relation: duckdb.DuckDBPyRelation, columns: list[str] | None) -> duckdb.DuckDBPyRelation:
    """Project `columns` in order (dot notation reaches into structs); all columns when None."""
    if columns is None:
        return relation
    if not columns:
        raise InvalidRequest("columns must name at least one column when given")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InvalidRequest(f"duplicate columns: {', '.join(duplicates)}")
    resolved = {name: resolve_field(relation, name) for name in columns}
    unknown = [name for name, found in resolved.items() if found is None]
    if unknown:
        raise InvalidRequest(
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"available columns: {', '.join(available_columns(relation))}"
        )
    return relation.select(*(found[0].alias(name) for name, found in resolved.items() if found is not None))


def expand_array(relation: duckdb.DuckDBPyRelation, field: str) -> duckdb.DuckDBPyRelation:
    """One row per item of the list `field`; a row whose list is empty or null keeps one row
    with null there. The items replace a top-level list column in place; a nested list's items
    come as a new column named by its path (e.g. `metadata.tags`)."""
    resolved = resolve_field(relation, field)
    if resolved is None:
        raise InvalidRequest(
            f"expand_array: unknown field {field}; available fields: {', '.join(available_columns(relation))}"
        )
    expression, field_type = resolved
    if field_type.id != "list":
        raise InvalidRequest(f"expand_array: {field} is {field_type}, not a list")
    element_type = dict(field_type.children)["child"]
    null_item = FunctionExpression("list_value", ConstantExpression(None).cast(element_type))
    items = CaseExpression(FunctionExpression("len", expression) > ConstantExpression(0), expression).otherwise(
        null_item
    )
    expanded = FunctionExpression("unnest", items).alias(field)
    if field in relation.columns:
        return relation.select(*(expanded if name == field else ColumnExpression(name) for name in relation.columns))
    return relation.select(*(ColumnExpression(name) for name in relation.columns), expanded)


def order_rows(relation: duckdb.DuckDBPyRelation, order_by: list[str]) -> duckdb.DuckDBPyRelation:
    """Sort by `order_by` (a leading `-` sorts descending, nulls last either way); the row key
    (`id`, else `_id`) breaks ties so that the order is the same on every run."""
    if not order_by:
        raise InvalidRequest("order_by must name at least one field when given")
    keys = []
    names = [name.removeprefix("-") for name in order_by]
    for spelled, name in zip(order_by, names, strict=True):
        resolved = resolve_field(relation, name)
        if resolved is None:
            raise InvalidRequest(
                f"order_by: unknown field {name}; available fields: {', '.join(available_columns(relation))}"
            )
        expression = resolved[0]
        keys.append((expression.desc() if spelled.startswith("-") else expression.asc()).nulls_last())
    tiebreaker = row_key(relation)
    if tiebreaker is not None and tiebreaker not in names:
        keys.append(ColumnExpression(tiebreaker).asc())
    return relation.sort(*keys)


def row_key(relation: duckdb.DuckDBPyRelation) -> str | None:
    """The column that identifies a row: `id`, else `_id`, else `document_id` (Mixpeek's documents)."""
    return next((name for name in ("id", "_id", "document_id") if name in relation.columns), None)


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
