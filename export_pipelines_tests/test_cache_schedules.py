"""Refresh schedules and what falls due when, with the clock frozen (time-machine): BASIC durations
(units, the one-minute minimum, months and years refused), CRON expressions, and the due refreshes of
an entry (its first copy, each schedule's latest point, a covered incremental, one asked for).
Pure logic: no database, no Dagster."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from export_pipelines.cache.due import ASKED, FIRST, FULL, INCREMENTAL, due_refreshes, next_refresh_at
from export_pipelines.cache.schedules import InvalidSchedule, Schedule

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("PT6H", timedelta(hours=6)),
        ("pt6h", timedelta(hours=6)),
        ("P1D", timedelta(days=1)),
        ("P1DT30M", timedelta(days=1, minutes=30)),
        ("PT1M", timedelta(minutes=1)),
        ("PT90S", timedelta(seconds=90)),
        ("P2W", timedelta(weeks=2)),
    ],
)
def test_basic_durations(expression: str, interval: timedelta) -> None:
    assert Schedule.parse({"type": "BASIC", "expression": expression}).interval() == interval


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "BASIC", "expression": "PT59S"}, "shorter than the minimum of one minute"),
        ({"type": "BASIC", "expression": "PT0M"}, "shorter than the minimum"),
        ({"type": "BASIC", "expression": "P1M"}, "counts years or months"),
        ({"type": "BASIC", "expression": "P1Y"}, "counts years or months"),
        ({"type": "BASIC", "expression": "P1Y2M3DT4H"}, "counts years or months"),
        ({"type": "BASIC", "expression": "6 hours"}, "not an ISO-8601 duration"),
        ({"type": "BASIC", "expression": "-PT6H"}, "not an ISO-8601 duration"),
        ({"type": "BASIC", "expression": "PT"}, "not an ISO-8601 duration"),
        ({"type": "CRON", "expression": "0 */6 * * * *"}, "five fields"),
        ({"type": "CRON", "expression": "61 * * * *"}, "five fields"),
        ({"type": "CRON", "expression": "every day"}, "five fields"),
        ({"type": "WEEKLY", "expression": "x"}, "unknown type 'WEEKLY'"),
        ({"type": "BASIC"}, "must be"),
        ({"type": "BASIC", "expression": 6}, "expression must be text"),
        ("PT6H", "must be"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(raw, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        Schedule.parse(raw, "incrementalCacheSchedule")


def test_basic_falls_due_every_interval_from_its_anchor() -> None:
    every_6h = Schedule.parse({"type": "BASIC", "expression": "PT6H"})
    assert every_6h.latest_due(T0, T0 + timedelta(hours=5, minutes=59)) is None
    assert every_6h.latest_due(T0, T0 + timedelta(hours=6)) == T0 + timedelta(hours=6)
    assert every_6h.latest_due(T0, T0 + timedelta(hours=13)) == T0 + timedelta(hours=12)
    assert every_6h.next_due(T0, T0 + timedelta(hours=13)) == T0 + timedelta(hours=18)
    assert every_6h.next_due(T0, T0) == T0 + timedelta(hours=6)


def test_cron_falls_due_on_its_times_after_the_anchor() -> None:
    six_hourly = Schedule.parse({"type": "CRON", "expression": "0 */6 * * *"})
    assert six_hourly.latest_due(T0, T0 + timedelta(minutes=30)) is None  # 12:00 is the anchor itself
    assert six_hourly.latest_due(T0, datetime(2026, 3, 1, 18, 0, tzinfo=UTC)) == datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
    assert six_hourly.latest_due(T0, datetime(2026, 3, 2, 1, 0, tzinfo=UTC)) == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert six_hourly.next_due(T0, datetime(2026, 3, 2, 1, 0, tzinfo=UTC)) == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def _entry(**changes) -> dict:
    return {
        "id": "e1",
        "status": "READY",
        "version": 1,
        "created_at": T0,
        "schedules_set_at": T0,
        "incremental_schedule": {"type": "BASIC", "expression": "PT1H"},
        "full_refresh_schedule": {"type": "CRON", "expression": "0 0 * * *"},
        "refresh_requested_at": None,
        "refresh_requested_full": False,
        **changes,
    }


def test_a_new_entry_is_due_for_its_first_full_refresh_at_once() -> None:
    (first,) = due_refreshes(_entry(version=0, status="PENDING"), T0 + timedelta(seconds=1))
    assert (first.reason, first.full, first.due_at, first.launch) == (FIRST, True, T0, True)
    assert first.run_key == f"e1:first:{T0.isoformat()}"
    assert next_refresh_at(_entry(version=0, status="PENDING"), T0) == T0


def test_due_refreshes_with_frozen_time() -> None:
    with time_machine.travel(T0 + timedelta(minutes=59), tick=False):
        assert due_refreshes(_entry(), datetime.now(UTC)) == []
        assert next_refresh_at(_entry(), datetime.now(UTC)) == T0 + timedelta(hours=1)
    with time_machine.travel(T0 + timedelta(hours=3, minutes=5), tick=False):
        (incremental,) = due_refreshes(_entry(), datetime.now(UTC))
        assert (incremental.reason, incremental.due_at, incremental.full) == (
            INCREMENTAL,
            T0 + timedelta(hours=3),
            False,
        )
    midnight = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    with time_machine.travel(midnight + timedelta(seconds=30), tick=False):
        due = {d.reason: d for d in due_refreshes(_entry(), datetime.now(UTC))}
        assert due[FULL].due_at == midnight and due[FULL].launch
        assert due[INCREMENTAL].due_at == midnight and not due[INCREMENTAL].launch  # the full one covers it
    asked = _entry(refresh_requested_at=T0 + timedelta(minutes=3), refresh_requested_full=True)
    (refresh,) = due_refreshes(asked, T0 + timedelta(minutes=4))
    assert (refresh.reason, refresh.full) == (ASKED, True)


def test_changed_schedules_count_from_when_they_were_set() -> None:
    moved = _entry(schedules_set_at=T0 + timedelta(minutes=30), full_refresh_schedule=None)
    assert due_refreshes(moved, T0 + timedelta(hours=1, minutes=10)) == []
    (due,) = due_refreshes(moved, T0 + timedelta(hours=1, minutes=31))
    assert due.due_at == T0 + timedelta(hours=1, minutes=30)
