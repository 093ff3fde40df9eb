"""`export-pipelines api` in a subprocess on a free loopback port (tests and benchmarks): a real
server over real HTTP, with the given settings as its environment."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.deploy.readiness import stop, wait_until_ready


@contextlib.contextmanager
def running_api(settings: dict[str, str], log: Path, timeout: float = 60.0) -> Iterator[str]:
    """Yields the URL of `export-pipelines api` started with `settings` (no other EXPORTS_*
    variable and no DAGSTER_HOME of this process leak in) once `/healthz` answers."""
    port = free_ports(1)[0]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_HOME"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "export_pipelines.cli", "api", "--port", str(port)],
        env={**environment, **settings},
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, [f"{url}/healthz"], "the API", log, timeout)
        yield url
    finally:
        stop(process, signal.SIGTERM, 20)
