"""Which refreshes of a cache entry are due (SPEC, "Cache"), as a pure function of the entry and
the time: its first full refresh at once, the latest point of each schedule, a refresh asked for
through the API. Each due refresh has a stable key, so launching it twice can be refused."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from export_pipelines.cache.schedules import Schedule

FIRST, FULL, INCREMENTAL, ASKED = "first", "full", "incremental", "asked"


@dataclass(frozen=True)
class DueRefresh:
    """A refresh that fell due: `reason` is one of FIRST, FULL, INCREMENTAL, ASKED; one that another
    refresh due at the same time covers is not launched (`launch` False) but counts as handled."""

    entry_id: str
    reason: str
    due_at: datetime
    full: bool
    launch: bool = True

    @property
    def run_key(self) -> str:
        return f"{self.entry_id}:{self.reason}:{self.due_at.isoformat()}"


def schedules(entry: dict[str, Any]) -> tuple[Schedule | None, Schedule | None]:
    """The entry's (incremental, full refresh) schedules."""
    incremental, full = entry["incremental_schedule"], entry["full_refresh_schedule"]
    return (
        Schedule.parse(incremental) if incremental else None,
        Schedule.parse(full) if full else None,
    )


def due_refreshes(entry: dict[str, Any], now: datetime) -> list[DueRefresh]:
    """Every refresh of the entry due at `now` (a launcher remembers which it launched already).

    A scheduled incremental refresh that falls due no later than a full one is covered by it."""
    entry_id = entry["id"]
    due = [DueRefresh(entry_id, FIRST, entry["created_at"], True)] if entry["version"] == 0 else []
    incremental, full = schedules(entry)
    anchor = entry["schedules_set_at"]
    full_due = full.latest_due(anchor, now) if full else None
    incremental_due = incremental.latest_due(anchor, now) if incremental else None
    if full_due is not None:
        due.append(DueRefresh(entry_id, FULL, full_due, True))
    if incremental_due is not None:
        covered = full_due is not None and full_due >= incremental_due
        due.append(DueRefresh(entry_id, INCREMENTAL, incremental_due, False, launch=not covered))
    if entry["refresh_requested_at"] is not None:
        due.append(DueRefresh(entry_id, ASKED, entry["refresh_requested_at"], entry["refresh_requested_full"]))
    return due


def next_refresh_at(entry: dict[str, Any], now: datetime) -> datetime | None:
    """When the entry's next refresh falls due: now while its first copy is missing."""
    if entry["version"] == 0 and entry["status"] == "PENDING":
        return now
    incremental, full = schedules(entry)
    times = [schedule.next_due(entry["schedules_set_at"], now) for schedule in (incremental, full) if schedule]
    return min(times, default=None)
