"""Files at rest are the owner's only: `keyturn init` under a 022 umask leaves the data directory
0700 and the database, its -wal and -shm, and the key files 0600 (also fixing an older install);
the DEBUG log shows peewee's SQL but never its parameters (password hashes, sealed secrets)."""
from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest

from controller.db import database, open_database
from controller.models import Account, User
from tests.inventory_helpers import build_fleet
from tests.processes import KEYTURN
from tests.web_support import Console, make_person

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keyturn(data: Path, *args: str, input: str | None = None) -> None:
    env = os.environ | {"KEYTURN_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(KEYTURN + list(args), env=env, input=input, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("before", ["fresh", "older install"])
def test_init_leaves_owner_only_files(tmp_path, umask_022, before):
    data = tmp_path / "data"
    if before == "older install":   # what init made before: 0755 and 0644 under this umask
        data.mkdir(mode=0o755)
        for name in ("keyturn.db", "keyturn.db-wal", "keyturn.db-shm"):
            (data / name).touch(mode=0o644)
    keyturn(data, "init", "--admin", "ada", "--password-stdin", input="ada-password-1\n")
    keyturn(data, "zone", "add", "z")
    assert mode(data) == 0o700
    for name in ("keyturn.db", "master.key", "controller.key", "zones/z.key"):
        assert mode(data / name) == 0o600, name
    for name in ("keyturn.db-wal", "keyturn.db-shm"):
        assert not (data / name).exists() or mode(data / name) == 0o600, name

    open_database(f"sqlite:///{data / 'keyturn.db'}")   # a write makes the -wal and -shm files
    try:
        User.update(email="ada@example.org").execute()
        for name in ("keyturn.db-wal", "keyturn.db-shm"):
            assert mode(data / name) == 0o600, name
    finally:
        database.close()


def test_the_debug_log_shows_no_hash_or_sealed_secret(ctl, app, caplog):
    caplog.set_level(logging.DEBUG)
    person = make_person(ctl, "ada", "admin")
    assert Console(app, person).get("/overview").status_code == 200   # signed in
    build_fleet(ctl)                                          # account adds with their secrets
    log = caplog.text
    assert 'INSERT INTO "account"' in log                     # the SQL text is still logged
    password_hash = User.get(User.username == "ada").password_hash
    assert password_hash not in log and password_hash.rsplit("$", 1)[-1] not in log
    for account in Account.select():
        sealed = bytes(account.secret_current)
        for shown in (repr(sealed)[2:-1], sealed.hex(), base64.b64encode(sealed).decode()):
            assert shown[:40] not in log, account.username
    assert not [r for r in caplog.records if r.name == "peewee" and not isinstance(r.msg, str)]
