"""The README quickstart, run as written against a live deployment started like `make dev` starts
it: every command's output must match what the README shows, where `…` stands for text that
differs from run to run (ids, sizes, times) and a line of its own `…` for any number of lines."""

from pathlib import Path

import pytest

from export_pipelines_tests.live import Deployment
from export_pipelines_tests.readme import console_blocks, fresh_clone, replay, second_shell, shown_as


def test_the_matcher_rejects_what_the_readme_does_not_show() -> None:
    assert shown_as(["a …", "…", "z"], "a 1\nb\nc\nz\n")
    assert not shown_as(["a …", "z"], "a 1\nb\nz\n")
    assert not shown_as(["row_count      123"], "row_count      124\n")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return fresh_clone(tmp_path / "export_pipelines")


def test_readme_quickstart_prints_what_it_shows(deployment: Deployment, clone: Path, tmp_path: Path) -> None:
    first_shell, second = console_blocks("quickstart")
    assert [command for command, _ in first_shell] == [
        "git clone <this repository> export_pipelines && cd export_pipelines",
        "make dev",
    ]
    # `make dev` runs `export-pipelines dev`, as the deployment fixture did: its output is in dev.log.
    started = [
        line.replace("127.0.0.1:3000", f"127.0.0.1:{deployment.port}")
        .replace("http://127.0.0.1:8000", deployment.api_url)
        .replace(".data/", f"{deployment.data_dir.name}/")
        for line in first_shell[1][1]
    ]
    assert shown_as(started, (deployment.data_dir / "dev.log").read_text())
    replay(second, clone, second_shell(clone, deployment, tmp_path))
