"""One refresh of a cache entry, as a plain function (the refresh asset runs it and shows its figures):
read the source on one snapshot, write a new version, switch the entry's pointer to it, and remove
the versions whose grace period is over. A refresh that fails leaves the previous copy in place."""

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from export_pipelines.cache.catalogs import Catalog
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.cache.sources import CatalogReader, CatalogUnavailable, TableInfo, UnknownCatalogTable, scrubbed
from export_pipelines.cache.versions import (
    INTEGER_TYPES,
    RefreshFigures,
    SchemaChanged,
    VersionWriter,
    check_columns,
    column_types,
    since,
)

DEFAULT_GRACE = timedelta(minutes=10)


class RefreshFailed(RuntimeError):
    """A refresh that could not be made; the message is recorded on the entry."""


@dataclass(frozen=True)
class RefreshOutcome:
    """A published refresh: its kind, the new version and what it changed."""

    kind: str  # "full" or "incremental"
    reason: str  # why this kind
    version: int
    figures: RefreshFigures
    refreshed_at: datetime
    duration_ms: int


@dataclass(frozen=True)
class TablePlan:
    """How a table can be refreshed: its columns, key and cursor as the catalog declares them."""

    table: TableInfo
    key: tuple[str, ...]
    cursor: str | None
    lag: timedelta

    @property
    def incremental_possible(self) -> bool:
        return bool(self.key) and self.cursor is not None


def plan_table(catalog: Catalog, schema: str, name: str) -> TablePlan:
    """Look the table up in its catalog (UnknownCatalogTable, CatalogUnavailable) and settle its
    key and cursor: the catalog file's settings, else the table's primary key and `updated_at`."""
    table = CatalogReader(catalog).table(schema, name)
    check_columns(table.columns)
    settings = catalog.incremental_settings(schema, name)
    key = tuple(settings.primary_key or table.primary_key)
    missing = [column for column in key if column not in table.columns]
    if missing:
        raise ValueError(f"primary key column(s) {', '.join(missing)} of {schema}.{name} do not exist")
    cursor = settings.cursor if settings.cursor in table.columns else None
    return TablePlan(table, key, cursor, settings.lag_interval)


def incremental_blocker(plan: TablePlan, catalog: Catalog) -> str | None:
    """Why the table cannot be refreshed incrementally, or None."""
    name = f"{plan.table.schema}.{plan.table.name}"
    if plan.cursor is None:
        cursor = catalog.incremental_settings(plan.table.schema, plan.table.name).cursor
        return (
            f"{name} has no cursor column {cursor!r} for incremental refreshes; name another in the catalog's "
            f"incremental settings ({{{name}: {{cursor: <column>}}}}) or use only a full refresh schedule"
        )
    if not plan.key:
        return (
            f"{name} has no primary key for incremental refreshes; declare one in the catalog's incremental "
            f"settings ({{{name}: {{primary_key: [<column>]}}}}) or use only a full refresh schedule"
        )
    return None


def refresh(
    resource: CachedTablesResource, entry: dict[str, Any], full: bool, run_id: str | None = None
) -> RefreshOutcome:
    """Refresh the entry (full, or incremental when asked and possible) and publish the new version."""
    started = time.monotonic()
    store = resource.store()
    catalog = resource.catalogs().get(entry["catalog_id"])
    if catalog is None:
        raise RefreshFailed(f"catalog {entry['catalog_id']} is no longer declared in the catalogs file")
    schema, name = entry["schema_name"], entry["table_name"]
    plan = plan_table(catalog, schema, name)
    base = resource.version_path(entry["version_path"]) if entry["version_path"] else None
    kind, reason = _kind(full, base, plan, catalog)
    version = entry["version"] + 1
    relative = f"{entry['id']}/{version:06d}-{uuid.uuid4().hex[:8]}.duckdb"
    refreshed_at = datetime.now(UTC)
    writer = VersionWriter(
        resource.version_path(relative), schema, name, entry["id"], refreshed_at, plan.table.duckdb_casts()
    )
    reader = CatalogReader(catalog)
    try:
        with reader.snapshot() as snapshot:
            if kind == "incremental":
                assert base is not None and plan.cursor is not None
                types = column_types(base, schema, name)
                start = since(entry["watermark"], types.get(plan.cursor, ""), plan.lag)
                (key_column, *more) = plan.key
                integer_key = not more and types.get(key_column, "") in INTEGER_TYPES
                try:
                    figures = writer.incremental(
                        base,
                        lambda: snapshot.rows(plan.table, plan.cursor, start),
                        lambda: snapshot.keys(plan.table, plan.key),
                        plan.key,
                        plan.cursor,
                        entry["watermark"],
                        (lambda: snapshot.key_fingerprint(plan.table, key_column)) if integer_key else None,
                    )
                except SchemaChanged as changed:
                    writer.discard()
                    kind, reason = "full", f"{changed}: full refresh instead"
            if kind == "full":
                figures = writer.full(snapshot.rows(plan.table), plan.key, plan.cursor, base)
        writer.publish()
    except BaseException as error:
        writer.discard()
        if isinstance(error, Exception) and not isinstance(error, (CatalogUnavailable, UnknownCatalogTable)):
            raise RefreshFailed(scrubbed(catalog, error)) from error
        raise
    if not store.publish(entry["id"], entry["version"], relative, figures.rows, figures.watermark, refreshed_at,
                         kind == "full"):  # fmt: skip
        writer.target.unlink(missing_ok=True)
        raise RefreshFailed("another refresh of this entry published a newer copy first; this one was dropped")
    return RefreshOutcome(kind, reason, version, figures, refreshed_at, int((time.monotonic() - started) * 1000))


def _kind(full: bool, base: Any, plan: TablePlan, catalog: Catalog) -> tuple[str, str]:
    if base is None:
        return "full", "no copy yet"
    if full:
        return "full", "full refresh asked for"
    blocker = incremental_blocker(plan, catalog)
    if blocker is not None:
        return "full", blocker
    return "incremental", f"rows with {plan.cursor} at or after the watermark less {plan.lag}"


def remove_retired_versions(resource: CachedTablesResource, grace: timedelta = DEFAULT_GRACE) -> int:
    """Delete version files retired longer than `grace` ago, and files no entry knows (left by a
    refresh that died) older than that; returns how many files went."""
    store = resource.store()
    cutoff = datetime.now(UTC) - grace
    retired = store.retired(cutoff)
    removed = 0
    for relative in retired:
        path = resource.version_path(relative)
        for file in (path, path.with_name(path.name + ".wal")):
            if file.exists():
                file.unlink()
                removed += 1
    if retired:
        store.forget_retired(retired)
    known = {resource.version_path(relative) for relative in store.in_use()}
    if resource.root.exists():
        for file in resource.root.glob("*/*"):
            if file.is_file() and file not in known and file.stat().st_mtime < cutoff.timestamp():
                if file.suffix == ".wal" and file.with_suffix("") in known:
                    continue
                file.unlink(missing_ok=True)
                removed += 1
    return removed
