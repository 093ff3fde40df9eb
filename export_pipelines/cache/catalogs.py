"""The external databases whose tables can be cached ("catalogs"), declared by the operator in the
YAML file named by `EXPORTS_CATALOGS` (SPEC, "Cache"):

    catalogs:
      - id: "627249916703408649"
        name: stripe
        url: postgresql://reader@db.internal/stripe      # any SQLAlchemy URL
        incremental:                                     # optional, per table
          public.charges: {cursor: changed_at, primary_key: [id], lag: PT5M}
"""

import re
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from export_pipelines.engine.warehouse import WAREHOUSE_CATALOG
from export_pipelines.settings import optional_env, parse_duration

DEFAULT_CURSOR = "updated_at"
DEFAULT_LAG = "PT5M"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class CatalogsFileError(ValueError):
    """The catalogs file cannot be read; the message says where and why."""


class IncrementalSettings(BaseModel):
    """How a table is refreshed incrementally: its cursor column, its key, and how far back each
    incremental read starts before the last watermark (rows that commit late are not lost)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: str = DEFAULT_CURSOR
    primary_key: tuple[str, ...] | None = None
    lag: str = DEFAULT_LAG

    @field_validator("lag")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value, "lag")
        return value

    @property
    def lag_interval(self) -> timedelta:
        return parse_duration(self.lag, "lag")


class Catalog(BaseModel):
    """An external database, reached through its SQLAlchemy URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    name: str
    url: str
    incremental: dict[str, IncrementalSettings] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a letter then letters, digits or _ (at most 64)")
        return value

    @field_validator("url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        try:
            sa.make_url(value)
        except sa.exc.ArgumentError:
            raise ValueError("is not a SQLAlchemy URL such as postgresql://user@host/db") from None
        return value

    @property
    def display_url(self) -> str:
        """The URL without its password: what logs and answers may show."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def incremental_settings(self, schema: str, table: str) -> IncrementalSettings:
        return self.incremental.get(f"{schema}.{table}") or IncrementalSettings()


class CatalogsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    catalogs: list[Catalog] = Field(default_factory=list)


def load_catalogs(path: str | Path | None = None) -> dict[str, Catalog]:
    """The declared catalogs by id: from `path`, else $EXPORTS_CATALOGS; none when neither is set."""
    location = path or optional_env("EXPORTS_CATALOGS")
    if location is None:
        return {}
    try:
        raw = yaml.safe_load(Path(location).read_text())
    except OSError as error:
        raise CatalogsFileError(f"catalogs file {location} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise CatalogsFileError(f"catalogs file {location} is not valid YAML: {error}") from None
    try:
        declared = CatalogsFile.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise CatalogsFileError(f"catalogs file {location}: {problems}") from None
    catalogs: dict[str, Catalog] = {}
    for catalog in declared.catalogs:
        if catalog.id in catalogs or catalog.id == WAREHOUSE_CATALOG:
            raise CatalogsFileError(
                f"catalogs file {location}: catalog id {catalog.id!r} is declared twice or reserved"
            )
        catalogs[catalog.id] = catalog
    return catalogs
