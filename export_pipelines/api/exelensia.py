"""The Exelensia dialect (SPEC, "The seeds' other dialects"): `/v1/exports` with the key in
`x-api-key`, snake_case bodies, statuses PENDING / PROCESSING / COMPLETED / FAILED (and CANCELLED,
EXPIRED). A thin adapter: an Exelensia export is a CSV export of the table or saved query named by
`schema_id`, filtered to `start_date <= created_at <= end_date`, in the same request table as every
other export (the same id and figures through every dialect). The project is the key's own."""

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from export_pipelines.api.auth import project_key, require_owner, service
from export_pipelines.api.exports import (
    CANCEL_WAIT_SECONDS,
    DELETED,
    client_source,
    launch_soon,
    requested_by,
    require_json,
)
from export_pipelines.api.schemas import ErrorView, MessageView
from export_pipelines.service.exports import ExportService
from export_pipelines.store.api_keys import ApiKey
from export_pipelines.store.database import as_utc
from export_pipelines.store.tables import ExportStatus

router = APIRouter(prefix="/v1/exports", tags=["exelensia"])

Service = Annotated[ExportService, Depends(service)]
Caller = Annotated[ApiKey, Depends(project_key)]
ExportId = Annotated[str, Path(alias="id", description="The export id.")]

STATUS_NAMES = {
    ExportStatus.PENDING: "PENDING",
    ExportStatus.RUNNING: "PROCESSING",
    ExportStatus.SUCCEEDED: "COMPLETED",
    ExportStatus.FAILED: "FAILED",
    ExportStatus.CANCELLED: "CANCELLED",
    ExportStatus.EXPIRED: "EXPIRED",
}
DATE_FIELD = "created_at"
MAX_PAGE_SIZE = 100
# Answer fields sorted in SQL (by the request table's column) and those derived from the request.
SQL_SORT = {"createdAt": "created_at", "updatedAt": "updated_at", "id": "id", "status": "status"}
REQUEST_SORT = ("schema_id", "start_date", "end_date", "expand_array")
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorView, "description": "Invalid request body or parameter."},
    401: {"model": ErrorView, "description": "Missing or invalid authentication."},
    403: {"model": ErrorView, "description": "A partner key, or not the owner of the export."},
    404: {"model": ErrorView, "description": "Export or schema not found."},
}


def _iso_ms(value: datetime) -> str:
    """Exelensia's timestamps: UTC, milliseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CreateBody(BaseModel):
    """An Exelensia export: the rows of `schema_id` created within [start_date, end_date], as CSV."""

    model_config = ConfigDict(extra="forbid")

    schema_id: str = Field(
        description="The table (`schema.table`) or saved query to export.", examples=["payment.charges"]
    )
    start_date: str = Field(
        description="ISO-8601: rows created on or after this time (an offset is honoured; none means UTC).",
        examples=["2024-01-01T00:00:00.000Z"],
    )
    end_date: str = Field(
        description="ISO-8601: rows created on or before this time.", examples=["2024-01-31T23:59:59.999Z"]
    )
    expand_array: str | None = Field(None, description="An array field to expand into one row per item.")

    @field_validator("start_date", "end_date")
    @classmethod
    def _iso_8601(cls, value: str) -> str:
        _parse(value)
        return value

    def as_request(self, project_id: str) -> dict[str, Any]:
        if _parse(self.start_date) > _parse(self.end_date):
            raise HTTPException(400, f"start_date {self.start_date} is after end_date {self.end_date}")
        source = {"table": self.schema_id} if "." in self.schema_id else {"query": self.schema_id}
        window = [
            {"field": DATE_FIELD, "operator": "gte", "value": self.start_date},
            {"field": DATE_FIELD, "operator": "lte", "value": self.end_date},
        ]
        request = {"project_id": project_id, "source": source, "format": "CSV", "filters": {"AND": window}}
        return {**request, "expand_array": self.expand_array} if self.expand_array else request


def _parse(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 date or timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class ExelensiaExport(BaseModel):
    """An export as Exelensia shows it."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(description="Export id (the same through every dialect).")
    schema_id: str | None = Field(description="The table or saved query exported.")
    status: str = Field(description="PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED or EXPIRED.")
    start_date: str | None = Field(description="Start of the created_at range, as given.")
    end_date: str | None = Field(description="End of the created_at range, as given.")
    expand_array: str | None = Field(description="The array field expanded into rows, if any.")
    created_at: str = Field(alias="createdAt", description="When the export was requested (UTC).")
    updated_at: str = Field(alias="updatedAt", description="When its status last changed (UTC).")


class ExportPage(BaseModel):
    data: list[dict[str, Any]] = Field(description="The exports of this page (only `fields`, when given).")
    meta: dict[str, int] = Field(description="`page`, `limit`, `total` and `totalPages`.")


class DownloadLink(BaseModel):
    url: str = Field(description="Presigned URL of the CSV file, valid for a limited time.")


def _view(record: dict[str, Any]) -> ExelensiaExport:
    request = json.loads(record["request"])
    source = request.get("source") or {}
    start, end = _date_window(request.get("filters"))
    updated = record["finished_at"] or record["started_at"] or record["created_at"]
    return ExelensiaExport(
        id=record["id"],
        schema_id=source.get("table") or source.get("query"),
        status=STATUS_NAMES[ExportStatus(record["status"])],
        start_date=start,
        end_date=end,
        expand_array=request.get("expand_array"),
        created_at=_iso_ms(record["created_at"]),
        updated_at=_iso_ms(updated),
    )


def _date_window(filters: Any) -> tuple[str | None, str | None]:
    """The created_at range of an export made through this dialect (other exports have none)."""
    if not isinstance(filters, dict) or set(filters) != {"AND"} or len(filters["AND"]) != 2:
        return None, None
    start, end = filters["AND"]
    if (start.get("field"), start.get("operator"), end.get("field"), end.get("operator")) != (
        DATE_FIELD,
        "gte",
        DATE_FIELD,
        "lte",
    ):
        return None, None
    return start.get("value"), end.get("value")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ExelensiaExport,
    responses={**ERRORS, 201: {"description": "Export job created."}},
    summary="Create an export (Exelensia)",
    dependencies=[Depends(require_json)],
)
async def create_export(
    body: CreateBody,
    service: Service,
    key: Caller,
    source_of_client: Annotated[str | None, Depends(client_source)],
) -> ExelensiaExport:
    """Queue a CSV export of the rows of `schema_id` created within [start_date, end_date]."""
    export_request = body.as_request(key.project_id or "")
    by = requested_by(key, source_of_client or "exelensia")
    export_id = await run_in_threadpool(service.submit, export_request, by, launching=True)
    launch_soon(service, export_id)
    return _view(await run_in_threadpool(service.get, export_id))


@router.get("", response_model=ExportPage, responses=ERRORS, summary="List exports (Exelensia)")
def list_exports(
    request: Request,
    service: Service,
    key: Caller,
    page: Annotated[int, Query(ge=1, description="Page number, from 1.")] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Exports per page, 1-100.")] = 20,
    sort_by: Annotated[str, Query(description="A field of the answer, e.g. `createdAt`.")] = "createdAt",
    sort_order: Annotated[str, Query(description="`asc` or `desc`.")] = "desc",
    search: Annotated[str | None, Query(max_length=256, description="Matches the id, source or name.")] = None,
    created_after: Annotated[datetime | None, Query(description="Only exports created after this time.")] = None,
    created_before: Annotated[datetime | None, Query(description="Only exports created before this time.")] = None,
    fields: Annotated[str | None, Query(description="Comma-separated fields to return, e.g. `id,status`.")] = None,
) -> ExportPage:
    """The exports of the key's project, a page at a time, newest first by default."""
    answer_fields = [f.alias or name for name, f in ExelensiaExport.model_fields.items()]
    if sort_by not in SQL_SORT and sort_by not in REQUEST_SORT:
        raise HTTPException(400, f"cannot sort by {sort_by!r}; sort_by takes one of {', '.join(answer_fields)}")
    if sort_order not in ("asc", "desc"):
        raise HTTPException(400, f"sort_order must be asc or desc, not {sort_order!r}")
    chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields else answer_fields
    unknown = sorted(set(chosen) - set(answer_fields))
    if unknown:
        raise HTTPException(400, f"unknown field(s) {', '.join(unknown)}; fields are {', '.join(answer_fields)}")
    project = key.project_id or ""
    after, before = as_utc(created_after), as_utc(created_before)
    total = service.store.count_exports(project, None, before, after, search)
    descending = sort_order == "desc"
    offset = (page - 1) * limit
    if sort_by in SQL_SORT:
        records = service.store.list_exports(
            project, None, limit, before, after, search, SQL_SORT[sort_by], descending, offset
        )
        views = [_view(record) for record in records]
    else:  # a field of the request: sorted here, over the matching exports of the project
        views = [_view(record) for record in service.store.list_exports(project, None, None, before, after, search)]
        views.sort(key=lambda view: (getattr(view, sort_by) is not None, getattr(view, sort_by) or "", view.id))
        views = (views[::-1] if descending else views)[offset : offset + limit]
    data = [{name: value for name, value in view.model_dump(by_alias=True).items() if name in chosen} for view in views]
    meta = {"page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit)}
    return ExportPage(data=data, meta=meta)


@router.get("/{id}", response_model=ExelensiaExport, responses=ERRORS, summary="Get an export (Exelensia)")
def get_export(service: Service, key: Caller, export_id: ExportId) -> ExelensiaExport:
    """One export of the key's project."""
    return _view(service.get(export_id, key.project_id))


@router.get(
    "/{id}/download",
    response_model=DownloadLink,
    responses={
        **ERRORS,
        409: {"model": ErrorView, "description": "The export is not completed."},
        410: {"model": ErrorView, "description": "Expired: the file was removed."},
    },
    summary="Download an export (Exelensia)",
)
def download_export(service: Service, key: Caller, export_id: ExportId) -> DownloadLink:
    """A time-limited URL of the export's CSV file."""
    require_owner(key, service.get(export_id, key.project_id), "download")
    return DownloadLink(url=service.download_urls(export_id, key.project_id or "")[0]["url"])


@router.delete(
    "/{id}",
    response_model=MessageView,
    responses={**ERRORS, 409: {"model": ErrorView, "description": "A running export did not stop in time."}},
    summary="Delete an export (Exelensia)",
)
def delete_export(service: Service, key: Caller, export_id: ExportId) -> MessageView:
    """Remove the export's file and record (a running export is cancelled first)."""
    require_owner(key, service.get(export_id, key.project_id), "delete")
    service.remove(export_id, key.project_id, CANCEL_WAIT_SECONDS)
    return MessageView(message=DELETED)
