"""A PostgreSQL server of a test's own (initdb in a fresh folder, a free port on loopback), which the
test stops and starts again; the machine's shared server is never touched."""

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2

from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines_tests.conftest import wait_for


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian's postgresql package)")
    return found


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class OwnPostgres:
    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        self.port = free_ports(1)[0]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen | None = None
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        subprocess.run(
            _as_owner([_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        command = [_binary("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
                   "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]  # fmt: skip
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(_as_owner(command), stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, "PostgreSQL to accept connections", 60)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open sessions are ended, as in a restart of the server."""
        if self.process is not None and self.process.poll() is None:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            subprocess.run(["kill", "-INT", str(pid)], check=True)
            self.process.wait(timeout=60)
        self.process = None

    def _answers(self) -> bool:
        with contextlib.suppress(psycopg2.OperationalError):
            psycopg2.connect(self.url, connect_timeout=2).close()
            return True
        return False


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="faults-postgres-"))
    folder.chmod(0o755)
    server = OwnPostgres(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
