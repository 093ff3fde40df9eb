"""The README's HTTP API example (create a key, create an export with curl, wait for it, download
it, list), replayed in one shell against a live deployment started like `make dev` starts it;
every command's output must match what the README shows."""

from pathlib import Path

from export_pipelines_tests.live import Deployment
from export_pipelines_tests.readme import console_blocks, fresh_clone, replay, second_shell


def test_readme_http_api_example_prints_what_it_shows(deployment: Deployment, tmp_path: Path) -> None:
    (block,) = console_blocks("http")
    commands = [(command.replace("http://127.0.0.1:8000", deployment.api_url), shown) for command, shown in block]
    clone = fresh_clone(tmp_path / "export_pipelines")
    replay(commands, clone, second_shell(clone, deployment, tmp_path))
    assert (clone / "charges.csv").read_text().count("\n") == 1001  # the header and 1,000 rows
