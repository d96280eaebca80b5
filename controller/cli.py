"""Controller commands of the `keyturn` CLI: inventory, plans, runs, records, the daemon."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time

import click
from peewee import JOIN
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controller import inventory
from controller.audit import audit
from controller.executions import nothing_rotated
from controller.models import Account, Asset, Execution, LogLine, Plan, Record, Zone
from controller.plans import PlanError, delete_plan, parse_spec, save_plan
from controller.runtime import Controller, start_controller
from shared.logs import configure_logging
from shared.metrics import MetricsServer, metrics_options
from shared.messages import SCHEMA_VERSION
from shared.platforms import DEFAULT_PLATFORM, PLATFORMS, RecordStatus, SecretType
from shared.settings import load_settings
from shared.words import plural

console = Console()


def controller() -> Controller:
    return start_controller(load_settings())


def read_secret_stdin() -> str:
    """One line (a password), or a whole private key when the first line begins one."""
    secret = sys.stdin.readline()
    if secret.startswith("-----BEGIN "):
        secret += sys.stdin.read()
    secret = secret.rstrip("\n")
    if not secret:
        raise click.ClickException("no secret on standard input")
    return secret


def choice(values) -> click.Choice:
    """A choice of plain strings (click matches an enum's members by their names)."""
    return click.Choice([str(value) for value in values])


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if cell is None else str(cell) for cell in row])
    console.print(table)


# ---- init, zones ---------------------------------------------------------------------------

@click.command()
@click.option("--admin", "admin_name", help="Create the first console administrator.")
@click.option("--password-stdin", is_flag=True, help="Read the administrator's password.")
def init(admin_name, password_stdin):
    """Create the data directory, keys and database schema (or upgrade the schema)."""
    settings = load_settings()
    for line in inventory.initialise(settings):
        click.echo(line)
    if admin_name:
        from controller.web.cli import read_password
        from controller.web.users import check_new_name, create_user

        check_new_name(admin_name)
        create_user(admin_name, read_password(password_stdin), "admin")
        click.echo(f"administrator {admin_name} created: sign in and enrol an authenticator")


@click.command("add")
@click.argument("name")
@click.option("--public-key", help="The zone's public key from `keyturn zone keygen` on the "
                                   "worker's machine. Without it a key pair is made here.")
@click.option("--trust-first-use/--no-trust-first-use", default=None,
              help="Pin an asset's host key on first contact (default: KEYTURN_TRUST_FIRST_USE).")
@click.option("--replace", is_flag=True, help="Replace an existing zone's key and setting.")
def zone_add(name, public_key, trust_first_use, replace):
    """Register a network zone."""
    ctl = controller()
    zone, made_key = inventory.add_zone(ctl, name, public_key, trust_first_use, replace)
    click.echo(f"zone {zone.name} {'saved' if replace else 'registered'} "
               f"(queue rotate.{zone.name})")
    if made_key:
        click.echo(f"zone private key written to {ctl.settings.zone_key_path(zone.name)}")
    click.echo(f"controller public key for its workers: {inventory.controller_public_key(ctl)}")


@click.command("list")
def zone_list():
    """Zones with their assets and the workers seen in them."""
    controller()
    print_table("zones", ["zone", "assets", "key", "workers (last seen)"],
                [[z.name, z.assets.count(), "yes" if z.public_key else "missing",
                  ", ".join(f"{w.worker_id} ({w.last_seen:%H:%M:%S}{schema_note(w)})"
                            for w in inventory.workers(z))]
                 for z in Zone.select().order_by(Zone.name)])


def schema_note(worker) -> str:
    """What `zone list` says of a worker speaking another message schema than ours."""
    if worker.message_schema == SCHEMA_VERSION:
        return ""
    return f", speaks message schema {worker.message_schema}, not {SCHEMA_VERSION}"


# ---- assets and accounts -------------------------------------------------------------------

@click.group()
def asset():
    """Assets (hosts) whose accounts are rotated."""


@asset.command("add")
@click.argument("name")
@click.option("--address", required=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Default: the platform's port "
              "(" + ", ".join(f"{p.name} {p.default_port}" for p in PLATFORMS.values()) + ").")
@click.option("--platform", default=DEFAULT_PLATFORM, show_default=True, type=choice(PLATFORMS))
@click.option("--zone", "zone_name", required=True)
@click.option("--node", help="Asset tree folder, e.g. /prod/web (created when missing).")
@click.option("--host-key", help="Pinned OpenSSH host public key line (SSH platforms).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the asset's platform, e.g. database=app for postgresql "
                   "(VALUE is JSON, or else a plain string); a plan's params win over it.")
def asset_add(name, address, port, platform, zone_name, node, host_key, params):
    """Add an asset."""
    controller()
    created = inventory.add_asset(name, address, port, platform, zone_name, node, host_key,
                                  dict(parse_param(text) for text in params))
    click.echo(f"asset {created.name} ({created.platform}, port {created.port}) added in zone "
               f"{zone_name}")


@asset.command("trust")
@click.argument("name")
@click.option("--host-key", help="Pin this OpenSSH public key line instead of fetching one.")
@click.option("--yes", is_flag=True, help="Accept the fetched key without asking.")
def asset_trust(name, host_key, yes):
    """Fetch an asset's SSH host key, show its fingerprint and pin it once accepted. Run it
    where the asset is reachable, or give the key (e.g. from ssh-keyscan inside its zone)."""
    from worker.ssh import fingerprint

    controller()
    found = inventory.with_host_keys(inventory.asset_by_name(name))
    key = host_key.strip() if host_key else inventory.fetch_host_key(found)
    click.echo(f"{name} presents {fingerprint(key)} ({key.split()[0]})")
    if found.host_key and found.host_key.split()[:2] == key.split()[:2]:
        click.echo("already pinned")
        return
    if found.host_key:
        click.echo(f"it replaces the pinned {fingerprint(found.host_key)}")
    if not (yes or host_key or click.confirm("pin this key?")):
        raise click.ClickException("not pinned")
    inventory.pin_host_key(found, key, operator())
    click.echo(f"pinned the host key of {name}")


@asset.command("list")
def asset_list():
    """Assets with their zone, node and accounts."""
    controller()
    print_table("assets", ["asset", "address", "platform", "zone", "node", "accounts", "host key"],
                [[a.name, f"{a.address}:{a.port}", a.platform, a.zone.name,
                  a.node.path if a.node else "", a.accounts.count(),
                  "pinned" if a.host_key else "not pinned"]
                 for a in Asset.select().order_by(Asset.name)])


@click.group()
def account():
    """Accounts on assets."""


@account.command("add")
@click.argument("asset_name")
@click.argument("username")
@click.option("--privileged", is_flag=True, help="The account workers log in with on this asset.")
@click.option("--secret-type", type=choice(SecretType),
              help="password, or ssh_key (then the secret is a private key without a "
                   "passphrase; SSH platforms only). Default: the account's type; password "
                   "for a new account.")
@click.option("--secret-stdin", is_flag=True, help="Read the current secret from standard input "
                                                   "(a password line, or a whole private key).")
def account_add(asset_name, username, privileged, secret_type, secret_stdin):
    """Add an account (or update its secret, type and flag)."""
    ctl = controller()
    secret = read_secret_stdin() if secret_stdin else None
    created = inventory.set_account(ctl, asset_name, username, secret, privileged, secret_type)
    click.echo(f"account {created.username}@{asset_name} saved ({created.secret_type}"
               + (", privileged)" if created.privileged else ")"))


@account.command("verify")
@click.argument("asset_name")
@click.argument("username")
@click.option("--wait", is_flag=True)
def account_verify(asset_name, username, wait):
    """Find out which of the account's candidate secrets logs in, and settle on it."""
    from controller.actions import verify_accounts

    ctl = controller()
    launch(ctl, verify_accounts(ctl, [inventory.account_by_name(asset_name, username)], operator()),
           wait)


@account.command("list")
@click.argument("asset_name", required=False)
def account_list(asset_name):
    """Accounts, optionally of one asset."""
    controller()
    query = Account.select(Account, Asset).join(Asset).order_by(Asset.name, Account.username)
    if asset_name:
        query = query.where(Asset.name == asset_name)
    print_table("accounts", ["asset", "account", "type", "privileged", "secret", "changed",
                             "state"],
                [[a.asset.name, a.username, a.secret_type, "yes" if a.privileged else "",
                  "set" if a.secret_current else "none", a.current_since,
                  "rotating" if a.busy_execution else ""] for a in query])


@asset.command("edit")
@click.argument("name")
@click.option("--name", "new_name", help="Rename the asset.")
@click.option("--address")
@click.option("--port", help="A port, or '' for the platform's default.")
@click.option("--platform", type=choice(PLATFORMS), help="Its params and host key go unless "
              "given again; a default port becomes the new platform's.")
@click.option("--zone", "zone_name", help="Move it to another zone.")
@click.option("--node", help="Move it to another node ('' for none; created when missing).")
@click.option("--host-key", help="Pin another OpenSSH host key line ('' to unpin).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Its platform's params, replacing those it has (VALUE is JSON or text).")
@click.option("--no-params", is_flag=True, help="Drop its params (the platform's defaults).")
def asset_edit(name, new_name, params, no_params, **fields):
    """Change an asset: rename, move to another zone or node, new address, port, platform or
    params. Checked as `asset add` checks a new one."""
    from controller.upkeep import edit_asset

    controller()
    changes = {key: value for key, value in {"name": new_name, "address": fields["address"],
               "port": fields["port"], "platform": fields["platform"],
               "zone": fields["zone_name"], "node": fields["node"],
               "host_key": fields["host_key"]}.items() if value is not None}
    if params or no_params:
        changes["params"] = dict(parse_param(text) for text in params)
    if not changes:
        raise click.UsageError("nothing to change: give --name, --address, --port, --platform, "
                               "--zone, --node, --host-key or --param")
    saved = edit_asset(inventory.asset_by_name(name), changes)
    click.echo(f"asset {saved.name} saved ({saved.platform}, {saved.address}:{saved.port}, "
               f"zone {saved.zone.name})")


@asset.command("delete")
@click.argument("name")
def asset_delete(name):
    """Delete an asset and its accounts; their records stay readable. Refused while one of
    its accounts is in a rotation."""
    from controller.upkeep import delete_asset

    controller()
    count = delete_asset(inventory.asset_by_name(name))
    click.echo(f"asset {name} deleted with {plural(count, 'account')} (their records are kept)")


@asset.command("test")
@click.argument("name")
@click.option("--wait", is_flag=True)
def asset_test(name, wait):
    """Test the connection: a worker of its zone logs in with its privileged account."""
    from controller.actions import verify_accounts

    ctl = controller()
    found = inventory.asset_by_name(name)
    login = Account.get_or_none((Account.asset == found.id) & Account.privileged)
    if login is None:
        raise click.ClickException(f"asset {name} has no privileged account to log in with "
                                   f"(add one: keyturn account add {name} USER --privileged)")
    launch(ctl, verify_accounts(ctl, [login], operator()), wait)


@account.command("edit")
@click.argument("asset_name")
@click.argument("username")
@click.option("--username", "new_name", help="Rename the account.")
@click.option("--privileged/--not-privileged", default=None,
              help="Make it the account workers log in with, or not.")
@click.option("--secret-type", type=choice(SecretType), help="With --secret-stdin: its type.")
@click.option("--secret-stdin", is_flag=True, help="Read its current secret from standard input.")
def account_edit(asset_name, username, new_name, privileged, secret_type, secret_stdin):
    """Change an account: rename, privileged or not, its secret and secret type."""
    from controller.upkeep import edit_account

    ctl = controller()
    secret = read_secret_stdin() if secret_stdin else None
    saved = edit_account(ctl, inventory.account_by_name(asset_name, username), new_name,
                         privileged, secret, secret_type)
    click.echo(f"account {saved.username}@{asset_name} saved ({saved.secret_type}"
               + (", privileged)" if saved.privileged else ")"))


@account.command("delete")
@click.argument("asset_name")
@click.argument("username")
def account_delete(asset_name, username):
    """Delete an account; its records stay readable. Refused while it is in a rotation."""
    from controller.upkeep import delete_account

    controller()
    delete_account(inventory.account_by_name(asset_name, username))
    click.echo(f"account {username}@{asset_name} deleted (its records are kept)")


@click.command("edit")
@click.argument("name")
@click.option("--name", "new_name", help="Rename it (its queue follows: restart its workers "
                                         "with the new name).")
@click.option("--trust-first-use/--no-trust-first-use", default=None)
def zone_edit(name, new_name, trust_first_use):
    """Rename a zone or change whether it trusts host keys on first use."""
    from controller.upkeep import edit_zone

    ctl = controller()
    saved = edit_zone(ctl, zone_by_name(name), new_name, trust_first_use)
    click.echo(f"zone {saved.name} saved (queue rotate.{saved.name})")
    if saved.name != name:
        click.echo(f"restart the zone's workers with --zone {saved.name}")


@click.command("delete")
@click.argument("name")
def zone_delete(name):
    """Delete a zone without assets."""
    from controller.upkeep import delete_zone

    controller()
    delete_zone(zone_by_name(name))
    click.echo(f"zone {name} deleted")


def zone_by_name(name: str) -> Zone:
    found = Zone.get_or_none(Zone.name == name)
    if found is None:
        raise click.ClickException(f"no zone named {name}")
    return found


@click.group()
def node():
    """Nodes: the folders of the asset tree."""


@node.command("add")
@click.argument("path")
def node_add(path):
    """Add a node (and its parents)."""
    controller()
    click.echo(f"node {inventory.add_node(path).path} saved")


@node.command("list")
def node_list():
    """The node tree with the assets in each node."""
    from controller.models import Node

    controller()
    print_table("nodes", ["node", "assets"],
                [["  " * (n.path.count("/") - 1) + n.path.rsplit("/", 1)[-1] + f"  ({n.path})",
                  n.assets.count()] for n in Node.select().order_by(Node.path)])


@node.command("rename")
@click.argument("path")
@click.argument("new_path")
def node_rename(path, new_path):
    """Give a node another path; the nodes and assets under it move along."""
    from controller.upkeep import rename_node

    controller()
    click.echo(f"node {path} is now {rename_node(node_by_path(path), new_path).path}")


@node.command("delete")
@click.argument("path")
@click.option("--yes", is_flag=True, help="Delete it even with nodes or assets under it.")
def node_delete(path, yes):
    """Delete a node and the nodes under it; their assets stay, in no node. One holding
    nodes or assets asks first."""
    from controller.upkeep import NeedsConfirmation, delete_node

    controller()
    found = node_by_path(path)
    try:
        children, assets = delete_node(found, confirm=yes)
    except NeedsConfirmation as exc:
        if not sys.stdin.isatty():
            raise click.ClickException(f"{exc} with --yes") from None
        click.confirm(f"{exc}?", abort=True)
        children, assets = delete_node(found, confirm=True)
    click.echo(f"node {path} deleted ({plural(children, 'node')} under it; "
               f"{plural(assets, 'asset')} now in no node)")


def node_by_path(path: str):
    from controller import names
    from controller.models import Node

    found = Node.get_or_none(Node.path == names.node_path(path))
    if found is None:
        raise click.ClickException(f"no node {path}")
    return found


# ---- plans ---------------------------------------------------------------------------------

@click.group()
def plan():
    """Change-secret plans."""


@plan.command("add")
@click.argument("name")
@click.option("--username", "usernames", multiple=True, required=True)
@click.option("--asset", "assets", multiple=True)
@click.option("--node", "nodes", multiple=True)
@click.option("--strategy", type=click.Choice(["random", "specific"]), default="random",
              show_default=True)
@click.option("--secret-stdin", is_flag=True, help="Read the given secret (strategy specific).")
@click.option("--length", default=16, show_default=True, type=int)
@click.option("--lowercase/--no-lowercase", default=True)
@click.option("--uppercase/--no-uppercase", default=True)
@click.option("--digits/--no-digits", default=True)
@click.option("--symbols/--no-symbols", default=True)
@click.option("--exclude-symbols", default="")
@click.option("--interval-hours", type=int)
@click.option("--crontab")
@click.option("--recipient", "recipients", multiple=True)
@click.option("--secret-type", type=choice(SecretType), default=SecretType.PASSWORD.value,
              show_default=True)
@click.option("--key-type", type=click.Choice(["ed25519", "rsa"]), default="ed25519",
              show_default=True)
@click.option("--ssh-timeout", type=float, help="Seconds per SSH step for this plan.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of some platform, e.g. become=su, create_user=true, "
                   "groups=[\"wheel\"] (UNIX), database=app (postgresql); each asset takes "
                   "its platform's, over its own (VALUE is JSON, or else a plain string).")
@click.option("--waves", help="Roll out in waves: cumulative counts or percentages of the "
                              "accounts, e.g. 1,5%,25%,100% (default: all at once).")
@click.option("--max-failures", help="The failure brake between waves: a count or a share "
                                     "of a wave, e.g. 2% (default with waves: 0).")
@click.option("--window", help="Touch hosts only inside this maintenance window, e.g. "
                               "\"Mon-Fri 01:00-05:00\" (KEYTURN_TIMEZONE); several: ;")
@click.option("--asset-limit", type=int, help="At most this many rotations in flight per asset.")
@click.option("--zone-limit", type=int, help="At most this many rotations in flight per zone.")
@click.option("--connect-rate", type=float,
              help="At most this many new SSH connections per second per zone.")
def plan_add(name, secret_stdin, params, **fields):
    """Create a plan."""
    from controller.plan_notes import plan_notes

    ctl = controller()
    fields = {key: list(value) if isinstance(value, tuple) else value
              for key, value in fields.items()}
    fields["params"] = dict(parse_param(text) for text in params)
    if secret_stdin:
        fields["secret"] = read_secret_stdin()
    try:
        spec = parse_spec({"name": name, **fields})
        created = save_plan(spec, ctl.vault)
    except PlanError as exc:
        raise click.ClickException(f"plan {name} not saved ({exc})")
    click.echo(f"plan {created.name} saved")
    for note in plan_notes(created, ctl.settings.secure_mode):
        click.echo(f"note: {note}")


def parse_param(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise click.BadParameter(f"{text!r}: use KEY=VALUE", param_hint="--param")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


@plan.command("list")
def plan_list():
    """Plans with their targets (assets: those under its nodes too), schedule and last
    execution."""
    from controller.planning import covered_assets

    controller()
    rows = []
    for p in Plan.select().order_by(Plan.name):
        last = p.executions.order_by(Execution.id.desc()).first()
        schedule = (f"every {p.interval_hours} h" if p.interval_hours else p.crontab) or "manual"
        rows.append([p.name, ", ".join(p.usernames), covered_assets(p), p.node_links.count(),
                     p.strategy, schedule, p.next_run_at or "",
                     f"#{last.id} {last.status}" if last else ""])
    print_table("plans", ["plan", "usernames", "assets", "nodes", "strategy", "schedule",
                          "next run", "last execution"], rows)


@plan.command("delete")
@click.argument("name")
def plan_delete(name):
    """Delete a plan (its executions and records are kept)."""
    controller()
    delete_plan(inventory.plan_by_name(name))
    click.echo(f"plan {name} deleted")


@plan.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Show progress until the execution ends.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait at most.")
def plan_run(name, wait, timeout):
    """Run a plan now. With --wait, exit non-zero if any record did not succeed."""
    from controller.planning import run_plan

    ctl = controller()
    started = run_plan(ctl, inventory.plan_by_name(name), started_by=operator())
    audit("plan.run", f"plan/{name}", f"execution {started.id}")
    follow(ctl, started, wait, timeout)


def wait_for(ctl: Controller, execution_id: int, timeout: float) -> Execution:
    """Show a progress bar until the execution ends (or the timeout passes); say so once when
    nothing serves its records."""
    from controller.watch import STALL_SECONDS, nobody_dispatching

    columns = [TextColumn("execution {task.fields[id]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("ok {task.fields[ok]}  failed {task.fields[bad]}"), TimeElapsedColumn()]
    started = time.monotonic()
    give_up, look = started + timeout, started + STALL_SECONDS
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = None
        while True:
            execution = Execution.get_by_id(execution_id)
            if task is None:
                task = progress.add_task("run", total=execution.total, id=execution_id, ok=0, bad=0)
            progress.update(task, completed=execution.ended, ok=execution.succeeded,
                            bad=execution.failed + execution.unverified)
            if execution.status != "running":
                return execution
            if look and time.monotonic() > look:
                look = None
                stalled = nobody_dispatching(ctl, execution_id)
                if stalled:
                    progress.console.print(f"keyturn: execution {execution_id} waits ({stalled})",
                                           markup=False, highlight=False, soft_wrap=True)
            if time.monotonic() > give_up:
                raise click.ClickException(f"execution {execution_id} still running after "
                                           f"{timeout:.0f} s")
            time.sleep(0.2)


def summarise(execution: Execution) -> None:
    from controller.gates import waiting
    from controller.rollout import describe

    print_table(f"execution {execution.id} ({execution.plan_name}): {execution.status}",
                ["success", "unverified", "failed", "skipped", "total"],
                [[execution.succeeded, execution.unverified, execution.failed, execution.skipped,
                  execution.total]])
    for line in [*describe(execution.rollout), execution.pause_reason, waiting(execution)]:
        if line:
            click.echo(line)
    if execution.wave:
        click.echo(f"wave {execution.wave} of {len(execution.rollout['waves'])} open")
    failures = (Record.select(Record, Account, Asset).join(Account, JOIN.LEFT_OUTER)
                .join(Asset, JOIN.LEFT_OUTER)
                .where((Record.execution == execution) & (Record.status != "success")))
    if failures.count():
        print_table("not succeeded", ["record", "asset", "account", "status", "reason"],
                    [[r.id, *r.names(), r.status, r.error] for r in failures])


# ---- executions and records ----------------------------------------------------------------

@click.group()
def execution():
    """Executions (runs of plans)."""


@execution.command("show")
@click.argument("execution_id", type=int)
def execution_show(execution_id):
    """An execution's summary and log."""
    controller()
    found = Execution.get_or_none(Execution.id == execution_id)
    if found is None:
        raise click.ClickException(f"no execution {execution_id}")
    summarise(found)
    for line in found.log_lines.order_by(LogLine.id):
        click.echo(f"{line.at:%Y-%m-%d %H:%M:%S} {line.level:7} {line.message}")


@execution.command("pause")
@click.argument("execution_id", type=int)
def execution_pause(execution_id):
    """Stop dispatching an execution's records; those in flight finish (audited)."""
    from controller.steering import pause_execution

    controller()
    click.echo(f"execution {execution_id}: {pause_execution(execution_id, operator()).pause_reason}")


@execution.command("resume")
@click.argument("execution_id", type=int)
def execution_resume(execution_id):
    """Dispatch a paused execution again; after its failure brake, from the next wave on
    (audited)."""
    from controller.steering import resume_execution

    ctl = controller()
    resumed = resume_execution(ctl, execution_id, operator())
    click.echo(f"execution {execution_id}: {resumed.status}"
               + (f" ({resumed.pause_reason})" if resumed.pause_reason else ""))


@execution.command("cancel")
@click.argument("execution_id", type=int)
def execution_cancel(execution_id):
    """End an execution: records not yet dispatched are cancelled and their accounts freed;
    those in flight settle normally (audited)."""
    from controller.steering import cancel_execution, cancelled_count

    controller()
    cancel_execution(execution_id, operator())
    click.echo(f"execution {execution_id} cancelled: "
               f"{plural(cancelled_count(execution_id), 'record')} not sent")


@execution.command("retry-failed")
@click.argument("execution_id", type=int)
@click.option("--wait", is_flag=True)
def execution_retry_failed(execution_id, wait):
    """Retry every failed or unverified record of an execution (same new secrets, no mail)."""
    from controller.actions import retry_failed

    ctl = controller()
    launch(ctl, retry_failed(ctl, execution_id, operator()), wait)


@execution.command("verify")
@click.argument("execution_id", type=int)
@click.option("--wait", is_flag=True)
def execution_verify(execution_id, wait):
    """Settle every unverified account of an execution on the secret that logs in."""
    from controller.actions import unverified_accounts, verify_accounts

    ctl = controller()
    launch(ctl, verify_accounts(ctl, unverified_accounts(execution_id), operator()), wait)


@click.group(invoke_without_command=True)
@click.option("--execution", "execution_id", type=int)
@click.option("--plan", "plan_name")
@click.option("--status", type=choice(RecordStatus))
@click.option("--limit", default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def records(ctx, execution_id, plan_name, status, limit, as_json):
    """Per-account records, newest first (secrets are never shown here)."""
    if ctx.invoked_subcommand:
        return
    controller()
    if execution_id is not None and not Execution.select().where(
            Execution.id == execution_id).exists():
        raise click.ClickException(f"no execution {execution_id}")
    if plan_name and not Execution.select().where(Execution.plan_name == plan_name).exists():
        raise click.ClickException(f"no execution of a plan named {plan_name}")
    query = (Record.select(Record, Account, Asset, Execution).join(Account, JOIN.LEFT_OUTER)
             .join(Asset, JOIN.LEFT_OUTER).switch(Record).join(Execution)
             .order_by(Record.id.desc()).limit(limit))
    if execution_id is not None:
        query = query.where(Record.execution == execution_id)
    if plan_name:
        query = query.where(Execution.plan_name == plan_name)
    if status:
        query = query.where(Record.status == status)
    rows = [{"id": r.id, "execution": r.execution_id, "plan": r.execution.plan_name,
             "asset": r.names()[0], "account": r.names()[1], "action": r.action,
             "status": r.status, "error_code": r.error_code, "error": r.error,
             "worker": r.worker_id, "attempt": r.attempt,
             "finished_at": r.finished_at.isoformat() if r.finished_at else None}
            for r in query]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    print_table("records", ["id", "execution", "asset", "account", "status", "reason", "worker"],
                [[r["id"], r["execution"], r["asset"], r["account"], r["status"], r["error"],
                  r["worker"]] for r in rows])


@records.command("retry")
@click.argument("record_ids", type=int, nargs=-1, required=True)
@click.option("--wait", is_flag=True)
def records_retry(record_ids, wait):
    """Retry failed or unverified records with the same new secrets."""
    from controller.actions import retry_records

    ctl = controller()
    launch(ctl, retry_records(ctl, list(record_ids), operator()), wait)


@records.command("ignore")
@click.argument("record_id", type=int)
def records_ignore(record_id):
    """Drop a failure from the overview (audited)."""
    from controller.actions import ignore_record

    controller()
    ignore_record(record_id, operator())
    click.echo(f"record {record_id} ignored")


@records.command("restore")
@click.argument("record_id", type=int)
def records_restore(record_id):
    """Make an unverified record's new secret the account's current one (audited)."""
    from controller.actions import restore_record

    controller()
    restore_record(record_id, operator())
    click.echo(f"record {record_id}: new secret is now current")


def operator() -> str:
    from controller.audit import cli_operator

    return cli_operator()


def launch(ctl: Controller, started: Execution, wait: bool) -> None:
    """Publish a retry's or verify's pending records from here, then follow it."""
    from controller.planning import publish_now

    follow(ctl, publish_now(ctl, started), wait)


def follow(ctl: Controller, started: Execution, wait: bool, timeout: float = 3600) -> None:
    """Report a published execution and with `wait` follow it to its end. One that has
    nothing to rotate has ended already: say why, and exit non-zero."""
    click.echo(f"execution {started.id}: {plural(started.total, 'account')}, "
               f"{started.skipped} skipped")
    started = Execution.get_by_id(started.id)
    if started.status == "empty":
        raise click.ClickException(f"execution {started.id} is empty: {nothing_rotated(started)}")
    if ctl.settings.embedded and started.total:
        click.echo("embedded mode: `keyturn serve` dispatches the records")
    if wait:
        finished = wait_for(ctl, started.id, timeout)
        summarise(finished)
        if finished.status != "success":
            sys.exit(1)


@click.group()
def secret():
    """Reveal stored secrets (audited)."""


@secret.command("show")
@click.argument("asset_name")
@click.argument("username")
@click.option("--version", "which", type=click.Choice(["current", "pending", "previous"]),
              default="current", show_default=True)
def secret_show(asset_name, username, which):
    """Print an account's secret; the reveal is written to the audit log."""
    ctl = controller()
    found = inventory.account_by_name(asset_name, username)
    value = ctl.vault.decrypt(getattr(found, f"secret_{which}"))
    if value is None:
        raise click.ClickException(f"{username}@{asset_name} has no {which} secret")
    audit("secret.show", f"account/{asset_name}/{username}", which)
    click.echo(value)


# ---- processes -----------------------------------------------------------------------------

@click.command()
@metrics_options
def daemon(metrics_port, metrics_address):
    """Run the controller daemon: results, heartbeats, dispatcher and reaper."""
    from controller.daemon import daemon_services

    ctl = controller()
    if ctl.settings.embedded:
        raise click.ClickException("no KEYTURN_BROKER_URL: the embedded mode runs the daemon "
                                   "inside `keyturn serve`")
    extra = [] if metrics_port is None else [MetricsServer(metrics_port, metrics_address)]
    run_until_signalled(extra + daemon_services(ctl))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
def serve(host, port):
    """Run the controller: daemon and, in the embedded mode, a worker for every zone."""
    from controller.embedded import services

    ctl = controller()
    running = services(ctl, host, port)
    web = running[-1]
    run_until_signalled(running, lambda: f"console on {web.url}/")


def run_until_signalled(services: list, started=lambda: "running") -> None:
    """Start services, say so in one line (`started()` once they run), then stop them in
    reverse order on SIGINT or SIGTERM."""
    configure_logging(load_settings())
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    for service in services:
        service.start()
    click.echo(f"{started()}; stop with Ctrl-C", err=True)
    stop.wait()
    for service in reversed(services):
        service.stop()
