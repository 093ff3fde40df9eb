"""The REST API application: FastAPI with the export routes, API-key auth, `{"error": ...}` errors,
OpenAPI at `/openapi.json`, interactive docs at `/docs` and `GET /healthz`."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dagster as dg
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from export_pipelines.api import cache, exelensia, exports, mixpeek
from export_pipelines.api.body_limit import BodyLimit
from export_pipelines.api.errors import error_response, install_error_handlers
from export_pipelines.api.schemas import ErrorView, HealthView
from export_pipelines.api.url_guard import RefuseNul
from export_pipelines.service.cache import CacheService
from export_pipelines.service.exports import ExportService
from export_pipelines.service.table_watch import start_watching
from export_pipelines.settings import optional_env
from export_pipelines.store.api_keys import ApiKeyStore

MAX_BODY_BYTES = 1 << 20
DESCRIPTION = """
Exports of warehouse tables and saved queries to CSV, JSONL or Parquet in S3, created and followed
over HTTP. Every export lands in the same request table as the service's other doors (Dagster UI,
GraphQL, the request table itself) and runs as a Dagster run.

**Authentication**: `Authorization: Bearer <key>` (or `x-api-key: <key>`) with a key made by
`export-pipelines keys create`. **Errors**: `{"error": "<one clear message>"}` with a 4xx status.
Timestamps are ISO-8601 UTC with a `Z`.
"""


def create_app(service: ExportService | None = None, keys: ApiKeyStore | None = None) -> FastAPI:
    """The application; by default on the environment's settings, opened when the server starts
    (nothing is read at import or construction)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        instance = dg.DagsterInstance.get() if optional_env("DAGSTER_HOME") else None
        app.state.service = service or ExportService.from_environment(instance)
        app.state.keys = keys or ApiKeyStore(app.state.service.store.engine)
        app.state.cache = CacheService(app.state.service.cache)
        dagster_url = optional_env("DAGSTER_UI_URL")
        watching = start_watching(app.state.service, dagster_url) if dagster_url else None
        yield
        if watching is not None:
            watching.set()

    app = FastAPI(
        title="export_pipelines REST API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "exports", "description": "Create, follow, download and remove exports."},
            {"name": "cache", "description": "Cached copies of catalog tables, refreshed on schedules."},
            {
                "name": "exelensia",
                "description": "Exelensia's export routes, for its clients: `x-api-key`, snake_case.",
            },
            {"name": "mixpeek", "description": "Mixpeek's collection export, for its clients: waits for the file."},
        ],
    )
    install_error_handlers(app)
    app.openapi = lambda: _documented_errors(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RefuseNul)
    app.include_router(exports.router)
    app.include_router(cache.router)
    app.include_router(exelensia.router)
    app.include_router(mixpeek.router)

    @app.get(
        "/healthz",
        response_model=HealthView,
        responses={503: {"model": ErrorView, "description": "The request table is unreachable."}},
        tags=["health"],
    )
    def healthz(request: Request) -> HealthView | JSONResponse:
        """200 while the request table is reachable."""
        try:
            with request.app.state.service.store.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as error:
            return error_response(503, f"the request table is unreachable: {type(error).__name__}")
        return HealthView(status="ok")

    return app


def _documented_errors(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, less its default 422 "Validation Error" answers: invalid input is a 400
    with `{"error": ...}` here (a 422 only ever means an Idempotency-Key reused for another body)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                default = operation["responses"].get("422", {})
                if "HTTPValidationError" in json.dumps(default):
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
