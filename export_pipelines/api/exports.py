"""The export routes under `/api/v1/data/projects/{projectId}` (SPEC, "REST API"): create for a
saved query and for a table, list, get (with `wait`), download, cancel, delete. Each route is a thin
shell over `ExportService`; the rules of ownership are in `auth`."""

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from export_pipelines.api.auth import is_owner, project_caller, require_owner, service
from export_pipelines.api.schemas import (
    ColumnView,
    CreatedView,
    CreateExportBody,
    DownloadView,
    ErrorView,
    ExportView,
    FileView,
    MessageView,
    PreviewView,
    ProgressView,
)
from export_pipelines.engine.warehouse import WAREHOUSE_CATALOG
from export_pipelines.service.exports import ExportService
from export_pipelines.store.api_keys import ApiKey
from export_pipelines.store.database import as_utc
from export_pipelines.store.tables import FINAL_STATUSES, ExportStatus

BASE = "/api/v1/data/projects/{projectId}"
MAX_GET_WAIT_SECONDS = 60
MAX_CREATE_WAIT_SECONDS = 300
CANCEL_WAIT_SECONDS = 30
POLL_SECONDS = 0.2
CLIENT_SOURCE_LENGTH = 64  # the request table's column
DELETED = "Export deleted successfully"

router = APIRouter(prefix=BASE, tags=["exports"])

Service = Annotated[ExportService, Depends(service)]
Caller = Annotated[ApiKey, Depends(project_caller)]
ProjectId = Annotated[str, Path(alias="projectId", description="The project.", examples=["acme"])]
ExportId = Annotated[str, Path(alias="id", description="The export id.")]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorView, "description": "Invalid input: the message names the problem."},
    401: {"model": ErrorView, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorView, "description": "The key may not act on this project or export."},
    404: {"model": ErrorView, "description": "Unknown export, or unknown query, table or catalog."},
}
EXAMPLE_BODY = {
    "peaka": {
        "summary": "CSV of three columns (Peaka's example)",
        "value": {"format": "CSV", "columns": ["id", "created_at", "amount"]},
    },
    "filtered": {
        "summary": "Filtered Parquet, ordered, limited",
        "value": {
            "format": "PARQUET",
            "filters": {"AND": [{"field": "amount", "operator": "gte", "value": 100}]},
            "orderBy": ["-created_at"],
            "limit": 1000,
        },
    },
}


def _view(service: ExportService, record: dict[str, Any], key: ApiKey) -> ExportView:
    """An export record as the caller may see it: files and links only for the owner."""
    request = json.loads(record["request"])
    source = request.get("source") or {}
    schema_name, _, table_name = (source.get("table") or "").partition(".")
    table = source.get("table") is not None
    owner_may_download = record["status"] == ExportStatus.SUCCEEDED and is_owner(key, record)
    links = service.links(record) if owner_may_download else None
    return ExportView(
        id=record["id"],
        project_id=record["project_id"],
        status=record["status"],
        format=record["format"],
        compression=record["compression"],
        row_count=record["row_count"],
        bytes=record["bytes"],
        duration_ms=record["duration_ms"],
        progress=ProgressView(rows_written=record["rows_written"] or 0, total_rows=record["total_rows"])
        if record["status"] == ExportStatus.RUNNING
        else None,
        files=[_file(link) for link in links] if links is not None else None,
        expires_at=datetime.fromisoformat(links[0]["expires_at"]) if links else None,
        downloadable=owner_may_download,
        error=record["error"],
        created_at=record["created_at"],
        started_at=record["started_at"],
        finished_at=record["finished_at"],
        query_id=source.get("query"),
        catalog_id=(source.get("catalog") or WAREHOUSE_CATALOG) if table else None,
        schema_name=schema_name if table else None,
        table_name=table_name if table else None,
        source=record["source"],
        name=record["name"],
        user_id=record["user_id"],
        user_name=record["user_name"],
        api_key_prefix=record["api_key_prefix"],
        client_source=record["client_source"],
    )


def _file(link: dict[str, Any]) -> FileView:
    return FileView(
        name=link["key"].rsplit("/", 1)[-1],
        url=link["url"],
        bytes=link["bytes"],
        rows=link["rows"],
        sha256=link["sha256"],
    )


async def await_final(service: ExportService, export_id: str, project_id: str, timeout: float) -> dict[str, Any]:
    """The export once final, or as it is when `timeout` seconds have passed (without holding a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        record = await run_in_threadpool(service.get, export_id, project_id)
        if record["status"] in FINAL_STATUSES or time.monotonic() >= deadline:
            return record
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))


def launch_soon(service: ExportService, export_id: str) -> None:
    """Launch the export's run in the background, without holding up the answer (the request
    sensor launches it if this does not)."""
    asyncio.get_running_loop().run_in_executor(None, service.launch, export_id, "api")


def requested_by(key: ApiKey, client_source: str) -> dict[str, str | None]:
    """Who creates an export over HTTP: the key's user, the key, the client."""
    return {
        "user_id": key.user_id,
        "user_name": key.user_name,
        "api_key_prefix": key.prefix,
        "client_source": client_source[:CLIENT_SOURCE_LENGTH],
    }


def client_source(
    trino_source: Annotated[str | None, Header(alias="X-Trino-Source", description="Recorded as clientSource.")] = None,
    user_agent: Annotated[str | None, Header(alias="User-Agent", include_in_schema=False)] = None,
) -> str | None:
    """The `X-Trino-Source` header, else the `User-Agent`."""
    return trino_source or user_agent


def require_json(request: Request) -> None:
    """A body that is not declared JSON would be ignored silently and export everything: refuse it."""
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    content_type = request.headers.get("content-type", "")
    if has_body and not (content_type.startswith("application/json") or "+json" in content_type):
        raise HTTPException(415, "the body must be JSON: send it with Content-Type: application/json")


@dataclass(frozen=True)
class CreateOptions:
    """What both create routes take besides their source."""

    body: CreateExportBody | None
    wait: float | None
    dry_run: bool
    idempotency_key: str | None
    client_source: str | None


def create_options(
    body: Annotated[CreateExportBody | None, Body(openapi_examples=EXAMPLE_BODY)] = None,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            description="Answer 200 with the finished export if it ends within this many seconds (at most 300); "
            "202 with the pending one otherwise.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        Query(
            alias="dryRun",
            description="Answer 200 with a preview (row count, columns with types, first 10 rows) and queue nothing.",
        ),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=256,
            description="Retry-safe create: the same key and body within 24 hours answer the same export.",
        ),
    ] = None,
    source_of_client: Annotated[str | None, Depends(client_source)] = None,
) -> CreateOptions:
    return CreateOptions(body, wait, dry_run, idempotency_key, source_of_client)


async def _create(
    response: Response,
    service: ExportService,
    key: ApiKey,
    project_id: str,
    source: dict[str, str],
    options: CreateOptions,
) -> ExportView | CreatedView | PreviewView:
    export_request = {**(options.body.as_request() if options.body else {}), "project_id": project_id, "source": source}
    if options.dry_run:
        preview = await run_in_threadpool(service.preview, export_request)
        response.status_code = 200
        columns = [ColumnView(**column) for column in preview.columns]
        return PreviewView(row_count=preview.row_count, columns=columns, sample=preview.sample)
    by = requested_by(key, options.client_source or "api")
    export_id = await run_in_threadpool(service.submit, export_request, by, options.idempotency_key, launching=True)
    launch_soon(service, export_id)
    response.headers["Location"] = f"{BASE.format(projectId=project_id)}/exports/{export_id}"
    if options.wait:
        record = await await_final(service, export_id, project_id, min(options.wait, MAX_CREATE_WAIT_SECONDS))
        if record["status"] in FINAL_STATUSES:
            response.status_code = 200
            return await run_in_threadpool(_view, service, record, key)
    record = await run_in_threadpool(service.get, export_id, project_id)
    return CreatedView(id=export_id, status=record["status"])


Options = Annotated[CreateOptions, Depends(create_options)]


def _link(operation: str, method: str, description: str) -> dict[str, Any]:
    """An OpenAPI link from a created export to an operation on it (clients and Schemathesis follow them)."""
    pointer = f"{BASE}/exports/{{id}}{operation}".replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{method}",
        "parameters": {"projectId": "$request.path.projectId", "id": "$response.body#/id"},
        "description": description,
    }


CREATED_LINKS = {
    "GetExport": _link("", "get", "The export, with its status and progress."),
    "DownloadExport": _link("/download", "get", "Its download links, once SUCCEEDED."),
    "CancelExport": _link("/cancel", "post", "Cancel it."),
    "DeleteExport": _link("", "delete", "Delete it and its artifacts."),
}
CREATE_ROUTE: dict[str, Any] = {
    "status_code": 202,
    "response_model": CreatedView | ExportView | PreviewView,
    "responses": {
        **ERRORS,
        200: {
            "model": ExportView | PreviewView,
            "description": "With `wait`: the export, finished within the wait; with `dryRun`: the preview.",
        },
        202: {"model": CreatedView, "description": "Queued; poll the `Location`.", "links": CREATED_LINKS},
        409: {"model": ErrorView, "description": "A cached table whose first copy is not made yet."},
        413: {"model": ErrorView, "description": "Body over 1 MiB."},
        415: {"model": ErrorView, "description": "Body not sent as JSON."},
        422: {"model": ErrorView, "description": "Idempotency-Key reused with another body."},
        503: {"model": ErrorView, "description": "The warehouse is unavailable right now."},
    },
    "dependencies": [Depends(require_json)],
}


@router.post("/queries/{queryId}/exports", summary="Export a saved query", **CREATE_ROUTE)
async def create_query_export(
    response: Response,
    service: Service,
    key: Caller,
    project_id: ProjectId,
    query_id: Annotated[str, Path(alias="queryId", description="The saved query.", examples=["charges_view"])],
    options: Options,
) -> ExportView | CreatedView | PreviewView:
    """Queue an export of a saved query (a view in the warehouse schema `queries`)."""
    return await _create(response, service, key, project_id, {"query": query_id}, options)


@router.post(
    "/catalogs/{catalogId}/schemas/{schemaName}/tables/{tableName}/exports", summary="Export a table", **CREATE_ROUTE
)
async def create_table_export(
    response: Response,
    service: Service,
    key: Caller,
    project_id: ProjectId,
    catalog_id: Annotated[str, Path(alias="catalogId", description="`warehouse`: the warehouse itself.")],
    schema_name: Annotated[str, Path(alias="schemaName", description="Schema of the table.", examples=["payment"])],
    table_name: Annotated[str, Path(alias="tableName", description="The table.", examples=["charges"])],
    options: Options,
) -> ExportView | CreatedView | PreviewView:
    """Queue an export of a table: of the warehouse (catalog `warehouse`), or the cached copy of a table of
    another catalog (404 when the project has no cache entry for it, 409 before its first copy)."""
    source = {"table": f"{schema_name}.{table_name}"}
    if catalog_id != WAREHOUSE_CATALOG:
        source["catalog"] = catalog_id
    return await _create(response, service, key, project_id, source, options)


@router.get("/exports", response_model=list[ExportView], responses=ERRORS, summary="List exports")
def list_exports(
    service: Service,
    key: Caller,
    project_id: ProjectId,
    status: Annotated[
        str | None, Query(description="Comma-separated statuses, e.g. `SUCCEEDED,RUNNING`.", examples=["SUCCEEDED"])
    ] = None,
    limit: Annotated[int, Query(description="Page size, clamped to [1, 200].")] = 50,
    created_before: Annotated[
        datetime | None,
        Query(alias="createdBefore", description="Keyset cursor: the previous page's last `createdAt`."),
    ] = None,
    created_after: Annotated[
        datetime | None, Query(alias="createdAfter", description="Only exports created after this time.")
    ] = None,
    search: Annotated[str | None, Query(description="Matches the id, source or name.", max_length=256)] = None,
) -> list[ExportView]:
    """The project's exports, newest first."""
    statuses = [s.strip().upper() for s in status.split(",") if s.strip()] if status else None
    unknown = sorted(set(statuses or []) - {s.value for s in ExportStatus})
    if unknown:
        raise HTTPException(400, f"unknown status {', '.join(unknown)}; use {', '.join(s.value for s in ExportStatus)}")
    records = service.list(project_id, statuses, limit, as_utc(created_before), as_utc(created_after), search)
    return [_view(service, record, key) for record in records]


@router.get("/exports/{id}", response_model=ExportView, responses=ERRORS, summary="Get an export")
async def get_export(
    service: Service,
    key: Caller,
    project_id: ProjectId,
    export_id: ExportId,
    wait: Annotated[
        float | None,
        Query(
            ge=0, description="Answer as soon as the export is final, or after this many seconds (at most 60)."
        ),  # fmt: skip
    ] = None,
) -> ExportView:
    """One export; with `wait`, the answer comes when it is final or the wait ends."""
    record = await await_final(service, export_id, project_id, min(wait or 0, MAX_GET_WAIT_SECONDS))
    return await run_in_threadpool(_view, service, record, key)


@router.get(
    "/exports/{id}/download",
    response_model=DownloadView,
    responses={
        **ERRORS,
        409: {"model": ErrorView, "description": "Not finished yet."},
        410: {"model": ErrorView, "description": "Expired: the artifacts were removed."},
    },
    summary="Download links",
)
def download_export(service: Service, key: Caller, project_id: ProjectId, export_id: ExportId) -> DownloadView:
    """Presigned links of a SUCCEEDED export's files, for its owner."""
    require_owner(key, service.get(export_id, project_id), "download")
    links = service.download_urls(export_id, project_id)
    expires_at = datetime.fromisoformat(links[0]["expires_at"])
    return DownloadView(url=links[0]["url"], expires_at=expires_at, files=[_file(link) for link in links])


@router.post(
    "/exports/{id}/cancel",
    response_model=ExportView,
    responses={**ERRORS, 409: {"model": ErrorView, "description": "The export had already finished."}},
    summary="Cancel an export",
)
def cancel_export(service: Service, key: Caller, project_id: ProjectId, export_id: ExportId) -> ExportView:
    """Cancel a PENDING or RUNNING export; answers the export, now CANCELLED (a running one is
    answered once its run has stopped, or RUNNING if that takes over 30 s)."""
    require_owner(key, service.get(export_id, project_id), "cancel")
    return _view(service, service.cancel_and_settle(export_id, project_id, CANCEL_WAIT_SECONDS), key)


@router.delete(
    "/exports/{id}",
    response_model=MessageView,
    responses={**ERRORS, 409: {"model": ErrorView, "description": "A running export did not stop in time."}},
    summary="Delete an export",
)
def delete_export(service: Service, key: Caller, project_id: ProjectId, export_id: ExportId) -> MessageView:
    """Remove every artifact and the record; a running export is cancelled first."""
    require_owner(key, service.get(export_id, project_id), "delete")
    service.remove(export_id, project_id, CANCEL_WAIT_SECONDS)
    return MessageView(message=DELETED)
