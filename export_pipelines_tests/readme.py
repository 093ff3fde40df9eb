"""The README's console examples as tests replay them: the blocks between `<!-- NAME:start` and
`<!-- NAME:end -->`, their commands run in one bash shell (so that variables carry over) in a copy
of the repository next to a live deployment, and each command's output matched against what the
README shows, where `…` stands for text that differs from run to run and a line of its own `…`
for any number of lines."""

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from export_pipelines.deploy.dev import PROJECT_ROOT
from export_pipelines.settings import DEV_ENVIRONMENT_FILE
from export_pipelines_tests.live import Deployment

Command = tuple[str, list[str]]


def console_blocks(name: str) -> list[list[Command]]:
    """The console blocks of a README section: per block, its commands (continued lines joined)
    and what each prints."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split(f"<!-- {name}:start")[1].split(f"<!-- {name}:end -->")[0]
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        commands: list[Command] = []
        continued = False
        for line in block.splitlines():
            if continued:
                commands[-1] = (commands[-1][0] + "\n" + line, [])
            elif line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
            # A command goes on past a trailing backslash, or while a single-quoted string is open.
            continued = line.endswith("\\") or (bool(commands) and commands[-1][0].count("'") % 2 == 1)
        blocks.append(commands)
    return blocks


def shown_as(expected: list[str], printed: str) -> bool:
    """Whether `printed` is what the README shows, line for line (trailing blanks aside)."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line.strip() == "…" else re.escape(line.rstrip()).replace("…", r"[^\n]*?") + r"\n"
        for line in expected
    )
    return re.fullmatch(pattern, "".join(line.rstrip() + "\n" for line in printed.splitlines())) is not None


def fresh_clone(target: Path) -> Path:
    """The repository's files in `target`, as a clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (PROJECT_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, target / name)
    return target


def second_shell(clone: Path, deployment: Deployment, tmp_path: Path) -> dict[str, str]:
    """The environment of a second shell next to `make dev`: it finds the running deployment
    through .data/dev.env.json, and `uv run` uses the tests' own environment."""
    (clone / ".data").mkdir(exist_ok=True)
    shutil.copy(deployment.data_dir / DEV_ENVIRONMENT_FILE, clone / ".data" / DEV_ENVIRONMENT_FILE)
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("EXPORTS_", "AWS_", "DAGSTER_"))
    }
    environment.update(UV_NO_SYNC="1", UV_PROJECT_ENVIRONMENT=sys.prefix)
    if shutil.which("uv") is None:  # uv installed as a module only (python3 -m uv)
        shim = tmp_path / "bin" / "uv"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\nexec {shutil.which("python3")} -m uv "$@"\n')
        shim.chmod(0o755)
        environment["PATH"] = f"{shim.parent}:{environment['PATH']}"
    return environment


def replay(commands: list[Command], cwd: Path, environment: dict[str, str], timeout: float = 600) -> None:
    """Run the commands in one bash shell; each must exit 0 and print what the README shows."""
    marker = f"@@{uuid.uuid4().hex}@@"
    script = "".join(f'echo {marker}\n{command}\necho "{marker} $?"\n' for command, _ in commands)
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )  # fmt: skip
    outputs = re.findall(rf"{marker}\n(.*?)\n?{marker} (\d+)\n", done.stdout, re.S)
    assert len(outputs) == len(commands), done.stdout
    for (command, expected), (printed, status) in zip(commands, outputs, strict=True):
        assert status == "0", f"$ {command}\n{printed}"
        assert shown_as(expected, printed), f"$ {command} printed:\n{printed}\nthe README shows:\n" + "\n".join(
            expected
        )
