"""The REST API as the tests meet it: `export-pipelines api` under uvicorn on a free loopback port
(a real process, over real HTTP), a client with an API key, and the request sensor ticked by the test
to run what the API queued (each run executed in process, like a worker would)."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import requests

from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.definitions import defs
from export_pipelines.deploy.api_server import running_api as api_process
from export_pipelines.engine.warehouse import WarehouseResource
from export_pipelines.orchestration.cache_refresh import cache_refresh_sensor
from export_pipelines.orchestration.jobs import export_job
from export_pipelines.orchestration.sensors import export_request_sensor
from export_pipelines.store.api_keys import ApiKeyStore
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore, ExportStoreResource
from export_pipelines_tests.conftest import environment

BASE = "/api/v1/data/projects"


@dataclass
class ApiServer:
    """A running `export-pipelines api` and the settings it runs on."""

    url: str
    settings: dict[str, str]
    log: Path

    @property
    def store(self) -> ExportStore:
        return ExportStore(engine_for(self.settings["EXPORTS_DATABASE_URL"]))

    @property
    def keys(self) -> ApiKeyStore:
        return ApiKeyStore(engine_for(self.settings["EXPORTS_DATABASE_URL"]))

    def client(self, key: str | None) -> "Client":
        return Client(self.url, key)

    def new_key(self, user_id: str, project_id: str | None, user_name: str | None = None) -> str:
        return self.keys.create(user_id, project_id, user_name)[0]

    def process(self) -> psutil.Process:
        """The process serving the API (a child of this one)."""
        port = self.url.rsplit(":", 1)[1]
        (found,) = [
            child
            for child in psutil.Process().children(recursive=True)
            if "api" in child.cmdline() and port in child.cmdline()
        ]
        return found


@contextlib.contextmanager
def running_api(settings: dict[str, str], log: Path) -> Iterator[ApiServer]:
    """`export-pipelines api` on a free port with `settings` as its environment."""
    with api_process(settings, log) as url:
        yield ApiServer(url, settings, log)


class Client:
    """Requests to the API with one key, as curl would send them."""

    def __init__(self, url: str, key: str | None):
        self.url, self.key = url, key
        self.session = requests.Session()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**headers, **(extra or {})}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = self.headers(kwargs.pop("headers", None))
        return self.session.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)

    def create_table(
        self, project: str, table: str, body: dict | None = None, catalog: str = "warehouse", **kwargs: Any
    ) -> requests.Response:
        schema, name = table.split(".")
        path = f"{BASE}/{project}/catalogs/{catalog}/schemas/{schema}/tables/{name}/exports"
        return self.request("POST", path, json=body if body is not None else {}, **kwargs)

    def create_query(self, project: str, query: str, body: dict | None = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", f"{BASE}/{project}/queries/{query}/exports", json=body or {}, **kwargs)

    def list(self, project: str, **params: Any) -> requests.Response:
        return self.request("GET", f"{BASE}/{project}/exports", params=params)

    def get(self, project: str, export_id: str, **params: Any) -> requests.Response:
        return self.request("GET", f"{BASE}/{project}/exports/{export_id}", params=params)

    def download(self, project: str, export_id: str) -> requests.Response:
        return self.request("GET", f"{BASE}/{project}/exports/{export_id}/download")

    def cancel(self, project: str, export_id: str) -> requests.Response:
        return self.request("POST", f"{BASE}/{project}/exports/{export_id}/cancel")

    def delete(self, project: str, export_id: str) -> requests.Response:
        return self.request("DELETE", f"{BASE}/{project}/exports/{export_id}")

    def cache(self, method: str, project: str, path: str = "", **kwargs: Any) -> requests.Response:
        """A cache route: `{BASE}/{project}/cache{path}`."""
        return self.request(method, f"{BASE}/{project}/cache{path}", **kwargs)


def run_due_refreshes(server: ApiServer, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """Tick the cache refresh sensor and run in process each refresh it asks for whose run key has no
    run yet (as the daemon, with its run-key dedupe, and a worker would); returns those requests."""
    with environment(server.settings):
        with dg.build_sensor_context(instance=instance, resources={"cache": CachedTablesResource()}) as context:
            result = cache_refresh_sensor(context)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        job = defs.resolve_job_def("cache_refresh_job")
        launched = []
        for run_request in result.run_requests:
            key_tag = {"dagster/run_key": run_request.run_key}
            if instance.get_runs(dg.RunsFilter(tags=key_tag), limit=1):
                continue
            job.execute_in_process(
                partition_key=run_request.partition_key,
                run_config=run_request.run_config,
                tags={**run_request.tags, **key_tag},
                instance=instance,
                raise_on_error=False,
            )
            launched.append(run_request)
        return launched


def run_queued(server: ApiServer, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """Tick the request sensor until it requests nothing more, running each requested run in
    process; returns every run request made."""
    requested: list[dg.RunRequest] = []
    cursor = None
    with environment(server.settings):
        resources = {
            "export_store": ExportStoreResource(database_url=server.settings["EXPORTS_DATABASE_URL"]),
            "warehouse": WarehouseResource(path=server.settings["EXPORTS_WAREHOUSE"]),
            "cache": CachedTablesResource(database_url=server.settings["EXPORTS_DATABASE_URL"]),
        }
        while True:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = export_request_sensor(context)
            cursor = result.cursor
            if not result.run_requests:
                return requested
            for run_request in result.run_requests:
                export_job.execute_in_process(
                    run_config=run_request.run_config, tags=run_request.tags, instance=instance, raise_on_error=False
                )
            requested += result.run_requests
