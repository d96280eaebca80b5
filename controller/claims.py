"""Claiming outbox rows, so that several controller daemons share the work and each row is
worked on by one of them at a time: a claim, not a race.

A claim sets a lease (`claimed_until`) on rows that are due and not leased. On PostgreSQL the
rows are picked `FOR UPDATE SKIP LOCKED`, so two claimers never wait for, or both take, the
same row; SQLite has one writer at a time (our transactions begin IMMEDIATE), so its plain
conditional update is a claim too. A claimer that dies holding rows loses them to the next
claimer once the lease has passed: nothing is lost, and nothing is done twice while the
claimer lives (its work takes well under a lease)."""
from __future__ import annotations

from datetime import timedelta

import peewee

from controller.db import database, id_in, is_postgres
from controller.models import utcnow

LEASE_SECONDS = 120.0


def claim(model: type[peewee.Model], due: peewee.Expression, *, limit: int,
          lease: float = LEASE_SECONDS) -> list[int]:
    """Lease up to `limit` rows of `model` matching `due` whose lease is absent or passed,
    oldest id first; returns their ids (in order)."""
    now = utcnow()
    free = due & (model.claimed_until.is_null() | (model.claimed_until < now))
    pick = model.select(model.id).where(free).order_by(model.id).limit(limit)
    if is_postgres():
        pick = pick.for_update(skip_locked=True)
    with database.atomic():
        query = (model.update(claimed_until=now + timedelta(seconds=lease))
                 .where(model.id.in_(pick)).returning(model.id))
        return sorted(row.id for row in query.execute())


def release(model: type[peewee.Model], ids: list[int]) -> None:
    """Give rows back at once (their work failed and may be tried by anyone now)."""
    if ids:
        model.update(claimed_until=None).where(id_in(model.id, ids)).execute()
