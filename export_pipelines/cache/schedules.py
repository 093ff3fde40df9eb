"""Refresh schedules of cache entries (SPEC, "Cache"), and when each one is due.

A schedule is `{type: "BASIC", expression: "PT6H"}`, an ISO-8601 duration of days, hours, minutes
and seconds of at least a minute, counted from the schedule's anchor (when it was set), or
`{type: "CRON", expression: "0 */6 * * *"}`, five cron fields in UTC. Durations are parsed by
pydantic once their units are known to be unambiguous; cron expressions by croniter.
"""

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

MINIMUM_INTERVAL = timedelta(minutes=1)
# P[nW][nD][T[nH][nM][nS]]: no years, no months (their length varies), nothing negative.
_UNAMBIGUOUS_DURATION = re.compile(r"^P(?:\d+W)?(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")
_DATE_PART = re.compile(r"^P([^T]*)")


class InvalidSchedule(ValueError):
    """A schedule that cannot be used; the message says why."""


class ScheduleType(StrEnum):
    BASIC = "BASIC"
    CRON = "CRON"


class Schedule(BaseModel):
    """A checked refresh schedule."""

    model_config = ConfigDict(frozen=True)

    type: ScheduleType
    expression: str

    @classmethod
    def parse(cls, raw: Any, label: str = "schedule") -> "Schedule":
        """`raw` as a Schedule, or InvalidSchedule naming `label` and the problem."""
        if not isinstance(raw, dict) or set(raw) - {"type", "expression"} or "expression" not in raw:
            raise InvalidSchedule(f'{label} must be {{"type": "BASIC" or "CRON", "expression": "..."}}, got {raw!r}')
        kind = str(raw.get("type") or "").upper()
        if kind not in ScheduleType.__members__:
            raise InvalidSchedule(f"{label}: unknown type {raw.get('type')!r}; use BASIC or CRON")
        expression = raw["expression"]
        if not isinstance(expression, str):
            raise InvalidSchedule(f"{label}: expression must be text, got {expression!r}")
        schedule = cls(type=ScheduleType(kind), expression=expression.strip())
        if schedule.type is ScheduleType.BASIC:
            schedule.interval(label)
        else:
            schedule._check_cron(label)
        return schedule

    def interval(self, label: str = "schedule") -> timedelta:
        """The period of a BASIC schedule."""
        expression = self.expression.upper()
        if not _UNAMBIGUOUS_DURATION.match(expression) or expression in ("P", "PT") or expression.endswith("T"):
            date_part = _DATE_PART.match(expression)
            if date_part and re.search(r"[YM]", date_part.group(1)):
                raise InvalidSchedule(
                    f"{label}: {self.expression!r} counts years or months, whose length varies; "
                    "use days, hours, minutes or seconds (e.g. P30D)"
                )
            raise InvalidSchedule(
                f"{label}: {self.expression!r} is not an ISO-8601 duration of days, hours, minutes and "
                "seconds such as PT6H, P1D or PT30M"
            )
        try:
            interval = TypeAdapter(timedelta).validate_python(expression)
        except ValidationError:
            raise InvalidSchedule(f"{label}: {self.expression!r} is not an ISO-8601 duration") from None
        if interval < MINIMUM_INTERVAL:
            raise InvalidSchedule(f"{label}: {self.expression!r} is shorter than the minimum of one minute (PT1M)")
        return interval

    def _check_cron(self, label: str) -> None:
        if len(self.expression.split()) != 5 or not croniter.is_valid(self.expression):
            raise InvalidSchedule(
                f"{label}: {self.expression!r} is not a cron expression of five fields "
                "(minute hour day-of-month month day-of-week), e.g. 0 */6 * * *"
            )

    def latest_due(self, anchor: datetime, now: datetime) -> datetime | None:
        """The last time the schedule fell due in (anchor, now], or None if it has not yet."""
        if self.type is ScheduleType.BASIC:
            periods = (now - anchor) // self.interval()
            return anchor + periods * self.interval() if periods >= 1 else None
        due = croniter(self.expression, now.astimezone(UTC)).get_prev(datetime)
        if croniter.match(self.expression, now.astimezone(UTC)) and now.second == 0 and now.microsecond == 0:
            due = now.astimezone(UTC)  # croniter's previous time excludes `now` itself
        return due if due > anchor else None

    def next_due(self, anchor: datetime, now: datetime) -> datetime:
        """The first time the schedule falls due after `now` (and after `anchor`)."""
        start = max(anchor, now)
        if self.type is ScheduleType.BASIC:
            return anchor + ((start - anchor) // self.interval() + 1) * self.interval()
        return croniter(self.expression, start.astimezone(UTC)).get_next(datetime)

    def as_json(self) -> dict[str, str]:
        return {"type": self.type.value, "expression": self.expression}
