"""The request table as a fast door: rows inserted by any producer get their run launched within a
fraction of a second, instead of on the request sensor's next tick (Dagster's sensor daemon ticks
at most every 5 s). Runs in the REST API's process when it can launch runs ($DAGSTER_UI_URL);
every launch is claimed in the table first, so several API processes never launch a row twice, and
the sensor stays the safety net."""

import logging
import threading

from export_pipelines.service.exports import ExportService

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.25
# A launch through the webserver costs most of a second of its CPU: the watch launches the few new
# rows a pass finds, and leaves a burst (more than that) to the request sensor, which creates its runs
# in batches (measured: 60 rows inserted at once drained at 31 a minute launched one by one, 43 by
# the sensor).
LAUNCHES_PER_PASS = 4


def watch_request_table(service: ExportService, dagster_url: str, stop: threading.Event) -> None:
    """Until `stop` is set: launch the runs of PENDING rows no door has launched yet, through the
    Dagster webserver at `dagster_url`."""
    while not stop.is_set():
        try:
            waiting = service.store.unlaunched(LAUNCHES_PER_PASS + 1)
            burst = len(waiting) > LAUNCHES_PER_PASS  # the sensor's
            # All claimed before the first launch: the sensor leaves every one of them to this watch.
            claimed = [] if burst else [r for r in waiting if service.store.claim_launch(r["id"], r["attempt"])]
            for record in claimed:
                service.launch_claimed(record, "table", dagster_url)
        except Exception:  # the sensor covers what this misses; keep watching
            logger.exception("watching the request table failed; retrying")
        stop.wait(WATCH_SECONDS)


def start_watching(service: ExportService, dagster_url: str) -> threading.Event:
    """Watch the request table on a thread of its own; set the event returned to stop."""
    stop = threading.Event()
    threading.Thread(
        target=watch_request_table, args=(service, dagster_url, stop), name="request-table-watch", daemon=True
    ).start()
    return stop
