"""The README quickstart, run as written against a live deployment started like `make dev` starts
it: every command's output must match what the README shows, where `…` stands for text that
differs from run to run (ids, sizes, times) and a line of its own `…` for any number of lines."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export_pipelines.deploy.dev import PROJECT_ROOT
from export_pipelines.settings import DEV_ENVIRONMENT_FILE
from export_pipelines_tests.live import Deployment

Command = tuple[str, list[str]]


def quickstart() -> list[list[Command]]:
    """The console blocks of the README's quickstart: per block, its commands and their output."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("<!-- quickstart:start")[1].split("<!-- quickstart:end -->")[0]
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        commands: list[Command] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
        blocks.append(commands)
    return blocks


def shown_as(expected: list[str], printed: str) -> bool:
    """Whether `printed` is what the README shows, line for line (trailing blanks aside)."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line.strip() == "…" else re.escape(line.rstrip()).replace("…", r"[^\n]*?") + r"\n"
        for line in expected
    )
    return re.fullmatch(pattern, "".join(line.rstrip() + "\n" for line in printed.splitlines())) is not None


def test_the_matcher_rejects_what_the_readme_does_not_show() -> None:
    assert shown_as(["a …", "…", "z"], "a 1\nb\nc\nz\n")
    assert not shown_as(["a …", "z"], "a 1\nb\nz\n")
    assert not shown_as(["row_count      123"], "row_count      124\n")


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """The repository's files in a new folder, as a clone has them (the tests' own environment
    stands in for the one `make dev` installs)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    clone = tmp_path / "export_pipelines"
    for name in listed:
        if (PROJECT_ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, clone / name)
    return clone


def test_readme_quickstart_prints_what_it_shows(deployment: Deployment, fresh_clone: Path, tmp_path: Path) -> None:
    first_shell, second_shell = quickstart()
    assert [command for command, _ in first_shell] == [
        "git clone <this repository> export_pipelines && cd export_pipelines",
        "make dev",
    ]
    # `make dev` runs `export-pipelines dev`, as the deployment fixture did: its output is in dev.log.
    started = [
        line.replace("127.0.0.1:3000", f"127.0.0.1:{deployment.port}").replace(".data/", f"{deployment.data_dir.name}/")
        for line in first_shell[1][1]
    ]
    assert shown_as(started, (deployment.data_dir / "dev.log").read_text())

    # The second shell finds the running deployment through .data/dev.env.json, as next to `make dev`.
    (fresh_clone / ".data").mkdir()
    shutil.copy(deployment.data_dir / DEV_ENVIRONMENT_FILE, fresh_clone / ".data" / DEV_ENVIRONMENT_FILE)
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("EXPORTS_", "AWS_", "DAGSTER_"))
    }
    environment.update(UV_NO_SYNC="1", UV_PROJECT_ENVIRONMENT=sys.prefix)
    if shutil.which("uv") is None:  # uv installed as a module only (python3 -m uv)
        shim = tmp_path / "bin" / "uv"
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nexec {shutil.which("python3")} -m uv "$@"\n')
        shim.chmod(0o755)
        environment["PATH"] = f"{shim.parent}:{environment['PATH']}"
    for command, expected in second_shell:
        done = subprocess.run(
            ["bash", "-c", command], cwd=fresh_clone, env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"$ {command}\n{done.stdout}"
        assert shown_as(expected, done.stdout), f"$ {command} printed:\n{done.stdout}\nthe README shows:\n" + "\n".join(
            expected
        )
