"""Bad input never makes a 500: a sweep over every route of the console and its API (signed in
as admin, and anonymously) with the values that once did, in path segments, query strings and
bodies, on SQLite and PostgreSQL. A field error is a 400 that names the field, is checked
before the database, and never echoes a long value back."""
from __future__ import annotations

import io
import json
import re

import pytest

from controller.web import DATABASE_REFUSED
from tests.web_support import PASSWORD, Console, route_samples

LONG = "k" * 100_000
BAD_NUMBERS = ["9" * 30, str(2 ** 63), str(2 ** 64), "²", "١٢٣", "-1", "1e3", " "]
BAD_TEXT = ["a\x00b", "x" * 300, LONG, "a\nb"]
WRONG_TYPES = [5, True, ["x"], None, {"a": 1}, 2 ** 70]
BAD_QUERY = ["9" * 30, "²", "١٢٣", "a\x00b", "x" * 2000, "a\nb"]
# Good values for every field a form or a script sends, so a request spoils one field at a
# time; lists are JSON's shape of the plan form's fields.
GOOD = {"name": "sweep-1", "path": "/sweep", "address": "127.0.0.1", "port": "22",
        "platform": "linux", "zone": "dmz", "node": "/prod", "host_key": "", "public_key": "",
        "trust_first_use": "on", "username": "sweeper", "secret": "Sweep-secret-1234",
        "secret_type": "password", "privileged": "", "password": PASSWORD, "role": "auditor",
        "email": "sweep@example.com", "file_password": "file-password-1", "current": "wrong-one",
        "new": "another password 1", "code": "123456", "usernames": "alice",
        "assets": "web-1", "nodes": "/prod", "recipients": "ada", "strategy": "random",
        "key_type": "ed25519", "length": "20", "exclude_symbols": "", "ssh_timeout": "30",
        "interval_hours": "", "crontab": "", "schedule": "manual", "active": "on",
        "params.become": "", "params.groups": "", "params.sudo_commands": "", "next": "/plans",
        "clone_of": "", "scope": "", "scopes": ""}
LISTS = ("usernames", "assets", "nodes", "recipients")
QUERY = ("size", "after", "before", "q", "node", "days", "plan", "status", "trigger", "asset",
         "username", "account", "privileged", "execution", "actor", "action", "target", "next",
         "clone_of")
ALWAYS = ("code", "username", "name")     # read by actions whose form is not on a page
LAST = ("delete", "logout", "/active")      # routes that would end the sweep's own state
FORM = re.compile(r'<form[^>]*method="post"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
INPUT = re.compile(r'name="([^"]+)"')


def good_json() -> dict:
    return {name: [value] if name in LISTS else value for name, value in GOOD.items()}


def routes(app, ran):
    """`route_samples`, with the rules that delete a plan, deactivate a user or sign out last."""
    return sorted(route_samples(app, ran), key=lambda item: any(word in item[1] for word in LAST))


def form_fields(console: Console, found) -> dict[str, set[str]]:
    """The fields of every form the console's pages show, by the path they post to (the API
    twin of an action takes the same ones)."""
    fields: dict[str, set[str]] = {}
    for rule, path in found:
        if "GET" in rule.methods and not path.startswith("/api/"):
            for action, inner in FORM.findall(console.get(path).get_data(as_text=True)):
                names = set(INPUT.findall(inner)) - {"csrf_token"}
                fields.setdefault(action, set()).update(names)
                fields.setdefault("/api/v1" + action, set()).update(names)
    return fields


def answer_of(response) -> str:
    return response.get_data(as_text=True)


def check(response, what: str, field: str | None = None, sent: str | None = None):
    """No 500; nothing refused by the database; a JSON 400 for a field names it, and no JSON
    error echoes a long value."""
    text = answer_of(response)
    assert response.status_code < 500, (what, response.status_code, text[:300])
    assert DATABASE_REFUSED not in text, what
    if response.is_json and response.status_code >= 400:
        if sent is not None and len(sent) > 100:
            assert sent[:100] not in text, what
        if field and response.status_code == 400:
            assert field in response.json["error"], (what, response.json)


def send(console: Console, method: str, path: str, body: dict, as_json: bool):
    if method == "GET":
        return console.get(path)
    if as_json:
        return console.client.post(path, data=json.dumps(body), content_type="application/json",
                                   headers={"X-CSRF-Token": console.csrf()})
    return console.post(path, body)


@pytest.fixture
def others(ctl, auditor):
    """An auditor whose id the user routes take."""
    return auditor


def test_every_route_survives_bad_path_segments(app, as_admin, ran, others):
    checked = 0
    for rule, _ in routes(app, ran):
        if not rule.arguments:
            continue
        for bad in BAD_NUMBERS:
            path = rule.rule
            for name in rule.arguments:
                path = path.replace(f"<int:{name}>", bad.replace(" ", "%20"))
            for method in rule.methods & {"GET", "POST"}:
                check(send(as_admin, method, path, {}, path.startswith("/api/")), path)
                checked += 1
    assert checked > 150, checked


def test_every_page_survives_bad_query_arguments(app, as_admin, ran, others):
    """Each page once: its JSON twin where it has one (the same view)."""
    found = routes(app, ran)
    paths = {path for _, path in found}
    checked = 0
    for rule, path in found:
        if "GET" not in rule.methods or "/api/v1" + path in paths:
            continue
        for name in QUERY:
            for bad in BAD_QUERY:
                response = as_admin.client.get(path, query_string={name: bad})
                check(response, f"{path}?{name}={bad[:20]!r}", name, bad)
                checked += 1
    assert checked > 2000


def sweep_actions(app, console: Console, ran, as_json: bool) -> int:
    """Each field of an action's form spoilt alone (the others good), so a bad value is not
    hidden behind another field's error; then every known field spoilt at once. Returns how
    many requests were checked."""
    found = routes(app, ran)
    fields = form_fields(console, found)
    base = good_json() if as_json else GOOD
    values = BAD_TEXT + ["9" * 30, "²", "١٢٣"] + (WRONG_TYPES if as_json else [])
    checked = 0
    for rule, path in found:
        if "POST" not in rule.methods or path.startswith("/api/") != as_json:
            continue
        for field in sorted(fields.get(path, set()) | set(ALWAYS)):
            for bad in values:
                response = send(console, "POST", path, base | {field: bad}, as_json)
                check(response, f"{path} {field}={str(bad)[:20]!r}", field,
                      bad if isinstance(bad, str) else None)
                checked += 1
        for bad in values:
            check(send(console, "POST", path, dict.fromkeys(GOOD, bad), as_json),
                  f"{path} all={str(bad)[:20]!r}")
    return checked


def test_every_api_action_survives_each_bad_field(app, as_admin, ran, others):
    assert sweep_actions(app, as_admin, ran, as_json=True) > 1000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_form_survives_each_bad_field(app, as_admin, ran, others):
    """Once, on SQLite: a form's fields go through the same checks as its API twin's, which
    the sweep above runs on both databases (and so before PostgreSQL could refuse a value)."""
    assert sweep_actions(app, as_admin, ran, as_json=False) > 1000


def test_bodies_that_are_not_objects_or_nest_too_deep(app, as_admin, ran, others):
    bodies = ["5", "null", "[1, 2]", '"text"', "true", "[" * 100_000 + "]" * 100_000,
              '{"name": ' + "[" * 200 + "]" * 200 + "}", "{not json", b"\xff\xfe{}"]
    for rule, path in routes(app, ran):
        if "POST" not in rule.methods:
            continue
        for body in bodies:
            response = as_admin.client.post(path, data=body, content_type="application/json",
                                             headers={"X-CSRF-Token": as_admin.csrf()})
            check(response, f"{path} {str(body)[:20]}")
            if path.startswith("/api/") and response.status_code == 400:
                assert "body" in response.json["error"], (path, response.json)


def test_anonymous_requests_never_fail(app, ran, others):
    anonymous = Console(app)
    for rule, path in routes(app, ran):
        for method in rule.methods & {"GET", "POST"}:
            for bad in ("a\x00b", LONG, "١٢٣", "9" * 30):
                response = send(anonymous, method, path + "?next=" + bad[:2000],
                                {"username": bad, "password": bad, "code": bad}, False)
                check(response, f"anonymous {method} {path}")
                response = send(anonymous, method, path, {"username": bad}, True)
                check(response, f"anonymous json {method} {path}")


@pytest.mark.parametrize("username", ["u" * 300, "ada\x00", "a\nb"])
def test_sign_in_with_a_bad_user_name_is_a_4xx(app, ctl, admin, username):
    response = Console(app).post("/login", {"username": username, "password": PASSWORD})
    assert 400 <= response.status_code < 500
    assert "username" in answer_of(response)


def test_csv_import_with_an_oversized_field_or_not_utf8(as_admin, fleet):
    big = "name,address,zone\n" + "a" * (200 * 1024) + ",127.0.0.1,dmz\n"
    quoted = 'name,address,zone\n"' + "b" * (200 * 1024) + '",127.0.0.1,dmz\n'
    files = [big.encode(), quoted.encode(), b"name,address,zone\nw\xff,127.0.0.1,dmz\n",
             b"\xff\xfe\x00n\x00a", b"name,address,zone\nw\x00,127.0.0.1,dmz\n"]
    for data in files:
        for path in ("/assets/import", "/api/v1/assets/import"):
            if path.startswith("/api/"):
                response = as_admin.client.post(path, data=data, content_type="text/csv",
                                                headers={"X-CSRF-Token": as_admin.csrf()})
            else:
                response = as_admin.post(path, {"file": (io.BytesIO(data), "assets.csv")},
                                         content_type="multipart/form-data")
            check(response, f"{path} {data[:30]!r}", sent=data.decode("latin-1"))
            assert response.status_code in (302, 400, 409, 422), (path, response.status_code)


# ---- the mechanism, one case each ---------------------------------------------------------

def test_ids_past_63_bits_are_not_found_and_ascii_digits_only(as_admin, ran):
    assert as_admin.get(f"/api/v1/executions/{2 ** 63}").status_code == 404
    assert as_admin.get("/api/v1/executions/١").status_code == 404
    assert as_admin.get(f"/api/v1/executions/{ran.id}").status_code == 200


@pytest.mark.parametrize("value", ["²", "١٢٣", "9" * 19, "-1"])
def test_paging_values_are_ascii_digits_within_63_bits(as_admin, ran, value):
    for name in ("after", "before", "size"):
        response = as_admin.get(f"/api/v1/executions?{name}={value}")
        assert response.status_code == 400
        assert response.json["error"].startswith(f"{name}: a whole number")
    assert as_admin.get(f"/api/v1/executions/{ran.id}/log?after={value}").status_code == 400
    assert as_admin.get(f"/api/v1/records?execution={value}").status_code == 400


def test_nul_in_a_filter_or_a_field_is_refused_by_name(as_admin, fleet):
    response = as_admin.get("/api/v1/audit?actor=a%00b")
    assert response.status_code == 400 and response.json["error"].startswith("actor:")
    response = as_admin.post_json("/api/v1/nodes/new", {"path": "/a\x00b"})
    assert response.status_code == 400 and response.json["error"].startswith("path:")
    response = as_admin.post("/nodes/new", {"path": "/a\x00b"})
    assert response.status_code == 400 and "path: must not contain NUL" in answer_of(response)


def test_a_json_body_must_be_an_object_nested_shallowly(as_admin, fleet):
    def post(body: str):
        return as_admin.client.post("/api/v1/nodes/new", data=body,
                                    content_type="application/json",
                                    headers={"X-CSRF-Token": as_admin.csrf()})

    for body in ("[1]", "null", "5", "[" * 100_000 + "]" * 100_000):
        response = post(body)
        assert response.status_code == 400 and response.json["error"].startswith("body:"), body[:9]
    response = post('{"path": "/x", "a": ' + "[" * 40 + "]" * 40 + "}")
    assert response.status_code == 400 and "nested deeper" in response.json["error"]
    assert post('{"path": "/x", "a": [[[]]]}').status_code == 201


# ---- item 16 ------------------------------------------------------------------------------

def test_an_unknown_api_path_is_401_for_anonymous_and_json_404_when_signed_in(app, as_admin):
    response = Console(app).get("/api/v1/no-such-thing")
    assert response.status_code == 401 and response.is_json
    response = as_admin.get("/api/v1/no-such-thing")
    assert response.status_code == 404 and response.is_json


@pytest.mark.parametrize("path,field", [("/api/v1/zones/new", "name"),
                                        ("/api/v1/assets/new", "name"),
                                        ("/api/v1/nodes/new", "path"),
                                        ("/api/v1/users/new", "username")])
def test_a_huge_invalid_name_is_not_echoed(as_admin, fleet, path, field):
    huge = "n" * (10 * 1024 * 1024)
    response = as_admin.post_json(path, good_json() | {field: huge})
    assert 400 <= response.status_code < 500
    assert len(answer_of(response)) < 3000


def test_content_security_policy_limits_forms_and_base(as_admin):
    policy = as_admin.get("/overview").headers["Content-Security-Policy"]
    assert "form-action 'self'" in policy and "base-uri 'none'" in policy
