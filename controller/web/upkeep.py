"""Console and API actions that edit and delete the inventory and ask a worker about it:
edit or delete assets, accounts, zones and nodes (`controller.upkeep` checks and audits
them; a node holding others asks first), test an asset's connection and verify an account
now (both a verify through a worker of its zone). Forms send every field, scripts the fields
they change."""
from __future__ import annotations

from flask import Blueprint, abort, render_template, request, url_for
from flask_babel import gettext, ngettext

from controller import upkeep
from controller.actions import verify_accounts
from controller.audit import current_actor
from controller.models import Account, Asset, Node, Zone
from controller.web import forms, serialize, shapes
from controller.web.i18n import number
from controller.web.inventory import (asset_form_again, asset_row, ctl, form_params,
                                      found_asset)
from controller.web.security import admin_required
from controller.web.views import Done, action, form_data, is_api, started
from shared.errors import KeyturnError

bp = Blueprint("upkeep", __name__)


def found(model, row_id: int, what: str):
    row = model.get_or_none(model.id == row_id)
    if row is None:
        abort(404, f"no {what} {row_id}")
    return row


def flag(data: dict, name: str) -> bool | None:
    """A yes/no field: a form's checkbox (absent: no), a script's boolean (absent: keep)."""
    value = data.get(name)
    return value if is_api() else bool(value)


def text_field(data: dict, name: str) -> object:
    value = data.get(name)
    return value.strip() if isinstance(value, str) else value


def body(model) -> dict:
    """The submitted fields, a script's checked by `model` (a form's are checked field by
    field by the same rules); for a script only the fields it sent."""
    data = form_data(model if is_api() else None)
    if is_api():
        sent = request.get_json(silent=True) or {}
        data = {name: value for name, value in data.items() if name in sent}
    return data


@action(bp, "/nodes/<int:node_id>/edit", response=shapes.NodeSaved, body=forms.NodeEdit)
@admin_required
def edit_node(node_id: int):
    """Give a node another path (`path`); what is under it moves along."""
    path = text_field(body(forms.NodeEdit), "path")
    node = upkeep.rename_node(found(Node, node_id, "node"), path)
    return Done(gettext("node %(path)s saved", path=node.path), url_for("inventory.nodes"),
                {"node": node.path})


def node_question(node: Node) -> str:
    """What deleting a node that holds more takes with it (`upkeep.NeedsConfirmation`'s
    text, which the API and the audit log keep in English), in the page's language."""
    children, assets = upkeep.node_contents(node)
    return gettext("node %(path)s holds %(nodes)s and %(assets)s: deleting it deletes the nodes "
                   "and leaves the assets in no node (plans targeting these nodes lose them); "
                   "confirm to delete", path=node.path,
                   nodes=ngettext("%(count)s node", "%(count)s nodes", children,
                                  count=number(children)),
                   assets=ngettext("%(count)s asset", "%(count)s assets", assets,
                                   count=number(assets)))


@action(bp, "/nodes/<int:node_id>/delete", response=shapes.NodeDeleted, body=forms.NodeDelete)
@admin_required
def delete_node(node_id: int):
    """Delete a node; one with nodes or assets under it asks first (`confirm`)."""
    node = found(Node, node_id, "node")
    data = body(forms.NodeDelete)
    try:
        children, assets = upkeep.delete_node(node, confirm=bool(data.get("confirm")))
    except upkeep.NeedsConfirmation as exc:
        if is_api():
            raise KeyturnError(f"{exc} (send confirm: true)") from None
        return render_template("inventory/confirm.html", question=node_question(node),
                               target=request.path, back=url_for("inventory.nodes"),
                               title=gettext("Delete node %(path)s", path=node.path)), 409
    under = ngettext("%(count)s node under it", "%(count)s nodes under it", children,
                     count=number(children))
    loose = ngettext("%(count)s asset now in no node", "%(count)s assets now in no node", assets,
                     count=number(assets))
    return Done(gettext("node %(path)s deleted (%(under)s; %(loose)s)", path=node.path,
                        under=under, loose=loose), url_for("inventory.nodes"),
                {"nodes": children + 1, "assets": assets})


@action(bp, "/zones/<int:zone_id>/edit", response=shapes.ZoneSaved, body=forms.ZoneEdit)
@admin_required
def edit_zone(zone_id: int):
    """Rename a zone (`name`) or change `trust_first_use`."""
    data = body(forms.ZoneEdit)
    zone = upkeep.edit_zone(ctl(), found(Zone, zone_id, "zone"), text_field(data, "name"),
                            flag(data, "trust_first_use"))
    return Done(gettext("zone %(name)s saved", name=zone.name), url_for("inventory.zones"),
                {"zone": zone.name})


@action(bp, "/zones/<int:zone_id>/delete", response=shapes.ZoneSaved)
@admin_required
def delete_zone(zone_id: int):
    """Delete a zone without assets."""
    zone = found(Zone, zone_id, "zone")
    upkeep.delete_zone(zone)
    return Done(gettext("zone %(name)s deleted", name=zone.name), url_for("inventory.zones"),
                {"zone": zone.name})


@action(bp, "/assets/<int:asset_id>/edit", response=shapes.AssetSaved, body=forms.AssetEdit)
@admin_required
def edit_asset(asset_id: int):
    """Change an asset's fields (`upkeep.ASSET_FIELDS`): a script sends those it changes, the
    console's form all of them (and gets it back as typed, with the error, on a mistake)."""
    data = form_params(body(forms.AssetEdit))
    changes = (dict(data) if is_api()
               else {name: data.get(name, "") for name in upkeep.ASSET_FIELDS})
    target = found_asset(asset_id)
    try:
        saved = upkeep.edit_asset(target, changes)
    except KeyturnError as exc:
        if is_api():
            raise
        return asset_form_again(asset_id, data, exc)
    return Done(gettext("asset %(name)s saved", name=saved.name),
                url_for("inventory.asset", asset_id=asset_id),
                {"asset": asset_row(found_asset(asset_id))})


@action(bp, "/assets/<int:asset_id>/delete", response=shapes.AssetDeleted)
@admin_required
def delete_asset(asset_id: int):
    """Delete an asset and its accounts (their records stay); refused while one rotates."""
    target = found_asset(asset_id)
    count = upkeep.delete_asset(target)
    return Done(ngettext("asset %(name)s deleted with %(count)s account (their records are kept)",
                         "asset %(name)s deleted with %(count)s accounts (their records are kept)",
                         count, name=target.name, count=number(count)),
                url_for("inventory.assets"), {"asset": target.name, "accounts": count})


@action(bp, "/assets/<int:asset_id>/test", response=shapes.Started, statuses=(201,))
@admin_required
def test_connection(asset_id: int):
    """Have a worker of the asset's zone log in with its privileged account (a verify)."""
    target = found_asset(asset_id)
    login = Account.get_or_none((Account.asset == target.id) & Account.privileged)
    if login is None:
        raise KeyturnError("asset %(name)s has no privileged account to log in with: "
                           "add one first", name=target.name)
    return started(verify_accounts(ctl(), [login], current_actor()), gettext("connection test"))


def found_account(account_id: int) -> Account:
    row = Account.select(Account, Asset).join(Asset).where(Account.id == account_id).first()
    if row is None:
        abort(404, f"no account {account_id}")
    return row


@action(bp, "/accounts/<int:account_id>/edit", response=shapes.AccountEdited,
        body=forms.AccountEdit)
@admin_required
def edit_account(account_id: int):
    """Rename (`username`), make privileged or not, set the secret and its type (`secret`,
    `secret_type`; a blank secret keeps the stored one). A script sends what it changes."""
    data = body(forms.AccountEdit)
    account = found_account(account_id)
    saved = upkeep.edit_account(ctl(), account, text_field(data, "username") or None,
                                flag(data, "privileged"), data.get("secret") or None,
                                data.get("secret_type") or None)
    name = f"{saved.username}@{saved.asset.name}"
    return Done(gettext("account %(name)s saved", name=name),
                url_for("inventory.asset", asset_id=saved.asset_id),
                {"account": serialize.account_row(saved)})


@action(bp, "/accounts/<int:account_id>/delete", response=shapes.AccountDeleted)
@admin_required
def delete_account(account_id: int):
    """Delete an account (its records stay, with its names); refused while it rotates."""
    account = found_account(account_id)
    upkeep.delete_account(account)
    name = f"{account.username}@{account.asset.name}"
    return Done(gettext("account %(name)s deleted (its records are kept)", name=name),
                url_for("inventory.asset", asset_id=account.asset_id), {"account": account.id})


@action(bp, "/accounts/<int:account_id>/verify", response=shapes.Started, statuses=(201,))
@admin_required
def verify_account(account_id: int):
    """Have a worker find which of the account's candidate secrets logs in, and settle on it."""
    account = found_account(account_id)
    return started(verify_accounts(ctl(), [account], current_actor()), gettext("verification"))
