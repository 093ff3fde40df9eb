"""The daemon SIGKILLed at random moments of a drain of table requests, alone and with its whole process
group (its code server), and started again each time: every request ends SUCCEEDED within the bound,
with exactly one successful run, one file and one manifest; no export is left RUNNING."""

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from export_pipelines_tests.conftest import wait_for
from export_pipelines_tests.faults.soak import scaled
from export_pipelines_tests.faults.stack import Stack

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
