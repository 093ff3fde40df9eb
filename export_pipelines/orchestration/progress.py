"""Live progress of a running export: the rows written so far go to the request table (which the
REST API and the CLI read) at most every PROGRESS_SECONDS, and to the run page in the Dagster UI as
a log line at most every LOG_SECONDS (an export written faster logs none: every line is an event
Dagster stores, and the serialize step logs the files written anyway)."""

import contextlib
import time
from collections.abc import Callable

import sqlalchemy as sa

from export_pipelines.store.exports import ExportStore

PROGRESS_SECONDS = 0.5
LOG_SECONDS = 1.0


class ProgressReporter:
    """Takes the running row count from the writer (`serialize_to_s3`'s `on_rows`); the total is
    recorded, with 0 rows written, when the reporter is made, before writing starts. Progress is
    a courtesy: while the request database cannot be reached, the export goes on without it."""

    def __init__(self, store: ExportStore, export_id: str, total_rows: int, log: Callable[[str], None]):
        self.store = store
        self.export_id = export_id
        self.total_rows = total_rows
        self.log = log
        self._recorded_at = self._logged_at = time.monotonic()
        self._record(0)

    def __call__(self, rows_written: int) -> None:
        now = time.monotonic()
        done = rows_written >= self.total_rows
        if done or now - self._recorded_at >= PROGRESS_SECONDS:
            self._recorded_at = now
            self._record(rows_written)
        if not done and now - self._logged_at >= LOG_SECONDS:
            self._logged_at = now
            percent = 100 * rows_written // self.total_rows
            self.log(f"{rows_written:,} of {self.total_rows:,} rows written ({percent}%)")

    def _record(self, rows_written: int) -> None:
        with contextlib.suppress(sa.exc.OperationalError):  # the next report tries again
            self.store.progress(self.export_id, rows_written, self.total_rows)
