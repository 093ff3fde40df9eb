"""The export commands of `export-pipelines`, run in process against the real S3 server and a
request table of their own: show, cancel, retry, delete, and the one-line errors. Submitting
with --wait and downloading through a live deployment is in test_live_deployment.py."""

import pytest

from export_pipelines.cli.main import main
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
    ],
)
def test_errors_are_one_line(export_env: ExportEnvironment, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(export_env.tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out
