"""Sign-in throttling: the (user, address) pair is locked out; a user or an address alone
only makes sign-in ask for the code with the password, so an attacker elsewhere never locks
the real user out; a configured reverse proxy's X-Forwarded-For names the address."""
from __future__ import annotations

import pytest

from controller.web import create_app
from controller.web.security import Throttle
from tests.web_support import PASSWORD, Console, next_code


def attempt(app, username, password, address, **fields):
    """One password step from `address`, on a fresh client; returns (client, answer)."""
    client = Console(app)
    answer = client.post("/login", {"username": username, "password": password, **fields},
                         environ_base={"REMOTE_ADDR": address})
    return client, answer


def code_step(client, person, address):
    return client.post("/login/code", {"code": next_code(person)},
                       environ_base={"REMOTE_ADDR": address})


@pytest.fixture(autouse=True)
def still_clock(app):
    """The throttle's clock stands still, so a one-second lock-out lasts the whole test."""
    app.extensions["keyturn.throttle"].clock = lambda: 1000.0


@pytest.fixture
def small_limits(app):
    """Limits small enough to reach quickly: pair 3, user 4, address 6."""
    app.extensions["keyturn.throttle"] = Throttle(free={"pair": 3, "user": 4, "addr": 6})
    app.extensions["keyturn.throttle"].clock = lambda: 1000.0
    return app


def test_a_locked_pair_leaves_the_user_other_addresses_and_the_address_other_users(
        app, admin, auditor):
    for _ in range(5):
        attempt(app, admin.username, "wrong-password", "10.0.0.1")
    _, locked = attempt(app, admin.username, PASSWORD, "10.0.0.1")
    assert locked.status_code == 429 and "try again" in locked.text
    client, answer = attempt(app, admin.username, PASSWORD, "10.0.0.2")
    assert answer.location == "/login/code"
    assert code_step(client, admin, "10.0.0.2").location == "/overview"
    client, answer = attempt(app, auditor.username, PASSWORD, "10.0.0.1")
    assert answer.location == "/login/code"


def test_a_user_attacked_from_many_addresses_signs_in_with_password_and_code(small_limits,
                                                                             admin):
    app = small_limits
    for n in range(4):
        attempt(app, admin.username, "wrong-password", f"10.0.1.{n}")
    # the password alone now gets the same answer whether it is right or wrong
    _, right = attempt(app, admin.username, PASSWORD, "10.0.2.1")
    _, wrong = attempt(app, admin.username, "wrong-password", "10.0.2.2")
    assert right.status_code == wrong.status_code == 401
    for answer in (right, wrong):
        assert 'name="code"' in answer.text and "wrong user name, password or code" in answer.text
    _, wrong_password = attempt(app, admin.username, "wrong-password", "10.0.2.3",
                                code=next_code(admin))
    assert wrong_password.status_code == 401
    client, answer = attempt(app, admin.username, PASSWORD, "10.0.2.4", code=next_code(admin))
    assert answer.location == "/overview"
    assert client.get("/overview").status_code == 200


def test_a_guessing_address_makes_its_users_give_password_and_code(small_limits, auditor):
    app = small_limits
    for n in range(6):
        attempt(app, f"someone{n}", "wrong-password", "10.0.3.1")
    _, answer = attempt(app, auditor.username, PASSWORD, "10.0.3.1")
    assert answer.status_code == 401 and 'name="code"' in answer.text
    _, answer = attempt(app, auditor.username, PASSWORD, "10.0.3.1", code=next_code(auditor))
    assert answer.location == "/overview"
    _, elsewhere = attempt(app, "someone0", "wrong-password", "10.0.3.2")
    assert 'name="code"' not in elsewhere.text            # other addresses are not affected


@pytest.mark.parametrize("hops, locked_elsewhere", [(0, True), (1, False)])
def test_trusted_proxies_decide_whose_address_counts(ctl, admin, hops, locked_elsewhere):
    ctl.settings.web_trusted_proxies = hops
    app = create_app(ctl)
    app.testing = True
    app.extensions["keyturn.throttle"].clock = lambda: 1000.0
    for _ in range(5):
        client = Console(app)
        client.post("/login", {"username": admin.username, "password": "wrong-password"},
                    headers={"X-Forwarded-For": "10.0.4.1"})
    client = Console(app)
    answer = client.post("/login", {"username": admin.username, "password": PASSWORD},
                         headers={"X-Forwarded-For": "10.0.4.2"})
    assert answer.status_code == (429 if locked_elsewhere else 302)


def test_throttle_limits_per_kind_double_and_forget():
    throttle = Throttle(free={"pair": 2, "user": 3}, longest=60)
    throttle.failed("pair:a", "user:u", now=100.0)
    assert throttle.wait_seconds("pair:a", "user:u", now=100.0) == 0
    throttle.failed("pair:a", "user:u", now=100.0)
    assert throttle.wait_seconds("pair:a", now=100.0) == 1
    assert throttle.wait_seconds("user:u", now=100.0) == 0        # the looser kind
    throttle.failed("pair:a", now=100.0)
    assert throttle.wait_seconds("pair:a", now=100.0) == 2
    for _ in range(20):
        throttle.failed("pair:a", now=100.0)
    assert throttle.wait_seconds("pair:a", now=100.0) == 60
    throttle.failed("pair:a", now=100.0 + 60 + 61)               # quiet past the lock: anew
    assert throttle.wait_seconds("pair:a", now=221.0) == 0
    throttle.succeeded("pair:a")
    assert throttle.wait_seconds("pair:a", now=100.0) == 0
