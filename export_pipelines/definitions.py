"""Everything the Dagster code location serves."""

import dagster as dg

from export_pipelines.jobs import export_job
from export_pipelines.resources import default_resources

defs = dg.Definitions(jobs=[export_job], resources=default_resources())
