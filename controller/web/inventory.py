"""Inventory pages: zones with the workers seen in them, the node tree, assets (with their
accounts, and import from CSV) and accounts. Changes go through `controller.inventory`, as
the CLI's do; no secret is ever shown here."""
from __future__ import annotations

import csv
import io
from collections import defaultdict

from flask import Blueprint, abort, current_app, request, url_for
from peewee import JOIN, fn

from controller import inventory
from controller.db import database
from controller.models import Account, Asset, Node, WorkerSeen, Zone
from controller.web import serialize
from controller.web.paging import keyset
from controller.web.security import admin_required
from controller.web.views import Done, action, form_data, page
from shared.errors import KeyturnError
from shared.messages import PLATFORMS

bp = Blueprint("inventory", __name__)
CSV_FIELDS = ("name", "address", "port", "platform", "zone", "node", "host_key")


def ctl():
    return current_app.extensions["keyturn.ctl"]


# ---- zones and nodes ----------------------------------------------------------------------

@page(bp, "/zones", "inventory/zones.html")
def zones():
    seen = defaultdict(list)
    for worker in WorkerSeen.select().order_by(WorkerSeen.last_seen.desc()):
        seen[worker.zone].append(serialize.worker_row(worker))
    assets = Asset.select(fn.COUNT(Asset.id)).where(Asset.zone == Zone.id)
    return {"zones": [{"id": z.id, "name": z.name, "has_key": bool(z.public_key),
                       "trust_first_use": z.trust_first_use, "assets": z.asset_count,
                       "workers": seen.get(z.name, [])}
                      for z in Zone.select(Zone, assets.alias("asset_count")).order_by(Zone.name)]}


@action(bp, "/zones/new")
@admin_required
def add_zone():
    data = form_data()
    zone, made_key = inventory.add_zone(ctl(), str(data.get("name", "")).strip(),
                                        str(data.get("public_key") or "").strip() or None,
                                        bool(data.get("trust_first_use")))
    note = " (a key pair was made here for a local worker)" if made_key else ""
    return Done(f"zone {zone.name} saved{note}", url_for("inventory.zones"),
                {"zone": zone.name}, 201)


@page(bp, "/nodes", "inventory/nodes.html")
def nodes():
    assets = Asset.select(fn.COUNT(Asset.id)).where(Asset.node == Node.id)
    return {"nodes": [{"id": n.id, "path": n.path, "name": n.path.rsplit("/", 1)[-1],
                       "depth": n.path.count("/") - 1, "assets": n.asset_count}
                      for n in Node.select(Node, assets.alias("asset_count")).order_by(Node.path)]}


@action(bp, "/nodes/new")
@admin_required
def add_node():
    node = inventory.node_for_path(str(form_data().get("path", "")).strip())
    return Done(f"node {node.path} saved", url_for("inventory.nodes"), {"node": node.path}, 201)


# ---- assets -------------------------------------------------------------------------------

@page(bp, "/assets", "inventory/assets.html")
def assets():
    q, node = request.args.get("q", "").strip(), request.args.get("node", "").strip()
    accounts = Account.select(fn.COUNT(Account.id)).where(Account.asset == Asset.id)
    query = (Asset.select(Asset, Zone.name, Node.path, accounts.alias("account_count"))
             .join(Zone).switch(Asset).join(Node, JOIN.LEFT_OUTER))
    count = Asset.select(Asset.id)
    if q:
        match = Asset.name.contains(q) | Asset.address.contains(q)
        query, count = query.where(match), count.where(match)
    if node:
        in_node = Asset.node.in_(Node.select(Node.id).where(Node.path == node))
        query, count = query.where(in_node), count.where(in_node)
    return {"q": q, "node": node, "platforms": PLATFORMS,
            "zone_names": [name for (name,) in Zone.select(Zone.name).order_by(Zone.name).tuples()],
            "assets": keyset(query, Asset.name, descending=False, count=count,
                             serialize=asset_row)}


def asset_row(a: Asset) -> dict:
    return {"id": a.id, "name": a.name, "address": a.address, "port": a.port,
            "platform": a.platform, "zone": a.zone.name, "node": a.node.path if a.node else None,
            "host_key": a.host_key, "accounts": getattr(a, "account_count", None),
            "created_at": a.created_at}


@action(bp, "/assets/new")
@admin_required
def add_asset():
    created = new_asset(form_data())
    return Done(f"asset {created.name} added", url_for("inventory.asset", asset_id=created.id),
                {"asset": asset_row(created)}, 201)


def new_asset(row: dict) -> Asset:
    port = str(row.get("port") or "22").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise KeyturnError(f"port {port!r}: a number from 1 to 65535")
    return inventory.add_asset(str(row.get("name", "")).strip(),
                               str(row.get("address", "")).strip(), int(port),
                               str(row.get("platform") or "linux").strip(),
                               str(row.get("zone", "")).strip(),
                               str(row.get("node") or "").strip() or None,
                               str(row.get("host_key") or "").strip() or None)


@action(bp, "/assets/import")
@admin_required
def import_assets():
    """Assets from CSV (a header line naming `name,address,zone` and any of port, platform,
    node, host_key): all rows or none, every bad row named."""
    upload = request.files.get("file")
    text = upload.read().decode("utf-8-sig") if upload else request.get_data(as_text=True)
    reader = csv.DictReader(io.StringIO(text))
    missing = {"name", "address", "zone"} - set(reader.fieldnames or ())
    if missing:
        raise KeyturnError(f"CSV header lacks {', '.join(sorted(missing))} "
                           f"(columns: {', '.join(CSV_FIELDS)})")
    errors, created = [], 0
    with database.atomic() as transaction:
        for line, row in enumerate(reader, start=2):
            try:
                new_asset(row)
                created += 1
            except KeyturnError as exc:
                errors.append(f"line {line}: {exc}")
        if errors:
            transaction.rollback()
            raise KeyturnError(f"nothing imported; fix {len(errors)} rows: "
                               + "; ".join(errors[:20]))
    return Done(f"{created} assets imported", url_for("inventory.assets"), {"created": created},
                201)


def found_asset(asset_id: int) -> Asset:
    found = (Asset.select(Asset, Zone.name, Node.path).join(Zone).switch(Asset)
             .join(Node, JOIN.LEFT_OUTER).where(Asset.id == asset_id).first())
    if found is None:
        abort(404, f"no asset {asset_id}")
    return found


@page(bp, "/assets/<int:asset_id>", "inventory/asset.html")
def asset(asset_id: int):
    found = found_asset(asset_id)
    return {"asset": asset_row(found),
            "accounts": [serialize.account_row(a) for a in Account.select(Account, Asset)
                         .join(Asset).where(Account.asset == asset_id).order_by(Account.username)]}


@action(bp, "/assets/<int:asset_id>/accounts")
@admin_required
def set_account(asset_id: int):
    """Add or update an account; a secret typed here becomes its current one."""
    data = form_data()
    secret = data.get("secret") or None
    saved = inventory.set_account(ctl(), found_asset(asset_id).name,
                                  str(data.get("username", "")).strip(), secret,
                                  bool(data.get("privileged")))
    what = "secret set" if secret else "saved"
    return Done(f"account {saved.username}: {what}", url_for("inventory.asset", asset_id=asset_id),
                {"account": saved.id})


# ---- accounts -----------------------------------------------------------------------------

@page(bp, "/accounts", "inventory/accounts.html")
def accounts():
    filters = {name: request.args.get(name, "").strip() for name in ("asset", "username")}
    where = []
    if filters["asset"]:
        where.append(Account.asset.in_(Asset.select(Asset.id).where(Asset.name == filters["asset"])))
    if filters["username"]:
        where.append(Account.username == filters["username"])
    if request.args.get("privileged"):
        where.append(Account.privileged)
    query, count = Account.select(Account, Asset).join(Asset), Account.select(Account.id)
    if where:
        query, count = query.where(*where), count.where(*where)
    return {"filters": filters, "accounts": keyset(query, Account.id, count=count,
                                                   serialize=serialize.account_row)}
