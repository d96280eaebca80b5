"""One's own mail address: checked by a real parser when saved (syntax only, no DNS), so a
CR/LF or a second address never reaches the result mail."""
from __future__ import annotations

import pytest

from controller.models import User
from controller.web import users
from shared.errors import KeyturnError
from tests.web_support import PASSWORD

BAD_ADDRESSES = ["bob@example.com\r\nBcc: eve@example.com", "bob@example.com\nx",
                 "bob@example.com, eve@example.com", "Bob <bob@example.com>", "bob",
                 "bob@", "bob@localhost", "b@" + "c" * 300 + ".com"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_a_bad_address_is_refused_when_saved(as_auditor, auditor, address):
    answer = as_auditor.post_json("/api/v1/me/profile", {"email": address})
    assert answer.status_code in (400, 409) and answer.json["error"].startswith("email: ")
    assert as_auditor.post("/me/profile", {"email": address}).status_code in (302, 400)
    assert User.get(User.username == auditor.username).email is None


def test_a_good_address_is_saved_normalised(as_auditor, auditor):
    assert as_auditor.post("/me/profile", {"email": " otto@EXAMPLE.com "}).location == "/me"
    assert User.get(User.username == auditor.username).email == "otto@example.com"
    assert as_auditor.post("/me/profile", {"email": ""}).location == "/me"
    assert User.get(User.username == auditor.username).email is None


def test_new_users_addresses_are_checked_too(ctl):
    with pytest.raises(KeyturnError, match="^email: "):
        users.create_user("eve", PASSWORD, "auditor", "eve@example.com\r\nBcc: x@example.com")
    assert not User.select().where(User.username == "eve").exists()
    assert users.create_user("eve", PASSWORD, "auditor", "eve@example.com").email \
        == "eve@example.com"
