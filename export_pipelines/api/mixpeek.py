"""The Mixpeek dialect (SPEC, "The seeds' other dialects"): `POST /v1/collections/{collection}/export`
exports a table (`schema.table`) or saved query of the key's project and answers with the finished
file. A thin adapter over the same service and request table as the main routes: it queues the
export, waits for it (at most 300 s), and answers 200 with the links, or 202 with the export id to
poll through the main routes when the wait runs out."""

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from export_pipelines.api.auth import project_key, service
from export_pipelines.api.exports import (
    MAX_CREATE_WAIT_SECONDS,
    await_final,
    client_source,
    launch_soon,
    requested_by,
    require_json,
)
from export_pipelines.api.schemas import CreatedView, ErrorView, UtcTime
from export_pipelines.service.exports import ExportService
from export_pipelines.store.api_keys import ApiKey
from export_pipelines.store.tables import FINAL_STATUSES, ExportStatus

router = APIRouter(prefix="/v1/collections", tags=["mixpeek"])

MAX_SAMPLE_SIZE = 1_000_000


class MixpeekFormat(StrEnum):
    json = "json"  # line-delimited JSON
    csv = "csv"
    parquet = "parquet"


EXPORT_FORMATS = {MixpeekFormat.json: "JSONL", MixpeekFormat.csv: "CSV", MixpeekFormat.parquet: "PARQUET"}


class ExportBody(BaseModel):
    """Mixpeek's export request."""

    model_config = ConfigDict(extra="forbid")

    format: MixpeekFormat = Field(MixpeekFormat.parquet, description="json (JSONL), csv or parquet (default).")
    include_vectors: bool = Field(False, description="Also write the vector columns to a `<name>_vectors` file.")
    select_fields: list[str] | None = Field(
        None, description="Fields to export; dot notation reaches nested fields.", examples=[["document_id"]]
    )
    filters: dict[str, Any] | None = Field(
        None, description="`{AND, OR, NOT, case_sensitive}` of `{field, operator, value}` conditions."
    )
    sample_size: int | None = Field(None, ge=1, le=MAX_SAMPLE_SIZE, description="At most this many rows.")

    def as_request(self, project_id: str, collection: str) -> dict[str, Any]:
        source = {"table": collection} if "." in collection else {"query": collection}
        request = {
            "project_id": project_id,
            "source": source,
            "format": EXPORT_FORMATS[self.format],
            "include_vectors": self.include_vectors,
            "columns": self.select_fields,
            "filters": self.filters,
            "limit": self.sample_size,
        }
        return {name: value for name, value in request.items() if value is not None}


class ExportedView(BaseModel):
    """The finished export: presigned links valid for the service's URL lifetime (1 hour by default)."""

    download_url: str = Field(description="Presigned URL of the data file.")
    s3_path: str = Field(description="`s3://bucket/key` of the data file.")
    format: MixpeekFormat = Field(description="As asked.")
    document_count: int = Field(description="Rows exported.")
    file_size_bytes: int = Field(description="Bytes of the data file.")
    exported_at: UtcTime = Field(description="When the export finished (UTC, ISO-8601).")
    vectors_download_url: str | None = Field(description="Presigned URL of the vectors file (include_vectors).")
    vectors_s3_path: str | None = Field(description="`s3://bucket/key` of the vectors file (include_vectors).")


@router.post(
    "/{collection}/export",
    response_model=ExportedView | CreatedView,
    responses={
        200: {"model": ExportedView, "description": "The export finished within the wait."},
        202: {"model": CreatedView, "description": "Still running: poll `GET /api/v1/…/exports/{id}`."},
        400: {"model": ErrorView, "description": "Invalid body: the message names the problem."},
        401: {"model": ErrorView, "description": "Missing, unknown or revoked API key."},
        403: {"model": ErrorView, "description": "A partner key (the route needs a project key)."},
        404: {"model": ErrorView, "description": "Unknown collection (table or saved query)."},
        409: {"model": ErrorView, "description": "The export ended FAILED or CANCELLED: the message says why."},
    },
    summary="Export a collection (Mixpeek)",
    dependencies=[Depends(require_json)],
)
async def export_collection(
    response: Response,
    body: ExportBody,
    service: Annotated[ExportService, Depends(service)],
    key: Annotated[ApiKey, Depends(project_key)],
    collection: Annotated[str, Path(description="A table (`schema.table`) or saved query.")],
    source_of_client: Annotated[str | None, Depends(client_source)],
    wait: Annotated[
        float, Query(ge=0, le=MAX_CREATE_WAIT_SECONDS, description="Seconds to wait for the file (default 300).")
    ] = MAX_CREATE_WAIT_SECONDS,
) -> ExportedView | CreatedView:
    """Export the collection and answer with its file once written."""
    project_id = key.project_id or ""
    by = requested_by(key, source_of_client or "mixpeek")
    export_id = await run_in_threadpool(service.submit, body.as_request(project_id, collection), by, launching=True)
    launch_soon(service, export_id)
    record = await await_final(service, export_id, project_id, wait)
    if record["status"] not in FINAL_STATUSES:
        response.status_code = 202
        return CreatedView(id=export_id, status=record["status"])
    if record["status"] != ExportStatus.SUCCEEDED:
        raise HTTPException(409, f"export {export_id} ended {record['status']}: {record['error']}")
    return await run_in_threadpool(_exported, service, record, body.format)


def _exported(service: ExportService, record: dict[str, Any], export_format: MixpeekFormat) -> ExportedView:
    links = service.links(record)
    bucket = service.s3.resolved_bucket
    vectors_prefix = f"{record['name']}_vectors."
    vectors = [link for link in links if link["key"].rsplit("/", 1)[-1].startswith(vectors_prefix)]
    data = [link for link in links if link not in vectors]
    return ExportedView(
        download_url=data[0]["url"],
        s3_path=f"s3://{bucket}/{data[0]['key']}",
        format=export_format,
        document_count=record["row_count"],
        file_size_bytes=sum(link["bytes"] for link in data),
        exported_at=record["finished_at"],
        vectors_download_url=vectors[0]["url"] if vectors else None,
        vectors_s3_path=f"s3://{bucket}/{vectors[0]['key']}" if vectors else None,
    )
