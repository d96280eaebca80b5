"""Set-up and inventory operations shared by the CLI and the console: keys, zones, nodes,
assets and accounts."""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from peewee import IntegrityError, chunked
from pydantic import SecretStr, ValidationError

from controller import names
from controller import vault as vault_module
from controller.audit import audit
from controller.db import database, is_postgres, open_database
from controller.migrations import migrate
from controller.models import Account, Asset, Node, Plan, WorkerSeen, Zone, utcnow
from controller.runtime import Controller, make_data_dir
from controller.secretgen import RuleError, normalise_private_key, validate_given_secret
from shared import zonecrypto
from shared.dialogues import typeable
from shared.errors import KeyturnError
from shared.messages import AssetTarget
from shared.problems import plain
from shared.platforms import DEFAULT_PLATFORM, PLATFORMS, Platform, SecretType, platform
from shared.settings import Settings
from shared.words import plural

HOST_KEY_MAX = 8192
CSV_FIELDS = ("name", "address", "port", "platform", "zone", "node", "host_key", "params")
CSV_REQUIRED = ("name", "address", "zone")
IMPORT_BATCH = 500           # rows per write transaction
ERRORS_SHOWN = 20

logger = logging.getLogger("keyturn.inventory")


def initialise(settings: Settings) -> list[str]:
    """Create the data directory, master key, controller key pair and schema; idempotent."""
    report = []
    make_data_dir(settings)
    if settings.secret_key:
        vault_module.parse_keys(settings.secret_key.get_secret_value())
        report.append("master key: from KEYTURN_SECRET_KEY")
    elif vault_module.create_key_file(settings.master_key_file):
        report.append(f"master key: created {settings.master_key_file} (mode 0600)")
    else:
        report.append(f"master key: {settings.master_key_file}")
    key = zonecrypto.load_or_create_private_key(settings.controller_key_file)
    public_file = settings.data_dir / "controller.pub"
    public_file.write_text(zonecrypto.encode_public_key(key.public_key) + "\n")
    report.append(f"controller public key: {public_file}")
    open_database(settings.effective_database_url)
    before, after = migrate()
    report.append(f"database: created at schema {after}" if before is None
                  else f"database: already initialised (schema {after})" if before == after
                  else f"database: upgraded from schema {before} to {after}")
    return report


def controller_public_key(ctl: Controller) -> str:
    return zonecrypto.encode_public_key(ctl.private_key.public_key)


def add_zone(ctl: Controller, name: str, public_key: str | None,
             trust_first_use: bool | None, replace: bool = False) -> tuple[Zone, bool]:
    """Register a zone; without a public key, make the zone's key pair here for local workers.
    An existing zone is refused unless `replace` (a new worker key, a new first-use setting)."""
    name = names.zone_name(name)
    if not replace and Zone.select().where(Zone.name == name).exists():
        raise KeyturnError("zone %(name)s exists already (to give it another key or first-use "
                           "setting: keyturn zone add %(name)s --replace ...)", name=name)
    made_key = False
    if public_key:
        try:
            zonecrypto.decode_public_key(public_key)
        except ValueError as exc:
            raise KeyturnError(f"--public-key: {exc}") from None
    else:
        path = ctl.settings.zone_key_path(name)
        made_key = not path.exists()
        public_key = zonecrypto.encode_public_key(
            zonecrypto.load_or_create_private_key(path).public_key)
    trust = ctl.settings.trust_first_use if trust_first_use is None else trust_first_use
    zone, created = Zone.get_or_create(name=name, defaults={"public_key": public_key,
                                                            "trust_first_use": trust})
    before = None if created else {"public_key": zone.public_key,
                                   "trust_first_use": zone.trust_first_use}
    if not created:
        zone.public_key, zone.trust_first_use = public_key, trust
        zone.save()
    audit("zone.add" if created else "zone.replace", f"zone/{name}", before=before,
          after={"public_key": public_key, "trust_first_use": trust})
    return zone, made_key


def workers(zone: Zone) -> list[WorkerSeen]:
    return list(WorkerSeen.select().where(WorkerSeen.zone == zone.name)
                .order_by(WorkerSeen.last_seen.desc()))


def add_node(path: object) -> Node:
    """A node an operator adds (with its parents), audited."""
    node = node_for_path(path)
    audit("node.add", f"node/{node.path}", after={"path": node.path})
    return node


def tree_order(path: str) -> list[str]:
    """A sort key putting each node right under its parent (by path alone, /a-b would come
    between /a and /a/b)."""
    return path.split("/")


def node_for_path(path: str) -> Node:
    """The node at `path`, created (with its parents) when missing."""
    parts = names.node_path(path).split("/")[1:]
    node = None
    for depth in range(1, len(parts) + 1):
        node, _ = Node.get_or_create(path="/" + "/".join(parts[:depth]))
    return node


@dataclass(frozen=True)
class NewAsset:
    """An asset's fields, each checked by its rule (nothing here needs the database)."""

    name: str
    address: str
    port: int
    platform: str
    zone: str
    node: str | None
    host_key: str | None
    params: dict = field(default_factory=dict)


def new_asset(name: object, address: object, port: object = None, platform_name: object = DEFAULT_PLATFORM,
              zone: object = "", node: object = None, host_key: object = None,
              params: object = None) -> NewAsset:
    """`port` None: the platform's default port. A host key only for a platform that has them."""
    kind = platform(names.platform(platform_name))
    if host_key is not None and not kind.host_keys:
        raise no_host_keys("host_key", kind)
    return NewAsset(names.asset_name(name), names.address(address),
                    kind.default_port if port is None else names.port(port), kind.name,
                    names.zone_name(zone), None if node is None else names.node_path(node),
                    None if host_key is None else host_key_line(host_key),
                    asset_params(kind, params))


def settable_params(kind: Platform) -> dict:
    """The params (name: pydantic field) an operator sets on an asset of `kind`: all but
    secrets, which come from accounts (`become_secret` is root's password)."""
    return {name: info for name, info in kind.params.model_fields.items()
            if not holds_secret(info.annotation)}


def holds_secret(annotation) -> bool:
    return annotation is SecretStr or any(holds_secret(arg) for arg in get_args(annotation))


def asset_params(kind: Platform, values: object) -> dict:
    """An asset's own params, checked by its platform's model: a key that platform does not
    know is refused (on an asset it is a typo, not another platform's param). Kept as given,
    normalised; the platform's defaults fill the rest when a command is built."""
    if values is None or values == "":
        return {}
    if isinstance(values, str):
        try:
            values = json.loads(values)
        except ValueError:
            raise names.BadName("params", "is not a JSON object") from None
    if not isinstance(values, dict):
        raise names.BadName("params", "must be an object of parameter names and values")
    known = settable_params(kind)
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        offered = f"use {', '.join(known)}" if known else "it has none"
        raise names.BadName("params", "%(param)s is not a parameter of %(platform)s assets "
                                      "(%(offered)s)", param=names.shown(unknown[0]),
                            platform=kind.title, offered=offered)
    try:
        parsed = kind.parse_params(values)
    except ValidationError as exc:
        error = exc.errors(include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise names.BadName(f"params.{where}", plain(error)) from None
    return parsed.model_dump(mode="json", include=set(values))


def asset_from_row(row: dict) -> NewAsset:
    """An asset from a form, a JSON object or a CSV row: text is stripped, a missing or blank
    optional field takes its default."""

    def field(key: str, default: object = None) -> object:
        value = row.get(key)
        if isinstance(value, str):
            value = value.strip()
        return default if value is None or value == "" else value

    return new_asset(field("name", ""), field("address", ""), field("port"),
                     field("platform", DEFAULT_PLATFORM), field("zone", ""), field("node"),
                     field("host_key"), field("params"))


def host_key_line(value: object) -> str:
    """`type base64` of an OpenSSH public key line (a comment is dropped), once the key
    parses as one of its type (Ed25519, ECDSA or RSA): a mistyped pin would refuse the host
    for good, or pass for "pinned" in the lists."""
    parts = names.text("host_key", value).split()
    if len(value) > HOST_KEY_MAX or len(parts) < 2:
        raise names.BadName("host_key", "is not an OpenSSH public key line (give one such as "
                                        "'ssh-ed25519 AAAA...', e.g. from ssh-keyscan)")
    try:
        load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise names.BadName("host_key", "%(type)s key does not parse (give a whole Ed25519, "
                                        "ECDSA or RSA public key line, e.g. from ssh-keyscan)",
                            type=names.shown(parts[0])) from None
    return " ".join(parts[:2])


def add_asset(name: str, address: str, port: int | None, platform_name: str, zone_name: str,
              node_path: str | None, host_key: str | None, params: dict | None = None) -> Asset:
    return create_asset(new_asset(name, address, port, platform_name, zone_name, node_path,
                                  host_key, params))


def create_asset(spec: NewAsset) -> Asset:
    created = save_asset(spec)
    audit("asset.add", f"asset/{created.name}", after={
        "name": spec.name, "address": spec.address, "port": spec.port, "platform": spec.platform,
        "zone": spec.zone, "node": spec.node, "host_key": spec.host_key, "params": spec.params})
    return created


def save_asset(spec: NewAsset, existing: Asset | None = None) -> Asset:
    """Write a checked asset: a new one, or `existing` changed to `spec` (the one path for
    adding and editing; the zone must exist, the name be free, the node is made if missing)."""
    zone = Zone.get_or_none(Zone.name == spec.zone)
    if zone is None:
        raise unknown_zone(spec.zone)
    taken = Asset.select().where(Asset.name == spec.name)
    if existing is not None:
        taken = taken.where(Asset.id != existing.id)
    if taken.exists():
        raise names.BadName("name", "asset %(name)s exists already", name=spec.name)
    node = node_for_path(spec.node) if spec.node else None
    fields = {"name": spec.name, "address": spec.address, "port": spec.port,
              "platform": spec.platform, "zone": zone, "node": node, "host_key": spec.host_key,
              "params": spec.params}
    if existing is None:
        return Asset.create(**fields)
    Asset.update(**fields).where(Asset.id == existing.id).execute()
    return Asset.select(Asset, Zone).join(Zone).where(Asset.id == existing.id).get()


def unknown_zone(name: str) -> KeyturnError:
    return names.BadName("zone", "unknown zone %(name)s: add it with `keyturn zone add %(name)s`",
                         name=name)


def no_host_keys(label: str, kind: Platform) -> names.BadName:
    pinning = ", ".join(p.name for p in PLATFORMS.values() if p.host_keys)
    return names.BadName(label, "%(platform)s has no SSH host keys: only %(pinning)s assets "
                                "pin one", platform=kind.title, pinning=pinning)


def with_host_keys(asset: Asset) -> Asset:
    """`asset`, when its platform pins SSH host keys (a database server has none)."""
    kind = platform(asset.platform)
    if not kind.host_keys:
        raise no_host_keys(f"asset {asset.name}", kind)
    return asset


def fetch_host_key(asset: Asset, timeout: float = 10) -> str:
    """The host key the asset presents now (from this machine), as an OpenSSH line."""
    from worker.ssh import connect

    with_host_keys(asset)
    target = AssetTarget(name=asset.name, address=asset.address, port=asset.port,
                         platform=asset.platform, trust_first_use=True)
    with connect(target, timeout) as connection:
        return connection.host_key


def pin_host_key(asset: Asset, key_line: str, actor: str) -> None:
    """Pin an operator-accepted host key (audited: it decides which host gets passwords)."""
    with_host_keys(asset)
    before = asset.host_key
    asset.host_key = host_key_line(key_line)
    asset.save(only=[Asset.host_key])
    audit("asset.trust", f"asset/{asset.name}", before={"host_key": before},
          after={"host_key": asset.host_key}, actor=actor)


def asset_by_name(name: str) -> Asset:
    found = Asset.get_or_none(Asset.name == name)
    if found is None:
        raise KeyturnError("no asset named %(name)s", name=name)
    return found


def account_by_name(asset_name: str, username: str) -> Account:
    found = (Account.select().join(Asset)
             .where((Asset.name == asset_name) & (Account.username == username)).first())
    if found is None:
        raise KeyturnError("no account %(username)s on asset %(asset)s", username=username,
                           asset=asset_name)
    return found


def plan_by_name(name: str) -> Plan:
    found = Plan.get_or_none(Plan.name == name)
    if found is None:
        raise KeyturnError("no plan named %(name)s", name=name)
    return found


def set_account(ctl: Controller, asset_name: str, username: object, secret: str | None,
                privileged: bool, secret_type: object = None) -> Account:
    """`write_account`, audited (the secret only said to be set)."""
    target = asset_by_name(asset_name)
    found = Account.get_or_none((Account.asset == target) & (Account.username == username)
                                ) if isinstance(username, str) else None
    before = None if found is None else account_fields(found)
    saved = write_account(ctl, asset_name, username, secret, privileged, secret_type)
    audit("account.add" if found is None else "account.edit",
          f"account/{asset_name}/{saved.username}", before=before, after=account_fields(saved))
    return saved


def account_fields(account: Account) -> dict:
    """An account's fields for the audit log: whether a secret is set, never the secret."""
    return {"asset": account.asset.name, "username": account.username,
            "secret_type": account.secret_type, "privileged": account.privileged,
            "secret": None if account.secret_current is None else account.current_since}


def write_account(ctl: Controller, asset_name: str, username: object, secret: str | None,
                  privileged: bool, secret_type: object = None) -> Account:
    """Create or update an account. `secret_type` None keeps an account's type (a new one is
    a password account); changing the type needs the new secret, which must be of that type.
    The name and the type are the asset's platform's. An account in rotation keeps its
    secrets untouched."""
    target = asset_by_name(asset_name)
    on = platform(target.platform)
    username = names.username(username, on.name)
    if secret_type is not None and secret_type not in on.secret_types:
        raise names.BadName("secret_type", "%(type)s: %(platform)s accounts take %(types)s",
                            type=names.shown(secret_type), platform=on.title,
                            types=", ".join(on.secret_types))
    found = (Account.get_or_none((Account.asset == target) & (Account.username == username))
             or Account(asset=target, username=username))
    kind = secret_type or found.secret_type
    if kind != found.secret_type and secret is None and found.secret_current is not None:
        raise names.BadName("secret_type", "changing %(account)s to %(type)s needs its %(type)s "
                            "as the secret", account=f"{username}@{asset_name}", type=kind)
    in_rotation = KeyturnError("%(account)s is in a rotation; its secret cannot be set now",
                               account=f"{username}@{asset_name}")
    sets_secret = secret is not None or kind != found.secret_type
    if sets_secret and found.busy_execution is not None:
        raise in_rotation
    changes = {Account.secret_type: kind}
    if secret is not None:
        secret = checked_secret(kind, secret)
        if on.typed_secrets and not typeable(secret):
            raise RuleError("secret", "holds a tab or another control character, which a "
                                      "%(platform)s CLI cannot take", platform=on.title)
        changes |= {Account.secret_previous: Account.secret_current,
                    Account.previous_since: Account.current_since,
                    Account.secret_current: ctl.vault.encrypt(secret),
                    Account.current_since: utcnow()}
    with database.atomic():
        if privileged:
            Account.update(privileged=False).where((Account.asset == target)
                                                   & Account.privileged).execute()
            changes[Account.privileged] = True
        if found.id is None:
            Account.insert(asset=target, username=username, **{
                field.name: value for field, value in changes.items()
                if field.name not in ("secret_previous", "previous_since")}).execute()
        else:
            # Only what this call sets, from the row as it is now (a rotation may have settled
            # or claimed the account since it was read): never a stale secret written back.
            update = Account.update(changes).where(Account.id == found.id)
            if sets_secret:
                update = update.where(Account.busy_execution.is_null())
            if not update.execute():
                raise in_rotation
    return Account.get((Account.asset == target) & (Account.username == username))


def checked_secret(secret_type: str, secret: str) -> str:
    """A secret an account can hold: a one-line password, or a private key without a
    passphrase (stored in OpenSSH format). Errors never quote it."""
    names.text("secret", secret)
    if secret_type == SecretType.PASSWORD:
        validate_given_secret(secret)
        return secret
    try:
        return normalise_private_key(secret, None)
    except RuleError:
        raise RuleError("secret", "is not an unencrypted OpenSSH or PEM private key "
                                  "(ed25519, RSA or ECDSA)") from None


# ---- CSV import ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Imported:
    assets: int
    nodes: int            # nodes created for the file
    transactions: int


def import_assets(data: bytes) -> Imported:
    """Assets from CSV (a header naming `name,address,zone` and any of port, platform, node,
    host_key, params: a JSON object such as `{"database": "app"}`; a blank port is the
    platform's default). Every row is checked first, so a file with a bad row writes nothing;
    then the rows go in transactions of IMPORT_BATCH, so a large file never holds the
    database's write lock for long (sign-ins, the dispatcher and heartbeats write in between)."""
    rows = checked_rows(data)
    node_ids, new_nodes = create_nodes({spec.node for _, spec in rows if spec.node})
    zone_ids = ids_of(Zone.name, {spec.zone for _, spec in rows})
    fields = [Asset.name, Asset.address, Asset.port, Asset.platform, Asset.zone, Asset.node,
              Asset.host_key, Asset.params, Asset.created_at]
    written = transactions = 0
    for batch in chunked(rows, IMPORT_BATCH):
        now = utcnow()
        values = [(s.name, s.address, s.port, s.platform, zone_ids[s.zone], node_ids.get(s.node),
                   s.host_key, Asset.params.db_value(s.params), now) for _, s in batch]
        try:
            write_batch(Asset, fields, values)
        except IntegrityError:
            raise KeyturnError(
                "%(written)s of %(rows)s assets imported (the rows before line %(first)s); "
                "stopped at lines %(first)s-%(last)s: an asset of one of their names "
                "was added meanwhile. Import the rest again.", written=written, rows=len(rows),
                first=batch[0][0], last=batch[-1][0]) from None
        written, transactions = written + len(batch), transactions + 1
        logger.debug("import: %d of %d assets written", written, len(rows))
    logger.info("import: %d assets, %d new nodes, %d transactions", written, new_nodes,
                transactions)
    return Imported(written, new_nodes, transactions)


def checked_rows(data: bytes) -> list[tuple[int, NewAsset]]:
    """Every row of the file as (line, asset), or an error naming each bad row's line and
    field; the checks that need the database (zones, names taken) are made here too."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KeyturnError("the file is not UTF-8 text (byte %(byte)s)", byte=exc.start) from None
    reader = csv.DictReader(io.StringIO(text))
    rows, errors, first_line = [], [], {}   # errors: (line, message)
    try:
        missing = [name for name in CSV_REQUIRED if name not in (reader.fieldnames or ())]
        if missing:
            raise KeyturnError("CSV header lacks %(missing)s (columns: %(columns)s)",
                               missing=", ".join(missing), columns=", ".join(CSV_FIELDS))
        for row in reader:
            line = reader.line_num
            try:
                spec = asset_from_row(row)
            except KeyturnError as exc:
                errors.append((line, str(exc)))
                continue
            if spec.name in first_line:
                errors.append((line, f"name: {spec.name} is on line {first_line[spec.name]} too"))
                continue
            first_line[spec.name] = line
            rows.append((line, spec))
    except csv.Error as exc:
        raise KeyturnError(f"nothing imported: line {reader.reader.line_num}: {exc}") from None
    zones = ids_of(Zone.name, {spec.zone for _, spec in rows})
    taken = ids_of(Asset.name, first_line)
    for line, spec in rows:
        if spec.zone not in zones:
            errors.append((line, str(unknown_zone(spec.zone))))
        elif spec.name in taken:
            errors.append((line, f"name: asset {spec.name} exists already"))
    if errors:
        errors.sort()
        more = f"; and {len(errors) - ERRORS_SHOWN} more" if len(errors) > ERRORS_SHOWN else ""
        raise KeyturnError(f"nothing imported; fix {plural(len(errors), 'row')}: " + "; ".join(
            f"line {line}: {message}" for line, message in errors[:ERRORS_SHOWN]) + more)
    return rows


def ids_of(field, values) -> dict:
    """{value: id} of the rows whose `field` is one of `values` (queried in batches)."""
    found = {}
    for batch in chunked(sorted(values), IMPORT_BATCH):
        found.update(field.model.select(field, field.model.id).where(field.in_(batch)).tuples())
    return found


def create_nodes(paths: set[str]) -> tuple[dict[str, int], int]:
    """The ids of the nodes at `paths`, creating them and their parents where missing;
    returns them with the number created."""
    wanted = {"/".join(path.split("/")[:depth]) for path in paths
              for depth in range(2, path.count("/") + 2)}
    ids = ids_of(Node.path, wanted)
    missing = sorted(wanted - ids.keys())
    for batch in chunked(missing, IMPORT_BATCH):
        write_batch(Node, [Node.path], [(path,) for path in batch], ignore_conflicts=True)
    return ids | ids_of(Node.path, missing), len(missing)


def write_batch(model, fields: list, rows: list[tuple], ignore_conflicts: bool = False) -> None:
    """Insert one batch as one statement in its own transaction (errors arrive as peewee's,
    e.g. IntegrityError). On SQLite, whose one write lock every writer shares, then pause as
    long as the batch held it: a writer waiting on its busy timeout polls at intervals, so
    back-to-back transactions would starve it."""
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    row = "(" + ", ".join([database.param] * len(fields)) + ")"
    sql = (f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES '
           + ", ".join([row] * len(rows)) + (" ON CONFLICT DO NOTHING" if ignore_conflicts else ""))
    started = time.monotonic()
    with database.atomic():
        database.execute_sql(sql, [value for values in rows for value in values])
    if not is_postgres():
        time.sleep(time.monotonic() - started)
