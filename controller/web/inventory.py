"""Inventory pages: zones with the workers seen in them, the node tree, assets (with their
accounts, and import from CSV) and accounts. Changes go through `controller.inventory`, as
the CLI's do; no secret is ever shown here."""
from __future__ import annotations

from collections import defaultdict
from types import NoneType, UnionType
from typing import Literal, Union, get_args, get_origin

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask_babel import gettext, ngettext
from peewee import JOIN, fn

from controller import inventory
from controller.models import Account, Asset, Node, WorkerSeen, Zone
from controller.web import forms, serialize, shapes
from controller.web.i18n import number
from controller.web.paging import keyset
from controller.web.security import admin_required
from controller.web.views import Done, action, form_data, is_api, page
from shared.errors import FieldError, KeyturnError
from shared.messages import SCHEMA_VERSION
from shared.platforms import DEFAULT_PLATFORM, PLATFORMS, Platform

bp = Blueprint("inventory", __name__)


def ctl():
    return current_app.extensions["keyturn.ctl"]


# ---- zones and nodes ----------------------------------------------------------------------

@page(bp, "/zones", "inventory/zones.html", response=shapes.Zones)
def zones():
    seen = defaultdict(list)
    for worker in WorkerSeen.select().order_by(WorkerSeen.last_seen.desc()):
        seen[worker.zone].append(serialize.worker_row(worker))
    assets = Asset.select(fn.COUNT(Asset.id)).where(Asset.zone == Zone.id)
    return {"schema": SCHEMA_VERSION,
            "zones": [{"id": z.id, "name": z.name, "has_key": bool(z.public_key),
                       "trust_first_use": z.trust_first_use, "assets": z.asset_count,
                       "workers": seen.get(z.name, []),
                       "other_schemas": sorted({w["schema"] for w in seen.get(z.name, [])}
                                               - {SCHEMA_VERSION})}
                      for z in Zone.select(Zone, assets.alias("asset_count")).order_by(Zone.name)]}


@action(bp, "/zones/new", response=shapes.ZoneSaved, body=forms.NewZone, statuses=(201,))
@admin_required
def add_zone():
    data = form_data(forms.NewZone)
    zone, made_key = inventory.add_zone(ctl(), str(data.get("name", "")).strip(),
                                        str(data.get("public_key") or "").strip() or None,
                                        bool(data.get("trust_first_use")))
    said = (gettext("zone %(name)s saved (a key pair was made here for a local worker)",
                    name=zone.name) if made_key
            else gettext("zone %(name)s saved", name=zone.name))
    return Done(said, url_for("inventory.zones"),
                {"zone": zone.name}, 201)


@page(bp, "/nodes", "inventory/nodes.html", response=shapes.Nodes)
def nodes():
    assets = Asset.select(fn.COUNT(Asset.id)).where(Asset.node == Node.id)
    rows = sorted(Node.select(Node, assets.alias("asset_count")),
                  key=lambda n: inventory.tree_order(n.path))
    return {"nodes": [{"id": n.id, "path": n.path, "name": n.path.rsplit("/", 1)[-1],
                       "depth": n.path.count("/") - 1, "assets": n.asset_count} for n in rows]}


@action(bp, "/nodes/new", response=shapes.NodeSaved, body=forms.NewNode, statuses=(201,))
@admin_required
def add_node():
    node = inventory.add_node(str(form_data(forms.NewNode).get("path", "")).strip())
    return Done(gettext("node %(path)s saved", path=node.path), url_for("inventory.nodes"),
                {"node": node.path}, 201)


# ---- assets -------------------------------------------------------------------------------

@page(bp, "/assets", "inventory/assets.html", response=shapes.AssetList, query=forms.AssetQuery)
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
    return {"q": q, "node": node, "platforms": [platform_row(kind) for kind in PLATFORMS.values()],
            "zone_names": [name for (name,) in Zone.select(Zone.name).order_by(Zone.name).tuples()],
            "assets": keyset(query, Asset.name, descending=False, count=count,
                             serialize=asset_row)}


def platform_row(kind: Platform) -> dict:
    """What the asset form offers of a platform: its title, port, and its own params."""
    return {"name": kind.name, "title": kind.title, "default_port": kind.default_port,
            "host_keys": kind.host_keys, "secret_types": list(kind.secret_types),
            "account_rule": kind.account_rule,
            "params": param_fields(kind)}


def param_fields(kind: Platform) -> list[dict]:
    """How a form shows each param an operator sets on `kind`, from its params model: a
    checkbox (`check`), a `choice`, `lines` (a list, one per line) or `text`."""
    fields = []
    for name, info in inventory.settable_params(kind).items():
        shape = info.annotation
        if get_origin(shape) in (Union, UnionType):         # `X | None`: the X
            shape = next(arg for arg in get_args(shape) if arg is not NoneType)
        origin = get_origin(shape)
        kind_of_input = ("check" if shape is bool else "choice" if origin is Literal
                         else "lines" if origin is list else "text")
        fields.append({"name": name, "input": kind_of_input, "default": info.default,
                       "choices": list(get_args(shape)) if origin is Literal else [],
                       "hint": info.description})
    return fields


def typed_params(form: dict, prefix: str, fields: list[dict]) -> dict:
    """The params a form filled in (fields `<prefix><name>`), as values of their shape; a
    blank field or an unticked box is left to the default."""
    found = {}
    for described in fields:
        value = form.get(prefix + described["name"])
        if described["input"] == "check":
            if value:
                found[described["name"]] = True
        elif not isinstance(value, str) or not value.strip():
            continue
        elif described["input"] == "lines":
            found[described["name"]] = [line.strip() for line in value.splitlines()
                                        if line.strip()]
        else:
            found[described["name"]] = value.strip()
    return found


def asset_row(a: Asset) -> dict:
    return {"id": a.id, "name": a.name, "address": a.address, "port": a.port,
            "platform": a.platform, "zone": a.zone.name, "node": a.node.path if a.node else None,
            "host_key": a.host_key, "params": a.params,
            "accounts": getattr(a, "account_count", None), "created_at": a.created_at}


@action(bp, "/assets/new", response=shapes.AssetAdded, body=forms.NewAsset, statuses=(201,))
@admin_required
def add_asset():
    """A form sends the chosen platform's params as `params.<platform>.<name>` fields (each
    platform has its own block); a script sends `params` as an object."""
    data = form_params(form_data(forms.NewAsset if is_api() else None))
    try:
        created = new_asset(data)
    except KeyturnError as exc:
        if is_api():
            raise
        return asset_form_again(None, data, exc)
    return Done(gettext("asset %(name)s added", name=created.name),
                url_for("inventory.asset", asset_id=created.id),
                {"asset": asset_row(created)}, 201)


def asset_form_again(asset_id: int | None, typed: dict, exc: KeyturnError):
    """The page of the asset form (the assets page to add, the asset's page to edit) again,
    with the form as typed and the error beside its field (422): one mistake does not cost
    every value."""
    errors = {exc.field: exc.message} if isinstance(exc, FieldError) else {"form": exc}
    if asset_id is None:
        return render_template("inventory/assets.html", **assets(), typed=typed,
                               errors=errors), 422
    return render_template("inventory/asset.html", **asset(asset_id), typed=typed,
                           errors=errors), 422


def new_asset(row: dict) -> Asset:
    return inventory.create_asset(inventory.asset_from_row(row))


def form_params(data: dict) -> dict:
    """A console form's fields with the chosen platform's params gathered into `params` (each
    platform has its own block `params.<platform>.<name>`); a script sends `params` itself."""
    if is_api():
        return data
    kind = PLATFORMS.get(data.get("platform") or DEFAULT_PLATFORM)     # else names.platform says so
    if kind is not None:
        data["params"] = typed_params(data, f"params.{kind.name}.", param_fields(kind))
    return data


@action(bp, "/assets/import", response=shapes.AssetsImported, statuses=(201,),
        body_media="text/csv")
@admin_required
def import_assets():
    """Assets from CSV (see `inventory.import_assets`): all rows or none, every bad row named."""
    upload = request.files.get("file")
    done = inventory.import_assets(upload.read() if upload else request.get_data())
    nodes = ngettext("%(count)s new node", "%(count)s new nodes", done.nodes,
                     count=number(done.nodes))
    return Done(ngettext("%(count)s asset imported (%(nodes)s)",
                         "%(count)s assets imported (%(nodes)s)", done.assets,
                         count=number(done.assets), nodes=nodes),
                url_for("inventory.assets"), {"created": done.assets, "nodes": done.nodes}, 201)


def found_asset(asset_id: int) -> Asset:
    found = (Asset.select(Asset, Zone.name, Node.path).join(Zone).switch(Asset)
             .join(Node, JOIN.LEFT_OUTER).where(Asset.id == asset_id).first())
    if found is None:
        abort(404, f"no asset {asset_id}")
    return found


@page(bp, "/assets/<int:asset_id>", "inventory/asset.html", response=shapes.AssetPage)
def asset(asset_id: int):
    found = found_asset(asset_id)
    return {"asset": asset_row(found), "platform": platform_row(PLATFORMS[found.platform]),
            "platforms": [platform_row(kind) for kind in PLATFORMS.values()],
            "zone_names": [name for (name,) in Zone.select(Zone.name).order_by(Zone.name).tuples()],
            "accounts": [serialize.account_row(a) for a in Account.select(Account, Asset)
                         .join(Asset).where(Account.asset == asset_id).order_by(Account.username)]}


@action(bp, "/assets/<int:asset_id>/accounts", response=shapes.AccountSaved,
        body=forms.AccountFields)
@admin_required
def set_account(asset_id: int):
    """Add or update an account; a secret typed here (a password, or a private key for
    `secret_type` ssh_key) becomes its current one."""
    data = form_data(forms.AccountFields)
    secret = data.get("secret") or None
    username = data.get("username")
    saved = inventory.set_account(ctl(), found_asset(asset_id).name,
                                  username.strip() if isinstance(username, str) else username,
                                  secret, bool(data.get("privileged")),
                                  data.get("secret_type") or None)
    said = (gettext("account %(name)s: secret set", name=saved.username) if secret
            else gettext("account %(name)s: saved", name=saved.username))
    return Done(said, url_for("inventory.asset", asset_id=asset_id),
                {"account": saved.id})


# ---- accounts -----------------------------------------------------------------------------

@page(bp, "/accounts", "inventory/accounts.html", response=shapes.AccountList,
      query=forms.AccountQuery)
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
