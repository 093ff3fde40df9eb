"""The run config schema of `export_job` as users see it in the Launchpad.

It is the ExportRequest schema, except for `source`: exactly one of `table`, `query`, or `pick`,
an enum of the tables and saved queries the warehouse held when the code location loaded (the
Launchpad's editor lists them; "Reload definitions" refreshes the list), and with `table` the
`catalog` of a cached table. The first source is the default, so the Launchpad opens on a
request that runs. A request that names no source is still an error: the default only fills the
Launchpad, and `require_source` rejects run config that omits `source`, or names two, whatever
door it came through.
"""

import logging
from collections.abc import Mapping
from typing import Any

import dagster as dg
import duckdb

from export_pipelines.engine.request import ExportRequest, InvalidRequest
from export_pipelines.engine.warehouse import (
    CATALOG_NEEDS_A_TABLE,
    SAVED_QUERY_SCHEMA,
    WarehouseResource,
    list_sources,
    open_hardened,
)

CATALOG_TIMEOUT_SECONDS = 2.0
SOURCE_DESCRIPTION = (
    'Exactly one of: table ("schema.table"), query (a saved query: a view in the warehouse schema '
    '"queries"), or pick (one of the tables and saved queries that existed when the definitions '
    "loaded; your editor lists them). Required: the Launchpad pre-fills the first table."
)

logger = logging.getLogger(__name__)


def catalog_sources() -> list[str]:
    """Qualified names of the warehouse's tables and saved queries (`queries.<name>`), or none when
    the warehouse cannot be read right now (the schema then offers no pick list)."""
    try:
        with open_hardened(WarehouseResource().resolved_path, CATALOG_TIMEOUT_SECONDS) as connection:
            sources = list_sources(connection)
    except (OSError, TimeoutError, duckdb.Error) as error:
        logger.warning("export_job offers no source pick list: %s", error)
        return []
    return sources["tables"] + [f"{SAVED_QUERY_SCHEMA}.{name}" for name in sources["queries"]]


def request_config_schema(sources: list[str]) -> dict[str, dg.Field]:
    """The ExportRequest fields, with `source` as a selector offering `sources` to pick from."""
    fields = dict(ExportRequest.to_config_schema().as_field().config_type.fields)
    choices: dict[str, Any] = {
        "table": dg.Field(str, is_required=False, description='A table as "schema.table", e.g. "payment.charges".'),
        "query": dg.Field(
            str, is_required=False, description='A saved query: a view in the schema "queries", e.g. "charges_view".'
        ),
        "catalog": dg.Field(
            str,
            is_required=False,
            description='With "table": the id of a cached catalog whose cached copy is read (default: the warehouse).',
        ),
    }
    schema_default: dict[str, Any] = {"is_required": True}
    if sources:
        values = [dg.EnumValue(name, description="saved query" if _is_query(name) else "table") for name in sources]
        choices["pick"] = dg.Field(
            dg.Enum("WarehouseSource", values),
            is_required=False,
            description="One of the tables and saved queries that exist.",
        )
        schema_default = {"default_value": _named_source(sources[0])}
    fields["source"] = dg.Field(dg.Shape(choices), description=SOURCE_DESCRIPTION, **schema_default)
    return fields


def _is_query(qualified_name: str) -> bool:
    return qualified_name.startswith(f"{SAVED_QUERY_SCHEMA}.")


def _named_source(qualified_name: str) -> dict[str, str]:
    """`queries.x` as {"query": "x"}, any other name as {"table": name}."""
    return {"query": qualified_name.split(".", 1)[1]} if _is_query(qualified_name) else {"table": qualified_name}


def require_source(raw_run_config: Mapping[str, Any]) -> None:
    """A request must name its source itself (the schema's default is only the Launchpad's): exactly
    one of a table, a saved query or a pick, and a catalog only with a table."""
    source = raw_run_config.get("source")
    if source is None:
        raise InvalidRequest('source is required: {"table": "schema.table"} or {"query": "name"}')
    if not isinstance(source, Mapping):
        raise InvalidRequest('source must be an object: {"table": "schema.table"} or {"query": "name"}')
    named = [name for name in ("table", "query", "pick") if source.get(name) is not None]
    if len(named) != 1:
        raise InvalidRequest('source must name exactly one of "table", "query" or "pick"')
    if source.get("catalog") is not None and named != ["table"]:
        raise InvalidRequest(CATALOG_NEEDS_A_TABLE)


def with_source_named(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request with a picked source written as the `table` or `query` it names."""
    source = dict(request.get("source") or {})
    picked = source.pop("pick", None)
    if picked is not None:
        source = _named_source(picked)
    return {**request, "source": source}
