"""Editing and deleting the inventory (assets, accounts, zones, nodes), shared by the CLI, the
console and the API. Edits are checked by the same rules as additions (`inventory.asset_from_row`,
`names`); every change is audited with the fields before and after.

What a user expects of a delete: nothing with a rotation in flight goes (its result would
have no account to settle), and the history stays readable: an account's records outlive it,
keeping the asset's and account's names (`Record.asset_name`, `account_name`; the foreign key
is set to NULL), as an execution keeps its plan's name. A node with children or assets is
deleted only when confirmed."""
from __future__ import annotations

from peewee import fn

from controller import inventory, names
from controller.audit import audit
from controller.db import database
from controller.models import IN_FLIGHT, Account, Asset, Node, Record, WorkerSeen, Zone
from controller.runtime import Controller
from shared.errors import N_, KeyturnError, Said, counted
from shared.platforms import platform
from shared.words import plural

ASSET_FIELDS = ("name", "address", "port", "platform", "zone", "node", "host_key", "params")


class NeedsConfirmation(KeyturnError):
    """A change that takes more with it than its target: done again with `confirm`."""


# ---- in flight ------------------------------------------------------------------------------

def in_flight(accounts) -> "fn.EXISTS":
    """True while a record of one of `accounts` (a query of ids) waits or is out on a worker."""
    return fn.EXISTS(Record.select(Record.id).where(Record.account.in_(accounts)
                                                    & Record.status.in_(IN_FLIGHT)))


def busy_executions(accounts) -> list[int]:
    """The executions whose records of `accounts` are in flight (for the refusal's words)."""
    return sorted({e for (e,) in Record.select(Record.execution).where(
        Record.account.in_(accounts) & Record.status.in_(IN_FLIGHT)).distinct().tuples()})


def refuse_in_flight(refusal: Said, accounts) -> None:
    """Refuse (`refusal`: what cannot be done now) while `accounts` are in a rotation."""
    running = busy_executions(accounts)
    if running:
        raise KeyturnError("%(refusal)s: a rotation is in flight (execution %(executions)s); "
                           "wait for it to end", refusal=refusal,
                           executions=", ".join(map(str, running)))


# ---- assets ---------------------------------------------------------------------------------

def asset_fields(asset: Asset) -> dict:
    """An asset's non-secret fields as an add form or API would send them."""
    return {"name": asset.name, "address": asset.address, "port": asset.port,
            "platform": asset.platform, "zone": asset.zone.name,
            "node": asset.node.path if asset.node_id else None, "host_key": asset.host_key,
            "params": asset.params or {}}


def edit_asset(asset: Asset, changes: dict) -> Asset:
    """Change any of an asset's fields (`ASSET_FIELDS`; a blank optional field takes its
    default: no node, no pinned key, no params, the platform's port). The result is checked
    as a new asset would be. A new platform drops the params and host key the old one took
    unless given, and a port that was the old platform's default becomes the new one's.
    Moving to another zone or platform waits for a rotation in flight."""
    unknown = sorted(set(changes) - set(ASSET_FIELDS))
    if unknown:
        raise names.BadName(unknown[0], "is not a field of an asset (use %(fields)s)",
                            fields=", ".join(ASSET_FIELDS))
    before = asset_fields(asset)
    row = dict(before)
    if changes.get("platform") not in (None, "", before["platform"]):
        old = platform(before["platform"])
        if before["port"] == old.default_port:
            row["port"] = None
        row["params"], row["host_key"] = None, None
    row |= changes
    spec = inventory.asset_from_row(row)
    if (spec.zone, spec.platform) != (before["zone"], before["platform"]):
        refuse_in_flight(Said("asset %(name)s cannot be moved to another zone or platform now",
                              name=asset.name), accounts_of(asset))
    if spec.platform != before["platform"]:
        misfits(asset, platform(spec.platform))
    saved = inventory.save_asset(spec, asset)
    audit("asset.edit", f"asset/{saved.name}", before=before, after=asset_fields(saved))
    return saved


def misfits(asset: Asset, kind) -> None:
    """Refuse a platform the asset's accounts do not fit (a name it does not take, a secret
    type it has not)."""
    for account in Account.select().where(Account.asset == asset.id).order_by(Account.username):
        if account.secret_type not in kind.secret_types:
            raise names.BadName("platform", "%(platform)s accounts take %(types)s, and "
                                            "%(username)s has a %(type)s", platform=kind.title,
                                types=", ".join(kind.secret_types), username=account.username,
                                type=account.secret_type)
        try:
            names.username(account.username, kind.name)
        except names.BadName as exc:
            raise names.BadName("platform", "account %(username)s does not fit: %(problem)s",
                                username=account.username, problem=exc.message) from None


def accounts_of(asset: Asset):
    return Account.select(Account.id).where(Account.asset == asset.id)


def delete_asset(asset: Asset) -> int:
    """Delete an asset and its accounts, keeping their records (returns how many accounts
    went). Refused while one of its accounts is in a rotation."""
    accounts = accounts_of(asset)
    with database.atomic():
        refuse_in_flight(Said("asset %(name)s cannot be deleted now", name=asset.name), accounts)
        count = accounts.count()
        keep_names(accounts, asset.name)
        before = asset_fields(asset)
        if not Asset.delete().where((Asset.id == asset.id) & ~in_flight(accounts)).execute():
            raise KeyturnError("asset %(name)s was not deleted: a rotation of it began meanwhile",
                               name=asset.name)
        audit("asset.delete", f"asset/{asset.name}", f"with {plural(count, 'account')}",
              before=before)
    return count


def keep_names(accounts, asset_name: str) -> None:
    """Write the names on the records of `accounts` before they go (their history stays)."""
    Record.update(asset_name=asset_name, account_name=Account.select(Account.username).where(
        Account.id == Record.account)).where(Record.account.in_(accounts)).execute()


# ---- accounts -------------------------------------------------------------------------------

def edit_account(ctl: Controller, account: Account, username: str | None = None,
                 privileged: bool | None = None, secret: str | None = None,
                 secret_type: str | None = None) -> Account:
    """Rename an account, make it the asset's privileged one or not, set its secret or its
    secret type (with the secret: `inventory.set_account` checks both). None keeps a field.
    A rename waits for a rotation in flight (its command names the account)."""
    before = inventory.account_fields(account)
    asset = account.asset
    with database.atomic():
        if username is not None and username != account.username:
            username = names.username(username, asset.platform)
            refuse_in_flight(Said("%(account)s cannot be renamed now",
                                  account=f"{account.username}@{asset.name}"), [account.id])
            if Account.select().where((Account.asset == asset.id)
                                      & (Account.username == username)).exists():
                raise names.BadName("username", "%(account)s exists already",
                                    account=f"{username}@{asset.name}")
            Account.update(username=username).where(Account.id == account.id).execute()
            account.username = username
        if privileged is False:
            Account.update(privileged=False).where(Account.id == account.id).execute()
        if privileged or secret is not None or secret_type is not None:
            inventory.write_account(ctl, asset.name, account.username, secret, bool(privileged),
                                    secret_type)
        saved = Account.select(Account, Asset).join(Asset).where(Account.id == account.id).get()
        audit("account.edit", f"account/{asset.name}/{saved.username}", before=before,
              after=inventory.account_fields(saved))
    return saved


def delete_account(account: Account) -> None:
    """Delete an account, keeping its records (with its names). Refused while in a rotation."""
    where = f"{account.username}@{account.asset.name}"
    with database.atomic():
        refuse_in_flight(Said("%(account)s cannot be deleted now", account=where), [account.id])
        keep_names([account.id], account.asset.name)
        before = inventory.account_fields(account)
        if not Account.delete().where((Account.id == account.id)
                                      & ~in_flight([account.id])).execute():
            raise KeyturnError("%(account)s was not deleted: a rotation of it began meanwhile",
                               account=where)
        audit("account.delete", f"account/{account.asset.name}/{account.username}",
              before=before)


# ---- nodes ----------------------------------------------------------------------------------

def subtree(node: Node):
    """The node and every node under it (a query)."""
    return Node.select().where((Node.path == node.path) | Node.path.startswith(node.path + "/"))


def rename_node(node: Node, new_path: object) -> Node:
    """Give a node another path, moving what is under it along (e.g. /prod/web to
    /prod/frontend, or to /eu/prod/web); the new path's parents are made when missing."""
    path = names.node_path(new_path)
    old = node.path
    if path == old:
        return node
    if path.startswith(old + "/"):
        raise names.BadName("path", "%(path)s is inside %(old)s", path=path, old=old)
    if Node.select().where(Node.path == path).exists():
        raise names.BadName("path", "node %(path)s exists already (delete or rename it first)",
                            path=path)
    with database.atomic():
        for inner in list(subtree(node)):
            Node.update(path=path + inner.path[len(old):]).where(Node.id == inner.id).execute()
        parent = path.rsplit("/", 1)[0]
        if parent:
            inventory.node_for_path(parent)
        audit("node.rename", f"node/{path}", before={"path": old}, after={"path": path})
    return Node.get_by_id(node.id)


def node_contents(node: Node) -> tuple[int, int]:
    """(nodes under it, assets in it or under it)."""
    inner = subtree(node)
    return (inner.count() - 1,
            Asset.select().where(Asset.node.in_(inner.select(Node.id))).count())


def delete_node(node: Node, confirm: bool = False) -> tuple[int, int]:
    """Delete a node and the nodes under it; their assets stay, in no node, and plans lose
    them as targets. One with children or assets needs `confirm` (else `NeedsConfirmation`
    says what would go). Returns (nodes under it deleted, assets left in no node)."""
    children, assets = node_contents(node)
    if (children or assets) and not confirm:
        raise NeedsConfirmation(
            "node %(path)s holds %(nodes)s and %(assets)s: deleting it deletes the nodes and "
            "leaves the assets in no node (plans targeting these nodes lose them); confirm to "
            "delete", path=node.path, nodes=counted(children, N_("%(count)s node"),
                                                    N_("%(count)s nodes")),
            assets=counted(assets, N_("%(count)s asset"), N_("%(count)s assets")))
    with database.atomic():
        ids = [n.id for n in subtree(node)]
        Asset.update(node=None).where(Asset.node.in_(ids)).execute()
        Node.delete().where(Node.id.in_(ids)).execute()
        audit("node.delete", f"node/{node.path}",
              f"with {plural(children, 'node')} under it; {plural(assets, 'asset')} left in "
              "no node", before={"path": node.path})
    return children, assets


# ---- zones ----------------------------------------------------------------------------------

def zone_fields(zone: Zone) -> dict:
    return {"name": zone.name, "public_key": zone.public_key,
            "trust_first_use": zone.trust_first_use}


def edit_zone(ctl: Controller, zone: Zone, name: object = None,
              trust_first_use: bool | None = None) -> Zone:
    """Rename a zone (its queue becomes rotate.<new name>: its workers need restarting with
    it; a key pair made here moves along) or change whether it trusts host keys on first use.
    A rename waits for the zone's rotations in flight."""
    before = zone_fields(zone)
    with database.atomic():
        if name is not None and name != zone.name:
            name = names.zone_name(name)
            if Zone.select().where(Zone.name == name).exists():
                raise names.BadName("name", "zone %(name)s exists already", name=name)
            refuse_in_flight(Said("zone %(name)s cannot be renamed now", name=zone.name),
                             Account.select(Account.id).join(Asset).where(Asset.zone == zone.id))
            old_key = ctl.settings.zone_key_path(zone.name)
            new_key = ctl.settings.zone_key_path(name)
            if new_key.exists():
                raise KeyturnError("zone %(name)s: a key file %(file)s is in the way", name=name,
                                   file=new_key)
            WorkerSeen.delete().where(WorkerSeen.zone == zone.name).execute()
            zone.name = name
            if old_key.exists():
                old_key.rename(new_key)
        if trust_first_use is not None:
            zone.trust_first_use = trust_first_use
        zone.save()
        audit("zone.edit", f"zone/{zone.name}", before=before, after=zone_fields(zone))
    return zone


def delete_zone(zone: Zone) -> None:
    """Delete a zone that has no assets (move or delete them first)."""
    count = Asset.select().where(Asset.zone == zone.id).count()
    if count:
        raise KeyturnError("zone %(name)s has %(assets)s: move them to another zone or delete "
                           "them first", name=zone.name,
                           assets=counted(count, N_("%(count)s asset"), N_("%(count)s assets")))
    with database.atomic():
        WorkerSeen.delete().where(WorkerSeen.zone == zone.name).execute()
        zone.delete_instance()
        audit("zone.delete", f"zone/{zone.name}", before=zone_fields(zone))
