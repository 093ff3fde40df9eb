"""A live deployment for end-to-end tests: `export-pipelines dev` (the local S3 server, the Dagster
webserver and a real dagster-daemon on a temporary DAGSTER_HOME), started like a user starts it,
and what the tests do with it: insert rows, wait on statuses, sign links, find a run's process."""

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psutil
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorTick,
    InstigatorType,
    TickStatus,
)

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse, create_charges
from export_pipelines.deploy.dev import running_dev_deployment
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.engine.artifacts import ExportS3Resource
from export_pipelines.service.exports import ExportService
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines_tests.conftest import environment, wait_for

BIG_ROWS = 3_000_000  # payment.large_charges: an export slow enough to be killed or cancelled mid-way


class Deployment:
    def __init__(self, data_dir: Path, pid: int, port: int, environment: dict[str, str]):
        self.data_dir, self.pid, self.port, self.environment = data_dir, pid, port, environment
        self.store = ExportStore(engine_for(self.environment["EXPORTS_DATABASE_URL"]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.environment["EXPORTS_API_URL"]

    def insert(self, request: dict[str, Any], project_id: str = "default", user_id: str = "e2e") -> str:
        export_id = str(uuid.uuid4())
        self.store.insert(export_id, project_id, request, {"user_id": user_id})
        return export_id

    def status(self, export_id: str) -> str | None:
        record = self.store.get(export_id)
        return record["status"] if record else None

    def wait_status(self, export_id: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
        wait_for(lambda: self.status(export_id) in statuses, f"export {export_id} to be {statuses}", timeout)
        return self.store.get(export_id)

    def links(self, export_id: str) -> list[dict[str, Any]]:
        """Presigned links of a SUCCEEDED export, signed with the deployment's settings."""
        with self.settings():
            return ExportService.from_environment().download_urls(export_id, self.store.get(export_id)["project_id"])

    def s3_client(self) -> Any:
        with self.settings():
            return ExportS3Resource().get_client()

    def settings(self) -> contextlib.AbstractContextManager[None]:
        """The deployment's environment variables in this process, for the duration."""
        return environment(self.environment)

    @contextlib.contextmanager
    def sensor_stopped(self, name: str) -> Iterator[None]:
        """The daemon's sensor `name` stopped for the duration, as the UI's toggle stops it, once the
        sensor daemon can no longer tick it.

        The daemon reads which sensors run at the start of an iteration and then ticks them one
        after another, so an iteration under way at the stop may still tick `name`. Two ticks of
        another sensor after the stop mean a whole iteration began after it (a sensor ticks at most
        once an iteration); then no tick of `name` may be left under way.
        """
        with self.settings(), dg.DagsterInstance.get() as instance:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            (state,) = [s for s in states if s.name == name]
            stopped_at = time.time()
            instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))

            def ticks(of: InstigatorState, **kwargs: Any) -> Sequence[InstigatorTick]:
                return instance.get_ticks(of.instigator_origin_id, of.selector_id, **kwargs)

            def an_iteration_began_after_the_stop() -> bool:
                return any(len(ticks(other, after=stopped_at, limit=2)) == 2 for other in states if other.name != name)

            def no_tick_under_way() -> bool:
                last = ticks(state, limit=1)
                return not last or last[0].status != TickStatus.STARTED

            wait_for(an_iteration_began_after_the_stop, "a sensor daemon iteration begun after the stop", 120)
            wait_for(no_tick_under_way, f"the last tick of {name} to end")
            try:
                yield
            finally:
                now = instance.get_instigator_state(state.instigator_origin_id, state.selector_id)
                instance.update_instigator_state(now.with_status(state.status))

    def run_worker(self, export_id: str) -> psutil.Process | None:
        """The process executing the export's run: the pool process of a run worker whose pid the
        run reported ("Started process for run (pid: N)")."""
        run_id = self.store.get(export_id)["run_id"]
        if run_id is None:
            return None
        with self.settings(), dg.DagsterInstance.get() as instance:
            messages = [entry.message for entry in instance.all_logs(run_id)]
        pids = [int(found) for message in messages for found in re.findall(r"process for run \(pid: (\d+)\)", message)]
        return psutil.Process(pids[0]) if pids else None


@contextlib.contextmanager
def live_deployment(data_dir: Path) -> Iterator[Deployment]:
    """The dev deployment over a demo warehouse with a large table, in `data_dir`."""
    warehouse = build_demo_warehouse(data_dir / "warehouse.duckdb")
    with duckdb.connect(str(warehouse)) as connection:
        create_charges(connection, BIG_ROWS, table="payment.large_charges")
    environment = {**os.environ, "EXPORTS_WAREHOUSE": str(warehouse), "EXPORTS_MAX_ROWS": str(BIG_ROWS)}
    own = ("EXPORTS_DATABASE_URL", "EXPORTS_S3_ENDPOINT_URL", "EXPORTS_PREFIX", "EXPORTS_CATALOGS", "EXPORTS_CACHE_DIR")
    for name in (*own, "DAGSTER_HOME"):
        environment.pop(name, None)
    port, api_port = free_ports(2)
    with running_dev_deployment(data_dir, environment, port, api_port) as reached:
        yield Deployment(data_dir, int(reached.pop("_pid")), port, reached)
