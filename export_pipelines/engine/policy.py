"""The operator's export policy: row limit, retention, link lifetime."""

from datetime import timedelta

import dagster as dg
from pydantic import Field

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
