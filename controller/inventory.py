"""Set-up and inventory operations shared by the CLI and the console: keys, zones, nodes,
assets and accounts."""
from __future__ import annotations

from controller import vault as vault_module
from controller.db import open_database
from controller.migrations import migrate
from controller.models import Account, Asset, AuditEvent, Node, Plan, WorkerSeen, Zone, utcnow
from controller.runtime import Controller, make_data_dir
from shared import zonecrypto
from shared.errors import KeyturnError
from shared.messages import PLATFORMS, USERNAME, ZONE_NAME, AssetTarget
from shared.settings import Settings


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
                  else f"database: schema {before} -> {after}")
    return report


def controller_public_key(ctl: Controller) -> str:
    return zonecrypto.encode_public_key(ctl.private_key.public_key)


def add_zone(ctl: Controller, name: str, public_key: str | None,
             trust_first_use: bool | None) -> tuple[Zone, bool]:
    """Register a zone; without a public key, make the zone's key pair here for local workers."""
    if not ZONE_NAME.match(name):
        raise KeyturnError(f"zone name {name!r}: use lowercase letters, digits, - and _")
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
    if not created:
        zone.public_key, zone.trust_first_use = public_key, trust
        zone.save()
    return zone, made_key


def workers(zone: Zone) -> list[WorkerSeen]:
    return list(WorkerSeen.select().where(WorkerSeen.zone == zone.name)
                .order_by(WorkerSeen.last_seen.desc()))


def node_for_path(path: str) -> Node:
    """The node at `path`, created (with its parents) when missing."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise KeyturnError(f"node path {path!r}: use a path like /prod/web")
    node = None
    for depth in range(1, len(parts) + 1):
        node, _ = Node.get_or_create(path="/" + "/".join(parts[:depth]))
    return node


def add_asset(name: str, address: str, port: int, platform: str, zone_name: str,
              node_path: str | None, host_key: str | None) -> Asset:
    zone = Zone.get_or_none(Zone.name == zone_name)
    if zone is None:
        raise KeyturnError(f"unknown zone {zone_name}: add it with `keyturn zone add {zone_name}`")
    if platform not in PLATFORMS:
        raise KeyturnError(f"platform {platform!r}: one of {', '.join(PLATFORMS)}")
    if Asset.select().where(Asset.name == name).exists():
        raise KeyturnError(f"asset {name} exists already")
    node = node_for_path(node_path) if node_path else None
    return Asset.create(name=name, address=address, port=port, platform=platform, zone=zone,
                        node=node, host_key=host_key.strip() if host_key else None)


def fetch_host_key(asset: Asset, timeout: float = 10) -> str:
    """The host key the asset presents now (from this machine), as an OpenSSH line."""
    from worker.ssh import connect

    target = AssetTarget(name=asset.name, address=asset.address, port=asset.port,
                         platform=asset.platform, trust_first_use=True)
    with connect(target, timeout) as connection:
        return connection.host_key


def pin_host_key(asset: Asset, key_line: str, actor: str) -> None:
    """Pin an operator-accepted host key (audited: it decides which host gets passwords)."""
    parts = key_line.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise KeyturnError("host key: give an OpenSSH public key line such as 'ssh-ed25519 AAAA...'")
    asset.host_key = " ".join(parts[:2])
    asset.save(only=[Asset.host_key])
    AuditEvent.create(actor=actor, action="asset.trust", target=f"asset/{asset.name}",
                      detail=asset.host_key)


def asset_by_name(name: str) -> Asset:
    found = Asset.get_or_none(Asset.name == name)
    if found is None:
        raise KeyturnError(f"no asset named {name}")
    return found


def account_by_name(asset_name: str, username: str) -> Account:
    found = (Account.select().join(Asset)
             .where((Asset.name == asset_name) & (Account.username == username)).first())
    if found is None:
        raise KeyturnError(f"no account {username} on asset {asset_name}")
    return found


def plan_by_name(name: str) -> Plan:
    found = Plan.get_or_none(Plan.name == name)
    if found is None:
        raise KeyturnError(f"no plan named {name}")
    return found


def set_account(ctl: Controller, asset_name: str, username: str, secret: str | None,
                privileged: bool) -> Account:
    """Create or update an account. An account in rotation keeps its secrets untouched."""
    if not USERNAME.match(username):
        raise KeyturnError(f"user name {username!r} is not valid")
    target = asset_by_name(asset_name)
    found, _ = Account.get_or_create(asset=target, username=username)
    if secret is not None:
        if found.busy_execution is not None:
            raise KeyturnError(f"{username}@{asset_name} is in a rotation; its secret cannot be set now")
        found.secret_previous, found.previous_since = found.secret_current, found.current_since
        found.secret_current, found.current_since = ctl.vault.encrypt(secret), utcnow()
    if privileged:
        Account.update(privileged=False).where((Account.asset == target) & Account.privileged).execute()
        found.privileged = True
    found.save()
    return found
