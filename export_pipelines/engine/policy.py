"""The operator's export policy: row limit, retention, link lifetime, memory for reading."""

from datetime import timedelta

import dagster as dg
from pydantic import ByteSize, Field, TypeAdapter, ValidationError, field_validator

from export_pipelines.engine.request import ExportRequest
from export_pipelines.settings import env, int_env, parse_duration

# A sort (order_by) or a saved query needs DuckDB memory for its operators on top of the scan: measured
# on payment.charges sorted, 128 MB ran out at 20M rows and 256 MB held 1M-20M rows flat.
SORT_MEMORY_FACTOR = 4
MIN_MEMORY_LIMIT = 16 * 2**20


class ExportPolicy(dg.ConfigurableResource):
    """Limits the operator sets for every export."""

    max_rows: int | None = Field(
        default=None, description="Row limit of an export. Default: $EXPORTS_MAX_ROWS, else 1,000,000."
    )
    retention: str | None = Field(
        default=None,
        description="ISO-8601 duration after which artifacts expire. Default: $EXPORTS_RETENTION, else P7D.",
    )
    url_ttl_seconds: int | None = Field(
        default=None, description="Presigned URL lifetime in seconds. Default: $EXPORTS_URL_TTL, else 3600."
    )
    read_memory_limit: str | None = Field(
        default=None,
        description="DuckDB's memory limit while an export reads its rows in their stored order (e.g. 64MB, 1GiB; "
        "`none`: no limit); an export DuckDB sorts or computes (order_by, a saved query) gets "
        f"{SORT_MEMORY_FACTOR}x it. It bounds the blocks DuckDB keeps cached, so a long export's memory stays flat; "
        "an export that needs more (wide rows, large values) is read again without it. "
        "Default: $EXPORTS_READ_MEMORY_LIMIT, else 64MB.",
    )

    @field_validator("read_memory_limit")
    @classmethod
    def _check_memory_limit(cls, value: str | None) -> str | None:
        if value is not None:
            memory_size(value, "read_memory_limit")
        return value

    @property
    def resolved_max_rows(self) -> int:
        return self.max_rows or int_env("EXPORTS_MAX_ROWS")

    @property
    def resolved_retention(self) -> timedelta:
        if self.retention is None:
            return parse_duration(env("EXPORTS_RETENTION"), "EXPORTS_RETENTION")
        return parse_duration(self.retention, "retention")

    @property
    def resolved_url_ttl_seconds(self) -> int:
        return self.url_ttl_seconds or int_env("EXPORTS_URL_TTL")

    def read_memory_limit_for(self, request: ExportRequest) -> str | None:
        """DuckDB's `memory_limit` for reading the rows of `request`, or None for DuckDB's default."""
        if self.read_memory_limit is None:
            limit = memory_size(env("EXPORTS_READ_MEMORY_LIMIT"), "EXPORTS_READ_MEMORY_LIMIT")
        else:
            limit = memory_size(self.read_memory_limit, "read_memory_limit")
        if limit is None:
            return None
        computed = request.order_by is not None or request.source.query is not None or request.include_vectors
        return ByteSize(limit * (SORT_MEMORY_FACTOR if computed else 1)).human_readable(decimal=True)


def memory_size(value: str, name: str) -> int | None:
    """`value` (64MB, 1GiB, ...) in bytes; None for `none`."""
    if value.strip().lower() == "none":
        return None
    try:
        size = TypeAdapter(ByteSize).validate_python(value)
    except ValidationError:
        raise ValueError(f"{name} {value!r} is not a memory size (e.g. 64MB, 1GiB, none)") from None
    if size < MIN_MEMORY_LIMIT:
        raise ValueError(f"{name} {value!r} is under {MIN_MEMORY_LIMIT // 2**20} MiB")
    return size
