"""Shared fixtures: a real SeaweedFS S3 server, the demo warehouse, an isolated request table.

The S3 server and the warehouse are started/built once per session; every test gets its own
key prefix and its own SQLite request table, so tests never see each other's exports.
"""

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import psycopg2
import pytest
import sqlalchemy as sa

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse
from export_pipelines.deploy.dev import PROJECT_ROOT
from export_pipelines.deploy.local_s3 import LocalS3, run_local_s3
from export_pipelines.engine.artifacts import list_keys
from export_pipelines.orchestration.jobs import export_job
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from export_pipelines_tests.live import Deployment
    from export_pipelines_tests.rest import ApiServer

BUCKET = "exports"
POSTGRES_ADMIN_DSN = os.environ.get("EXPORTS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    with run_local_s3(tmp_path_factory.mktemp("s3"), buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_warehouse(tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb")


@pytest.fixture(scope="session")
def browser() -> Iterator["Browser"]:
    """Headless Chromium for the tests of the Dagster UI."""
    from export_pipelines_tests.browser import chromium

    with chromium() as started:
        yield started


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator["Deployment"]:
    """One live dev deployment shared by the end-to-end tests."""
    from export_pipelines_tests.live import live_deployment

    with live_deployment(tmp_path_factory.mktemp("live")) as started:
        yield started


@dataclass
class ExportEnvironment:
    """One test's view of the service: its prefix in the shared bucket, its request table."""

    s3: LocalS3
    warehouse: Path
    prefix: str
    database_url: str
    tmp_path: Path

    @property
    def store(self) -> ExportStore:
        return ExportStore(engine_for(self.database_url))

    def run(
        self,
        request: dict[str, Any],
        job: dg.JobDefinition = export_job,
        tags: dict[str, str] | None = None,
        **resources: Any,
    ) -> dg.ExecuteInProcessResult:
        return job.execute_in_process(run_config=request, resources=resources or None, raise_on_error=False, tags=tags)

    def record(self, result: dg.ExecuteInProcessResult) -> dict[str, Any]:
        record = self.store.find_by_run(result.run_id)
        assert record is not None, "the export left no row in export_requests"
        return record

    def keys(self, below: str = "") -> list[str]:
        return list_keys(self.s3.client(), BUCKET, self.prefix + below)

    def download(self, key: str) -> Path:
        target = self.tmp_path / "downloads" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        self.s3.client().download_file(BUCKET, key, str(target))
        return target


@pytest.fixture
def export_env(
    s3_server: LocalS3, demo_warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request
) -> ExportEnvironment:
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:60] + f"-{uuid.uuid4().hex[:6]}/"
    database_url = use_settings(monkeypatch, s3_server, demo_warehouse, tmp_path, prefix)
    return ExportEnvironment(s3_server, demo_warehouse, prefix, database_url, tmp_path)


def use_settings(
    monkeypatch: pytest.MonkeyPatch,
    s3: LocalS3,
    warehouse: Path,
    tmp_path: Path,
    prefix: str,
    max_rows: int | None = None,
) -> str:
    """Point this process's service (runs in process) at `s3`, `warehouse`, a request table of its own
    in `tmp_path` and `prefix`; returns the request table's URL."""
    database_url = f"sqlite:///{tmp_path / 'exports.db'}"
    for name, value in {
        **s3.environment(),
        "EXPORTS_WAREHOUSE": str(warehouse),
        "EXPORTS_DATABASE_URL": database_url,
        "EXPORTS_BUCKET": BUCKET,
        "EXPORTS_PREFIX": prefix,
    }.items():
        monkeypatch.setenv(name, value)
    if max_rows is None:
        monkeypatch.delenv("EXPORTS_MAX_ROWS", raising=False)
    else:
        monkeypatch.setenv("EXPORTS_MAX_ROWS", str(max_rows))
    return database_url


@contextmanager
def fresh_postgres_database(label: str) -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards; fails loudly when PostgreSQL is missing."""
    name = f"exports_{label}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(POSTGRES_ADMIN_DSN, connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_ADMIN_DSN} and is not reachable: {error}")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = re.sub(r"/[^/]*$", f"/{name}", POSTGRES_ADMIN_DSN)
    try:
        yield url
    finally:
        engine_for(url).dispose()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for the session."""
    with fresh_postgres_database("test") as url:
        yield url


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` in this process's environment for the duration (runs read it at start)."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`command` in a session of its own (so that stopping it stops what it started), its output in `log`."""
    output = open(log, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        command, env=env, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def download(url: str) -> bytes:
    """The body behind a (presigned) link."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def table_columns(database_url: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine_for(database_url)).get_columns("export_requests")}


PEAKA_ROWS = 993  # the row count of Peaka's own create example


@pytest.fixture(scope="session")
def api_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo warehouse plus `payment.peaka_charges`, a table with the columns of Peaka's example."""
    import duckdb

    warehouse = build_demo_warehouse(tmp_path_factory.mktemp("api-warehouse") / "warehouse.duckdb")
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute(
            f"CREATE TABLE payment.peaka_charges AS SELECT id, created_at AS created, amount, currency "
            f"FROM payment.charges ORDER BY id LIMIT {PEAKA_ROWS}"
        )
    return warehouse


@pytest.fixture(scope="session")
def api_catalog() -> Iterator[str]:
    """A PostgreSQL database as the REST API tests' catalog: `public.charges` (1,000 rows)."""
    with fresh_postgres_database("api_catalog") as url:
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE public.charges (id bigint PRIMARY KEY, amount numeric(12,2), currency text, "
                "updated_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor.execute(
                "INSERT INTO public.charges SELECT g, g / 8.0, CASE WHEN g % 3 = 0 THEN 'USD' ELSE 'EUR' END, "
                "timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 1000) g"
            )
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def api_server(
    request: pytest.FixtureRequest,
    s3_server: LocalS3,
    api_warehouse: Path,
    api_catalog: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator["ApiServer"]:
    """`export-pipelines api` over its own request table, on SQLite and on PostgreSQL."""
    from export_pipelines_tests.rest import running_api

    folder = tmp_path_factory.mktemp(f"api-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database_url = f"sqlite:///{folder / 'exports.db'}"
        else:
            database_url = stack.enter_context(fresh_postgres_database("api"))
        settings = {
            **s3_server.environment(),
            "EXPORTS_WAREHOUSE": str(api_warehouse),
            "EXPORTS_DATABASE_URL": database_url,
            "EXPORTS_BUCKET": BUCKET,
            "EXPORTS_PREFIX": f"api-{request.param}/",
            "EXPORTS_CATALOGS": str(_catalogs_file(folder / "catalogs.yaml", api_catalog)),
            "EXPORTS_CACHE_DIR": str(folder / "cache"),
        }
        yield stack.enter_context(running_api(settings, folder / "api.log"))


CATALOG_ID = "627249916703408649"  # the catalog id of the cache API's own example


@dataclass
class CatalogEnvironment:
    """A test's cached-tables setup: a PostgreSQL database as catalog `stripe`, declared in a catalogs
    file, a cache folder, on top of the test's export environment."""

    exports: ExportEnvironment
    url: str
    catalogs_file: Path
    cache_dir: Path

    def sql(self, statement: str, *params: Any) -> None:
        with psycopg2.connect(self.url) as connection, connection.cursor() as cursor:
            cursor.execute(statement, params or None)

    def rows(self, query: str) -> list[tuple]:
        with psycopg2.connect(self.url) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall()


def _catalogs_file(path: Path, url: str) -> Path:
    """A catalogs file declaring the database at `url` as catalog `stripe`."""
    path.write_text(f'catalogs:\n  - id: "{CATALOG_ID}"\n    name: stripe\n    url: {url}\n')
    return path


@pytest.fixture
def catalog_env(export_env: ExportEnvironment, monkeypatch: pytest.MonkeyPatch) -> Iterator[CatalogEnvironment]:
    with fresh_postgres_database("catalog") as url:
        catalogs_file = _catalogs_file(export_env.tmp_path / "catalogs.yaml", url)
        cache_dir = export_env.tmp_path / "cache"
        monkeypatch.setenv("EXPORTS_CATALOGS", str(catalogs_file))
        monkeypatch.setenv("EXPORTS_CACHE_DIR", str(cache_dir))
        yield CatalogEnvironment(export_env, url, catalogs_file, cache_dir)
