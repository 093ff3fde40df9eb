"""The service's environment variables and their embedded defaults, in one place.

Values are read when asked for (at run start, not at import), so a test or the dev command
can point the service at its own warehouse, database and S3 server by setting the environment.
"""

import json
import os
from datetime import timedelta
from pathlib import Path

from pydantic import TypeAdapter

EMBEDDED_DEFAULTS: dict[str, str] = {
    "EXPORTS_WAREHOUSE": ".data/warehouse.duckdb",
    "EXPORTS_DATABASE_URL": "sqlite:///.data/exports.db",
    "EXPORTS_BUCKET": "exports",
    "EXPORTS_PREFIX": "",
    "EXPORTS_MAX_ROWS": "1000000",
    "EXPORTS_RETENTION": "P7D",
    "EXPORTS_URL_TTL": "3600",
    "EXPORTS_BROKER_URL": "filesystem://.data/broker",
    "EXPORTS_CACHE_DIR": ".data/cache",
    "EXPORTS_READ_MEMORY_LIMIT": "64MB",
    "EXPORTS_S3_PARTS_IN_FLIGHT": "3",
}


DEV_ENVIRONMENT_FILE = "dev.env.json"


def use_dev_environment(data_dir: Path = Path(".data")) -> None:
    """Fill unset variables from the running dev deployment (written by `export-pipelines dev`),
    so commands in another shell reach its S3 server, request table and Dagster instance."""
    dev_file = data_dir / DEV_ENVIRONMENT_FILE
    if dev_file.exists():
        for name, value in json.loads(dev_file.read_text()).items():
            os.environ.setdefault(name, value)


def env(name: str) -> str:
    """The value of a service variable: the environment's, else the embedded default."""
    return os.environ.get(name) or EMBEDDED_DEFAULTS[name]


def optional_env(name: str) -> str | None:
    """A variable without an embedded default (e.g. the S3 endpoint: unset means AWS)."""
    return os.environ.get(name) or None


def int_env(name: str) -> int:
    raw = env(name)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def parse_duration(raw: str, label: str) -> timedelta:
    """An ISO-8601 duration such as `P7D` or `PT6H`."""
    try:
        return TypeAdapter(timedelta).validate_python(raw)
    except ValueError:
        raise ValueError(f"{label} must be an ISO-8601 duration such as P7D, got {raw!r}") from None
