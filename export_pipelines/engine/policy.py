"""The operator's export policy: row limit, retention, link lifetime, memory for reading."""

from datetime import timedelta

import dagster as dg
import duckdb
from pydantic import Field, field_validator

from export_pipelines.settings import env, int_env, parse_duration


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
        description="DuckDB's memory limit while an export reads its rows (e.g. 64MB; `none`: no limit): it bounds "
        "the blocks DuckDB keeps cached, so a long export's memory stays flat. An export that needs more (wide "
        "rows, large values) is read again without it. Default: $EXPORTS_READ_MEMORY_LIMIT, else 64MB.",
    )

    @field_validator("read_memory_limit")
    @classmethod
    def _check_memory_limit(cls, value: str | None) -> str | None:
        if value is not None:
            memory_limit_setting(value)
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

    @property
    def resolved_read_memory_limit(self) -> str | None:
        """DuckDB's `memory_limit` for reading an export's rows, or None for DuckDB's own default."""
        if self.read_memory_limit is None:
            return memory_limit_setting(env("EXPORTS_READ_MEMORY_LIMIT"), "EXPORTS_READ_MEMORY_LIMIT")
        return memory_limit_setting(self.read_memory_limit)


def memory_limit_setting(value: str, name: str = "read_memory_limit") -> str | None:
    """`value` checked by DuckDB itself; None for `none`."""
    if value.strip().lower() == "none":
        return None
    try:
        duckdb.connect(config={"memory_limit": value}).close()
    except duckdb.Error as error:
        raise ValueError(
            f"{name} {value!r} is not a memory size DuckDB takes (e.g. 64MB, 1GB, none): {error}"
        ) from None
    return value
