"""Turning a request as a door receives it (JSON text or a mapping) into a checked ExportRequest.

Every door uses this: the structure and types are checked by Dagster's own run config
validation of `export_job` (so a request that passes here is a run config Dagster accepts),
then the warehouse checks of `steps.validate` run when a connection is at hand.
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from export_pipelines.engine.request import ExportRequest, InvalidRequest
from export_pipelines.orchestration.request_schema import require_source, with_source_named


def parse_request(raw: str | Mapping[str, Any]) -> tuple[dict[str, Any], ExportRequest]:
    """The request as run config and as an ExportRequest, or InvalidRequest with one clear message."""
    from export_pipelines.orchestration.jobs import export_job

    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise InvalidRequest(
                f"request is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
    if not isinstance(raw, Mapping):
        raise InvalidRequest("request must be a JSON object")
    require_source(raw)
    _refuse_null_filter_members(raw.get("filters"))
    run_config = dict(raw)
    try:
        dg.validate_run_config(export_job, run_config)
    except dg.DagsterInvalidConfigError as error:
        problems = "; ".join(config_problem(e.message) for e in error.errors)
        raise InvalidRequest(f"invalid request: {problems}") from None
    except dg.DagsterConfigMappingFunctionError:
        # Dagster's own checks that its validation let through; never a crash of the door.
        raise InvalidRequest("invalid request: Dagster could not read it as export_job's run config") from None
    run_config = with_source_named(run_config)
    return run_config, ExportRequest(**run_config)


def _refuse_null_filter_members(filters: Any) -> None:
    """Dagster's config check lets a null member of a mapping through and then fails on it."""
    if isinstance(filters, Mapping):
        for key, value in filters.items():
            if value is None:
                raise InvalidRequest(f"filters.{key} is null: leave it out or give it a value")


def config_problem(message: str) -> str:
    """Dagster's message, in the words of the request (no config paths, no schema dump)."""
    if " Expected:" in message:
        message = message.split(" Expected:")[0] + f" (fields: {', '.join(ExportRequest.model_fields)})"
    return message.replace("at the root", "in the request").replace("at path root:", "at ").replace("root:", "")
