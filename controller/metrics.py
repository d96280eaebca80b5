"""The controller's Prometheus figures.

What lives in the database (records by outcome, what waits, unverified accounts, live workers,
scheduler lag, the event relay's backlog) is read when `/metrics` is scraped, by
`DatabaseCollector`: every daemon and console process of one installation then shows the same
numbers, and none keeps a counter the others never see. Each scrape costs a few indexed
queries; the counts over all records are one grouped scan (about 3 s on 1,000,000 records on
PostgreSQL), so a process reads them at most every RECORDS_TTL seconds. What exists only in
one process (how long the daemon takes to apply results) is a plain counter of that process,
on its own `--metrics-port`.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from peewee import SQL, Case, NodeList, fn
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from controller.db import is_postgres
from controller.events import lost_after
from controller.models import (Account, Asset, OutboxEvent, Plan, Record, WebhookDelivery,
                               WorkerSeen, Zone, utcnow)
from controller.results import Applied, apply_result_batch
from controller.runtime import Controller
from controller.scheduling import scheduled
from shared.messages import RotateResult
from shared.platforms import RecordStatus

DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600)   # seconds a rotation took
WAITING = (RecordStatus.PENDING, RecordStatus.DISPATCHED)
ENDED = (RecordStatus.SUCCESS, RecordStatus.FAILED, RecordStatus.UNVERIFIED)
RECORDS_TTL = 60.0    # seconds the counts over all records are reused between scrapes

RESULT_APPLY_SECONDS = Histogram("keyturn_result_apply_seconds",
                                 "Seconds this daemon took to apply one batch of results.",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
RESULT_DELAY_SECONDS = Histogram("keyturn_result_delay_seconds",
                                 "Seconds from a worker ending a command (its clock) to this "
                                 "daemon applying the result.",
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
RESULTS_APPLIED = Counter("keyturn_results_applied_total",
                          "Results this daemon applied that changed a record.")


def apply_measured(results: list[RotateResult]) -> Applied:
    """`apply_result_batch`, timed for this daemon's own metrics."""
    started = time.monotonic()
    applied = apply_result_batch(results)
    RESULT_APPLY_SECONDS.observe(time.monotonic() - started)
    now = time.time()
    for result in results:
        RESULT_DELAY_SECONDS.observe(max(0.0, now - result.finished_at))
    RESULTS_APPLIED.inc(applied.changed)
    return applied


def seconds_between(start, end):
    """`end - start` in seconds, in SQL (both columns naive UTC timestamps)."""
    if is_postgres():
        return NodeList((SQL("EXTRACT(EPOCH FROM"), end - start, SQL(")")))
    return (fn.julianday(end) - fn.julianday(start)) * 86400.0


class DatabaseCollector(Collector):
    """Reads the figures kept in the database, at each scrape."""

    def __init__(self, ctl: Controller, records_ttl: float = RECORDS_TTL):
        self.ctl = ctl
        self.records_ttl = records_ttl
        self._records: list = []
        self._records_until = 0.0

    def collect(self):
        started = time.monotonic()
        now = utcnow()
        zones = [name for (name,) in Zone.select(Zone.name).tuples()]   # each shows, 0 or not
        yield from self.records()
        yield from self.waiting(now, zones)
        yield self.unverified_accounts(zones)
        yield self.workers_alive(now, zones)
        yield self.scheduler_lag(now)
        yield from self.event_backlog(now)
        yield GaugeMetricFamily("keyturn_metrics_query_seconds",
                                "Seconds the database queries of this scrape took.",
                                value=time.monotonic() - started)

    def waiting(self, now, zones: list[str]):
        """Records not ended yet, by zone (the status index finds them)."""
        rows = (Record.select(Zone.name, Record.status, fn.COUNT(Record.id),
                              fn.MIN(Record.dispatched_at))
                .join(Account).join(Asset).join(Zone).where(Record.status.in_(WAITING))
                .group_by(Zone.name, Record.status).tuples())
        waits = {(zone, status): (count, dispatched) for zone, status, count, dispatched in rows}
        waiting = GaugeMetricFamily("keyturn_records_waiting", "Records not ended yet: pending "
                                    "(to be dispatched) or dispatched (sent to a worker).",
                                    labels=["zone", "status"])
        oldest = GaugeMetricFamily("keyturn_oldest_dispatched_seconds", "Age of the oldest "
                                   "dispatched record still waiting for its result (0: none).",
                                   labels=["zone"])
        for zone in zones:
            for status in WAITING:
                waiting.add_metric([zone, status], waits.get((zone, status), (0, None))[0])
            dispatched = waits.get((zone, RecordStatus.DISPATCHED), (0, None))[1]
            oldest.add_metric([zone], max(0.0, (now - _naive(dispatched)).total_seconds())
                              if dispatched else 0.0)
        yield waiting
        yield oldest

    def records(self):
        """Counts by platform, zone, action and status, and how long ended rotations took: one
        scan of every record (seconds on millions), so read at most every RECORDS_TTL seconds."""
        if time.monotonic() < self._records_until:
            return self._records
        duration = seconds_between(Record.started_at, Record.finished_at)
        known = Record.status.in_(ENDED) & Record.started_at.is_null(False) & \
            Record.finished_at.is_null(False)
        buckets = [fn.SUM(Case(None, [(known & (duration <= bound), 1)], 0))
                   for bound in DURATION_BUCKETS]
        rows = (Record.select(Asset.platform, Zone.name, Record.action, Record.status,
                              fn.COUNT(Record.id), fn.SUM(Case(None, [(known, 1)], 0)),
                              fn.SUM(Case(None, [(known, duration)], 0)), *buckets)
                .join(Account).join(Asset).join(Zone)
                .group_by(Asset.platform, Zone.name, Record.action, Record.status).tuples())
        counts = GaugeMetricFamily("keyturn_records", "Records (one account's rotation or "
                                   "verify each) by platform, zone, action and status.",
                                   labels=["platform", "zone", "action", "status"])
        durations: dict[tuple[str, str], list[float]] = {}
        for platform, zone, action, status, count, timed, total, *cumulative in rows:
            counts.add_metric([platform, zone, action, status], count)
            if timed:
                into = durations.setdefault((platform, zone), [0.0] * (len(cumulative) + 2))
                for index, value in enumerate([*cumulative, timed, total]):
                    into[index] += float(value or 0)
        histogram = HistogramMetricFamily(
            "keyturn_rotation_duration_seconds", "Seconds from a worker starting a record's "
            "command to its end (worker clock), over ended records.", labels=["platform", "zone"])
        for (platform, zone), (*cumulative, timed, total) in durations.items():
            bounds = [floatToGoString(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
            histogram.add_metric([platform, zone], list(zip(bounds, [*cumulative, timed])),
                                 sum_value=total)
        self._records = [counts, histogram]
        self._records_until = time.monotonic() + self.records_ttl
        return self._records

    def unverified_accounts(self, zones: list[str]):
        """Accounts whose last rotation ended unverified and is not settled yet (no verify or
        restore since): the account is still held by that record's execution."""
        rows = (Record.select(Zone.name, fn.COUNT(Account.id.distinct()))
                .join(Account, on=((Record.account == Account.id)
                                   & (Account.busy_execution == Record.execution)))
                .join(Asset).join(Zone)
                .where(Record.status == RecordStatus.UNVERIFIED)
                .group_by(Zone.name).tuples())
        counts = dict(rows)
        family = GaugeMetricFamily("keyturn_unverified_accounts", "Accounts whose secret on "
                                   "the target is unknown (their rotation ended unverified; "
                                   "verify or restore settles it).", labels=["zone"])
        for zone in zones:
            family.add_metric([zone], counts.get(zone, 0))
        return family

    def workers_alive(self, now, zones: list[str]):
        silence = timedelta(seconds=lost_after(self.ctl.settings))
        rows = (WorkerSeen.select(WorkerSeen.zone, fn.COUNT(WorkerSeen.worker_id))
                .where(WorkerSeen.lost_at.is_null() & (WorkerSeen.last_seen >= now - silence))
                .group_by(WorkerSeen.zone).tuples())
        counts = dict(rows)
        family = GaugeMetricFamily("keyturn_workers_alive", "Workers heard from lately, by zone "
                                   "(a worker serving several zones counts in each).",
                                   labels=["zone"])
        for zone in zones:
            family.add_metric([zone], counts.get(zone, 0))
        return family

    def scheduler_lag(self, now):
        due = (Plan.select(fn.MIN(Plan.next_run_at))
               .where(scheduled() & (Plan.next_run_at <= now)).scalar())
        lag = (now - _naive(due)).total_seconds() if due else 0.0
        return GaugeMetricFamily("keyturn_scheduler_lag_seconds", "How late the most overdue "
                                 "scheduled plan is (0: none is due and not yet started).",
                                 value=max(0.0, lag))

    def event_backlog(self, now):
        count, first = (OutboxEvent.select(fn.COUNT(OutboxEvent.id), fn.MIN(OutboxEvent.at))
                        .where(OutboxEvent.relayed_at.is_null()).tuples().get())
        yield GaugeMetricFamily("keyturn_events_unrelayed", "Events waiting in the outbox to be "
                                "published to keyturn.events.", value=count)
        yield GaugeMetricFamily("keyturn_events_unrelayed_oldest_seconds", "Age of the oldest "
                                "event not yet relayed (0: none).",
                                value=(now - _naive(first)).total_seconds() if first else 0.0)
        pending = WebhookDelivery.select().where(WebhookDelivery.status == "pending").count()
        yield GaugeMetricFamily("keyturn_webhook_deliveries_pending", "Webhook deliveries not "
                                "yet delivered (nor given up).", value=pending)



def _naive(moment: datetime | str) -> datetime:
    """SQLite's aggregates give timestamps back as text."""
    return datetime.fromisoformat(moment) if isinstance(moment, str) else moment


def console_registry(ctl: Controller, records_ttl: float = RECORDS_TTL) -> CollectorRegistry:
    """What the console's `/metrics` shows: the database figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(ctl, records_ttl))
    return registry
