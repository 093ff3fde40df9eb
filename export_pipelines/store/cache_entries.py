"""Reading and moving the rows of `cache_entries` (SPEC, "Cache"): entries created or rescheduled by
a batch, refreshes started, published (the version pointer switched in one transaction, the old
version retired) or failed, and retired versions handed to the clean-up once their grace is over."""

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from export_pipelines.store.database import as_utc
from export_pipelines.store.tables import CacheStatus, cache_entries, cache_retired_versions

_TIMES = ("schedules_set_at", "last_refresh_at", "last_full_refresh_at", "refresh_requested_at", "created_at",
          "updated_at")  # fmt: skip
_SCHEDULES = ("incremental_schedule", "full_refresh_schedule")


def _now() -> datetime:
    return datetime.now(UTC)


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    record = dict(row)
    for key in _TIMES:
        record[key] = as_utc(record[key])
    for key in _SCHEDULES:
        record[key] = json.loads(record[key]) if record[key] else None
    return record


class CacheStore:
    """Reads and moves rows of `cache_entries`."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def put(
        self,
        project_id: str,
        catalog_id: str,
        schema_name: str,
        table_name: str,
        incremental: Mapping[str, str] | None,
        full: Mapping[str, str] | None,
    ) -> tuple[dict[str, Any], bool]:
        """The project's entry for the table with these schedules: created (True) or, if it exists,
        updated (False); changed schedules count from now."""
        schedules = {
            "incremental_schedule": json.dumps(incremental) if incremental else None,
            "full_refresh_schedule": json.dumps(full) if full else None,
        }
        this_table = sa.and_(
            cache_entries.c.project_id == project_id,
            cache_entries.c.catalog_id == catalog_id,
            cache_entries.c.schema_name == schema_name,
            cache_entries.c.table_name == table_name,
        )
        for _ in range(3):  # a concurrent batch may create the same entry first: then update it
            with self.engine.begin() as connection:
                existing = connection.execute(sa.select(cache_entries).where(this_table)).mappings().first()
                now = _now()
                if existing is None:
                    entry_id = str(uuid.uuid4())
                    try:
                        connection.execute(
                            cache_entries.insert().values(
                                id=entry_id,
                                project_id=project_id,
                                catalog_id=catalog_id,
                                schema_name=schema_name,
                                table_name=table_name,
                                schedules_set_at=now,
                                created_at=now,
                                updated_at=now,
                                **schedules,
                            )
                        )
                    except sa.exc.IntegrityError:
                        continue
                    created = True
                else:
                    entry_id = existing["id"]
                    changed = {k: v for k, v in schedules.items() if existing[k] != v}
                    if changed:
                        connection.execute(
                            cache_entries.update()
                            .where(cache_entries.c.id == entry_id)
                            .values(**changed, schedules_set_at=now, updated_at=now)
                        )
                    created = False
            record = self.get(entry_id)
            assert record is not None
            return record, created
        raise RuntimeError(f"could not create or update the cache entry of {schema_name}.{table_name}")

    def get(self, entry_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(cache_entries).where(cache_entries.c.id == entry_id)).mappings().first()
        return _decode(row) if row is not None else None

    def find(self, project_id: str, catalog_id: str, schema_name: str, table_name: str) -> dict[str, Any] | None:
        query = sa.select(cache_entries).where(
            cache_entries.c.project_id == project_id,
            cache_entries.c.catalog_id == catalog_id,
            cache_entries.c.schema_name == schema_name,
            cache_entries.c.table_name == table_name,
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _decode(row) if row is not None else None

    def list_entries(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """A project's entries (every project's with None), oldest first."""
        query = sa.select(cache_entries).order_by(cache_entries.c.created_at, cache_entries.c.id)
        if project_id is not None:
            query = query.where(cache_entries.c.project_id == project_id)
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def request_refresh(self, entry_id: str, full: bool) -> None:
        """Ask for a refresh now (the refresh sensor launches it)."""
        self._update(entry_id, refresh_requested_at=_now(), refresh_requested_full=full)

    def start_refresh(self, entry_id: str, run_id: str) -> None:
        self._update(entry_id, status=CacheStatus.REFRESHING.value, run_id=run_id)

    def publish(
        self,
        entry_id: str,
        based_on: int,
        path: str,
        rows: int,
        watermark: str | None,
        refreshed_at: datetime,
        full: bool,
    ) -> bool:
        """Point the entry at its new version, if its current one is still `based_on` (False: another
        refresh published first), and retire the version it replaces; in one transaction."""
        with self.engine.begin() as connection:
            current = connection.execute(
                sa.select(cache_entries.c.version, cache_entries.c.version_path)
                .where(cache_entries.c.id == entry_id)
                .with_for_update()
            ).first()
            if current is None or current.version != based_on:
                return False
            values: dict[str, Any] = {
                "version": based_on + 1,
                "version_path": path,
                "row_count": rows,
                "watermark": watermark,
                "last_refresh_at": refreshed_at,
                "status": CacheStatus.READY.value,
                "error": None,
                "updated_at": _now(),
            }
            if full:
                values["last_full_refresh_at"] = refreshed_at
            connection.execute(cache_entries.update().where(cache_entries.c.id == entry_id).values(**values))
            if current.version_path:
                connection.execute(
                    cache_retired_versions.insert().values(
                        path=current.version_path, entry_id=entry_id, retired_at=_now()
                    )
                )
        return True

    def fail_refresh(self, entry_id: str, run_id: str | None, error: str) -> bool:
        """Record why a refresh failed (the copy stays); False when another run owns the entry now."""
        condition = cache_entries.c.id == entry_id
        if run_id is not None:
            condition &= sa.or_(cache_entries.c.run_id == run_id, cache_entries.c.run_id.is_(None))
        with self.engine.begin() as connection:
            result = connection.execute(
                cache_entries.update()
                .where(condition)
                .values(status=CacheStatus.FAILED.value, error=error, updated_at=_now())
            )
        return result.rowcount == 1

    def delete(self, entry_id: str) -> None:
        """Remove the entry; its current version is retired (readers may still hold it)."""
        with self.engine.begin() as connection:
            path = connection.execute(
                sa.select(cache_entries.c.version_path).where(cache_entries.c.id == entry_id)
            ).scalar_one_or_none()
            connection.execute(cache_entries.delete().where(cache_entries.c.id == entry_id))
            if path:
                connection.execute(
                    cache_retired_versions.insert().values(path=path, entry_id=entry_id, retired_at=_now())
                )

    def retired(self, before: datetime) -> list[str]:
        """Paths of versions retired before `before`."""
        query = sa.select(cache_retired_versions.c.path).where(cache_retired_versions.c.retired_at < before)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def in_use(self) -> set[str]:
        """Paths of every current and not yet removed version."""
        with self.engine.connect() as connection:
            current = connection.execute(
                sa.select(cache_entries.c.version_path).where(cache_entries.c.version_path.is_not(None))
            ).scalars()
            retired = connection.execute(sa.select(cache_retired_versions.c.path)).scalars()
            return set(current) | set(retired)

    def forget_retired(self, paths: list[str]) -> None:
        with self.engine.begin() as connection:
            connection.execute(cache_retired_versions.delete().where(cache_retired_versions.c.path.in_(paths)))

    def _update(self, entry_id: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                cache_entries.update().where(cache_entries.c.id == entry_id).values(**values, updated_at=_now())
            )
