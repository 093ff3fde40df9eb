"""The run an export row becomes: the run request the request sensor yields for it, and the same run
launched at once through Dagster's GraphQL API by a door that has already checked the request.

A run launched at once carries the sensor's name and the row's run key as Dagster's own
`dagster/sensor_name` and `dagster/run_key` tags: when the sensor's next tick asks for the same run,
Dagster finds it and launches nothing more. The sensor stays the safety net: a launch that fails
leaves the row PENDING for it.
"""

from typing import Any
from urllib.parse import urlsplit

import dagster as dg

from export_pipelines.store.exports import run_key
from export_pipelines.store.tables import REQUESTED_BY_COLUMNS

REQUEST_SENSOR = "export_request_sensor"
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
GRAPHQL_TIMEOUT_SECONDS = 30
LAUNCH_TAG, LAUNCHED_AT_ONCE = "export_launch", "at_once"  # tells runs launched at once from the sensor's


def attempt_tags(record: dict[str, Any]) -> dict[str, str]:
    return {"export_id": record["id"], "export_attempt": str(record["attempt"])}


def run_tags(record: dict[str, Any], launched_by: str = "table") -> dict[str, str]:
    """Tags that let the UI filter runs by export, project and owner (and set concurrency)."""
    tags = {**attempt_tags(record), "project_id": record["project_id"], "client_source": launched_by}
    if record.get("user_id"):
        tags["user_id"] = record["user_id"]
    return tags


def run_request_for(record: dict[str, Any], run_config: dict[str, Any], launched_by: str = "table") -> dg.RunRequest:
    """The run request of a checked row: its request as run config, with the row's id and
    requester, under the run key of its current attempt."""
    requested_by = {
        **run_config.get("requested_by", {}),
        **{k: record[k] for k in REQUESTED_BY_COLUMNS if record.get(k)},
    }
    requested_by.setdefault("client_source", "table")
    run_config = {**run_config, "export_id": record["id"], "requested_by": requested_by}
    return dg.RunRequest(run_key=run_key(record), run_config=run_config, tags=run_tags(record, launched_by))


def launch_now(run_request: dg.RunRequest, dagster_url: str) -> str:
    """Launch `run_request` of export_job through the GraphQL API of the Dagster webserver at
    `dagster_url`, as the request sensor's own run; returns the run id (DagsterGraphQLClientError
    when the webserver refuses or cannot be reached)."""
    from dagster_graphql import DagsterGraphQLClient

    address = urlsplit(dagster_url)
    client = DagsterGraphQLClient(
        address.hostname or "127.0.0.1",
        port_number=address.port,
        use_https=address.scheme == "https",
        timeout=GRAPHQL_TIMEOUT_SECONDS,
        path_prefix=address.path.rstrip("/"),
    )
    assert run_request.run_key is not None
    tags = {
        **run_request.tags,
        RUN_KEY_TAG: run_request.run_key,
        SENSOR_NAME_TAG: REQUEST_SENSOR,
        LAUNCH_TAG: LAUNCHED_AT_ONCE,
    }
    return client.submit_job_execution("export_job", run_config=run_request.run_config, tags=tags)
