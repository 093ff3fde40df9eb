"""Row filters (SPEC `filters`): a logical group compiled into one DuckDB expression.

`{AND: [...], OR: [...], NOT: [...], case_sensitive: bool}`: every AND condition holds, at
least one OR condition holds (when OR is given), no NOT condition holds. A condition is
`{field, operator, value}` or a nested group. Every condition evaluates to true or false, never
null (two-valued logic): a comparison with a null field is false, and `ne` / `nin` are the
negations of `eq` / `in`. Values only ever become constants of the expression; no SQL is built
from them.
"""

from datetime import UTC, date, datetime
from functools import reduce
from typing import Any

import duckdb
from duckdb import CaseExpression, ConstantExpression, Expression, FunctionExpression, LambdaExpression
from duckdb.sqltypes import DuckDBPyType

from export_pipelines.engine.request import InvalidRequest
from export_pipelines.engine.shaping import available_columns, resolve_field

OPERATORS = (
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "nin",
    "contains", "starts_with", "ends_with", "regex", "is_null",
)  # fmt: skip
GROUP_KEYS = ("AND", "OR", "NOT", "case_sensitive")
MAX_PATTERN_LENGTH = 1_000

_NUMBER_TYPES = frozenset(
    {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger", "ubigint",
     "uhugeint", "float", "double", "decimal"}
)  # fmt: skip
_TIME_TYPES = frozenset({"timestamp", "timestamp with time zone", "timestamp_s", "timestamp_ms", "timestamp_ns"})
_STRING_OPERATORS = frozenset({"starts_with", "ends_with", "regex"})
_ORDERING_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})


def compile_filters(relation: duckdb.DuckDBPyRelation, filters: dict[str, Any]) -> Expression:
    """The filter tree as one boolean expression over `relation`'s columns, or a clear error."""
    return _group(relation, filters, case_sensitive=True, path="filters")


def _group(relation: duckdb.DuckDBPyRelation, group: Any, case_sensitive: bool, path: str) -> Expression:
    if not isinstance(group, dict):
        raise InvalidRequest(f"{path} must be a group {{AND, OR, NOT, case_sensitive}} or a condition")
    unknown = sorted(set(group) - set(GROUP_KEYS))
    if unknown:
        raise InvalidRequest(f"{path} has unknown key(s) {', '.join(unknown)}; a group takes {', '.join(GROUP_KEYS)}")
    case_sensitive = group.get("case_sensitive", case_sensitive)
    if not isinstance(case_sensitive, bool):
        raise InvalidRequest(f"{path}.case_sensitive must be true or false")
    members: dict[str, list[Any]] = {}
    for key in ("AND", "OR", "NOT"):
        value = group.get(key) or []
        if not isinstance(value, list):
            raise InvalidRequest(f"{path}.{key} must be a list of conditions")
        members[key] = value
    if not any(members.values()):
        raise InvalidRequest(f"{path} is an empty group: give at least one condition in AND, OR or NOT")

    def compiled(key: str) -> list[Expression]:
        return [_node(relation, item, case_sensitive, f"{path}.{key}[{i}]") for i, item in enumerate(members[key])]

    terms = compiled("AND")
    if members["OR"]:
        terms.append(reduce(lambda a, b: a | b, compiled("OR")))
    terms.extend(~term for term in compiled("NOT"))
    return reduce(lambda a, b: a & b, terms)


def _node(relation: duckdb.DuckDBPyRelation, item: Any, case_sensitive: bool, path: str) -> Expression:
    if isinstance(item, dict) and ("field" in item or "operator" in item):
        return _condition(relation, item, case_sensitive, path)
    return _group(relation, item, case_sensitive, path)


def _condition(relation: duckdb.DuckDBPyRelation, condition: dict, case_sensitive: bool, path: str) -> Expression:
    unknown = sorted(set(condition) - {"field", "operator", "value"})
    if unknown:
        raise InvalidRequest(
            f"{path} has unknown key(s) {', '.join(unknown)}; a condition is {{field, operator, value}}"
        )
    field, operator = condition.get("field"), condition.get("operator")
    if not isinstance(field, str) or not field:
        raise InvalidRequest(f"{path}.field must name a column")
    if operator not in OPERATORS:
        raise InvalidRequest(f"{path}: unknown operator {operator!r}; operators: {', '.join(OPERATORS)}")
    resolved = resolve_field(relation, field)
    if resolved is None:
        raise InvalidRequest(
            f"{path}: unknown field {field}; available fields: {', '.join(available_columns(relation))}"
        )
    column, column_type = resolved
    value = condition.get("value")
    label = f"{path} ({field} {operator})"

    if operator == "is_null":
        if value is None:
            value = True
        if not isinstance(value, bool):
            raise InvalidRequest(f"{label}: value must be true or false")
        return column.isnull() if value else column.isnotnull()

    kind = _kind(column_type)
    if kind == "list":
        if operator != "contains":
            raise InvalidRequest(f"{label}: a list field supports contains and is_null only")
        element_type = dict(column_type.children)["child"]
        element = _constant(value, _kind(element_type), element_type, label)
        if _kind(element_type) == "string" and not case_sensitive:
            lowered = FunctionExpression(
                "list_transform",
                column,
                LambdaExpression("x", FunctionExpression("lower", duckdb.ColumnExpression("x"))),
            )
            return _true(FunctionExpression("list_contains", lowered, ConstantExpression(str(value).lower())))
        return _true(FunctionExpression("list_contains", column, element))
    if kind == "other":
        raise InvalidRequest(f"{label}: a {column_type} field supports is_null only")
    if kind != "string" and (operator in _STRING_OPERATORS or operator == "contains"):
        raise InvalidRequest(f"{label}: {operator} needs a text field, {field} is {column_type}")
    if kind == "boolean" and operator in _ORDERING_OPERATORS:
        raise InvalidRequest(f"{label}: a boolean field supports eq, ne, in, nin and is_null")

    fold = kind == "string" and not case_sensitive
    subject = FunctionExpression("lower", column) if fold else column

    def constant(raw: Any) -> Expression:
        converted = _constant(raw, kind, column_type, label)
        return ConstantExpression(raw.lower()) if fold else converted

    if operator in ("in", "nin"):
        if not isinstance(value, list):
            raise InvalidRequest(f"{label}: value must be a list")
        matched = _true(subject.isin(*(constant(v) for v in value))) if value else ConstantExpression(False)
        return matched if operator == "in" else ~matched
    if operator == "regex":
        return _true(_regex(subject if not fold else column, value, case_sensitive, label))
    operand = constant(value)
    if operator in ("eq", "ne"):
        matched = _true(subject == operand)
        return matched if operator == "eq" else ~matched
    if operator == "contains":
        return _true(FunctionExpression("contains", subject, operand))
    if operator == "starts_with":
        return _true(FunctionExpression("starts_with", subject, operand))
    if operator == "ends_with":
        return _true(FunctionExpression("suffix", subject, operand))
    comparison = {
        "gt": subject > operand,
        "gte": subject >= operand,
        "lt": subject < operand,
        "lte": subject <= operand,
    }
    return _true(comparison[operator])


def _true(expression: Expression) -> Expression:
    """Null (a comparison with a null field) counts as false."""
    return CaseExpression(expression, ConstantExpression(True)).otherwise(ConstantExpression(False))


def _kind(column_type: DuckDBPyType) -> str:
    type_id = column_type.id
    if type_id == "varchar":
        return "string"
    if type_id in _NUMBER_TYPES:
        return "number"
    if type_id == "boolean":
        return "boolean"
    if type_id in _TIME_TYPES:
        return "timestamp"
    if type_id == "date":
        return "date"
    if type_id in ("list", "array"):
        return "list"
    return "other"


def _constant(value: Any, kind: str, column_type: DuckDBPyType, label: str) -> Expression:
    """The value as a typed constant for a column of `kind`, or an error naming the mismatch."""
    if kind == "string" and isinstance(value, str):
        return ConstantExpression(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return ConstantExpression(value)
    if kind == "boolean" and isinstance(value, bool):
        return ConstantExpression(value)
    if kind in ("timestamp", "date") and isinstance(value, str):
        return ConstantExpression(_parse_time(value, column_type, label))
    expected = {
        "string": "a string",
        "number": "a number",
        "boolean": "true or false",
        "timestamp": "an ISO-8601 timestamp string",
        "date": "an ISO-8601 date string",
    }.get(kind, "a value of its type")
    raise InvalidRequest(f"{label}: value {value!r} does not fit the {column_type} field; expected {expected}")


def _parse_time(value: str, column_type: DuckDBPyType, label: str) -> datetime | date:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{label}: {value!r} is not an ISO-8601 date or timestamp") from None
    if column_type.id == "date" and len(value) == 10:
        return parsed.date()
    if column_type.id == "timestamp with time zone":
        # A timestamp without an offset is read as UTC.
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    # Columns without a time zone hold UTC wall-clock times: an offset is converted to UTC.
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo is not None else parsed


def _regex(column: Expression, pattern: Any, case_sensitive: bool, label: str) -> Expression:
    """RE2 matching: linear time whatever the pattern, so no pattern can hang an export."""
    if not isinstance(pattern, str):
        raise InvalidRequest(f"{label}: value must be a regular expression string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRequest(f"{label}: the regular expression is longer than {MAX_PATTERN_LENGTH} characters")
    with duckdb.connect() as scratch:
        try:
            scratch.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
        except duckdb.Error as error:
            raise InvalidRequest(f"{label}: invalid regular expression {pattern!r}: {error}") from None
    options = () if case_sensitive else (ConstantExpression("i"),)
    return FunctionExpression("regexp_matches", column, ConstantExpression(pattern), *options)
