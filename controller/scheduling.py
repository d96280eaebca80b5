"""Periodic plans. The `plan` table is the schedule: `next_run_at` (naive UTC, like every time
column) holds each active plan's next slot, computed when the plan is saved and moved on when
the slot fires. APScheduler only does the calendar arithmetic; it keeps no job store, so edits,
deletes, downtime and several daemons are all handled by reading and updating the table.

A slot fires once: a daemon claims it by moving `next_run_at` from the slot to the next future
slot with a conditional UPDATE (compare-and-set), so of two daemons ticking at once exactly one
matches the row. Slots missed while no daemon ran are coalesced into one run. The claim commits
before the run starts, so a daemon killed in between loses that slot rather than running it
twice, and a plan that fails to start is not retried in a loop.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from peewee import Expression

from controller.db import database
from controller.models import Execution, Plan, utcnow
from controller.runtime import Controller
from shared.errors import Invalid, Said
from shared.settings import load_settings

logger = logging.getLogger(__name__)

TICK_SECONDS = 5.0
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
CRONTAB_HELP = Said("five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * 0'")


# ---- calendar arithmetic ------------------------------------------------------------------

def validate_crontab(line: str) -> str:
    """The plan form's and CLI's check: the cleaned line, or ValueError saying what is wrong."""
    cleaned = " ".join(line.split())
    try:
        trigger = crontab_trigger(cleaned, timezone.utc)
    except ValueError as exc:
        raise Invalid("crontab %(line)s: %(problem)s; use %(help)s", line=repr(cleaned),
                      problem=Said(exc.template, **exc.params) if isinstance(exc, Invalid) else str(exc),
                      help=CRONTAB_HELP) from None
    if trigger.get_next_fire_time(None, datetime.now(timezone.utc)) is None:
        raise Invalid("crontab %(line)s never matches a date", line=repr(cleaned))
    return cleaned


def crontab_trigger(line: str, tz: tzinfo) -> BaseTrigger:
    """A trigger that fires as cron would. APScheduler 3 counts weekdays from Monday = 0 and ANDs
    day-of-month with day-of-week; cron counts from Sunday = 0 (7 too) and fires on either day
    when both fields are restricted. Weekdays are passed as names, which mean the same to both."""
    fields = line.split()
    if len(fields) != 5:
        raise Invalid("%(count)s fields instead of 5", count=len(fields))
    minute, hour, day, month, weekday = fields
    weekdays = cron_weekdays(weekday)

    def cron(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=day_of_week, timezone=tz)

    if day.startswith("*") or weekday.startswith("*"):
        return cron(day, weekdays)
    return OrTrigger([cron(day, "*"), cron("*", weekdays)])


def cron_weekdays(field: str) -> str:
    """A crontab day-of-week field (numbers from Sunday = 0, names, ranges, lists, steps) as the
    list of day names it selects."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, slash, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        else:
            start, dash, end = span.partition("-")
            first = day_number(start)
            last = day_number(end) if dash else (6 if slash else first)
        bad_step = slash and (not step.isdigit() or int(step) == 0)
        if bad_step or first > last:
            raise Invalid("day of week %(part)s is not a range, list or step of 0-7 or sun-sat",
                          part=repr(part))
        days.update(day % 7 for day in range(first, last + 1, int(step) if slash else 1))
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def day_number(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in DAY_NAMES:
        return DAY_NAMES.index(text)
    raise Invalid("day of week %(text)s is not 0-7 or sun-sat", text=repr(text))


def plan_trigger(plan: Plan, anchor: datetime, tz: tzinfo | None) -> BaseTrigger | None:
    """The plan's calendar: its crontab (in `tz`, by default KEYTURN_TIMEZONE), else
    every `interval_hours` counted from `anchor`; None for a plan run only by hand."""
    if plan.crontab:
        return crontab_trigger(plan.crontab, tz or load_settings().tz)
    if plan.interval_hours:
        return IntervalTrigger(hours=plan.interval_hours, start_date=aware(anchor),
                               timezone=timezone.utc)
    return None


def slot_after(plan: Plan, now: datetime, anchor: datetime | None = None,
               tz: tzinfo | None = None) -> datetime | None:
    """The plan's first slot strictly after `now`. Interval slots keep the phase of `anchor`
    (the slot that just fired); a first schedule counts from `now`, in whole seconds."""
    trigger = plan_trigger(plan, anchor or now.replace(microsecond=0), tz)
    if trigger is None:
        return None
    fire = trigger.get_next_fire_time(None, aware(now) + timedelta(microseconds=1))
    return fire and fire.astimezone(timezone.utc).replace(tzinfo=None)


def aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc)


# ---- the plan table -----------------------------------------------------------------------

def planned_next_run(plan: Plan, now: datetime, tz: tzinfo | None = None) -> datetime | None:
    """What `next_run_at` should be for a plan as just saved. An interval plan keeps an upcoming
    run its interval still allows, so editing a recipient does not shift the runs."""
    if not plan.active:
        return None
    upcoming = plan.next_run_at
    if (plan.interval_hours and not plan.crontab and upcoming
            and now < upcoming <= now + timedelta(hours=plan.interval_hours)):
        return upcoming
    return slot_after(plan, now, tz=tz)


def refresh_next_run(plan: Plan, now: datetime | None = None,
                     tz: tzinfo | None = None) -> datetime | None:
    """Store the next run of a plan just created, edited, activated or deactivated; call it
    after every save so the change takes effect at the next tick."""
    plan.next_run_at = planned_next_run(plan, now or utcnow(), tz)
    Plan.update(next_run_at=plan.next_run_at).where(Plan.id == plan.id).execute()
    return plan.next_run_at


def move_next_run(plan: Plan, seen: datetime | None, following: datetime | None) -> Plan | None:
    """Compare-and-set `next_run_at` from the value this caller saw; returns the plan as updated
    when this caller won, None when another daemon, an edit or a delete came first."""
    rows = (Plan.update(next_run_at=following)
            .where((Plan.id == plan.id) & (Plan.next_run_at == seen) & Plan.active)
            .returning(Plan).execute())
    return next(iter(rows), None)


def scheduled() -> Expression:
    """Plans the scheduler looks at: active, with an interval or a crontab."""
    return Plan.active & (Plan.interval_hours.is_null(False) | Plan.crontab.is_null(False))


# ---- the daemon's service -----------------------------------------------------------------

class Ticker:
    """Calls `tick(now)` at once and then every `period` seconds on a thread of its own. An
    error is logged and the next tick tries again: a database or mail blip never stops it."""

    def __init__(self, name: str, period: float):
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self, now: datetime) -> object:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            while True:
                try:
                    self.tick(utcnow())
                except Exception:
                    logger.exception("%s: tick failed; trying again", self._thread.name)
                if self._stop.wait(self.period):
                    return
        finally:
            database.close()    # this thread's connection


FireFunction = Callable[..., Execution]


class Scheduler(Ticker):
    """Fires due plans for the daemon. Any number of instances, in one process or in several
    daemons, may tick at once: each slot is claimed by exactly one of them."""

    def __init__(self, ctl: Controller, *, fire: FireFunction | None = None,
                 tz: tzinfo | None = None, period: float = TICK_SECONDS):
        from controller.planning import run_plan   # here: plans.py may import this module

        super().__init__("keyturn-scheduler", period)
        self.ctl = ctl
        self.fire = fire or run_plan
        self.tz = tz or ctl.settings.tz     # KEYTURN_TIMEZONE
        self._reported: set[tuple[int, str]] = set()

    def tick(self, now: datetime) -> list[int]:
        """At `now` (naive UTC), give unscheduled plans a next run, then fire each due plan once
        (slots missed while no daemon ran fire once, late). Returns the ids of the plans whose
        run this instance started."""
        # read each list whole before writing: an open SQLite read would block the writes
        for plan in list(Plan.select().where(scheduled() & Plan.next_run_at.is_null())):
            move_next_run(plan, None, self.following(plan, now))
        fired = []
        for plan in list(Plan.select().where(scheduled() & (Plan.next_run_at <= now))
                         .order_by(Plan.next_run_at)):
            following = self.following(plan, now, anchor=plan.next_run_at)
            claimed = move_next_run(plan, plan.next_run_at, following)
            if claimed is not None and self.run(claimed, following):
                fired.append(plan.id)
        return fired

    def following(self, plan: Plan, now: datetime,
                  anchor: datetime | None = None) -> datetime | None:
        """The plan's next slot; None, reported once, for a crontab saved without validation
        (one bad plan must not stop the others)."""
        try:
            return slot_after(plan, now, anchor, self.tz)
        except ValueError as exc:
            if (plan.id, plan.crontab) not in self._reported:
                self._reported.add((plan.id, plan.crontab))
                logger.error("plan %s: crontab %r is invalid (%s); the plan runs no more until "
                             "it is fixed", plan.name, plan.crontab, exc)
            return None

    def run(self, plan: Plan, following: datetime | None) -> bool:
        """Start the claimed slot's execution. A failure is logged and the slot is not retried,
        so a plan that cannot start does not loop; its next slot runs as usual."""
        try:
            execution = self.fire(self.ctl, plan, trigger="schedule", started_by="scheduler")
        except Exception:
            logger.exception("plan %s: the scheduled run failed to start; next run at %s UTC",
                             plan.name, following)
            return False
        logger.info("plan %s: scheduled run started as execution %s; next run at %s UTC",
                    plan.name, execution.id, following, extra={"execution": execution.id})
        return True
