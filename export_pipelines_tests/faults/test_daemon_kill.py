"""The daemon SIGKILLed at random moments of a drain of table requests, alone and with its whole process
group (its code server), and started again each time: every request ends SUCCEEDED within the bound,
with exactly one successful run, one file and one manifest; no export is left RUNNING.

Then the kill at the most awkward moments of a launch, made certain: the daemon stopped after marking a
run STARTING, before the run's task reached the broker, or after, before it tagged the run with the
task. The next daemon sends it to the workers again: the same run succeeds once, the export at its
first attempt (no run lost, none failed by run monitoring); a second copy of the task is ignored."""

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.launcher import LaunchRunContext
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from export_pipelines.orchestration.launch_recovery import RELAUNCH_MESSAGE
from export_pipelines_tests.conftest import wait_for
from export_pipelines_tests.faults.soak import scaled
from export_pipelines_tests.faults.stack import MONITORING, Stack

REQUESTS = scaled(300, 1500)
KILLS = scaled(4, 12)
DRAIN_BOUND_SECONDS = scaled(900, 3600)
UNFINISHED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"}


@pytest.mark.timeout(DRAIN_BOUND_SECONDS + 300)
def test_a_drain_survives_the_daemon_killed_again_and_again(tmp_path: Path, s3_server, demo_warehouse: Path) -> None:
    stack = Stack(tmp_path, s3_server, demo_warehouse)
    chance = random.Random(16)
    formats = ["CSV", "JSONL", "PARQUET"]
    ids = stack.insert(
        [{"source": {"table": "payment.invoices"}, "limit": 50, "format": formats[i % 3]} for i in range(REQUESTS)]
    )
    began = time.monotonic()
    in_flight_at_kills = []
    with stack.worker("worker"), stack.instance() as instance:

        def runs() -> list[dg.DagsterRun]:
            return instance.get_runs(dg.RunsFilter(job_name="export_job"))

        def final() -> int:
            return stack.store.count_exports("default", sorted(FINAL))

        for kill in range(KILLS):
            with stack.daemon(f"daemon-{kill}") as daemon:
                target = len(runs()) + chance.randint(3, max(4, REQUESTS // KILLS))
                wait_for(lambda target=target: len(runs()) >= target, f"{target} runs", 300)
                in_flight_at_kills.append(sum(run.status in UNFINISHED for run in runs()))
                if kill % 2:
                    os.killpg(daemon.pid, signal.SIGKILL)  # the daemon and its code server
                else:
                    daemon.send_signal(signal.SIGKILL)  # the daemon alone; its code server is orphaned
                daemon.wait()
        with stack.daemon("daemon-last"):
            wait_for(lambda: final() == REQUESTS, "every export to end", DRAIN_BOUND_SECONDS)
        drained = time.monotonic() - began
        finished = stack.finished_runs(instance)

        records = {export_id: stack.store.get(export_id) for export_id in ids}
        statuses = Counter(record["status"] for record in records.values())
        succeeded = {run.run_id: run.tags["export_id"] for run in finished if run.status == dg.DagsterRunStatus.SUCCESS}
        every_run = Counter(run.status.value for run in finished)
    print(f"\n{REQUESTS} requests drained in {drained:.0f} s through {KILLS} kills; in flight at each kill: "
          f"{in_flight_at_kills}; runs: {dict(every_run)}")  # fmt: skip
    assert statuses == {"SUCCEEDED": REQUESTS}, {
        i: r["error"] for i, r in records.items() if r["status"] != "SUCCEEDED"
    }
    assert Counter(succeeded.values()) == dict.fromkeys(ids, 1), "exactly one successful run per export"
    assert all(succeeded[record["run_id"]] == export_id for export_id, record in records.items())
    objects = stack.objects()
    assert len(objects) == 2 * REQUESTS, "one file and one manifest per export, nothing more"
    assert {key.split("/")[2] for key in objects} == set(ids)


@pytest.mark.parametrize("task_sent", [False, True], ids=["before-the-send", "between-the-send-and-the-tag"])
def test_a_run_whose_launch_was_cut_short_runs_once(
    tmp_path: Path, s3_server, demo_warehouse: Path, task_sent: bool
) -> None:
    # The product's start timeout: without the sending again, monitoring would fail the run after it.
    stack = Stack(tmp_path, s3_server, demo_warehouse, {**MONITORING, "start_timeout_seconds": 180})
    instance_yaml = tmp_path / "dagster_home" / "dagster.yaml"
    shipped = instance_yaml.read_text()
    paused = yaml.safe_load(shipped)
    paused["run_coordinator"]["config"]["max_concurrent_runs"] = 0  # the queue holds every run
    instance_yaml.write_text(yaml.safe_dump(paused))
    (export_id,) = stack.insert([{"source": {"table": "payment.invoices"}, "limit": 50}])
    first_attempt = stack.store.get(export_id)["attempt"]
    with stack.instance() as instance:

        def runs() -> list[dg.DagsterRun]:
            return instance.get_runs(dg.RunsFilter(tags={"export_id": export_id}))

        def run_log() -> list[str]:
            return [entry.message for entry in instance.all_logs(run.run_id)]

        with stack.daemon("daemon-paused") as daemon:
            wait_for(lambda: [run.status for run in runs()] == [dg.DagsterRunStatus.QUEUED], "the run queued", 120)
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        # What the daemon does when it takes a run from the queue, up to where it was killed.
        (run,) = runs()
        instance.report_dagster_event(
            DagsterEvent(DagsterEventType.PIPELINE_STARTING.value, job_name=run.job_name), run_id=run.run_id
        )
        if task_sent:
            with mock.patch.object(instance, "add_run_tags"):  # killed before it could tag the run
                instance.run_launcher.launch_run(LaunchRunContext(instance.get_run_by_id(run.run_id), None))
        started = instance.get_run_by_id(run.run_id)
        assert started.status == dg.DagsterRunStatus.STARTING and DAGSTER_CELERY_TASK_ID_TAG not in started.tags
        instance_yaml.write_text(shipped)

        with stack.daemon("daemon-again"):
            if task_sent:  # both copies wait in the broker before a worker takes the first
                wait_for(lambda: RELAUNCH_MESSAGE in run_log(), "the run sent again", 120)
            with stack.worker("worker", concurrency=1):
                wait_for(lambda: stack.store.get(export_id)["status"] in FINAL, "the export to end", 120)
                (finished,) = stack.finished_runs(instance)
                wait_for(lambda: stack.log("worker").count("] received") == 1 + task_sent, "every copy taken")
                wait_for(lambda: stack.log("worker").count("] succeeded") == 1 + task_sent, "every copy done")
        record = stack.store.get(export_id)
        assert record["status"] == "SUCCEEDED", record["error"]
        assert (record["attempt"], record["lost_runs"], record["run_id"]) == (first_attempt, 0, run.run_id)
        assert finished.run_id == run.run_id and finished.status == dg.DagsterRunStatus.SUCCESS
        assert RELAUNCH_MESSAGE in run_log()
        assert ("Ignoring a run worker that started after the run had already finished." in run_log()) is task_sent
        assert len(stack.objects()) == 2, "one file and one manifest"
