"""Publishing records: seal one command per account to its zone and publish it to
`rotate.<zone>`. The one path for the CLI, the daemon's dispatcher and the reaper."""
from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from peewee import JOIN, chunked
from pydantic import ValidationError

from controller.db import id_in
from controller.executions import Line, record_name, write_lines
from controller.models import Account, Asset, Execution, Plan, Record, WorkerSeen, Zone, utcnow
from controller.gates import claim_gated, command_limits
from controller.planning import command_expiry, command_timeout, dispatch_deadline, login_accounts
from controller.results import apply_results, verify_candidates
from controller.runtime import Controller
from shared.broker import ROTATE_ACTOR, rotate_queue
from shared.errors import KeyturnError
from shared.messages import (SCHEMA_VERSION, AssetTarget, RotateCommand, RotateResult, first_error,
                             seal)
from shared.platforms import Borrowed, PlatformParams, platform
from shared.publisher import Publisher
from shared.words import plural

BATCH = 1000
REFUSAL_TRUST_SECONDS = 86400.0   # how long a seen refusal of a wrong secret spares the check


class DispatchRow(NamedTuple):
    """What a command needs of one record (plain values: no model objects on the hot path)."""
    id: int
    attempt: int
    action: str
    deadline: datetime
    old_secret: bytes | None
    new_secret: bytes | None
    username: str
    secret_type: str
    asset_id: int
    asset_name: str
    address: str
    port: int
    platform: str
    host_key: str | None
    asset_params: dict | None
    refusals: dict | None
    zone: str
    public_key: str
    trust_first_use: bool
    plan_id: int | None
    params: dict | None
    ssh_timeout: float | None
    rollout: dict | None = None       # its execution's: the limits its worker honours too
    execution_id: int | None = None   # for its "dispatched" log line


def dispatch_rows(condition) -> list[DispatchRow]:
    return [DispatchRow._make(row) for row in Record.select(
        Record.id, Record.attempt, Record.action, Record.deadline, Record.old_secret,
        Record.new_secret, Account.username, Account.secret_type, Asset.id, Asset.name, Asset.address, Asset.port,
        Asset.platform, Asset.host_key, Asset.params, Asset.refusals, Zone.name, Zone.public_key,
        Zone.trust_first_use, Plan.id, Plan.params, Plan.ssh_timeout, Execution.rollout,
        Execution.id)
        .join(Account).join(Asset).join(Zone)
        .switch(Record).join(Execution).join(Plan, JOIN.LEFT_OUTER)
        .where(condition).order_by(Record.id).tuples()]


def dispatch_execution(ctl: Controller, execution_id: int) -> int:
    return dispatch_where(ctl, Record.execution == execution_id)


def dispatch_pending(ctl: Controller, now: datetime | None = None) -> int:
    return dispatch_where(ctl, Record.status == "pending", now)


def dispatch_where(ctl: Controller, condition, now: datetime | None = None) -> int:
    """Claim and publish every pending record matching `condition` that may go now (its
    execution running; under a rollout, what its waves, window and limits let through at `now`,
    by default the current time); returns how many were published. Records a dispatcher
    claimed and then died holding are the reaper's."""
    def claimed_batches():
        while claimed := claim_batch(ctl, condition):
            yield dispatch_rows(id_in(Record.id, claimed))
        gated = claim_gated(ctl, without_held_zones(condition), now or utcnow())
        if gated:
            yield dispatch_rows(id_in(Record.id, gated))
    return publish_rows(ctl, claimed_batches())


def publish_planned(ctl: Controller, plan: Plan, execution_id: int, accounts: list) -> int:
    """Publish a plan run's records, created `dispatched` for this caller (see `run_plan`), from
    the account rows planning resolved: only the new records' ids, deadlines and secrets are
    read back."""
    by_id = {account.id: account for account in accounts}
    rows = []
    for record_id, account_id, deadline, new_secret in (
            Record.select(Record.id, Record.account, Record.deadline, Record.new_secret)
            .where(Record.execution == execution_id).order_by(Record.id).tuples()):
        a = by_id[account_id]
        rows.append(DispatchRow(record_id, 1, "rotate", deadline, a.secret_current, new_secret,
                                a.username, a.secret_type, a.asset_id, a.asset_name, a.address,
                                a.port, a.platform, a.host_key, a.asset_params,
                                a.asset_refusals, a.zone,
                                a.public_key, a.trust_first_use, plan.id, plan.params,
                                plan.ssh_timeout, None, execution_id))
    return publish_rows(ctl, chunked(rows, BATCH))


def held_zones() -> set[str]:
    """Zones served by a live worker speaking another message schema: it could not read their
    commands, nor we its results, so their records wait as `pending` (the zones page says why)
    until it is upgraded or stops."""
    return {w.zone for w in WorkerSeen.select(WorkerSeen.zone).where(
        WorkerSeen.lost_at.is_null() & (WorkerSeen.message_schema != SCHEMA_VERSION))}


def without_held_zones(condition):
    """`condition`, less the records of `held_zones()`."""
    held = held_zones()
    if held:
        condition &= Record.account.not_in(
            Account.select(Account.id).join(Asset).join(Zone).where(Zone.name.in_(held)))
    return condition


def claim_batch(ctl: Controller, condition) -> list[int]:
    """Move up to BATCH pending records of running executions without a rollout to
    `dispatched`; only the claimer publishes them."""
    now = utcnow()
    condition = without_held_zones(condition)
    free = Execution.select(Execution.id).where((Execution.status == "running")
                                                & Execution.rollout.is_null())
    batch = (Record.select(Record.id).where(condition & (Record.status == "pending")
                                            & Record.execution.in_(free))
             .order_by(Record.id).limit(BATCH))
    query = (Record.update(status="dispatched", dispatched_at=now,
                           deadline=dispatch_deadline(ctl, now))
             .where(Record.id.in_(batch) & (Record.status == "pending")).returning(Record.id))
    return [row.id for row in query.execute()]


def publish_rows(ctl: Controller, batches: Iterable[list[DispatchRow]]) -> int:
    """Publish the records of every batch, in order, and wait until RabbitMQ confirms them all;
    returns how many were published. If the bus fails, every record it did not confirm goes
    back to `pending` for the daemon's dispatcher (a message that did get through is harmless
    twice: it carries the same new secret)."""
    handed: list[int] = []
    published: list[int] = []
    publisher = None
    commands = Commands(ctl)
    held = held_zones()
    try:
        for rows in batches:
            if held:
                back_to_pending([row.id for row in rows if row.zone in held])
                rows = [row for row in rows if row.zone not in held]
            handed += [row.id for row in rows]
            publisher = publisher or Publisher(ctl.broker)
            sent = []
            for row in commands.usable(rows):
                try:
                    envelope = commands.sealed(row)
                except ValidationError as exc:     # bad data in the database: this record only
                    fail_unsent([row.id], "bad_command",
                                f"the command does not validate ({first_error(exc)})")
                    continue
                publisher.publish(rotate_queue(row.zone), ROTATE_ACTOR, envelope)
                published.append(row.id)
                sent.append(row)
            write_lines([dispatched_line(row) for row in sent])   # one statement per 500
        if publisher is not None:
            publisher.wait_confirmed()
        return len(published)
    except Exception as exc:
        if publisher is not None:
            publisher.settle(timeout=5)
        confirmed = set(published[:publisher.confirmed]) if publisher is not None else set()
        waiting = back_to_pending([i for i in handed if i not in confirmed])
        # Our own errors are worded to carry no secret; any other is only named.
        reason = str(exc) if isinstance(exc, KeyturnError) else type(exc).__name__
        raise KeyturnError(f"publishing stopped ({reason}); {plural(waiting, 'record')} "
                           f"{'waits' if waiting == 1 else 'wait'} as pending for the dispatcher") from None
    finally:
        if publisher is not None:
            publisher.close()


def dispatched_line(row: DispatchRow) -> Line:
    again = f", attempt {row.attempt}" if row.attempt > 1 else ""
    what = "verify" if row.action == "verify" else "rotate"
    return Line(row.execution_id, f"{record_name(row.id, row.username, row.asset_name)}: "
                                  f"dispatched to zone {row.zone} ({what}{again})", "info", row.id)


def back_to_pending(record_ids: list[int]) -> int:
    """Only records still `dispatched` (one may already have its result); returns how many."""
    return sum(Record.update(status="pending")
               .where(id_in(Record.id, ids) & (Record.status == "dispatched")).execute()
               for ids in chunked(record_ids, 10 * BATCH))


class Commands:
    """Builds each record's sealed command. What the records of one asset share (its target,
    its privileged login and secrets, its plan's parameters) is looked up once."""

    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self._logins: dict[int, tuple[Account, list[str]] | None] = {}
        self._borrowed: dict[tuple[int, str], str | None] = {}   # (asset, username): secret
        self._targets: dict[int, AssetTarget] = {}
        self._params: dict[tuple[int, int | None], PlatformParams] = {}

    def usable(self, rows: list[DispatchRow]) -> list[DispatchRow]:
        """The rows whose asset has a privileged login; the others fail at once."""
        self._load({row.asset_id for row in rows},
                   {(row.asset_id, b.username) for row in rows for b in borrowed_by(row)})
        without = [row.id for row in rows if self._logins[row.asset_id] is None]
        if without:
            fail_unsent(without, "no_login", "the asset has no privileged account to log in with")
        return [row for row in rows if self._logins[row.asset_id] is not None]

    def _load(self, asset_ids: set[int], borrowed: set[tuple[int, str]]) -> None:
        new = asset_ids - self._logins.keys()
        logins = login_accounts(new)
        for asset_id in new:
            login = logins.get(asset_id)
            self._logins[asset_id] = (login, candidate_secrets(self.ctl, login)) if login else None
        new = borrowed - self._borrowed.keys()
        self._borrowed |= dict.fromkeys(new) | borrowed_secrets(self.ctl, new)

    def sealed(self, row: DispatchRow) -> dict:
        vault = self.ctl.vault
        login, login_secrets = self._logins[row.asset_id]
        old_secret, new_secret = vault.decrypt(row.old_secret), vault.decrypt(row.new_secret)
        if row.action == "verify":
            secrets = {"candidates": verify_candidates(old_secret, new_secret)}
        else:
            secrets = {"new_secret": new_secret, "old_secret": old_secret}
        command = RotateCommand(
            action=row.action, record_id=row.id, attempt=row.attempt, zone=row.zone,
            asset=self._target(row), login_username=login.username, login_secrets=login_secrets,
            login_secret_type=login.secret_type, username=row.username,
            secret_type=row.secret_type, **secrets, params=self._params_of(row),
            timeout=command_timeout(self.ctl, row.ssh_timeout or self.ctl.settings.ssh_timeout),
            not_after=command_expiry(self.ctl, row.deadline), secure_mode=self.ctl.settings.secure_mode,
            refusal_known=refusal_known(row), limits=command_limits(row.rollout))
        return seal("rotate", command, self.ctl.channel(row.zone, row.public_key))

    def _target(self, row: DispatchRow) -> AssetTarget:
        if row.asset_id not in self._targets:
            self._targets[row.asset_id] = AssetTarget(
                name=row.asset_name, address=row.address, port=row.port, platform=row.platform,
                host_key=row.host_key, trust_first_use=row.trust_first_use)
        return self._targets[row.asset_id]

    def _params_of(self, row: DispatchRow) -> PlatformParams:
        key = (row.asset_id, row.plan_id)
        if key not in self._params:
            values = merged_params(row)
            for borrowed in borrowed_by(row):
                secret = self._borrowed.get((row.asset_id, borrowed.username))
                if secret is not None:
                    values[borrowed.param] = secret
            self._params[key] = platform(row.platform).parse_params(values)
        return self._params[key]


def refusal_known(row: DispatchRow) -> bool:
    """Was the asset seen to refuse a wrong secret of this type within REFUSAL_TRUST_SECONDS?
    (Then its workers skip that check: a host that checks passwords rarely stops.)"""
    return time.time() - (row.refusals or {}).get(row.secret_type, 0) < REFUSAL_TRUST_SECONDS


def borrowed_by(row: DispatchRow) -> list[Borrowed]:
    """The secrets of other accounts of the asset that its command carries (root's for `su`)."""
    values = merged_params(row)
    return [b for b in platform(row.platform).borrowed if b.wanted(values)]


def merged_params(row: DispatchRow) -> dict:
    """The asset's own params with its plan's over them (the plan wins a key both set)."""
    return (row.asset_params or {}) | (row.params or {})


def fail_unsent(record_ids: list[int], error_code: str, error: str) -> None:
    """Records that cannot be sent fail at once, with a reason, through the normal results path
    (nothing was sent to any host)."""
    now = time.time()
    apply_results([RotateResult(record_id=r.id, attempt=r.attempt, zone=r.account.asset.zone.name,
                                worker_id="controller", status="failed", error_code=error_code,
                                error=f"{r.account.asset.name}: {error}", started_at=now,
                                finished_at=now)
                   for r in Record.select().where(id_in(Record.id, record_ids))])


def candidate_secrets(ctl: Controller, login: Account) -> list[str]:
    """The login account's secrets to try: current, then pending (it may be in rotation too)."""
    candidates = [ctl.vault.decrypt(login.secret_current)]
    if login.secret_pending is not None:
        candidates.append(ctl.vault.decrypt(login.secret_pending))
    return candidates


def borrowed_secrets(ctl: Controller, wanted: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """The current secret of each (asset, username) account of `wanted` that exists."""
    if not wanted:
        return {}
    accounts = Account.select().where(id_in(Account.asset, sorted({a for a, _ in wanted}))
                                      & Account.username.in_(sorted({u for _, u in wanted})))
    return {(a.asset_id, a.username): ctl.vault.decrypt(a.secret_current) for a in accounts
            if (a.asset_id, a.username) in wanted and a.secret_current is not None}
