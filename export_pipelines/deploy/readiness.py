"""A server started as a subprocess (tests, benchmarks): waiting until it answers, and stopping it."""

import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def answers(url: str) -> bool:
    """Whether `url` answers an HTTP GET with a success status."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def wait_until_ready(
    process: subprocess.Popen,
    urls: list[str],
    what: str,
    log: Path,
    timeout: float,
    also: Callable[[], bool] = lambda: True,
) -> None:
    """Return once every url answers and `also()` holds; fail if `process` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not (all(answers(url) for url in urls) and also()):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early, see {log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout:.0f}s, see {log}")
        time.sleep(0.2)


def stop(process: subprocess.Popen, stop_signal: signal.Signals, timeout: float) -> None:
    """Send `stop_signal`, then kill the process if it has not ended within `timeout` seconds."""
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
