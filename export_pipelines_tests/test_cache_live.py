"""Cached tables on live deployments. First, the refresh of a new entry seen in the Dagster UI (headless
Chromium): its partition of `cached_tables` with the figures of the materialization.

Then refreshes launched by a real daemon, run by a real run worker, while the daemon is SIGKILLed (with
its code server, its whole process group) at the most awkward moment: right after the run of a due
refresh was created, before the sensor's tick could record it. That happens for the entry's first
refresh and for two points of its every-minute schedule; each time the daemon is started again.
Every due refresh ends with exactly one run, and every run succeeded (the entry's version counts
them), a run whose launch the kill cut short too (sent to the workers again, not failed by run
monitoring). The embedded setup of `make dev`: SQLite storage, the broker on local disk, the demo catalog."""

import contextlib
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
from playwright.sync_api import Browser

from export_pipelines.deploy.demo_catalog import build_demo_catalog
from export_pipelines.deploy.dev import PROJECT_ROOT
from export_pipelines.service.cache import CacheService
from export_pipelines_tests.browser import AssetPartition
from export_pipelines_tests.conftest import environment, started, wait_for
from export_pipelines_tests.live import Deployment

SCREENSHOTS = PROJECT_ROOT / "docs"
KILLED_AT = 3  # due refreshes whose run's creation kills the daemon: the first and two scheduled ones


def test_a_refresh_shows_its_figures_in_the_ui(deployment: Deployment, browser: Browser) -> None:
    with deployment.settings():
        item = {"catalogId": "demo", "schemaName": "main", "tableName": "accounts"}
        (created,) = CacheService().batch(f"ui-{uuid.uuid4().hex[:6]}", [item])
        entry_id, project = created.cache["id"], created.cache["project_id"]
        wait_for(lambda: CacheService().get(project, entry_id)["status"] == "READY", "the first refresh", 120)
    partition = AssetPartition(browser, deployment.url, "cached_tables", entry_id)
    shown = partition.metadata("kind", "why", "table", "dagster/row_count", "rows_inserted", "rows_deleted", "version")
    assert shown == {
        "kind": "full", "why": "no copy yet", "table": "main.accounts", "dagster/row_count": "10000",
        "rows_inserted": "10000", "rows_deleted": "0", "version": "1",
    }  # fmt: skip
    if os.environ.get("EXPORTS_UPDATE_SCREENSHOTS"):
        partition.page.screenshot(path=SCREENSHOTS / "cache-refresh.png")


def test_each_due_refresh_runs_once_however_often_the_daemon_is_killed(tmp_path: Path, demo_warehouse: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    settings = {
        "DAGSTER_HOME": str(home),
        "EXPORTS_DATABASE_URL": f"sqlite:///{tmp_path / 'exports.db'}",
        "EXPORTS_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "EXPORTS_CATALOGS": str(build_demo_catalog(tmp_path / "catalog", rows=2000)),
        "EXPORTS_CACHE_DIR": str(tmp_path / "cache"),
        "EXPORTS_WAREHOUSE": str(demo_warehouse),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_"))}, **settings}
    daemon_command = [
        str(Path(sys.executable).parent / "dagster-daemon"),
        "run",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
    ]
    worker_command = [sys.executable, "-m", "export_pipelines.cli", "worker", "--concurrency", "1"]
    every_minute = {"type": "CRON", "expression": "* * * * *"}
    with contextlib.ExitStack() as stack, environment(settings), dg.DagsterInstance.get() as instance:
        item = {
            "catalogId": "demo",
            "schemaName": "main",
            "tableName": "accounts",
            "incrementalCacheSchedule": every_minute,
        }
        (created,) = CacheService().batch("acme", [item])
        entry_id = created.cache["id"]
        stack.enter_context(started(worker_command, env, tmp_path / "worker.log"))

        def runs() -> list[dg.DagsterRun]:
            return instance.get_runs(dg.RunsFilter(tags={"cache_entry": entry_id}))

        for restart in range(KILLED_AT):
            if restart:
                _lose_the_last_cursor(instance)
            with started(daemon_command, env, tmp_path / f"daemon-{restart}.log") as daemon:
                before = len(runs())
                wait_for(lambda before=before: len(runs()) > before, f"refresh run {before + 1}", 150)
                os.killpg(daemon.pid, signal.SIGKILL)  # the daemon and its code server, mid-tick
        (calm,) = CacheService().batch("acme", [{k: v for k, v in item.items() if k != "incrementalCacheSchedule"}])
        assert calm.success and calm.cache["incremental_schedule"] is None  # nothing more falls due
        with started(daemon_command, env, tmp_path / "daemon-last.log"):
            restarted = time.time()
            wait_for(lambda: _ticked_since(instance, restarted, 2), "two sensor ticks after the last restart", 120)
            wait_for(lambda: all(run.is_finished for run in runs()), "every refresh run to finish", 240)

        # The restarted daemons did meet the runs their predecessors had created (it is not a test of nothing).
        restarted_logs = "".join(log.read_text() for log in tmp_path.glob("daemon-*.log") if log.name != "daemon-0.log")
        assert re.search(r"with (the )?run keys?", restarted_logs), "no restarted daemon met a run created before"
        keys = Counter(run.tags["dagster/run_key"] for run in runs())
        assert len(keys) >= KILLED_AT and set(keys.values()) == {1}, keys
        assert {run.status for run in runs()} == {dg.DagsterRunStatus.SUCCESS}, _what_failed(instance, runs())
        entry = CacheService().get("acme", entry_id)
        assert entry["status"] == "READY" and entry["version"] == len(keys) and entry["row_count"] == 2000


def _lose_the_last_cursor(instance: dg.DagsterInstance) -> None:
    """What a daemon killed between creating a tick's runs and saving the tick's cursor leaves behind.
    The kill above mostly lands after the save (the run is seen a moment after it is created); with
    the cursor lost, the next daemon asks again for the refreshes its predecessor launched, and only
    the run keys keep them single."""
    (state,) = [s for s in instance.all_instigator_state() if s.name == "cache_refresh_sensor"]
    instance.update_instigator_state(state.with_data(state.instigator_data._replace(cursor=None)))


def _ticked_since(instance: dg.DagsterInstance, since: float, ticks: int) -> bool:
    """Whether the refresh sensor has completed `ticks` evaluations since `since` (epoch seconds)."""
    states = [s for s in instance.all_instigator_state() if s.name == "cache_refresh_sensor"]
    if not states:
        return False
    recent = instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, after=since)
    return len([tick for tick in recent if tick.status.value != "STARTED"]) >= ticks


def _what_failed(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> dict[str, list[str]]:
    """What the log of every run that did not succeed says about it (failures, engine events, user logs)."""
    telling = {dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ENGINE_EVENT}
    return {
        f"{run.run_id} {run.status.value} {run.tags.get('dagster/run_key')}": [
            f"{event.dagster_event_type or 'log'}: {event.message} {_error(event)}"
            for event in instance.all_logs(run.run_id)
            if event.dagster_event_type is None or event.dagster_event_type in telling
        ]
        for run in runs
        if run.status is not dg.DagsterRunStatus.SUCCESS
    }


def _error(event: dg.EventLogEntry) -> str:
    error = getattr(event.dagster_event.event_specific_data, "error", None) if event.dagster_event else None
    return error.to_string() if error else ""
