import os

import psycopg
import pytest

from controller.db import database
from controller.models import Account, Plan, Record
from controller.planning import run_plan
from controller.plans import parse_spec, save_plan
from controller.vault import Vault, VaultError, create_key_file, load_vault, new_key_text, parse_keys
from tests.conftest import POSTGRES_DSN
from tests.inventory_helpers import build_fleet


def test_round_trip_and_key_rotation():
    old = parse_keys(new_key_text())[0]
    new = parse_keys(new_key_text())[0]
    token = Vault([old]).encrypt("pässwörd {{ x }}")
    rotated = Vault([new, old])
    assert rotated.decrypt(token) == "pässwörd {{ x }}"
    assert rotated.needs_rekey(token)
    assert not rotated.needs_rekey(rotated.encrypt("x"))
    with pytest.raises(VaultError):
        Vault([new]).decrypt(token)


def test_key_file_is_private(tmp_path):
    path = tmp_path / "master.key"
    assert create_key_file(path) is True
    assert create_key_file(path) is False
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_vault(None, path).decrypt(load_vault(None, path).encrypt("s")) == "s"


def test_missing_key_says_what_to_do(tmp_path):
    with pytest.raises(VaultError, match="keyturn init"):
        load_vault(None, tmp_path / "none.key")


def test_no_plaintext_secret_in_the_database(ctl, settings):
    """Every secret written (account, given plan secret, record old/new) is ciphertext."""
    build_fleet(ctl, users=("alice",))
    save_plan(parse_spec({"name": "given", "usernames": ["alice"], "assets": ["web-1"],
                          "strategy": "specific", "secret": "Given-Secret-123!"}), ctl.vault)
    run_plan(ctl, Plan.get(Plan.name == "given"))
    record = Record.get()
    secrets = ["rootpw", "old-alice-web-1", "Given-Secret-123!", ctl.vault.decrypt(record.new_secret)]
    assert ctl.vault.decrypt(Account.get(Account.username == "alice").secret_pending) == secrets[2]
    raw = raw_database_bytes(settings.effective_database_url)
    for secret in secrets:
        assert secret.encode() not in raw


def raw_database_bytes(url: str) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or a dump of every table."""
    if url.startswith("sqlite:///"):
        database.execute_sql("PRAGMA wal_checkpoint(FULL)")
        path = url[len("sqlite:///"):]
        return b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
    schema = url.rsplit("%3D", 1)[1]
    chunks = []
    with psycopg.connect(POSTGRES_DSN) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema=%s",
                              (schema,)).fetchall()
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM {schema}."{table}"'):
                chunks.append(repr(row).encode())
                chunks.extend(bytes(v) for v in row if isinstance(v, (bytes, memoryview)))
    return b"\n".join(chunks)
