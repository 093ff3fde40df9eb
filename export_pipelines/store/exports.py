"""Reading and moving the rows of `export_requests` (SPEC, "Status and figures"), and the Dagster
resource that opens the table's database."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from export_pipelines.settings import env
from export_pipelines.store.database import as_utc, engine_for
from export_pipelines.store.tables import REQUESTED_BY_COLUMNS, ExportStatus, export_requests, idempotency_keys

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# `launched_attempt` of a row a door inserted and launches itself: the fast watch of the table leaves
# it to that door (whose claim replaces it), the request sensor stays its safety net.
RESERVED_FOR_ITS_DOOR = -1
# A door launches the run it claimed within a second or two; a claim older than this is taken for a
# door that died, and the request sensor launches the run after all.
FRESH_CLAIM = timedelta(seconds=30)
# What exports can be listed in order of: the time of the last change of status is `updated_at`.
SORT_KEYS: dict[str, sa.ColumnElement[Any]] = {
    "created_at": export_requests.c.created_at,
    "updated_at": sa.func.coalesce(
        export_requests.c.finished_at, export_requests.c.started_at, export_requests.c.created_at
    ),
    "id": export_requests.c.id,
    "status": export_requests.c.status,
}


class ExportConflict(ValueError):
    """The export exists in a state that does not allow what was asked."""


class IdempotencyConflict(ExportConflict):
    """An Idempotency-Key reused within its window for a different request (HTTP 422)."""


def _now() -> datetime:
    return datetime.now(UTC)


class ExportStore:
    """Reads and moves rows of `export_requests`."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def insert(
        self,
        export_id: str,
        project_id: str,
        request: Mapping[str, Any],
        requested_by: Mapping[str, str | None] | None = None,
        described: Mapping[str, str] | None = None,
        idempotency: tuple[str, str] | None = None,
        reserve_launch: bool = False,
    ) -> str:
        """A new PENDING export, as a producer inserts it; returns its id.

        `described`: the source, format, compression and name already resolved by a door.
        `reserve_launch`: the inserting door launches the run itself (see RESERVED_FOR_ITS_DOOR).
        `idempotency`: (key, body hash) of a create that may be retried: within IDEMPOTENCY_WINDOW
        the same key and hash answer the export the first create made, and insert nothing; the
        same key with another hash is an IdempotencyConflict.
        """
        row = {**_new_row(export_id, project_id, request, requested_by), **(described or {})}
        if reserve_launch:
            row.update(launched_attempt=RESERVED_FOR_ITS_DOOR, launch_claimed_at=row["created_at"])
        if idempotency is None:
            with self.engine.begin() as connection:
                connection.execute(export_requests.insert().values(row))
            return export_id
        for _ in range(3):  # a concurrent create with the same key may win the race: read its answer
            try:
                return self._insert_once(row, project_id, *idempotency)
            except sa.exc.IntegrityError:
                continue
        raise ExportConflict(f"Idempotency-Key {idempotency[0]!r} is being used by concurrent requests; retry")

    def _insert_once(self, row: dict[str, Any], project_id: str, key: str, body_sha256: str) -> str:
        with self.engine.begin() as connection:
            this_key = (idempotency_keys.c.project_id == project_id) & (idempotency_keys.c.key == key)
            earlier = connection.execute(sa.select(idempotency_keys).where(this_key)).mappings().first()
            if earlier is not None and as_utc(earlier["created_at"]) > _now() - IDEMPOTENCY_WINDOW:
                if earlier["body_sha256"] != body_sha256:
                    raise IdempotencyConflict(
                        f"Idempotency-Key {key!r} was used within 24 hours for a different request"
                    )
                return earlier["export_id"]
            if earlier is not None:
                connection.execute(idempotency_keys.delete().where(this_key))
            connection.execute(export_requests.insert().values(row))
            connection.execute(
                idempotency_keys.insert().values(
                    project_id=project_id, key=key, body_sha256=body_sha256, export_id=row["id"], created_at=_now()
                )
            )
        return row["id"]

    def get(self, export_id: str) -> dict[str, Any] | None:
        return self._first(export_requests.c.id == export_id)

    def find_by_run(self, run_id: str) -> dict[str, Any] | None:
        return self._first(export_requests.c.run_id == run_id)

    def _first(self, condition: sa.ColumnElement[bool]) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(export_requests).where(condition)).mappings().first()
        return _decode(row) if row is not None else None

    def start(
        self,
        export_id: str,
        project_id: str,
        request: Mapping[str, Any],
        requested_by: Mapping[str, str | None] | None,
        run_id: str,
    ) -> None:
        """Mark the export RUNNING for `run_id`, creating its row for runs launched without one.

        Raises ExportConflict when the export already finished or another run is working on it.
        """
        with self.engine.begin() as connection:
            existing = connection.execute(
                sa.select(export_requests.c.status, export_requests.c.run_id)
                .where(export_requests.c.id == export_id)
                .with_for_update()
            ).first()
            if existing is None:
                connection.execute(
                    export_requests.insert().values(_new_row(export_id, project_id, request, requested_by))
                )
            elif existing.status in (ExportStatus.SUCCEEDED, ExportStatus.EXPIRED, ExportStatus.CANCELLED) or (
                existing.status == ExportStatus.RUNNING and existing.run_id not in (None, run_id)
            ):
                raise ExportConflict(f"export {export_id} is already {existing.status}")
            # A producer's row keeps what it says about the requester; the run fills the gaps.
            fill = {
                k: sa.func.coalesce(export_requests.c[k], v)
                for k, v in (requested_by or {}).items()
                if k in REQUESTED_BY_COLUMNS and v is not None
            }
            connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id)
                .values(
                    status=ExportStatus.RUNNING.value,
                    run_id=run_id,
                    started_at=_now(),
                    finished_at=None,
                    error=None,
                    rows_written=None,
                    total_rows=None,
                    **fill,
                )
            )

    def describe(self, export_id: str, described: Mapping[str, str]) -> None:
        """Record the resolved `source`, `format`, `compression` and `name`."""
        self._update(export_id, **described)

    def claim_launch(self, export_id: str, attempt: int) -> bool:
        """Claim the launch of a PENDING export's attempt; True for exactly one caller, whatever
        the number of processes asking."""
        unclaimed = sa.or_(export_requests.c.launched_attempt.is_(None), export_requests.c.launched_attempt < attempt)
        with self.engine.begin() as connection:
            result = connection.execute(
                export_requests.update()
                .where(
                    export_requests.c.id == export_id,
                    export_requests.c.attempt == attempt,
                    export_requests.c.status == ExportStatus.PENDING.value,
                    unclaimed,
                )
                .values(launched_attempt=attempt, launch_claimed_at=_now())
            )
        return result.rowcount == 1

    def release_launch(self, export_id: str, attempt: int) -> None:
        """Give up a claim whose launch failed: the request sensor launches the attempt at once."""
        self._update_where(
            (export_requests.c.id == export_id) & (export_requests.c.launched_attempt == attempt),
            launch_claimed_at=None,
        )

    def take_launch(self, record: Mapping[str, Any]) -> bool:
        """Take the launch of a PENDING export's current attempt for the request sensor, unless a door
        claimed (or reserved) it less than FRESH_CLAIM ago; True when the sensor may request its run.

        Taken like a released claim (the attempt, no time): no door launches it any more, and the
        sensor takes it again on any later tick (Dagster's run-key dedupe keeps that to one run).
        One conditional update, so a door's claim and the sensor's never both succeed."""
        claimed, claimed_at = export_requests.c.launched_attempt, export_requests.c.launch_claimed_at
        attempt = record["attempt"]
        doors_claims = (attempt, RESERVED_FOR_ITS_DOOR) if attempt == 0 else (attempt,)  # reservations hold attempt 0
        # Spelled out for NULLs: no claim (or no time) is no fresh claim, and NOT of NULL is NULL.
        door_claim_is_fresh = sa.and_(
            claimed.is_not(None),
            claimed.in_(doors_claims),
            claimed_at.is_not(None),
            claimed_at > _now() - FRESH_CLAIM,
        )
        with self.engine.begin() as connection:
            result = connection.execute(
                export_requests.update()
                .where(
                    export_requests.c.id == record["id"],
                    export_requests.c.attempt == attempt,
                    export_requests.c.status == ExportStatus.PENDING.value,
                    sa.not_(door_claim_is_fresh),
                )
                .values(launched_attempt=attempt, launch_claimed_at=None)
            )
        return result.rowcount == 1

    def unlaunched(self, limit: int) -> list[dict[str, Any]]:
        """PENDING exports whose current attempt no door has claimed or reserved to launch, oldest first."""
        query = (
            sa.select(export_requests)
            .where(
                export_requests.c.status == ExportStatus.PENDING.value,
                sa.or_(
                    export_requests.c.launched_attempt.is_(None),
                    sa.and_(
                        export_requests.c.launched_attempt < export_requests.c.attempt,
                        # a reservation holds the first attempt only: retries are anyone's
                        sa.or_(
                            export_requests.c.launched_attempt != RESERVED_FOR_ITS_DOOR,
                            export_requests.c.attempt > 0,
                        ),
                    ),
                ),
            )
            .order_by(export_requests.c.created_at, export_requests.c.id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def progress(self, export_id: str, rows_written: int, total_rows: int) -> None:
        """Record how far a RUNNING export's writing has come."""
        self._update(export_id, rows_written=rows_written, total_rows=total_rows)

    def succeed(self, export_id: str, row_count: int, byte_count: int, duration_ms: int, files: list[dict]) -> None:
        self._update(
            export_id,
            status=ExportStatus.SUCCEEDED.value,
            finished_at=_now(),
            row_count=row_count,
            bytes=byte_count,
            duration_ms=duration_ms,
            files=json.dumps(files),
            error=None,
        )

    def finish_unfinished(self, export_id: str, status: ExportStatus, error: str | None) -> bool:
        """Move a PENDING or RUNNING export to a final status; False when it had one already."""
        return self.finish_unfinished_if(export_id, (ExportStatus.PENDING, ExportStatus.RUNNING), status, error)

    def finish_unfinished_if(
        self,
        export_id: str,
        current: ExportStatus | tuple[ExportStatus, ...],
        status: ExportStatus,
        error: str | None,
    ) -> bool:
        """Move the export to `status` only if it is in `current` (atomically); True if it moved."""
        current = current if isinstance(current, tuple) else (current,)
        with self.engine.begin() as connection:
            result = connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id, export_requests.c.status.in_([c.value for c in current]))
                .values(status=status.value, finished_at=_now(), error=error)
            )
        return result.rowcount == 1

    def relaunch_lost(self, export_id: str, attempt: int, most: int) -> bool | None:
        """The run of the export's `attempt` was lost before it began (the export is still PENDING at
        that attempt): queue the export again as a new attempt, unless `most` runs were lost already.
        True if queued again, False if not (the caller fails it), None if the export has moved on."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(export_requests.c.status, export_requests.c.attempt, export_requests.c.lost_runs)
                .where(export_requests.c.id == export_id)
                .with_for_update()
            ).first()
            if row is None or row.status != ExportStatus.PENDING or row.attempt != attempt:
                return None
            if row.lost_runs >= most:
                return False
            connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id)
                .values(attempt=attempt + 1, lost_runs=row.lost_runs + 1, run_id=None)
            )
        return True

    def pending(
        self, created_since: datetime | None, limit: int, created_before: datetime | None = None
    ) -> list[dict[str, Any]]:
        """PENDING exports, oldest first (ties broken by id), created in [created_since, created_before)."""
        query = sa.select(export_requests).where(export_requests.c.status == ExportStatus.PENDING.value)
        if created_since is not None:
            query = query.where(export_requests.c.created_at >= created_since)
        if created_before is not None:
            query = query.where(export_requests.c.created_at < created_before)
        query = query.order_by(export_requests.c.created_at, export_requests.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def running(self, limit: int) -> list[dict[str, Any]]:
        """RUNNING exports, oldest first: the ones whose run may have ended unseen."""
        query = (
            sa.select(export_requests)
            .where(export_requests.c.status == ExportStatus.RUNNING.value)
            .order_by(export_requests.c.started_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def retry(self, export_id: str) -> int:
        """Queue a FAILED or CANCELLED export again as a new attempt; returns the attempt number."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(export_requests.c.status, export_requests.c.attempt)
                .where(export_requests.c.id == export_id)
                .with_for_update()
            ).first()
            if row is None:
                raise KeyError(export_id)
            if row.status not in (ExportStatus.FAILED, ExportStatus.CANCELLED):
                raise ExportConflict(
                    f"export {export_id} is {row.status}; only FAILED or CANCELLED exports are retried"
                )
            attempt = row.attempt + 1
            connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id)
                .values(
                    status=ExportStatus.PENDING.value,
                    attempt=attempt,
                    error=None,
                    run_id=None,
                    started_at=None,
                    finished_at=None,
                )
            )
        return attempt

    def list_exports(
        self,
        project_id: str,
        statuses: list[str] | None,
        limit: int | None,
        created_before: datetime | None,
        created_after: datetime | None = None,
        search: str | None = None,
        sort: str = "created_at",
        descending: bool = True,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """A project's exports ordered by `sort` (a key of SORT_KEYS; newest first by default),
        ties broken by id, `limit` of them (all with None) after skipping `offset`; created before
        the keyset cursor `created_before` and after `created_after`; `search` matches id, source or
        name, case-insensitively."""
        key = SORT_KEYS[sort]
        order = (key.desc(), export_requests.c.id.desc()) if descending else (key.asc(), export_requests.c.id.asc())
        query = self._matching(project_id, statuses, created_before, created_after, search)
        query = query.order_by(*order).offset(offset).limit(limit)
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def count_exports(
        self,
        project_id: str,
        statuses: list[str] | None = None,
        created_before: datetime | None = None,
        created_after: datetime | None = None,
        search: str | None = None,
    ) -> int:
        """How many exports `list_exports` would list with no limit."""
        matching = self._matching(project_id, statuses, created_before, created_after, search).subquery()
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(matching)).scalar_one()

    @staticmethod
    def _matching(
        project_id: str,
        statuses: list[str] | None,
        created_before: datetime | None,
        created_after: datetime | None,
        search: str | None,
    ) -> sa.Select:
        query = sa.select(export_requests).where(export_requests.c.project_id == project_id)
        if statuses:
            query = query.where(export_requests.c.status.in_(statuses))
        if created_before is not None:
            query = query.where(export_requests.c.created_at < created_before)
        if created_after is not None:
            query = query.where(export_requests.c.created_at > created_after)
        if search:
            needle = search.lower()
            query = query.where(
                sa.or_(
                    *(
                        sa.func.lower(export_requests.c[column]).contains(needle, autoescape=True)
                        for column in ("id", "source", "name")
                    )
                )
            )
        return query

    def delete(self, export_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(export_requests.delete().where(export_requests.c.id == export_id))

    def _update(self, export_id: str, **values: Any) -> None:
        self._update_where(export_requests.c.id == export_id, **values)

    def _update_where(self, condition: sa.ColumnElement[bool], **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(export_requests.update().where(condition).values(**values))


def _new_row(
    export_id: str, project_id: str, request: Mapping[str, Any], requested_by: Mapping[str, str | None] | None
) -> dict[str, Any]:
    return {
        "id": export_id,
        "project_id": project_id,
        "request": json.dumps(request),
        # Set here rather than by the database: microseconds on SQLite too, so that creates
        # made in the same millisecond keep a strict order for keyset paging.
        "created_at": _now(),
        **{k: v for k, v in (requested_by or {}).items() if k in REQUESTED_BY_COLUMNS},
    }


def run_key(record: Mapping[str, Any]) -> str:
    """The Dagster run key of an export's current attempt (a retry needs a key of its own)."""
    return record["id"] if not record["attempt"] else f"{record['id']}.attempt-{record['attempt']}"


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    record = dict(row)
    for key in ("created_at", "started_at", "finished_at"):
        record[key] = as_utc(record[key])
    record["files"] = json.loads(record["files"]) if record["files"] else []
    return record


class ExportStoreResource(dg.ConfigurableResource):
    """The request table's database."""

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the export_requests database. Default: $EXPORTS_DATABASE_URL, "
        "else sqlite:///.data/exports.db.",
    )

    def get_store(self) -> ExportStore:
        return ExportStore(engine_for(self.database_url or env("EXPORTS_DATABASE_URL")))
