"""`export-pipelines api` in a subprocess on a free loopback port (tests and benchmarks): a real
server over real HTTP, with the given settings as its environment."""

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from export_pipelines.deploy.local_s3 import free_ports


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2):
            return True
    except OSError:
        return False


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
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if process.poll() is not None:
                raise RuntimeError(f"the API exited early, see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not answer within {timeout:.0f}s, see {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
