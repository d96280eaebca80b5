"""Running a plan: resolve its accounts, apply secure mode, and commit one record per account
holding its new secret, all before anything is published (step 1 of the protocol)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from peewee import JOIN, chunked, fn

from controller.db import bulk_insert, database
from controller.events import execution_started
from controller.executions import finish_if_done, log, log_many
from controller.models import (IN_FLIGHT, Account, Asset, Execution, Node, Plan, PlanAsset, PlanNode,
                               Record, Zone, utcnow)
from controller.rollout import execution_rollout, spread
from controller.runtime import Controller
from controller.secretgen import PasswordRules, generate_ssh_key
from shared.platforms import platform
from shared.settings import COMMAND_MARGIN
from shared.words import plural

CHUNK = 500
BUSY = ("in another rotation, or rotated too recently: a command for it may still be valid "
        "(for KEYTURN_ROTATION_DEADLINE seconds after it was sent)")


@dataclass(frozen=True)
class Target:
    account: Account
    new_secret: str | None


def resolve_accounts(plan: Plan) -> list:
    """The plan's usernames on its assets and on every asset under its nodes, as flat rows
    (account, asset and zone columns) in asset and username order."""
    return account_rows(Account.username.in_(plan.usernames)
                        & (Account.secret_type == plan.secret_type) & plan_assets(plan))


def plan_assets(plan: Plan):
    """The condition on Asset (joined with its Node) for the assets a plan targets: by name,
    or in one of its nodes or below."""
    targets = Asset.id.in_(PlanAsset.select(PlanAsset.asset).where(PlanAsset.plan == plan))
    for (path,) in PlanNode.select(Node.path).join(Node).where(PlanNode.plan == plan).tuples():
        targets |= under_node(path)
    return targets


def covered_assets(plan: Plan) -> int:
    """How many assets a plan targets, those under its nodes included (what a list shows)."""
    return Asset.select().join(Node, JOIN.LEFT_OUTER).where(plan_assets(plan)).count()


def under_node(path: str):
    """Assets in the node `path` or in any node below it."""
    return (Node.path == path) | Node.path.startswith(path.rstrip("/") + "/")


def account_rows(condition) -> list:
    """The accounts matching `condition` as flat rows (account, asset and zone columns) in
    asset and username order: what planning needs of each."""
    return list(Account.select(Account.id, Account.username, Account.secret_type,
                               Account.privileged, Account.secret_current,
                               Account.asset.alias("asset_id"), Asset.name.alias("asset_name"),
                               Asset.address, Asset.port, Asset.platform, Asset.host_key,
                               Asset.params.alias("asset_params"),
                               Asset.refusals.alias("asset_refusals"), Zone.name.alias("zone"),
                               Zone.public_key, Zone.trust_first_use, Node.path.alias("node_path"))
                .join(Asset).join(Zone).switch(Asset).join(Node, JOIN.LEFT_OUTER)
                .where(condition).order_by(Asset.name, Account.username).namedtuples())


def login_accounts(asset_ids: set[int]) -> dict[int, Account]:
    """Each asset's privileged account: the one workers log in with."""
    found = {}
    for ids in chunked(sorted(asset_ids), CHUNK):
        for account in Account.select().where(Account.asset.in_(ids) & Account.privileged):
            found[account.asset_id] = account
    return found


def skip_reason(account, login: Account | None, secure_mode: bool) -> str | None:
    where = f"{account.username}@{account.asset_name}"
    if login is None:
        return f"skipped {where}: asset has no privileged account to log in with"
    if login.secret_current is None:
        return f"skipped {where}: the privileged account {login.username} has no secret"
    if not account.public_key:
        return f"skipped {where}: zone {account.zone} has no public key"
    if secure_mode and account.privileged:
        return f"skipped {where}: secure mode protects the asset's privileged account"
    kind = platform(account.platform)
    if secure_mode and account.username.lower() in kind.protected_usernames:
        return f"skipped {where}: secure mode protects {account.username} on {kind.title}"
    return None


def new_secrets(ctl: Controller, plan: Plan, count: int) -> list[str]:
    """The new secrets of `count` accounts under the plan's strategy."""
    if plan.strategy == "specific":
        return [ctl.vault.decrypt(plan.given_secret)] * count
    if plan.secret_type == "ssh_key":
        return [generate_ssh_key(plan.key_type) for _ in range(count)]
    rules = PasswordRules(plan.length, plan.lowercase, plan.uppercase, plan.digits, plan.symbols,
                          plan.exclude_symbols)
    return rules.generate_many(count)


def start_execution(ctl: Controller, plan: Plan, *, trigger: str = "manual",
                    started_by: str = "cli", accounts: list | None = None) -> Execution:
    """Create the execution and its records, which wait as `pending` for the daemon's
    dispatcher (the console's, the API's and the bus requests' path). `accounts` (rows of
    `account_rows`) replaces the plan's own targets: a rotation of chosen accounts under the
    rules of an unsaved plan."""
    return plan_execution(ctl, plan, trigger, started_by, "pending", accounts)[0]


def plan_execution(ctl: Controller, plan: Plan, trigger: str, started_by: str,
                   status: str, accounts: list | None = None) -> tuple[Execution, list[Target]]:
    """Create the execution and its records in one transaction; nothing is published.

    Records start `dispatched` when the caller publishes them itself right after (`run_plan`),
    so no dispatcher sends them too; if that caller dies before publishing, the reaper sends
    them after their deadline."""
    accounts = resolve_accounts(plan) if accounts is None else accounts
    logins = login_accounts({account.asset_id for account in accounts})
    with database.atomic():
        execution = Execution.create(plan=plan if plan.id else None, plan_name=plan.name,
                                     trigger=trigger, started_by=started_by)
        notes = [f"plan {plan.name}: {plural(len(accounts), 'account')} resolved "
                 f"(secure mode {'on' if ctl.settings.secure_mode else 'off'})"]
        eligible = []
        for account in accounts:
            reason = skip_reason(account, logins.get(account.asset_id), ctl.settings.secure_mode)
            if reason:
                notes.append(reason)
            else:
                eligible.append(account)
        if plan.rollout and plan.rollout.get("waves"):   # records in the order waves draw them
            eligible = spread(eligible, lambda a: a.zone, lambda a: a.node_path,
                              lambda a: a.asset_id)
        targets = create_records(ctl, execution, [
            Target(account, secret) for account, secret in
            zip(eligible, new_secrets(ctl, plan, len(eligible)), strict=True)], status=status)
        held = {target.account.id for target in targets}
        notes += [f"skipped {account.username}@{account.asset_name}: {BUSY}"
                  for account in eligible if account.id not in held]
        execution.total = len(targets)
        execution.skipped = len(accounts) - len(targets)
        execution.rollout = execution_rollout(plan.rollout, len(targets))
        notes += assign_waves(execution, targets)
        execution.save()
        execution_started(execution)
        notes.append(f"{plural(len(targets), 'record')} {status}, {execution.skipped} skipped")
        log_many(execution.id, notes)
        finish_if_done(execution.id)
    return execution, targets


def assign_waves(execution: Execution, targets: list[Target]) -> list[str]:
    """Put each record in its wave (targets in the order `spread` drew them) and open the
    first; returns the log lines that say so."""
    counts = (execution.rollout or {}).get("waves")
    if not counts:
        return []
    execution.wave = 1
    start = 0
    for wave, end in enumerate(counts, 1):
        for ids in chunked([t.account.id for t in targets[start:end]], CHUNK):
            Record.update(wave=wave).where((Record.execution == execution.id)
                                           & Record.account.in_(ids)).execute()
        start = end
    sizes = [end - begin for begin, end in zip([0, *counts], counts)]
    return [f"{plural(len(counts), 'wave')} of {', '.join(map(str, sizes))} accounts, brake "
            f"{execution.rollout['max_failures']}: wave 1 opened"]


def dispatch_deadline(ctl: Controller, dispatched_at: datetime) -> datetime:
    """When a record dispatched at `dispatched_at` is overdue for the reaper. Until then its
    command may still act, so no other rotation of its account starts (`create_records`)."""
    return dispatched_at + timedelta(seconds=ctl.settings.rotation_deadline)


def command_expiry(ctl: Controller, deadline: datetime) -> float:
    """The `not_after` (epoch seconds) of the command of a record with this deadline: early
    enough that a worker whose clock is `clock_skew` behind ours, and a change cut off at that
    moment, are done by the deadline. Replayed or delayed copies are refused after it, and
    before it the account's next rotation has not begun: so no copy ever sets a secret that is
    not the controller's intent."""
    return (deadline.replace(tzinfo=timezone.utc).timestamp() - ctl.settings.clock_skew
            - COMMAND_MARGIN)


def create_records(ctl: Controller, execution: Execution, targets: list[Target], *,
                   take_over: bool = False, retry_of: dict[int, int] | None = None,
                   action: str = "rotate", status: str = "pending") -> list[Target]:
    """Insert one record per target holding its new secret, and claim each target's account for
    this execution, making that secret its pending one (one rotation per account at a time).
    Targets whose account another rotation holds lose their record; returns the others.

    A retry or verify may take over an account whose holder is not rotating it any more (it
    ended `unverified`); a new plan run never does, so both candidate secrets are kept."""
    now = utcnow()
    dispatched_at = now if status == "dispatched" else None
    deadline = dispatch_deadline(ctl, now)
    fields = [Record.execution, Record.account, Record.status, Record.action, Record.attempt,
              Record.ignored, Record.old_secret, Record.new_secret, Record.created_at,
              Record.dispatched_at, Record.deadline, Record.retry_of]
    bulk_insert(Record, fields, [
        (execution.id, t.account.id, status, action, 1, False, t.account.secret_current,
         ctl.vault.encrypt(t.new_secret), now, dispatched_at, deadline, (retry_of or {}).get(t.account.id))
        for t in targets])
    free = Account.busy_execution.is_null()
    if take_over:
        holder = Record.alias("holder")
        free |= ~fn.EXISTS(holder.select(holder.id).where(
            (holder.account == Account.id) & (holder.execution == Account.busy_execution)
            & holder.status.in_(IN_FLIGHT)))
    if action == "rotate":
        free &= ~live_command(execution, now)
    claimed = (Account.update(busy_execution=execution.id, secret_pending=Record.new_secret,
                              pending_since=now)
               .from_(Record).where((Record.account == Account.id)
                                    & (Record.execution == execution.id) & free).execute())
    if claimed == len(targets):
        return targets
    ours = Account.select(Account.id).where(Account.busy_execution == execution.id)
    Record.delete().where((Record.execution == execution.id) & Record.account.not_in(ours)).execute()
    held = {account_id for (account_id,) in ours.tuples()}
    return [target for target in targets if target.account.id in held]


def command_timeout(ctl: Controller, wanted: float) -> float:
    """A command's own timeout, at most half its validity: a worker starts a change only with
    a whole timeout of validity left (`ensure_time_to_change`), so a longer one would never run."""
    window = ctl.settings.rotation_deadline - ctl.settings.clock_skew - COMMAND_MARGIN
    return min(wanted, window / 2)


def live_command(execution: Execution, now: datetime):
    """Whether another record's command for the account may still act (dispatched, deadline
    not passed), with a different new secret: a retry of that very record sets the same one."""
    live = Record.alias("live")
    return fn.EXISTS(live.select(live.id).where(
        (live.account == Account.id) & (live.execution != execution.id) & (live.action == "rotate")
        & live.dispatched_at.is_null(False) & (live.deadline > now)
        & (live.id != fn.COALESCE(Record.retry_of, 0))))


def publish_now(ctl: Controller, execution: Execution) -> Execution:
    """Publish an execution's pending records from this process (the CLI's retry and verify).
    Web requests leave this to the daemon's dispatcher, and so does the embedded mode, whose
    bus lives in `serve`."""
    from controller.dispatch import dispatch_execution

    if execution.total and not ctl.settings.embedded:
        sent = dispatch_execution(ctl, execution.id)
        log(execution.id, f"{plural(sent, 'message')} published")
    return execution


def run_plan(ctl: Controller, plan: Plan, *, trigger: str = "manual",
             started_by: str = "cli") -> Execution:
    """Plan and publish from this process (the CLI's and the scheduler's path): every record is
    committed before its message is published. In embedded mode the bus lives in `serve`,
    whose dispatcher publishes."""
    from controller.dispatch import publish_planned

    if ctl.settings.embedded:
        return start_execution(ctl, plan, trigger=trigger, started_by=started_by)
    if plan.rollout:     # waves, window or limits: only the dispatcher's gates let records out
        return publish_now(ctl, start_execution(ctl, plan, trigger=trigger,
                                                started_by=started_by))
    execution, targets = plan_execution(ctl, plan, trigger, started_by, "dispatched")
    if targets:
        sent = publish_planned(ctl, plan, execution.id, [target.account for target in targets])
        log(execution.id, f"{plural(sent, 'message')} published")
    return execution
