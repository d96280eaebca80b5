"""Maintenance windows: when a plan may touch hosts, e.g. `Mon-Fri 01:00-05:00`, in the
controller's time zone (KEYTURN_TIMEZONE). Several windows are separated by `;`
(`Mon-Fri 01:00-05:00; Sat,Sun 00:00-24:00`); one whose end is not after its start runs past
midnight into the next day (`Fri 22:00-02:00` ends Saturday 02:00). Times are naive UTC
outside this module, like every time column."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo

from shared.errors import Invalid, Said

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")     # datetime.weekday() order
FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WINDOW = re.compile(r"^(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})$")
HELP = Said("days and hours, e.g. 'Mon-Fri 01:00-05:00' (days: Mon…Sun, ranges, lists, or "
            "daily; several windows separated by ;)")
MAX_TEXT = 200


@dataclass(frozen=True)
class Span:
    """One window: the weekdays it starts on, and its start and end in minutes of the day."""

    days: frozenset[int]
    start: int
    end: int          # 1440 at most; not after `start`: it ends the next day

    def starts(self, day: datetime) -> tuple[datetime, datetime] | None:
        """(start, end) of this window if it starts on `day`'s local date."""
        if day.weekday() not in self.days:
            return None
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        length = (self.end - self.start) % 1440 or 1440
        begin = midnight + timedelta(minutes=self.start)
        return begin, begin + timedelta(minutes=length)


@dataclass(frozen=True)
class Windows:
    text: str
    spans: tuple[Span, ...]

    def is_open(self, now: datetime, tz: tzinfo) -> bool:
        return self.current(now, tz) is not None

    def current(self, now: datetime, tz: tzinfo) -> datetime | None:
        """The end (naive UTC) of the window open at `now` (naive UTC), or None."""
        local = _local(now, tz)
        ends = [found[1] for day in (local - timedelta(days=1), local) for span in self.spans
                if (found := span.starts(day)) and found[0] <= local < found[1]]
        return wall_to_utc(max(ends), tz) if ends else None

    def next_open(self, now: datetime, tz: tzinfo) -> datetime:
        """When (naive UTC) the next window after `now` opens."""
        local = _local(now, tz)
        starts = [found[0] for offset in range(8) for span in self.spans
                  if (found := span.starts(local + timedelta(days=offset)))
                  and found[0] > local]
        return wall_to_utc(min(starts), tz)


def parse_windows(text: str) -> Windows:
    """The windows of `text`; ValueError names what is wrong, with an example."""
    cleaned = " ".join(text.split())
    if len(cleaned) > MAX_TEXT:
        raise Invalid("at most %(count)s characters", count=MAX_TEXT)
    parts = [part.strip() for part in cleaned.split(";") if part.strip()]
    if not parts:
        raise Invalid("give %(help)s", help=HELP)
    spans = tuple(parse_span(part) for part in parts)
    return Windows("; ".join(parts), spans)


def parse_span(text: str) -> Span:
    match = WINDOW.match(text)
    if not match:
        raise Invalid("%(text)s is not %(help)s", text=repr(text[:40]), help=HELP)
    start, end = minutes(match["start"]), minutes(match["end"])
    if start == 1440:
        raise Invalid("%(start)s: a window starts before 24:00", start=match["start"])
    if start == end:
        raise Invalid("%(text)s is empty (it ends when it starts); a whole day is 00:00-24:00",
                      text=repr(text[:40]))
    return Span(frozenset(weekdays(match["days"])), start, end)


def minutes(clock: str) -> int:
    hours, mins = (int(part) for part in clock.split(":"))
    if hours > 24 or mins > 59 or (hours == 24 and mins):
        raise Invalid("%(clock)s is not a time of day (00:00 to 24:00)", clock=clock)
    return hours * 60 + mins


def weekdays(field: str) -> set[int]:
    """`Mon-Fri`, `Sat,Sun`, `Fri-Mon` (wrapping), `daily` as weekday numbers."""
    if field.lower() in ("daily", "*"):
        return set(range(7))
    days: set[int] = set()
    for part in field.lower().split(","):
        first, dash, last = part.partition("-")
        begin, end = day_number(first), day_number(last) if dash else day_number(first)
        days.update((begin + step) % 7 for step in range((end - begin) % 7 + 1))
    return days


def day_number(name: str) -> int:
    """`mon` or `monday` (any case) as 0, … `sun` as 6."""
    if name[:3] in DAYS and (len(name) == 3 or name == FULL_DAYS[DAYS.index(name[:3])]):
        return DAYS.index(name[:3])
    raise Invalid("%(name)s is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", name=repr(name[:12]))


def _local(now: datetime, tz: tzinfo) -> datetime:
    return now.replace(tzinfo=timezone.utc).astimezone(tz).replace(tzinfo=None)


def wall_to_utc(local: datetime, tz: tzinfo) -> datetime:
    """A naive wall-clock time of `tz` as naive UTC."""
    return local.replace(tzinfo=tz).astimezone(timezone.utc).replace(tzinfo=None)
