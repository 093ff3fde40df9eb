"""Everything the Dagster code location serves."""

import dagster as dg

from export_pipelines.orchestration.cache_refresh import (
    cache_refresh_failure_sensor,
    cache_refresh_job,
    cache_refresh_sensor,
    cached_tables,
)
from export_pipelines.orchestration.expiry import expire_exports_job, expire_exports_schedule
from export_pipelines.orchestration.jobs import export_job
from export_pipelines.orchestration.launch_recovery import interrupted_launch_sensor
from export_pipelines.orchestration.resources import default_resources
from export_pipelines.orchestration.sensors import (
    export_cancel_sensor,
    export_failure_sensor,
    export_reconciliation_sensor,
    export_request_sensor,
)

defs = dg.Definitions(
    assets=[cached_tables],
    jobs=[export_job, expire_exports_job, cache_refresh_job],
    schedules=[expire_exports_schedule],
    sensors=[
        export_request_sensor,
        export_failure_sensor,
        export_cancel_sensor,
        export_reconciliation_sensor,
        cache_refresh_sensor,
        cache_refresh_failure_sensor,
        interrupted_launch_sensor,
    ],
    resources=default_resources(),
)
