"""Fixtures and helpers for the console's tests (imported by the test_web_* modules): users
with enrolled authenticators, a test client that signs in and sends CSRF tokens, and
executions whose results arrive through the real results path."""
from __future__ import annotations

import time
from dataclasses import dataclass

import pyotp
import pytest

from controller.models import Node, Plan, Record, User, Zone
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from controller.web import create_app, users
from shared.messages import RotateResult
from tests.inventory_helpers import build_fleet

PASSWORD = "correct horse battery"


@dataclass
class Person:
    username: str
    password: str
    seed: str
    role: str


def make_person(ctl, username: str, role: str) -> Person:
    """A user who has enrolled an authenticator already."""
    row = users.create_user(username, PASSWORD, role)
    seed = users.new_totp_seed(ctl, row)
    users.finish_enrolment(row)
    return Person(username, PASSWORD, seed, role)


def next_code(person: Person) -> str:
    """A code the console accepts now. Codes are single-use per 30 s step and the server takes
    the steps around its own (±1); tests sign in and step up many times a second, so this
    uses the current step, then the next, and when both are used moves the user's last step
    back (tests only). Never the previous step: at a step's end the server's clock may pass
    into the next one before the code arrives, and the previous step falls out of its window."""
    now = int(time.time() // 30)
    last = User.get(User.username == person.username).totp_last_step
    step = max(now, last + 1)
    if step > now + 1:
        User.update(totp_last_step=now - 1).where(User.username == person.username).execute()
        step = now
    return pyotp.TOTP(person.seed).at(step * 30)


class Console:
    """A Flask test client that signs in and adds the session's CSRF token to every change."""

    def __init__(self, app, person: Person | None = None):
        self.client = app.test_client()
        self.person = person
        if person:
            self.sign_in(person)

    def csrf(self) -> str:
        with self.client.session_transaction() as session:
            token = session.get("csrf_token")
        if token is None:
            self.client.get("/login")
            return self.csrf()
        return token

    def sign_in(self, person: Person):
        self.post("/login", {"username": person.username, "password": person.password})
        return self.post("/login/code", {"code": next_code(person)})

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, **kwargs):
        return self.client.post(path, data={"csrf_token": self.csrf(), **(data or {})}, **kwargs)

    def post_json(self, path: str, body: dict | None = None):
        """A console script's call: JSON body, session cookie, CSRF token in the header."""
        return self.client.post(path, json=body or {}, headers={"X-CSRF-Token": self.csrf()})

    def step_up(self, path: str, **kwargs):
        """POST to a route that asks for a fresh TOTP code, giving one."""
        return self.post(path, {"code": next_code(self.person)}, **kwargs)


@pytest.fixture
def app(ctl):
    application = create_app(ctl)
    application.testing = True
    return application


@pytest.fixture
def admin(ctl) -> Person:
    return make_person(ctl, "ada", "admin")


@pytest.fixture
def auditor(ctl) -> Person:
    return make_person(ctl, "otto", "auditor")


@pytest.fixture
def as_admin(app, admin) -> Console:
    return Console(app, admin)


@pytest.fixture
def as_auditor(app, auditor) -> Console:
    return Console(app, auditor)


@pytest.fixture
def fleet(ctl):
    """Two assets under /prod/web, each with root (privileged), alice and bob."""
    build_fleet(ctl, assets=("web-1", "web-2"))


def save(ctl, name="nightly", **fields):
    spec = {"name": name, "usernames": ["alice", "bob"], "nodes": ["/prod"]} | fields
    return save_plan(parse_spec(spec), ctl.vault)


def finish(execution, outcomes: dict[str, str]):
    """Report a result for every record of `execution`: `outcomes` maps "user@asset" to a
    status (default success), through the real results consumer path."""
    rows = list(Record.select(Record).where(Record.execution == execution.id))
    now = time.time()
    results = []
    for record in rows:
        account = record.account
        status = outcomes.get(f"{account.username}@{account.asset.name}", "success")
        results.append(RotateResult(
            record_id=record.id, attempt=1, zone="dmz", worker_id="w-test:1", status=status,
            error_code=None if status == "success" else "login_failed",
            error=None if status == "success" else f"{account.asset.name}: login refused",
            started_at=now, finished_at=now))
    apply_results(results)
    return rows


@pytest.fixture
def ran(ctl, fleet, admin):
    """A finished execution of plan `nightly`: bob@web-2 failed, the rest succeeded."""
    execution = start_execution(ctl, save(ctl), started_by=admin.username)
    finish(execution, {"bob@web-2": "failed"})
    return execution


def secrets_of(ctl, execution) -> set[str]:
    """Every old and new secret of an execution's records, in clear."""
    found = set()
    for record in Record.select().where(Record.execution == execution.id):
        found |= {ctl.vault.decrypt(record.old_secret), ctl.vault.decrypt(record.new_secret)}
    return found - {None}



def route_samples(app, ran):
    """Every rule of the app with its placeholders filled with ids that exist."""
    ids = {"plan_id": Plan.get().id, "execution_id": ran.id, "record_id": Record.get().id,
           "asset_id": Record.get().account.asset_id,
           "user_id": User.get(User.username == "otto").id,
           "account_id": Record.get().account_id, "zone_id": Zone.get().id,
           "node_id": Node.get().id,
           "integration_id": 1, "webhook_id": 1}       # none exists: a 404 is the answer
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<int:{name}>", str(ids[name]))
        yield rule, path
