"""`keyturn user` (defined with the console, wired into the CLI by `shared.cli`)."""
from __future__ import annotations

from click.testing import CliRunner

from controller.models import User
from controller.web import users
from controller.web.cli import user
from tests.web_support import PASSWORD


def run(ctl, monkeypatch, *args, input=None):
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(ctl.settings.data_dir))
    monkeypatch.setenv("KEYTURN_DATABASE_URL", ctl.settings.effective_database_url)
    return CliRunner().invoke(user, list(args), input=input, catch_exceptions=False)


def test_add_token_list_and_reset(ctl, monkeypatch):
    added = run(ctl, monkeypatch, "add", "carla", "--role", "admin", "--password-stdin",
                input=PASSWORD + "\n")
    assert added.exit_code == 0 and "carla added with role admin" in added.output
    assert users.authenticate("carla", PASSWORD).role == "admin"
    token = run(ctl, monkeypatch, "token", "carla").output.strip()
    assert users.user_for_token(token).username == "carla"
    users.finish_enrolment(User.get(User.username == "carla"))
    listed = run(ctl, monkeypatch, "list").output
    assert "carla\tadmin\tactive\tenrolled" in listed
    run(ctl, monkeypatch, "reset-mfa", "carla")
    assert not User.get(User.username == "carla").totp_enrolled


def test_errors_are_one_line(ctl, monkeypatch):
    import pytest

    from shared.errors import KeyturnError

    with pytest.raises(KeyturnError, match="no user named ghost"):
        run(ctl, monkeypatch, "token", "ghost")
    empty = run(ctl, monkeypatch, "add", "dora", "--password-stdin", input="\n")
    assert empty.exit_code == 1 and "no password on standard input" in empty.output
