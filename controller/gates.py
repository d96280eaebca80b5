"""The dispatcher's gates for executions under a rollout (`controller.rollout`): a pending
record goes out only when its execution is running, its wave is open, its maintenance window
is open, and its asset and zone are under their limits (rotations in flight, new connections
per second). The worker honours the same limits (`RotateCommand.limits`): the dispatcher's
count is across every worker, the worker's holds whatever it was sent.

Two daemons may dispatch at once: each claim counts what is in flight and moves records to
`dispatched` in one transaction that no other gated claim runs beside (a PostgreSQL
transaction-scoped advisory lock; on SQLite every write transaction begins IMMEDIATE), so two
claims never both take the last free slot of an asset."""
from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from functools import lru_cache

from peewee import fn

from controller.db import database, id_in, is_postgres
from controller.models import Account, Asset, Execution, Record, utcnow
from controller.rollout import LIMITS, describe, english, english_counted
from controller.runtime import Controller
from controller.windows import Windows, parse_windows
from shared.messages import RotationLimits

SCAN = 5000                  # pending records looked at per claim
GATE_LOCK = 0x6B74_0016      # the advisory lock key gated claims serialise on


@lru_cache(maxsize=256)
def windows(text: str) -> Windows:
    return parse_windows(text)


def window_open(ctl: Controller, rollout: dict | None, now: datetime) -> bool:
    text = (rollout or {}).get("window")
    return not text or windows(text).is_open(now, ctl.settings.tz)


def command_limits(rollout: dict | None) -> RotationLimits | None:
    """The limits a record's worker honours too (None: none)."""
    rollout = rollout or {}
    values = {"asset_in_flight": rollout.get("asset_limit"),
              "zone_in_flight": rollout.get("zone_limit"),
              "connects_per_second": rollout.get("connect_rate")}
    return RotationLimits(**values) if any(v is not None for v in values.values()) else None


def serialise_gates() -> None:
    """Inside the caller's transaction: no other gated claim runs until it ends."""
    if is_postgres():
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (GATE_LOCK,))


def claim_gated(ctl: Controller, condition, now: datetime) -> list[int]:
    """Move the pending records matching `condition` of running executions under a rollout
    that may go at `now` (naive UTC: the window's clock) to `dispatched`; returns their ids."""
    with database.atomic():
        serialise_gates()
        running = {e.id: e for e in Execution.select(Execution.id, Execution.rollout, Execution.wave)
                   .where((Execution.status == "running") & Execution.rollout.is_null(False))}
        running = {i: e for i, e in running.items() if window_open(ctl, e.rollout, now)}
        if not running:
            return []
        rows = [row for row in Record.select(Record.id, Record.execution, Record.wave,
                                             Account.asset, Asset.zone)
                .join(Account).join(Asset)
                .where(condition & (Record.status == "pending") & id_in(Record.execution, list(running)))
                .order_by(Record.id).limit(SCAN).tuples()
                if row[2] is None or row[2] <= running[row[1]].wave]
        if not rows:
            return []
        picked = pick(rows, {i: e.rollout for i, e in running.items()})
        if not picked:
            return []
        moment = utcnow()
        from controller.planning import dispatch_deadline

        query = (Record.update(status="dispatched", dispatched_at=moment,
                               deadline=dispatch_deadline(ctl, moment))
                 .where(id_in(Record.id, picked) & (Record.status == "pending"))
                 .returning(Record.id))
        return sorted(row.id for row in query.execute())


def pick(rows: list[tuple], rollouts: dict[int, dict]) -> list[int]:
    """The records (id, execution, wave, asset, zone) that fit under their limits, in order."""
    assets = in_flight(Account.asset, [row[3] for row in rows])
    zones = in_flight(Asset.zone, [row[4] for row in rows])
    budgets: dict[tuple[int, float], int] = {}
    picked = []
    for record_id, execution_id, _, asset_id, zone_id in rows:
        rollout = rollouts[execution_id]
        if rollout.get("asset_limit") and assets[asset_id] >= rollout["asset_limit"]:
            continue
        if rollout.get("zone_limit") and zones[zone_id] >= rollout["zone_limit"]:
            continue
        rate = rollout.get("connect_rate")
        if rate:
            key = (zone_id, rate)
            if key not in budgets:
                budgets[key] = connect_budget(zone_id, rate)
            if budgets[key] <= 0:
                continue
            budgets[key] -= 1
        assets[asset_id] += 1
        zones[zone_id] += 1
        picked.append(record_id)
    return picked


def in_flight(column, ids: list[int]) -> Counter:
    """Dispatched records (of any execution) per asset or zone among `ids`."""
    wanted = sorted(set(ids))
    return Counter(dict(Record.select(column, fn.COUNT(Record.id)).join(Account).join(Asset)
                        .where((Record.status == "dispatched") & id_in(column, wanted))
                        .group_by(column).tuples()))


def connect_budget(zone_id: int, rate: float) -> int:
    """How many more records the zone may be sent now at `rate` per second: each one opens a
    connection, so no more than `rate` go in any second (one per 1/rate s below 1/s)."""
    span = max(1.0, 1.0 / rate)
    recent = (Record.select().join(Account).join(Asset)
              .where((Asset.zone == zone_id)
                     & (Record.dispatched_at >= utcnow() - timedelta(seconds=span))).count())
    return math.floor(rate * span + 1e-9) - recent


def waiting(execution: Execution, say=english, say_counted=english_counted) -> str | None:
    """Why a running execution's open records are not all out (its rate limits), in words, or
    None: what the execution page shows (`say`, `say_counted`: as `rollout.describe` takes)."""
    rollout = execution.rollout or {}
    limits = describe({name: rollout.get(name) for name in LIMITS}, say)
    if execution.status != "running" or not limits:
        return None
    held = Record.select().where((Record.execution == execution.id)
                                 & (Record.status == "pending")
                                 & (Record.wave.is_null() | (Record.wave <= execution.wave))).count()
    if not held:
        return None
    return say_counted("%(count)s record waits on the rate limits (%(limits)s)",
                       "%(count)s records wait on the rate limits (%(limits)s)", held,
                       count=format(held, ","), limits="; ".join(limits))
