"""Periodic plans on SQLite and PostgreSQL: due times, coalescing, one firing per slot across
concurrent schedulers, edits and deletes, inactive plans. The clock is passed to `tick`."""
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from controller import inventory
from controller.db import database
from controller.dispatch import dispatch_pending
from controller.models import Execution, Plan
from controller.plans import parse_spec, save_plan
from controller.scheduling import (Scheduler, crontab_trigger, move_next_run, refresh_next_run,
                                   validate_crontab)
from tests.inventory_helpers import build_fleet

UTC = timezone.utc
T0 = datetime(2024, 1, 10, 12, 0)          # a Wednesday, naive UTC like the database
HOUR = timedelta(hours=1)


class Firings:
    """A fire function that counts instead of starting executions (thread-safe)."""

    def __init__(self):
        self.calls = []
        self._lock = threading.Lock()

    def __call__(self, ctl, plan, *, trigger, started_by):
        assert (trigger, started_by) == ("schedule", "scheduler")
        with self._lock:
            self.calls.append(plan.name)
        return SimpleNamespace(id=len(self.calls))


@pytest.fixture
def firings():
    return Firings()


@pytest.fixture
def scheduler(ctl, firings):
    return Scheduler(ctl, fire=firings, tz=UTC)


@pytest.fixture
def make_plan(ctl):
    """Save a plan as the console would, with `next_run_at` refreshed at T0."""
    inventory.node_for_path("/prod")

    def make(name="p", plan=None, now=T0, **fields):
        data = {"name": name, "usernames": ["alice"], "nodes": ["/prod"]} | fields
        saved = save_plan(parse_spec(data), ctl.vault, plan, now=now)
        refresh_next_run(saved, now, UTC)
        return saved

    return make


def next_run(plan):
    return Plan.get_by_id(plan.id).next_run_at


# ---- crontab lines ------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("0 2 * *", "4 fields instead of 5"),
    ("61 * * * *", "61"),
    ("0 0 * * 8", "day of week '8'"),
    ("0 0 * * 5-1", "day of week '5-1'"),
    ("0 0 30 2 *", "never matches"),
])
def test_bad_crontab_lines_are_refused_with_a_reason(line, message):
    with pytest.raises(ValueError, match=message):
        validate_crontab(line)


def test_crontab_lines_mean_what_cron_means():
    assert validate_crontab("  0 2  * * 0 ") == "0 2 * * 0"
    wednesday = datetime(2024, 1, 10, 12, tzinfo=UTC)

    def following(line, count=3):
        trigger, moments, moment = crontab_trigger(line, UTC), [], wednesday
        for _ in range(count):
            moment = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
            moments.append(moment.strftime("%a %d %H:%M"))
        return moments

    assert following("0 2 * * 0") == ["Sun 14 02:00", "Sun 21 02:00", "Sun 28 02:00"]
    assert following("0 2 * * 7", 1) == ["Sun 14 02:00"]
    assert following("0 2 * * 1-5") == ["Thu 11 02:00", "Fri 12 02:00", "Mon 15 02:00"]
    assert following("0 0 * * */2") == ["Thu 11 00:00", "Sat 13 00:00", "Sun 14 00:00"]
    # day of month and day of week both given: cron fires on either
    assert following("0 0 13 * 1") == ["Sat 13 00:00", "Mon 15 00:00", "Mon 22 00:00"]


# ---- due times ----------------------------------------------------------------------------

def test_interval_plan_fires_each_slot_once(make_plan, scheduler, firings):
    plan = make_plan(interval_hours=6)
    assert next_run(plan) == T0 + 6 * HOUR
    assert scheduler.tick(T0 + 6 * HOUR - timedelta(seconds=1)) == []
    assert scheduler.tick(T0 + 6 * HOUR) == [plan.id]
    assert scheduler.tick(T0 + 6 * HOUR + timedelta(seconds=30)) == []
    assert next_run(plan) == T0 + 12 * HOUR
    assert scheduler.tick(T0 + 12 * HOUR + timedelta(seconds=3)) == [plan.id]
    assert next_run(plan) == T0 + 18 * HOUR             # late ticks keep the phase
    assert firings.calls == ["p", "p"]


def test_cron_plan_fires_at_its_times(make_plan, scheduler, firings):
    plan = make_plan(crontab="30 2 * * *")
    assert next_run(plan) == datetime(2024, 1, 11, 2, 30)
    assert scheduler.tick(datetime(2024, 1, 11, 2, 29, 59)) == []
    assert scheduler.tick(datetime(2024, 1, 11, 2, 30)) == [plan.id]
    assert next_run(plan) == datetime(2024, 1, 12, 2, 30)
    assert firings.calls == ["p"]


def test_crontab_runs_in_the_scheduler_time_zone(ctl, make_plan):
    plan = make_plan(crontab="0 2 * * *")
    paris = ZoneInfo("Europe/Paris")
    assert refresh_next_run(plan, T0, paris) == datetime(2024, 1, 11, 1, 0)     # CET
    assert refresh_next_run(plan, datetime(2024, 6, 30, 12), paris) == datetime(2024, 7, 1, 0, 0)


def test_missed_slots_run_once_on_start(make_plan, scheduler, firings):
    hourly = make_plan("hourly", interval_hours=1)
    nightly = make_plan("nightly", crontab="0 3 * * *")
    back = T0 + timedelta(days=3, minutes=20)             # the daemon was down for three days
    assert sorted(scheduler.tick(back)) == sorted([hourly.id, nightly.id])
    assert sorted(firings.calls) == ["hourly", "nightly"]
    assert next_run(hourly) == T0 + 73 * HOUR
    assert next_run(nightly) == datetime(2024, 1, 14, 3, 0)
    assert scheduler.tick(back + timedelta(minutes=1)) == []


def test_a_run_that_fails_to_start_is_logged_and_not_retried(ctl, make_plan, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("database blip")

    plan = make_plan(interval_hours=1)
    scheduler = Scheduler(ctl, fire=broken, tz=UTC)
    with caplog.at_level(logging.ERROR, logger="controller.scheduling"):
        assert scheduler.tick(T0 + HOUR) == []
    assert "plan p: the scheduled run failed to start" in caplog.text
    assert next_run(plan) == T0 + 2 * HOUR
    assert scheduler.tick(T0 + HOUR + timedelta(seconds=5)) == []


def test_a_bad_crontab_in_the_table_stops_only_its_plan(make_plan, scheduler, firings, caplog):
    good = make_plan("good", interval_hours=1)
    bad = make_plan("bad", interval_hours=1)
    Plan.update(crontab="0 2 * *").where(Plan.id == bad.id).execute()     # saved unvalidated
    with caplog.at_level(logging.ERROR, logger="controller.scheduling"):
        assert sorted(scheduler.tick(T0 + HOUR)) == sorted([good.id, bad.id])
        assert scheduler.tick(T0 + 2 * HOUR) == [good.id]
    assert caplog.text.count("plan bad: crontab '0 2 * *' is invalid") == 1
    assert next_run(bad) is None


# ---- several schedulers -------------------------------------------------------------------

def test_concurrent_schedulers_fire_each_slot_once(ctl, make_plan, firings):
    """Two schedulers, each on its own thread and database connection, tick the same instants
    together; every slot of every plan fires exactly once."""
    plans = [make_plan(f"p{n}", interval_hours=1) for n in range(12)]
    schedulers = [Scheduler(ctl, fire=firings, tz=UTC) for _ in range(2)]
    slots = 5
    start = threading.Barrier(len(schedulers))
    fired = {index: [] for index in range(len(schedulers))}
    connections = set()

    def ticking(index):
        try:
            connections.add(id(database.connection()))
            for slot in range(1, slots + 1):
                start.wait(timeout=30)
                fired[index] += schedulers[index].tick(T0 + slot * HOUR)
        finally:
            database.close()

    threads = [threading.Thread(target=ticking, args=(index,)) for index in fired]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(connections) == 2
    assert sorted(firings.calls) == sorted(plan.name for plan in plans for _ in range(slots))
    assert sorted(fired[0] + fired[1]) == sorted(plan.id for plan in plans for _ in range(slots))
    assert all(next_run(plan) == T0 + (slots + 1) * HOUR for plan in plans)


def test_a_slot_is_claimed_by_compare_and_set(make_plan):
    plan = make_plan(interval_hours=1)
    seen = next_run(plan)
    assert move_next_run(plan, seen, seen + HOUR).next_run_at == seen + HOUR
    assert move_next_run(plan, seen, seen + HOUR) is None     # a daemon that read it earlier
    assert next_run(plan) == seen + HOUR


# ---- edits, deletes, inactive plans --------------------------------------------------------

def test_edits_and_deletes_take_effect_at_the_next_tick(make_plan, scheduler, firings):
    plan = make_plan(interval_hours=2)
    make_plan(plan=plan, interval_hours=2, recipients=["alice"], now=T0 + HOUR)
    assert next_run(plan) == T0 + 2 * HOUR               # an unrelated edit keeps the run
    make_plan(plan=plan, interval_hours=24, now=T0 + HOUR)
    assert next_run(plan) == T0 + 2 * HOUR               # still within the new interval
    make_plan(plan=plan, crontab="0 6 * * *", now=T0 + HOUR)
    assert next_run(plan) == datetime(2024, 1, 11, 6, 0)
    assert scheduler.tick(T0 + 2 * HOUR) == []
    make_plan(plan=plan, interval_hours=1, now=T0 + HOUR)
    assert next_run(plan) == T0 + 2 * HOUR
    Plan.delete_by_id(plan.id)
    assert scheduler.tick(T0 + 2 * HOUR) == []
    assert firings.calls == []


def test_inactive_plans_never_fire(make_plan, scheduler, firings):
    paused = make_plan("paused", interval_hours=1, active=False)
    assert next_run(paused) is None
    switched_off = make_plan("off", interval_hours=1)
    Plan.update(active=False).where(Plan.id == switched_off.id).execute()   # no refresh
    manual = make_plan("manual")
    assert next_run(manual) is None
    for hours in range(1, 4):
        assert scheduler.tick(T0 + hours * HOUR) == []
    assert firings.calls == []
    make_plan("paused", plan=paused, interval_hours=1, now=T0 + 3 * HOUR)
    assert scheduler.tick(T0 + 4 * HOUR) == [paused.id]


def test_a_plan_saved_without_a_next_run_gets_one(make_plan, scheduler, firings):
    plan = make_plan(interval_hours=1)
    Plan.update(next_run_at=None).where(Plan.id == plan.id).execute()
    assert scheduler.tick(T0 + 5 * HOUR) == []
    assert next_run(plan) == T0 + 6 * HOUR
    assert scheduler.tick(T0 + 6 * HOUR) == [plan.id]


# ---- the real thing -----------------------------------------------------------------------

def test_a_scheduled_run_starts_an_execution_the_dispatcher_publishes(ctl, make_plan):
    build_fleet(ctl, assets=("web-1", "web-2"), users=("alice",))
    plan = make_plan(interval_hours=1)
    assert Scheduler(ctl, tz=UTC).tick(T0 + HOUR) == [plan.id]
    execution = Execution.get()
    assert (execution.plan_id, execution.trigger, execution.started_by) == (plan.id, "schedule",
                                                                            "scheduler")
    assert execution.total == 2 and {r.status for r in execution.records} == {"pending"}
    assert dispatch_pending(ctl) == 2
    assert len(ctl.broker.queues["rotate.dmz"].queue) == 2


def test_the_service_ticks_on_its_own_thread(ctl, make_plan, firings):
    plan = make_plan(interval_hours=1, now=datetime.now(UTC).replace(tzinfo=None) - 2 * HOUR)
    scheduler = Scheduler(ctl, fire=firings, tz=UTC, period=0.05)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while not firings.calls and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.stop()
    assert firings.calls == ["p"]
    assert next_run(plan) > datetime.now(UTC).replace(tzinfo=None)
