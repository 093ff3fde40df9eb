"""The README's dev command: it starts S3, builds the demo warehouse, serves the Dagster UI with
the export_job code location and the REST API (its URL in dev.env.json), and Ctrl-C (or `kill`,
also of a background job) stops every process it started.

Exports through a live deployment are in test_live_deployment.py; here only start-up and
shutdown are covered.
"""

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from export_pipelines.deploy import readiness
from export_pipelines.deploy.dev import PROJECT_ROOT, dev_command
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines_tests.conftest import wait_for

DEADLINE_SECONDS = 120


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def answers(port: int, path: str = "/server_info") -> bool:
    return readiness.answers(f"http://127.0.0.1:{port}{path}")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a job started with &


@pytest.mark.parametrize(
    ("stop_signal", "started_in_background"),
    [(signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["ctrl-c", "kill-background-job"],
)
def test_dev_command_serves_export_job_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals, started_in_background: bool
) -> None:
    port, api_port = free_ports(2)
    dev = subprocess.Popen(
        dev_command(port, api_port, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ignore_sigint if started_in_background else None,  # noqa: PLW1509 - no threads yet
    )
    try:
        wait_for(lambda: answers(port), "the Dagster UI")
        wait_for(lambda: answers(api_port, "/healthz"), "the REST API")
        dev_environment = json.loads((tmp_path / "dev.env.json").read_text())
        assert dev_environment["EXPORTS_API_URL"] == f"http://127.0.0.1:{api_port}"
        jobs = wait_for(
            lambda: graphql(
                port, "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"
            )["data"]["repositoriesOrError"]["nodes"],
            "the code location",
        )
        assert "export_job" in {job["name"] for node in jobs for job in node["jobs"]}
        assert (tmp_path / "warehouse.duckdb").exists()
        assert json.loads((tmp_path / "s3" / "keys.json").read_text())["access_key_id"]
        started = {child.pid for child in psutil.Process(dev.pid).children(recursive=True)}
        assert started
        # The worker has a slot for every run the queue lets run at once: none waits in the broker.
        at_once = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["run_coordinator"]["config"]
        worker = next(child for child in psutil.Process(dev.pid).children() if "worker" in child.cmdline())
        slots = max(os.cpu_count() or 1, at_once["max_concurrent_runs"])
        wait_for(lambda: len(worker.children()) == slots, f"the run worker's {slots} pool processes")
    finally:
        dev.send_signal(stop_signal)
        output, _ = dev.communicate(timeout=DEADLINE_SECONDS)
    assert dev.returncode == 0, output
    assert f"Dagster UI   http://127.0.0.1:{port}" in output
    assert f"REST API     http://127.0.0.1:{api_port}" in output
    wait_for(
        lambda: not [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"],
        "every started process to stop",
    )
    assert not answers(port) and not answers(api_port, "/healthz")
