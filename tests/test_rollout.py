"""Rollouts without hosts: the wave arithmetic and the spread of accounts over zones, nodes and
assets, the failure brake, the maintenance window parser, the dispatcher's gates and limits,
pause/resume/cancel, and the safety of the wave advance and the gated claim when two daemons
decide at once (threads on their own database connections, on SQLite and PostgreSQL)."""
from __future__ import annotations

import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from controller import inventory
from controller.dispatch import dispatch_pending
from controller.gates import claim_gated
from controller.models import Account, AuditEvent, Execution, LogLine, OutboxEvent, Record, utcnow
from controller.notify import pending_notifications, summary_text
from controller.planning import start_execution
from controller.plans import PlanError, parse_spec, save_plan
from controller.rollout import brake_exceeded, parse_brake, parse_waves, spread, wave_counts
from controller.steering import (advance, cancel_execution, pause_execution, resume_execution,
                                 steer)
from controller.windows import parse_windows
from shared.errors import KeyturnError
from tests.event_schemas import validate
from tests.inventory_helpers import build_fleet, sent_commands

UTC = ZoneInfo("UTC")


# ---- arithmetic ---------------------------------------------------------------------------

@pytest.mark.parametrize("waves,total,counts", [
    ("1,10%,50%,100%", 40, [1, 4, 20, 40]),
    ("1,10%,50%,100%", 3, [1, 2, 3]),          # 10% of 3 rounds up to 1: that wave adds nobody
    ("1,5%,25%,100%", 1000, [1, 50, 250, 1000]),
    ("5,100%", 3, [3]),                        # a count above the total is the total
    ("100%", 0, []),
    ("1,2,100%", 2, [1, 2]),
])
def test_waves_are_cumulative_counts_of_the_accounts(waves, total, counts):
    assert wave_counts(parse_waves(waves), total) == counts


@pytest.mark.parametrize("text,says", [
    ("", "name at least one wave"),
    ("1,50%", "the last wave must be 100%"),
    ("10%,5%,100%", "must be larger than the one before"),
    ("5,3,100%", "must be larger than the one before"),
    ("0,100%", "at least 1 account"),
    ("1,abc,100%", "'abc' is neither a count nor a percentage"),
    ("150%", "not a share"),
])
def test_bad_waves_are_refused_saying_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_waves(text)


def test_the_brake_takes_a_count_or_a_share_of_the_wave():
    assert not brake_exceeded("0", 0, 10) and brake_exceeded("0", 1, 10)
    assert not brake_exceeded("2", 2, 10) and brake_exceeded("2", 3, 10)
    assert not brake_exceeded("10%", 1, 10) and brake_exceeded("10%", 2, 10)
    assert brake_exceeded("2%", 4, 50)         # 8% > 2%
    for bad in ("-1", "x", "101%", "2 %"):
        with pytest.raises(ValueError):
            parse_brake(bad)


def test_waves_take_turns_across_zones_nodes_and_assets():
    accounts = [(zone, node, asset, user) for zone in ("east", "west")
                for node in ("/a", "/b") for asset in (1, 2) for user in range(5)]
    ordered = spread(accounts, lambda a: a[0], lambda a: (a[0], a[1]), lambda a: (a[0], a[1], a[2]))
    assert sorted(ordered) == sorted(accounts)
    first = ordered[:4]
    assert {a[0] for a in first} == {"east", "west"}
    assert len({a[:2] for a in first}) == 4                     # every node of both zones
    assert len({a[:3] for a in ordered[:8]}) == 8               # then every asset
    lopsided = spread([("big", i) for i in range(9)] + [("small", 0)], lambda a: a[0])
    assert ("small", 0) in lopsided[:6]     # in proportion: not after all of the big zone


# ---- the window parser --------------------------------------------------------------------

def test_windows_open_and_close_in_the_configured_zone():
    window = parse_windows("Mon-Fri 01:00-05:00")
    paris = ZoneInfo("Europe/Paris")
    assert window.is_open(datetime(2026, 12, 1, 0, 30), paris)      # 01:30 in Paris, Tuesday
    assert not window.is_open(datetime(2026, 12, 1, 0, 30), UTC)
    assert window.current(datetime(2026, 12, 1, 0, 30), paris) == datetime(2026, 12, 1, 4, 0)
    assert window.next_open(datetime(2026, 12, 5, 12, 0), UTC) == datetime(2026, 12, 7, 1, 0)
    night = parse_windows("fri 22:00-02:00; Sat,Sun 00:00-24:00")
    assert night.is_open(datetime(2026, 12, 5, 1, 0), UTC)           # Saturday 01:00
    assert not night.is_open(datetime(2026, 12, 7, 1, 0), UTC)       # Monday
    assert parse_windows("  daily   03:00-04:00 ").text == "daily 03:00-04:00"


@pytest.mark.parametrize("text,says", [
    ("", "give days and hours, e.g. 'Mon-Fri 01:00-05:00'"),
    ("Mon-Fri", "'Mon-Fri' is not days and hours"),
    ("Mon-Fri 1-5", "is not days and hours"),
    ("Mon-Fri 25:00-05:00", "25:00 is not a time of day"),
    ("Mon-Fri 01:00-05:60", "05:60 is not a time of day"),
    ("Funday 01:00-05:00", "'funday' is not a day"),
    ("Mon 03:00-03:00", "is empty"),
    ("Mon 24:00-03:00", "starts before 24:00"),
])
def test_bad_windows_are_refused_with_a_clear_message(text, says):
    with pytest.raises(ValueError, match=says):
        parse_windows(text)


def test_a_plan_form_names_the_bad_rollout_field(ctl):
    base = {"name": "p", "usernames": ["alice"], "nodes": ["/prod"]}
    for fields, field in [({"waves": "1,50%"}, "waves"), ({"max_failures": "2%"}, "max_failures"),
                          ({"window": "Mon 9-5"}, "window"), ({"asset_limit": 0}, "asset_limit"),
                          ({"connect_rate": -1}, "connect_rate"),
                          ({"waves": "1,100%", "max_failures": "lots"}, "max_failures")]:
        with pytest.raises(PlanError) as caught:
            parse_spec(base | fields)
        assert list(caught.value.errors) == [field], fields


def test_a_timezone_setting_is_checked():
    from shared.settings import SettingsError, load_settings

    assert str(load_settings(timezone="Europe/Paris").tz) == "Europe/Paris"
    with pytest.raises(SettingsError, match="KEYTURN_TIMEZONE: must be an IANA time zone"):
        load_settings(timezone="Mars/Olympus")


# ---- executions under a rollout -----------------------------------------------------------

def rollout_run(ctl, assets=8, users=("u0", "u1", "u2", "u3", "u4"), **rollout):
    build_fleet(ctl, assets=[f"h{i}" for i in range(assets)], users=users, node="/dc")
    plan = save_plan(parse_spec({"name": "roll", "usernames": list(users), "nodes": ["/dc"]}
                                | rollout), ctl.vault)
    return start_execution(ctl, plan)


def records_of(execution, **where):
    query = Record.select().where(Record.execution == execution.id)
    for name, value in where.items():
        query = query.where(getattr(Record, name) == value)
    return list(query.order_by(Record.id))


def end_records(records, status="success", code=None):
    Record.update(status=status, error_code=code, finished_at=utcnow()).where(
        Record.id.in_([r.id for r in records])).execute()


def test_records_are_drawn_into_waves_across_assets(ctl):
    execution = rollout_run(ctl, waves="1,10%,50%,100%")
    assert execution.rollout["waves"] == [1, 4, 20, 40] and execution.wave == 1
    by_wave = {}
    for record in records_of(execution):
        by_wave.setdefault(record.wave, []).append(record.account.asset.name)
    assert [len(by_wave[w]) for w in (1, 2, 3, 4)] == [1, 3, 16, 20]
    assert len(set(by_wave[1] + by_wave[2])) == 4            # four assets, not one rack's first


def test_only_the_open_wave_is_dispatched_and_the_next_opens_when_it_ends(ctl):
    execution = rollout_run(ctl, waves="1,10%,50%,100%")
    assert dispatch_pending(ctl) == 1
    assert [c.record_id for c in sent_commands(ctl, "dmz")] == [r.id for r in records_of(execution, wave=1)]
    assert not advance(Execution.get_by_id(execution.id))     # wave 1 still in flight
    end_records(records_of(execution, wave=1))
    assert advance(Execution.get_by_id(execution.id))
    assert Execution.get_by_id(execution.id).wave == 2
    assert dispatch_pending(ctl) == 3


def test_the_brake_pauses_with_a_reason_an_event_and_mail(ctl):
    execution = rollout_run(ctl, waves="1,10%,50%,100%", max_failures="0", recipients=[])
    dispatch_pending(ctl)
    end_records(records_of(execution, wave=1))
    advance(Execution.get_by_id(execution.id))
    dispatch_pending(ctl)
    wave2 = records_of(execution, wave=2)
    end_records(wave2[:1], "failed", "login_failed")
    end_records(wave2[1:])
    assert advance(Execution.get_by_id(execution.id))
    paused = Execution.get_by_id(execution.id)
    assert (paused.status, paused.paused_by, paused.wave) == ("paused", "brake", 2)
    assert paused.pause_reason.startswith(
        "wave 2: 1 of 3 failed or unverified (33%) > 0: login_failed on 1 host")
    assert dispatch_pending(ctl) == 0
    event = OutboxEvent.select().where(OutboxEvent.routing_key == "io.keyturn.execution.paused").get()
    assert event.body["reason"] == paused.pause_reason
    from controller.events import cloudevent
    validate(cloudevent(ctl, event))
    assert execution.id in pending_notifications()
    assert f"Result:    paused ({paused.pause_reason})" in summary_text(paused, [])
    resumed = resume_execution(ctl, execution.id, "cli:test")
    assert (resumed.status, resumed.wave, resumed.pause_reason) == ("running", 3, None)
    assert dispatch_pending(ctl) == 16
    assert AuditEvent.select().where(AuditEvent.action == "execution.resume").count() == 1


def test_pause_holds_records_and_cancel_releases_their_accounts(ctl):
    execution = rollout_run(ctl, assets=2, users=("u0", "u1"), asset_limit=1)
    assert dispatch_pending(ctl) == 2                        # one per asset
    pause_execution(execution.id, "cli:test")
    assert execution.id not in pending_notifications()      # an operator's pause mails nobody
    end_records(records_of(execution, status="dispatched")[:1])
    assert dispatch_pending(ctl) == 0                        # paused: nothing more goes
    with pytest.raises(KeyturnError, match="only a running execution pauses"):
        pause_execution(execution.id, "cli:test")
    cancelled = cancel_execution(execution.id, "cli:test")
    assert cancelled.status == "cancelled"
    assert sorted(r.status for r in records_of(execution)) == [
        "cancelled", "cancelled", "dispatched", "success"]
    for record in records_of(execution, status="cancelled"):
        account = Account.get_by_id(record.account_id)
        assert account.busy_execution is None and account.secret_pending is None
    in_flight = records_of(execution, status="dispatched")
    assert all(Account.get_by_id(r.account_id).busy_execution == execution.id for r in in_flight)
    assert {e.action for e in AuditEvent.select()} >= {"execution.pause", "execution.cancel"}
    with pytest.raises(KeyturnError, match="only a running or paused execution"):
        cancel_execution(execution.id, "cli:test")
    event = OutboxEvent.select().where(OutboxEvent.routing_key == "io.keyturn.execution.finished").get()
    from controller.events import cloudevent
    validate(cloudevent(ctl, event))


def test_the_window_pauses_and_reopens_by_the_injected_clock(ctl):
    ctl.settings.timezone = "UTC"
    execution = rollout_run(ctl, assets=1, users=("u0",), window="Mon 01:00-02:00")
    steer(ctl, datetime(2026, 11, 30, 2, 30))          # Monday 02:30: closed
    paused = Execution.get_by_id(execution.id)
    assert (paused.status, paused.paused_by) == ("paused", "window")
    assert "resumes by itself at 2026-12-07 01:00 UTC" in paused.pause_reason
    assert dispatch_pending(ctl, datetime(2026, 11, 30, 2, 30)) == 0
    still = resume_execution(ctl, execution.id, "cli:test", datetime(2026, 11, 30, 3, 0))
    assert (still.status, still.paused_by) == ("paused", "window")   # it waits for the window
    steer(ctl, datetime(2026, 12, 7, 1, 0))
    assert Execution.get_by_id(execution.id).status == "running"
    assert dispatch_pending(ctl, datetime(2026, 12, 7, 1, 0)) == 1


def test_a_command_without_limits_reads_as_before(ctl):
    """Workers released before limits refuse unknown fields: a command without any carries no
    `limits` key at all."""
    import json

    from shared import zonecrypto
    build_fleet(ctl, assets=("web-1",), users=("alice",))
    start_execution(ctl, save_plan(parse_spec({"name": "plain", "usernames": ["alice"],
                                               "nodes": ["/prod"]}), ctl.vault))
    dispatch_pending(ctl)
    channel = zonecrypto.Channel(zonecrypto.read_private_key(ctl.settings.zone_key_path("dmz")),
                                 ctl.private_key.public_key)
    from shared.broker import rotate_queue
    envelope = json.loads(ctl.broker.queues[rotate_queue("dmz")].get_nowait().decode())["args"][0]
    assert "limits" not in json.loads(channel.open(envelope["box"]))


def test_limits_hold_records_and_reach_the_worker(ctl):
    execution = rollout_run(ctl, assets=2, users=("u0", "u1", "u2"), asset_limit=2,
                            connect_rate=3)
    assert dispatch_pending(ctl) == 3                        # the connection rate: 3 a second
    commands = sent_commands(ctl, "dmz")
    assert commands[0].limits.asset_in_flight == 2 and commands[0].limits.connects_per_second == 3
    from controller.gates import waiting
    assert waiting(Execution.get_by_id(execution.id)) == (
        "3 records wait on the rate limits (at most 2 in flight per asset; at most 3 new SSH "
        "connections/s per zone)")


# ---- two daemons at once ------------------------------------------------------------------

def at_once(count, work):
    """Run `work()` on `count` threads released together; returns their results."""
    from controller.db import database

    start, results = threading.Barrier(count), [None] * count

    def run(index):
        try:
            start.wait()
            results[index] = work()
        finally:
            database.close()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_daemons_open_a_wave_once(ctl):
    execution = rollout_run(ctl, waves="1,10%,50%,100%")
    dispatch_pending(ctl)
    end_records(records_of(execution, wave=1))
    opened = at_once(4, lambda: advance(Execution.get_by_id(execution.id)))
    assert opened.count(True) == 1
    assert Execution.get_by_id(execution.id).wave == 2
    assert LogLine.select().where((LogLine.execution == execution.id)
                                  & LogLine.message.contains("wave 2 of 4 opened")).count() == 1


def test_two_daemons_brake_once(ctl):
    execution = rollout_run(ctl, waves="1,100%")
    dispatch_pending(ctl)
    end_records(records_of(execution, wave=1), "failed", "login_failed")
    paused = at_once(4, lambda: advance(Execution.get_by_id(execution.id)))
    assert paused.count(True) == 1
    assert OutboxEvent.select().where(OutboxEvent.routing_key == "io.keyturn.execution.paused").count() == 1
    assert Execution.get_by_id(execution.id).wave == 1


def test_two_daemons_never_both_take_an_assets_last_slot(ctl):
    execution = rollout_run(ctl, assets=3, users=("u0", "u1", "u2", "u3"), asset_limit=1)
    claimed = at_once(4, lambda: claim_gated(ctl, Record.status == "pending", utcnow()))
    assert sum(len(ids) for ids in claimed) == 3
    dispatched = records_of(execution, status="dispatched")
    assert len({r.account.asset_id for r in dispatched}) == 3
