"""The export commands of `export-pipelines`, run in process against the real S3 server and a
request table of their own: show, cancel, retry, delete, the dry run, and the one-line errors. Submitting
with --wait and downloading through a live deployment is in test_live_deployment.py."""

import os
import subprocess
import sys

import pytest

from export_pipelines.cli.main import main
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.service.exports import ExportService
from export_pipelines_tests.conftest import ExportEnvironment


def test_show_cancel_retry_delete(export_env: ExportEnvironment, monkeypatch, capsys) -> None:
    monkeypatch.chdir(export_env.tmp_path)  # no dev deployment here
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    export_id = ExportService.from_environment().submit({"source": {"table": "payment.charges"}, "limit": 5})

    assert main(["show", export_id]) == 0
    shown = capsys.readouterr().out
    assert export_id in shown and "PENDING" in shown and '"limit": 5' in shown
    assert main(["cancel", export_id]) == 0
    assert "CANCELLED" in capsys.readouterr().out
    assert main(["retry", export_id]) == 0
    assert "attempt 1" in capsys.readouterr().out
    assert main(["list", "--status", "pending"]) == 0
    assert export_id in capsys.readouterr().out
    assert main(["cancel", export_id]) == 0
    assert main(["delete", export_id]) == 0
    assert "deleted" in capsys.readouterr().out
    assert main(["show", export_id]) == 1
    assert f"error: no export {export_id}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", '{"source": {"table": "payment.nope"}}'], "unknown table 'payment.nope'"),
        (["submit", "{oops"], "request is not valid JSON"),
        (["download", "missing", "--project", "default"], "no export missing"),
        (["list", "--status", "DONE"], "unknown status(es) DONE"),
        (["submit", '{"source": {"table": "payment.charges"}}', "--dry-run"], "exceeded the 1,000 row export limit"),
    ],
)
def test_errors_are_one_line(export_env: ExportEnvironment, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(export_env.tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("EXPORTS_MAX_ROWS", "1000")
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["show", "x"],
        ["submit", '{"source": {"table": "payment.charges"}}'],
        ["keys", "list"],
        ["keys", "create", "--project", "p", "--user-id", "u"],
        ["cache", "list", "--project", "p"],
        ["migrate"],
    ],
)
def test_an_unreachable_request_database_is_one_line(export_env: ExportEnvironment, tmp_path, argv) -> None:
    # A real process, as a user runs it: no traceback, no password, exit 1.
    (port,) = free_ports(1)
    url = f"postgresql://reader:sekret@127.0.0.1:{port}/exports"
    done = subprocess.run(
        [sys.executable, "-m", "export_pipelines.cli", *argv],
        env={**os.environ, "EXPORTS_DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"error: the request database postgresql://reader:***@127.0.0.1:{port}/exports cannot be used: "
        f'connection failed: connection to server at "127.0.0.1", port {port} failed: Connection refused'
    ], done.stdout
    assert "Traceback" not in done.stderr and "sekret" not in done.stdout + done.stderr


def test_an_unreachable_s3_server_is_one_line(export_env: ExportEnvironment, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    record = export_env.record(export_env.run({"source": {"table": "payment.charges"}, "limit": 3}))
    (port,) = free_ports(1)
    monkeypatch.setenv("EXPORTS_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    assert main(["download", record["id"], "--to", str(tmp_path / "out")]) == 1
    assert "error: a download link cannot be fetched: [Errno 111] Connection refused" in capsys.readouterr().out
    assert main(["delete", record["id"]]) == 1
    out = capsys.readouterr().out
    assert f'error: S3 cannot be used: Could not connect to the endpoint URL: "http://127.0.0.1:{port}/' in out
    assert export_env.store.get(record["id"]) is not None  # nothing was lost


def test_submit_dry_run_previews_and_queues_nothing(export_env: ExportEnvironment, monkeypatch, capsys) -> None:
    monkeypatch.chdir(export_env.tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    request = '{"source": {"table": "payment.invoices"}, "columns": ["id", "total"], "order_by": ["id"], "limit": 25}'
    assert main(["submit", request, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "the export would write 25 rows (nothing was queued)" in out
    assert "DECIMAL(18,4)" in out and "inv_000000" in out and "inv_000009" in out and "inv_000010" not in out
    assert export_env.store.list_exports("default", None, 10, None) == []


def test_show_draws_the_progress_of_a_running_export(export_env: ExportEnvironment, monkeypatch, capsys) -> None:
    monkeypatch.chdir(export_env.tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    request = {"source": {"table": "payment.charges"}, "limit": 3000}
    export_id = ExportService.from_environment().submit(request)
    export_env.store.start(export_id, "default", request, None, "run-1")
    export_env.store.progress(export_id, 1200, 3000)

    assert main(["show", export_id]) == 0
    shown = capsys.readouterr().out
    assert "RUNNING" in shown and "40%  1,200 of 3,000 rows" in shown and "━" in shown, shown
