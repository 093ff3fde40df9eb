"""Warm run workers (SPEC, "Runs and workers"): Dagster's Celery run launcher publishes each run as
a Celery task, and a worker that imported the code location before forking executes the whole run
in its pool process, so a small export does not pay for starting Python.

The broker is `EXPORTS_BROKER_URL`: by default a folder on local disk (kombu's filesystem
transport: no server to install), in production `redis://…` or `amqp://…`. Task states, which run
monitoring reads, go to a database result backend (never `rpc://`, which loses them).
"""

import importlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from dagster_celery.tasks import create_execute_job_task

from export_pipelines.orchestration import disk_broker
from export_pipelines.settings import env, optional_env

QUEUE = "dagster"
FILESYSTEM = "filesystem://"
# A run worker that answers no ping for this long is taken for dead with its host (run monitoring
# then fails its runs); a ping's verdict is reused for a few seconds across the runs of one worker.
WORKER_SILENT_SECONDS = 60.0
PING_TIMEOUT_SECONDS = 2.0
PING_REUSE_SECONDS = 5.0


@dataclass(frozen=True)
class CelerySettings:
    """Where runs are queued and where their task states are kept."""

    broker: str
    backend: str
    config_source: dict[str, Any]

    @classmethod
    def from_environment(cls) -> "CelerySettings":
        broker = env("EXPORTS_BROKER_URL")
        backend = optional_env("EXPORTS_RESULT_BACKEND")
        if broker.startswith(FILESYSTEM):
            folder = Path(broker.removeprefix(FILESYSTEM)).absolute()
            queue = folder / "queue"
            for path in (queue, folder / "control"):
                path.mkdir(parents=True, exist_ok=True)
            options = {
                "data_folder_in": str(queue),
                "data_folder_out": str(queue),
                "control_folder": str(folder / "control"),
                "polling_interval": 0.05,  # a virtual transport polls: 1 s by default
            }
            results = backend or f"db+sqlite:///{folder / 'results.sqlite'}"
            return cls(f"{disk_broker.SCHEME}://", results, _options(options))
        if backend is None:
            # Redis keeps task states itself; any other broker keeps them in the request database.
            backend = broker if broker.startswith(("redis://", "rediss://")) else "db+" + env("EXPORTS_DATABASE_URL")
        return cls(broker, backend, _options({}))


def _options(transport: dict[str, Any]) -> dict[str, Any]:
    return {
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "worker_prefetch_multiplier": 1,  # a busy worker leaves the next run to an idle one
        "result_extended": True,
    }


def celery_app() -> Celery:
    """The Celery app of the run workers, with the run task registered."""
    settings = CelerySettings.from_environment()
    app = make_app(
        {
            "broker": settings.broker,
            "backend": settings.backend,
            "include": [],
            "config_source": settings.config_source,
            "task_default_queue": QUEUE,
        }
    )
    create_execute_job_task(app)
    return app


class ExportRunLauncher(CeleryRunLauncher):
    """dagster-celery's run launcher on the service's settings (`EXPORTS_BROKER_URL`). A cancelled
    run ends CANCELED, with its step's cleanup, instead of being killed and ending FAILURE.

    A run's Celery task id is the run id, so the task of a run is known even when the launch was
    cut short before the run was tagged with it, and a run sent again (see `launch_recovery`) is
    still one task: a second copy finds the run under way and Dagster ignores it."""

    def __init__(self, inst_data: Any = None, **_config: Any):
        settings = CelerySettings.from_environment()
        super().__init__(
            default_queue=QUEUE,
            broker=settings.broker,
            backend=settings.backend,
            config_source=settings.config_source,
            inst_data=inst_data,
        )
        self._pings: dict[str, tuple[float, float | None]] = {}  # worker -> (asked at, silent since)

    @classmethod
    def config_type(cls) -> dict:
        return {}

    def _launch_celery_task_run(self, run: dg.DagsterRun, task_signature: Any, routing_key: str) -> None:
        super()._launch_celery_task_run(run, task_signature.set(task_id=run.run_id), routing_key)

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """Celery's task state, and for a STARTED task whether its worker still answers: when a worker's
        whole host dies, nothing records the task's end and its state stays STARTED for ever."""
        task_id = task_id_of(run)
        health = super().check_run_worker_health(run.with_tags({**run.tags, DAGSTER_CELERY_TASK_ID_TAG: task_id}))
        if health.status != WorkerStatus.RUNNING:
            return health
        started = self.celery.AsyncResult(task_id).info
        worker = started.get("hostname") if isinstance(started, dict) else None
        silent = self._silent_for(worker) if worker else 0.0
        if silent < WORKER_SILENT_SECONDS:
            return health
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker {worker} has not answered for {silent:.0f} s: it died with its host"
        )

    def _silent_for(self, worker: str) -> float:
        """How long `worker` has not answered pings (0 while it answers)."""
        now = time.monotonic()
        asked, silent_since = self._pings.get(worker, (None, None))
        if asked is None or now - asked > PING_REUSE_SECONDS:
            answered = self.celery.control.ping(destination=[worker], timeout=PING_TIMEOUT_SECONDS)
            silent_since = None if answered else (silent_since or now)
            self._pings[worker] = (now, silent_since)
        return 0.0 if silent_since is None else now - silent_since

    def terminate(self, run_id: str) -> bool:
        """Report the run CANCELING: the pool process executing it sees that within a second and
        interrupts the run (see `CancelWatch`), whichever broker is in use."""
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        self.celery.control.revoke(task_id_of(run))  # a run still waiting in the queue never starts
        return True


def task_id_of(run: dg.DagsterRun) -> str:
    """The Celery task that executes `run`: the run id, or the id its tag names for a run launched
    before task ids were run ids."""
    return run.tags.get(DAGSTER_CELERY_TASK_ID_TAG, run.run_id)


class CancelWatch:
    """In a pool process, while it executes a run: polls the run's status and interrupts the run
    (SIGINT, which Dagster turns into a clean cancellation of the step) once it is CANCELING."""

    POLL_SECONDS = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, task_id: str, task: Any, kwargs: dict[str, Any], **_: Any) -> None:
        packed = kwargs.get("execute_job_args_packed") or {}
        run_id = packed.get("run_id") if isinstance(packed, dict) else None
        if run_id is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, args=(run_id,), name="cancel-watch", daemon=True)
            self._thread.start()

    def stop(self, **_: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self, run_id: str) -> None:
        with dg.DagsterInstance.get() as instance:
            while not self._stop.wait(self.POLL_SECONDS):
                run = instance.get_run_by_id(run_id)
                if run is not None and run.status == dg.DagsterRunStatus.CANCELING:
                    os.kill(os.getpid(), signal.SIGINT)
                    return


def _load_definitions(**_kwargs: Any) -> None:
    importlib.import_module("export_pipelines.definitions")


def run_worker(concurrency: int, max_tasks_per_child: int, hostname: str | None = None) -> None:
    """A worker process: imports what runs need, then forks `concurrency` pool processes that each
    run up to `max_tasks_per_child` runs before they are replaced (memory cannot creep).

    The code location's modules (Dagster, Polars, DuckDB, boto3, the export path) are imported
    here, before forking, so no run pays for them; each pool process then loads the definitions
    as soon as it starts, before its first run. Not before forking: loading them opens the
    warehouse (the Launchpad's pick list), and a process that forks after DuckDB started its
    threads can hand a child a lock that nobody will release.
    """
    importlib.import_module("export_pipelines.orchestration.ops")
    importlib.import_module("export_pipelines.orchestration.resources")
    worker_process_init.connect(_load_definitions, weak=False)
    watch = CancelWatch()
    task_prerun.connect(watch.start, weak=False)
    task_postrun.connect(watch.stop, weak=False)

    if not optional_env("DAGSTER_HOME"):
        raise dg.DagsterInvariantViolationError("a run worker needs DAGSTER_HOME: the instance its runs report to")
    argv = [
        "worker",
        "--loglevel=INFO",
        f"--queues={QUEUE}",
        f"--concurrency={concurrency}",
        f"--max-tasks-per-child={max_tasks_per_child}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app().worker_main(argv)
