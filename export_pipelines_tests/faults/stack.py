"""A deployment taken apart for the fault tests: the daemon and the run workers as separate processes
that a test kills and starts again, on the embedded setup of `make dev` (SQLite storage and request
table, the broker on local disk) with the real S3 server and the demo warehouse.

Run monitoring is the product's, with shorter bounds (`MONITORING`) so that a test sees a run lost
to a kill detected in seconds rather than minutes; the README states the bounds of the real ones.
"""

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from export_pipelines.deploy.dev import PROJECT_ROOT, create_instance_storage
from export_pipelines.deploy.local_s3 import LocalS3
from export_pipelines.engine.artifacts import list_keys, unfinished_uploads
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines_tests.conftest import BUCKET, environment, started, wait_for

MONITORING = {"start_timeout_seconds": 30, "cancel_timeout_seconds": 30, "poll_interval_seconds": 5}
BIN = Path(sys.executable).parent


class Stack:
    def __init__(
        self,
        folder: Path,
        s3_server: LocalS3,
        warehouse: Path,
        monitoring: dict[str, int] = MONITORING,
        database_url: str | None = None,
    ):
        self.folder = folder
        home = folder / "dagster_home"
        home.mkdir(parents=True)
        instance_config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
        instance_config["run_monitoring"].update(monitoring)
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
        create_instance_storage(home)
        self.prefix = f"faults-{uuid.uuid4().hex[:8]}/"
        self.settings = {
            **s3_server.environment(),
            "DAGSTER_HOME": str(home),
            "EXPORTS_DATABASE_URL": database_url or f"sqlite:///{folder / 'exports.db'}",
            "EXPORTS_BROKER_URL": f"filesystem://{folder / 'broker'}",
            "EXPORTS_WAREHOUSE": str(warehouse),
            "EXPORTS_BUCKET": BUCKET,
            "EXPORTS_PREFIX": self.prefix,
            "EXPORTS_MAX_ROWS": "10000000",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_"))},
            **self.settings,
        }
        self.store = ExportStore(engine_for(self.settings["EXPORTS_DATABASE_URL"]))
        self.s3 = s3_server.client()

    def daemon(self, name: str) -> contextlib.AbstractContextManager[subprocess.Popen]:
        """`dagster-daemon run` (with its code server) in a session of its own."""
        command = [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")]
        return started(command, self.env, self.folder / f"{name}.log")

    def worker(self, name: str, concurrency: int = 2) -> contextlib.AbstractContextManager[subprocess.Popen]:
        """A run worker (`export-pipelines worker`) in a session of its own."""
        command = [sys.executable, "-m", "export_pipelines.cli", "worker", "--concurrency", str(concurrency),
                   "--hostname", f"{name}@%h"]  # fmt: skip
        return started(command, self.env, self.folder / f"{name}.log")

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        with environment(self.settings), dg.DagsterInstance.get() as instance:
            yield instance

    @staticmethod
    def finished_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
        """The export runs once all have finished (an export is final a moment before its run)."""

        def runs() -> list[dg.DagsterRun]:
            return instance.get_runs(dg.RunsFilter(job_name="export_job"))

        wait_for(lambda: all(run.is_finished for run in runs()), "every export run to finish", 120)
        return runs()

    def insert(self, requests: list[dict[str, Any]]) -> list[str]:
        ids = []
        for request in requests:
            export_id = str(uuid.uuid4())
            self.store.insert(export_id, "default", request)
            ids.append(export_id)
        return ids

    def objects(self, below: str = "") -> list[str]:
        """Every object under the stack's prefix (and `below` it)."""
        return list_keys(self.s3, BUCKET, self.prefix + below)

    def uploads(self) -> list[str]:
        """The keys of every unfinished multipart upload under the stack's prefix."""
        return [key for key, _ in unfinished_uploads(self.s3, BUCKET, self.prefix)]

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")
