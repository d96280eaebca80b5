"""The API's OpenAPI document: every route under /api/v1 is in it with its models, it is a
valid OpenAPI 3.1 document, the console shows it as a page, and schemathesis, sending what the
document allows with an admin's API token (to ids that exist and ids that do not), gets no
server error and no answer the document does not describe (status, media type, body)."""
from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from controller.models import Account, Asset, Node, Plan, Record, User, Zone
from controller.web import openapi, shapes, users, views

EXAMPLES = 12          # per operation (about 60): the run stays well under 90 s
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance]


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: the API's shapes do not depend on the database (its sweep runs on both)."""
    return f"sqlite:///{tmp_path / 'keyturn.db'}"


def test_every_api_route_is_documented_with_its_models(app):
    assert openapi.undocumented(app.url_map.iter_rules()) == []
    api_rules = {rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1")}
    with app.test_request_context():
        paths = openapi.document()["paths"]
    assert {re.sub(r"<(?:int:)?([a-z_]+)>", r"{\1}", rule) for rule in api_rules} == set(paths)


def test_an_answer_its_model_does_not_describe_fails_loudly(app):
    """What keeps the document true: a key no model names is an error, not a silent extra."""
    with app.test_request_context():
        assert shapes.Message.model_validate(views.answer(shapes.Message, {"message": "m"}).json)
        with pytest.raises(ValidationError):
            views.answer(shapes.Message, {"message": "m", "undocumented": 1})


def test_document_is_valid_openapi_31_and_served(as_admin, as_auditor):
    from openapi_spec_validator import validate

    served = as_auditor.get("/api/v1/openapi.json")
    assert served.status_code == 200 and served.json["openapi"] == "3.1.0"
    validate(served.json)
    asset = served.json["paths"]["/api/v1/assets/{asset_id}"]["get"]
    assert asset["parameters"][0]["schema"] == {"type": "integer", "minimum": 0,
                                                "maximum": 10 ** 18 - 1}
    assert set(asset["responses"]) == {"200", "400", "401", "404"}
    add_user = served.json["paths"]["/api/v1/users/new"]["post"]
    assert set(add_user["responses"]) >= {"201", "400", "401", "403", "409"}
    body = served.json["components"]["schemas"]["NewUser"]["properties"]
    assert body["username"]["maxLength"] == User.username.max_length and "code" in body
    assert set(served.json["components"]["securitySchemes"]) == {"apiToken", "consoleSession"}


def test_docs_page_is_drawn_here_from_the_document(as_auditor):
    page = as_auditor.get("/api/docs")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "/api/v1/records/{record_id}/reveal" in html and 'id="model-RecordRow"' in html
    assert "<script" not in html.replace('<script src="/static/app.js" defer></script>', "")
    assert not re.search(r'(src|href)="(https?:)?//', html)     # nothing from elsewhere


def test_json_answers_are_built_through_their_models(as_admin, ran):
    """A page's JSON says times with a Z and nothing its model does not name."""
    shown = as_admin.get(f"/api/v1/executions/{ran.id}").json
    assert shown["execution"]["started_at"].endswith("Z")
    assert set(shown) == {"execution", "retryable", "log", "log_older", "log_paged", "log_after",
                          "log_filter", "records"}


def test_bad_input_names_its_fields(as_admin):
    answer = as_admin.get("/api/v1/records?execution=x&size=y")
    assert answer.status_code == 400 and set(answer.json["fields"]) == {"execution", "size"}


# ---- schemathesis -------------------------------------------------------------------------

class Token:
    """The admin's API token, made again whenever a call revoked it (`/me/token/revoke`)."""

    def __init__(self, username: str):
        self.username = username
        self.value = None

    def header(self) -> dict:
        if self.value is None or User.get(User.username == self.username).api_token_hash is None:
            self.value = users.new_api_token(User.get(User.username == self.username), ("reveal",))
        return {"Authorization": f"Bearer {self.value}"}


def existing_ids(auditor) -> dict[str, int]:
    """An id that exists for each kind a path names (what a random id almost never hits)."""
    found = {"plan_id": Plan, "record_id": Record, "asset_id": Asset, "account_id": Account,
             "node_id": Node, "zone_id": Zone}
    ids = {name: model.select(model.id).order_by(model.id).scalar()
           for name, model in found.items()}
    ids["execution_id"] = Record.select(Record.execution).scalar()
    ids["user_id"] = User.get(User.username == auditor.username).id
    return {name: value for name, value in ids.items() if value is not None}


@pytest.fixture
def admin_token(admin):
    return Token(admin.username)


@pytest.fixture
def api_schema(app, ran, auditor, admin_token):
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app,
                                            headers=admin_token.header())
    ids = existing_ids(auditor)

    @loaded.hook
    def flatmap_path_parameters(context, path_parameters):
        if not path_parameters:
            return st.just(path_parameters)
        real = path_parameters | {name: ids[name] for name in path_parameters if name in ids}
        return st.sampled_from([real, path_parameters])

    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case, admin_token):
    case.call_and_validate(headers=admin_token.header(), checks=CHECKS)
