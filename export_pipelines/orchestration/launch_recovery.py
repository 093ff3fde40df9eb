"""Runs whose launch was cut short. To launch a queued run, the daemon marks it STARTING, then
hands its task to the broker, then tags the run with the task's id; a daemon killed between the
first two steps leaves a STARTING run that no worker will ever receive (run monitoring would fail
it after `start_timeout_seconds`, and the export or cache refresh with it). `interrupted_launch_sensor`
sends such a run to the workers again.

A run is taken for cut short when it has been STARTING for `LAUNCH_GRACE` without the tag. A daemon
killed after handing over the task but before the tag leaves the same mark; its run is then sent
twice under one task id (the run id, see `ExportRunLauncher`), and the second copy finds the run
under way or finished, which Dagster's run worker ignores. Only two copies taken by two idle workers
at the same instant would both find it STARTING and both run it: that needs the first still in the
broker `LAUNCH_GRACE` after such a kill.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.launcher import LaunchRunContext
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from export_pipelines.orchestration.workers import ExportRunLauncher

# A launch takes milliseconds; a live daemon slower than this could see its run sent twice while both
# copies find it STARTING. Well below run monitoring's start timeout (180 s), which fails the run.
LAUNCH_GRACE = timedelta(seconds=30)
RELAUNCH_MESSAGE = (
    "The launch of this run was cut short (the daemon stopped before the run reached the broker): "
    "sent to the run workers again."
)


def relaunch_interrupted(instance: dg.DagsterInstance, launched_before: datetime) -> list[str]:
    """Send to the workers again every run that has been STARTING since before `launched_before`
    without reaching the broker; returns their run ids."""
    launcher = instance.run_launcher
    if not isinstance(launcher, ExportRunLauncher):
        return []  # another launcher leaves other marks: nothing here to recognize
    relaunched = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING])):
        run = record.dagster_run
        if DAGSTER_CELERY_TASK_ID_TAG in run.tags:
            continue  # the launcher tags a run once its task is in the broker
        launched = instance.get_run_stats(run.run_id).launch_time
        if launched is None or launched > launched_before.timestamp():
            continue
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        instance.report_engine_event(RELAUNCH_MESSAGE, run)
        relaunched.append(run.run_id)
    return relaunched


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends to the run workers again a run whose launch was cut short (the daemon stopped after "
    "marking it STARTING, before its task reached the broker), instead of leaving run monitoring to fail it.",
)
def interrupted_launch_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    relaunched = relaunch_interrupted(context.instance, datetime.now(UTC) - LAUNCH_GRACE)
    for run_id in relaunched:
        context.log.warning(f"run {run_id}: launch cut short; sent to the run workers again")
    return dg.SkipReason(f"{len(relaunched)} interrupted launch(es) sent again")
