"""The export service as a Python API: what every door (sensor, CLI, the REST API) calls.

`submit` checks a request exactly as `export_job` would and queues it in the request table;
the request sensor launches it, or `launch` does at once. Nothing here runs an export itself.
"""

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg

from export_pipelines.cache.export_sources import ExportSources
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.engine.artifacts import ExportS3Resource, delete_export_objects, presigned_links
from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.engine.request import InvalidRequest
from export_pipelines.engine.steps import Preview, preview, validate
from export_pipelines.engine.warehouse import WarehouseResource
from export_pipelines.orchestration.launch import attempt_tags, launch_now, run_request_for
from export_pipelines.orchestration.request_check import parse_request
from export_pipelines.orchestration.run_outcome import settle_export
from export_pipelines.settings import optional_env
from export_pipelines.store.exports import ExportConflict, ExportStore, ExportStoreResource
from export_pipelines.store.tables import FINAL_STATUSES, ExportStatus

logger = logging.getLogger(__name__)
MAX_PAGE_SIZE = 200
WAIT_POLL_SECONDS = 0.2


class ExportNotFound(LookupError):
    """No export with that id for that caller (HTTP 404)."""


class ExportNotFinished(ExportConflict):
    """The export has no artifacts to hand out yet (HTTP 409)."""


class ExportExpired(ExportConflict):
    """The export's artifacts expired and were removed (HTTP 410)."""


@dataclass
class ExportService:
    store: ExportStore
    s3: ExportS3Resource
    policy: ExportPolicy
    warehouse: WarehouseResource | None = None
    instance: dg.DagsterInstance | None = None
    cache: CachedTablesResource = field(default_factory=CachedTablesResource)

    @classmethod
    def from_environment(cls, instance: dg.DagsterInstance | None = None) -> "ExportService":
        """The service on the environment's settings (the same resources the job uses)."""
        return cls(
            store=ExportStoreResource().get_store(),
            s3=ExportS3Resource(),
            policy=ExportPolicy(),
            warehouse=WarehouseResource(),
            instance=instance,
        )

    @property
    def sources(self) -> ExportSources | None:
        """Where requests are checked and previewed (None: a service that checks no catalog)."""
        return ExportSources(self.warehouse, self.cache) if self.warehouse is not None else None

    def submit(
        self,
        request: str | Mapping[str, Any],
        requested_by: Mapping[str, str | None] | None = None,
        idempotency_key: str | None = None,
        launching: bool = False,
    ) -> str:
        """Check `request` like export_job does and queue it as PENDING; returns the export id.

        With `idempotency_key`, a retried submit of the same request within 24 hours answers the
        first one's id and queues nothing (IdempotencyConflict for another request). `launching`: the
        caller launches the run itself (`launch`), so the fast watch of the table leaves it alone."""
        run_config, parsed = parse_request(request)
        export_id = parsed.export_id or str(uuid.uuid4())
        described = None
        if self.sources is not None:
            with self.sources.for_checks(parsed) as source:
                described = validate(parsed, export_id, source.connection, source.catalog_name).description
        who = {**(run_config.get("requested_by") or {}), **{k: v for k, v in (requested_by or {}).items() if v}}
        record = (
            {**run_config, "export_id": export_id, "requested_by": who}
            if who
            else {**run_config, "export_id": export_id}
        )
        idempotency = None
        if idempotency_key is not None:
            body = json.dumps({k: v for k, v in run_config.items() if k != "requested_by"}, sort_keys=True)
            idempotency = (idempotency_key, hashlib.sha256(body.encode()).hexdigest())
        reserve = launching and optional_env("DAGSTER_UI_URL") is not None  # only a door that can launch
        return self.store.insert(export_id, parsed.project_id, record, who, described, idempotency, reserve)

    def launch(self, export_id: str, launched_by: str) -> str | None:
        """Launch a PENDING export's run now, through the Dagster webserver at $DAGSTER_UI_URL,
        rather than on the request sensor's next tick (which then finds the run and launches
        nothing more). Returns the run id; None when no webserver is configured, the export is no
        longer PENDING, another launcher claimed it, or its request does not check out or the
        launch failed (logged: the sensor then launches it, or fails it with the reason)."""
        dagster_url = optional_env("DAGSTER_UI_URL")
        record = self.store.get(export_id)
        if dagster_url is None or record is None or not self.store.claim_launch(export_id, record["attempt"]):
            return None
        return self.launch_claimed(record, launched_by, dagster_url)

    def launch_claimed(self, record: dict[str, Any], launched_by: str, dagster_url: str) -> str | None:
        """`launch` of an export whose launch the caller has claimed (`ExportStore.claim_launch`),
        through the Dagster webserver at `dagster_url`."""
        from dagster_graphql import DagsterGraphQLClientError

        export_id = record["id"]
        if self.instance is not None and self.instance.get_runs(dg.RunsFilter(tags=attempt_tags(record)), limit=1):
            return None  # a run of this attempt exists already (launched before launches were claimed)
        try:
            run_config, parsed = parse_request(record["request"])
            if self.sources is not None:  # rows from the request table were never checked
                parsed = parsed.model_copy(update={"project_id": record["project_id"]})
                with self.sources.for_checks(parsed) as source:
                    validate(parsed, export_id, source.connection, source.catalog_name)
            run_request = run_request_for(record, {**run_config, "project_id": record["project_id"]}, launched_by)
            return launch_now(run_request, dagster_url)
        except (InvalidRequest, DagsterGraphQLClientError, OSError) as error:
            logger.warning("export %s left to the request sensor: %s", export_id, error)
            self.store.release_launch(export_id, record["attempt"])  # the sensor's, at its next tick
            return None

    def preview(self, request: str | Mapping[str, Any]) -> Preview:
        """What `request` would export (row count, columns, first rows), checked like a submit;
        queues nothing."""
        _run_config, parsed = parse_request(request)
        if self.sources is None:
            raise RuntimeError("a preview reads the warehouse: this service has none")
        with self.sources.for_reading(parsed) as source:
            return preview(parsed, source.connection, self.policy.resolved_max_rows, catalog_name=source.catalog_name)

    def get(self, export_id: str, project_id: str | None = None) -> dict[str, Any]:
        record = self.store.get(export_id)
        if record is None or (project_id is not None and record["project_id"] != project_id):
            raise ExportNotFound(f"no export {export_id}")
        return record

    def download_urls(self, export_id: str, project_id: str) -> list[dict[str, Any]]:
        """Presigned GET URLs of a SUCCEEDED export's files, for its owner project only."""
        record = self.get(export_id, project_id)
        if record["status"] == ExportStatus.EXPIRED:
            raise ExportExpired(f"export {export_id} has expired: its artifacts were removed")
        if record["status"] != ExportStatus.SUCCEEDED:
            raise ExportNotFinished(f"export {export_id} is {record['status']}; links exist only once it SUCCEEDED")
        return self.links(record)

    def links(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Presigned GET URLs of the files of a SUCCEEDED export's record."""
        return presigned_links(
            self.s3.get_client(), self.s3.resolved_bucket, record["files"], self.policy.resolved_url_ttl_seconds
        )

    def cancel(self, export_id: str, project_id: str | None = None) -> str:
        """A PENDING export becomes CANCELLED and is never launched; a RUNNING one has its run
        terminated (the cancel sensor then records CANCELLED). Returns the status after the call."""
        self.get(export_id, project_id)
        if self.store.finish_unfinished_if(export_id, ExportStatus.PENDING, ExportStatus.CANCELLED, "cancelled"):
            self._cancel_runs(export_id)  # a run already queued for it must not start
            return ExportStatus.CANCELLED.value
        record = self.get(export_id, project_id)
        if record["status"] == ExportStatus.RUNNING:
            if self._cancel_runs(export_id) == 0:
                raise ExportConflict(f"export {export_id} is RUNNING but its run could not be cancelled")
            return ExportStatus.RUNNING.value
        raise ExportConflict(f"export {export_id} is {record['status']} and cannot be cancelled")

    def cancel_and_settle(self, export_id: str, project_id: str | None, timeout: float) -> dict[str, Any]:
        """Cancel the export and wait up to `timeout` seconds until it is final (a RUNNING export's run
        has to stop first); returns the export as it is then."""
        self.cancel(export_id, project_id)
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(export_id, project_id)
            if record["status"] == ExportStatus.RUNNING and self.instance is not None:
                settle_export(self.store, self.instance, record)
                record = self.get(export_id, project_id)
            if record["status"] in FINAL_STATUSES or time.monotonic() >= deadline:
                return record
            time.sleep(WAIT_POLL_SECONDS)

    def _cancel_runs(self, export_id: str) -> int:
        """Ask Dagster to cancel the unfinished runs of an export; returns how many."""
        if self.instance is None:
            return 0
        unfinished = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
        ]
        runs = self.instance.get_runs(dg.RunsFilter(tags={"export_id": export_id}, statuses=unfinished))
        record = self.store.get(export_id)
        if record is not None and record["run_id"] and record["run_id"] not in {run.run_id for run in runs}:
            run = self.instance.get_run_by_id(record["run_id"])
            runs += [run] if run is not None and run.status in unfinished else []
        for run in runs:
            self.instance.run_coordinator.cancel_run(run.run_id)
        return len(runs)

    def retry(self, export_id: str, project_id: str | None = None) -> int:
        self.get(export_id, project_id)
        return self.store.retry(export_id)

    def delete(self, export_id: str, project_id: str | None = None) -> int:
        """Remove a finished export's artifacts and its row; returns the objects deleted."""
        record = self.get(export_id, project_id)
        if record["status"] not in FINAL_STATUSES:
            raise ExportConflict(f"export {export_id} is {record['status']}; cancel it before deleting it")
        s3 = self.s3
        deleted = delete_export_objects(
            s3.get_client(), s3.resolved_bucket, s3.resolved_prefix, record["project_id"], export_id
        )
        self.store.delete(export_id)
        return deleted

    def remove(self, export_id: str, project_id: str | None, timeout: float) -> None:
        """Delete an export whatever its state: a PENDING or RUNNING one is cancelled first (waiting
        up to `timeout` seconds for its run to stop; ExportConflict if it has not by then)."""
        record = self.get(export_id, project_id)
        if record["status"] not in FINAL_STATUSES:
            record = self.cancel_and_settle(export_id, project_id, timeout)
            if record["status"] not in FINAL_STATUSES:
                raise ExportConflict(f"export {export_id} is still stopping; try again in a moment")
        self.delete(export_id, project_id)

    def list(
        self,
        project_id: str,
        statuses: list[str] | None = None,
        limit: int = 50,
        created_before: datetime | None = None,
        created_after: datetime | None = None,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        """A project's exports, newest first (defined last: the name shadows the builtin in the
        class body). Page size clamped to [1, 200]; pass the last row's created_at as
        `created_before` for the next page; `search` matches id, source or name."""
        unknown = sorted(set(statuses or []) - {s.value for s in ExportStatus})
        if unknown:
            raise ValueError(f"unknown status(es) {', '.join(unknown)}")
        limit = min(max(limit, 1), MAX_PAGE_SIZE)
        return self.store.list_exports(project_id, statuses, limit, created_before, created_after, search)
