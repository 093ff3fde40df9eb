"""A run whose launch was cut short (STARTING, its task never handed to the broker, as a daemon killed
mid-launch leaves it) is sent to the workers again, once, under its own run id as task id; a run
still within the grace of its launch and a run that reached the broker are left alone; run monitoring
reads the state of a run's task even when the run was never tagged with it. Checked on the broker of
the embedded default: the message files it holds."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.test_utils import create_run_for_test
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from export_pipelines.orchestration import launch_recovery
from export_pipelines.orchestration.launch_recovery import (
    RELAUNCH_MESSAGE,
    interrupted_launch_sensor,
    relaunch_interrupted,
)
from export_pipelines_tests.conftest import environment

LAUNCHER = {"module": "export_pipelines.orchestration.workers", "class": "ExportRunLauncher"}


@dg.op
def _nothing() -> None:
    pass


@dg.job
def probe_job() -> None:
    _nothing()


@pytest.fixture
def broker(tmp_path: Path) -> Path:
    return tmp_path / "broker"


@pytest.fixture
def instance(broker: Path) -> Iterator[dg.DagsterInstance]:
    with (
        environment({"EXPORTS_BROKER_URL": f"filesystem://{broker}"}),
        dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as test_instance,
    ):
        yield test_instance


def _starting_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A run as the daemon leaves it when killed right after marking it STARTING."""
    run = create_run_for_test(
        instance, job_name="probe_job", job_code_origin=dg.reconstructable(probe_job).get_python_origin()
    )
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.PIPELINE_STARTING.value, job_name=run.job_name), run_id=run.run_id
    )
    return instance.get_run_by_id(run.run_id)


def _tasks_in(broker: Path) -> list[str]:
    """The ids of the tasks waiting in the broker's folder."""
    return [json.loads(message.read_text())["headers"]["id"] for message in (broker / "queue").glob("*.msg")]


def test_a_launch_cut_short_is_sent_again_once(instance: dg.DagsterInstance, broker: Path, monkeypatch) -> None:
    run = _starting_run(instance)
    assert run.status == dg.DagsterRunStatus.STARTING and not _tasks_in(broker)
    monkeypatch.setattr(launch_recovery, "LAUNCH_GRACE", timedelta(0))

    result = interrupted_launch_sensor(dg.build_sensor_context(instance=instance))

    assert result.skip_message == "1 interrupted launch(es) sent again"
    assert _tasks_in(broker) == [run.run_id]
    relaunched = instance.get_run_by_id(run.run_id)
    assert relaunched.status == dg.DagsterRunStatus.STARTING
    assert relaunched.tags[DAGSTER_CELERY_TASK_ID_TAG] == run.run_id
    events = [entry.message for entry in instance.all_logs(run.run_id)]
    assert RELAUNCH_MESSAGE in events
    assert relaunch_interrupted(instance, datetime.now(UTC)) == []  # it reached the broker now
    assert _tasks_in(broker) == [run.run_id]


def test_a_launch_within_its_grace_is_left_to_the_daemon(instance: dg.DagsterInstance, broker: Path) -> None:
    run = _starting_run(instance)
    assert relaunch_interrupted(instance, datetime.now(UTC) - timedelta(seconds=60)) == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING
    assert not (broker / "queue").exists() or not _tasks_in(broker)


def test_a_run_that_reached_the_broker_is_not_sent_twice(instance: dg.DagsterInstance, broker: Path) -> None:
    run = _starting_run(instance)
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert _tasks_in(broker) == [run.run_id]  # the task id is the run id
    assert relaunch_interrupted(instance, datetime.now(UTC) + timedelta(seconds=1)) == []
    assert _tasks_in(broker) == [run.run_id]


def test_run_monitoring_reads_the_task_of_a_run_that_was_never_tagged(instance: dg.DagsterInstance) -> None:
    run = _starting_run(instance)  # a daemon killed after sending the task leaves it untagged too
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(run).status == WorkerStatus.UNKNOWN  # no state yet: PENDING
    launcher.celery.backend.store_result(run.run_id, None, "FAILURE")
    assert launcher.check_run_worker_health(run) == CheckRunHealthResult(WorkerStatus.FAILED, "Celery task failed.")
