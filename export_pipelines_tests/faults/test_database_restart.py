"""The request database (PostgreSQL) stopped in the middle of a drain and started again: producers get
a clear error while it is down and succeed when they try again, the request sensor resumes, runs caught
mid-way ride the outage out (their steps are run again) or are replaced by the system, and every
request ends SUCCEEDED with one successful run, one file and one manifest."""

import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from export_pipelines.store.database import database_problem
from export_pipelines_tests.conftest import wait_for
from export_pipelines_tests.faults.own_postgres import own_postgres
from export_pipelines_tests.faults.soak import scaled
from export_pipelines_tests.faults.stack import Stack

REQUESTS = scaled(40, 200)
DOWN_SECONDS = 15
FINAL = ["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]


def _requests(count: int) -> list[dict]:
    """Small exports, and every fourth one large enough to be mid-way when the database goes."""
    return [
        {"source": {"table": "payment.large_charges"}, "limit": 300_000, "format": "CSV", "compression": "GZIP"}
        if i % 4 == 0
        else {"source": {"table": "payment.invoices"}, "limit": 50}
        for i in range(count)
    ]


@pytest.mark.timeout(900)
def test_the_request_database_restarted_mid_drain(tmp_path: Path, s3_server, fault_warehouse: Path) -> None:
    with own_postgres() as postgres:
        stack = Stack(tmp_path, s3_server, fault_warehouse, database_url=postgres.url)
        ids = stack.insert(_requests(REQUESTS // 2))
        with stack.worker("worker"), stack.daemon("daemon"), stack.instance() as instance:
            wait_for(lambda: stack.store.count_exports("default", ["SUCCEEDED"]) >= 3, "the drain to be under way")
            running = stack.store.count_exports("default", ["RUNNING"])
            postgres.stop()
            with pytest.raises(sa.exc.OperationalError) as refused:
                stack.insert(_requests(1))
            threading.Event().wait(DOWN_SECONDS)  # the length of the outage
            postgres.start()
            ids += stack.insert(_requests(REQUESTS - len(ids)))  # the producer tries again
            began = time.monotonic()
            wait_for(lambda: stack.store.count_exports("default", FINAL) == REQUESTS, "every export to end", 600)
            drained = time.monotonic() - began
            runs = stack.finished_runs(instance)
            retried_steps = sum(
                len(instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records)
                for run in runs
            )
        records = {export_id: stack.store.get(export_id) for export_id in ids}
    lost = sum(record["lost_runs"] for record in records.values())
    print(f"\n{running} exports RUNNING when PostgreSQL stopped for {DOWN_SECONDS} s; steps run again: "
          f"{retried_steps}, runs replaced: {lost}; the rest drained in {drained:.0f} s")  # fmt: skip
    assert "Connection refused" in database_problem(refused.value), database_problem(refused.value)
    assert Counter(r["status"] for r in records.values()) == {"SUCCEEDED": REQUESTS}, {
        i: r["error"] for i, r in records.items() if r["status"] != "SUCCEEDED"
    }
    succeeded = Counter(run.tags["export_id"] for run in runs if run.status == dg.DagsterRunStatus.SUCCESS)
    assert succeeded == dict.fromkeys(ids, 1)
    assert len(stack.objects()) == 2 * REQUESTS
    assert retried_steps + lost > 0, "the outage met no run (else this tests nothing)"
