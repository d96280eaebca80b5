"""The API's OpenAPI 3.1 document, made from the routes themselves: served at
/api/v1/openapi.json, and as a plain page at /api/docs (drawn here from the document: no
script, nothing loaded from elsewhere).

Why not flask-openapi3 or spectree: both want to own the routes (their app or blueprint class,
or a decorator that parses the request and answers a failed validation with its own 422
shape). Ours are registered once for two faces (a form's page and a script's JSON, see
`views.page`/`views.action`) and refuse bad values with our own 400 naming each field; the
models that validate and shape them were pydantic already. So the document walks
`app.url_map` for the rules under /api/v1 and reads each one's `views.Operation` (body, query
and response models, statuses, guards), and pydantic writes the JSON Schemas (2020-12, which
OpenAPI 3.1 takes as they are). A rule without an `Operation` is listed in `undocumented`,
and a test fails on it."""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

from flask import Blueprint, current_app, render_template
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from controller.web import forms, shapes, views
from controller.web.views import JSON, OPERATIONS, Operation, api, api_route

bp = Blueprint("apidoc", __name__)
METHODS = ("get", "post", "put", "patch", "delete")
PLACEHOLDER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
REFS = "#/components/schemas/{model}"
ERRORS = {
    400: "a value is not what its field takes (`fields` names them), or the body is not a "
         "JSON object",
    401: "not signed in (send the API token), or the action needs a fresh TOTP code: send "
         "one as `code`",
    403: "this needs the admin role",
    404: "nothing has this id",
    409: "refused as it stands (a name taken, a state that does not allow it, too many "
         "wrong codes): the error says why",
    422: "the plan cannot be saved: `errors` names each bad field",
}
DESCRIPTION = """Everything the console shows and does, for scripts. Every page of the console
is also JSON here, and every action answers JSON.

**Authentication.** Scripts send an API token (`Authorization: Bearer kt_...`, made on your
profile page or by `keyturn user token NAME`); it acts as its user, with that user's role. The
console's session cookie works too, but a change made with it needs the session's CSRF token
in `X-CSRF-Token`. Auditors read everything but secrets; changes need the admin role.

**Step-up.** Adding a user, changing a role, resetting an authenticator, making a token,
adding or switching an integration or a webhook, and revealing or restoring a secret need a
fresh TOTP code, sent as `code` in the body (a token made with the `reveal` scope reveals
without one). Without it the answer is 401; too many wrong codes are 409 for a while.

**Errors** are `{"error": "..."}` with the status saying which kind; a 400 for bad values
names every bad field (`fields`). Ids in paths are whole numbers of at most 18 digits (they
fit 63 bits): a longer one is a 404."""


def document() -> dict:
    """The document of this app's API, made once per app."""
    made = current_app.extensions.get("keyturn.openapi")
    if made is None:
        made = current_app.extensions["keyturn.openapi"] = build(current_app.url_map.iter_rules())
    return made


def api_rules(rules) -> list[Rule]:
    return sorted((rule for rule in rules if rule.endpoint.startswith(api.name + ".")),
                  key=lambda rule: rule.rule)


def undocumented(rules) -> list[str]:
    """The API rules the document cannot describe: no `Operation`, or no response model for
    a JSON answer."""
    return [rule.rule for rule in api_rules(rules)
            if (found := OPERATIONS.get(rule.endpoint)) is None
            or (found.response is None and found.media == JSON)]


def build(rules) -> dict:
    rules = [rule for rule in api_rules(rules) if rule.endpoint in OPERATIONS]
    schemas = component_schemas([OPERATIONS[rule.endpoint] for rule in rules])
    paths: dict[str, dict] = {}
    for rule in rules:
        item = paths.setdefault(PLACEHOLDER.sub(r"{\1}", rule.rule), {})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            item[method.lower()] = operation(rule, OPERATIONS[rule.endpoint], schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "keyturn API", "version": package_version(),
                 "description": DESCRIPTION},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"apiToken": []}, {"consoleSession": []}],
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer",
                             "description": "an API token: `kt_` and 43 characters"},
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": "keyturn_session",
                                   "description": "the console's session (changes also "
                                                  "need `X-CSRF-Token`)"}},
        },
    }


def package_version() -> str:
    try:
        return version("keyturn")
    except PackageNotFoundError:
        return "0"


def component_schemas(operations: list[Operation]) -> dict:
    """Every body, query and response model's JSON Schema, by name (`$defs`), with `refs`:
    (model, mode) -> its `$ref` object."""
    wanted = {(op.body, "validation") for op in operations if op.body} | {
        (op.response, "serialization") for op in operations if op.response} | {
        (shapes.Problem, "serialization"), (shapes.PlanProblems, "serialization")}
    refs, found = models_json_schema(sorted(wanted, key=lambda pair: pair[0].__name__),
                                     ref_template=REFS)
    return {"$defs": found.get("$defs", {}), "refs": refs}


def ref(schemas: dict, model, mode: str) -> dict:
    return schemas["refs"][(model, mode)]


def operation(rule: Rule, op: Operation, schemas: dict) -> dict:
    described = {"operationId": rule.endpoint.removeprefix(api.name + "."),
                 "summary": op.summary, "tags": [rule.rule.split("/")[3]],
                 "parameters": path_parameters(rule) + query_parameters(op.query),
                 "responses": responses(rule, op, schemas)}
    if op.body is not None or op.body_media != JSON:
        media = ({"schema": {"type": "string", "maxLength": 16 * 1024 * 1024}}
                 if op.body_media != JSON else {"schema": ref(schemas, op.body, "validation")})
        described["requestBody"] = {"required": True, "content": {op.body_media: media}}
    notes = [text for flag, text in ((op.admin, "Admins only."),
                                     (op.step_up, "Needs a fresh TOTP code (step-up)."))
             if flag]
    if notes:
        described["description"] = " ".join(notes)
    return described


def path_parameters(rule: Rule) -> list[dict]:
    """Ids: ASCII digits within 63 bits (`forms.IdConverter`)."""
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 0, "maximum": forms.LARGEST}}
            for name in PLACEHOLDER.findall(rule.rule)]


def query_parameters(model) -> list[dict]:
    if model is None:
        return []
    found = []
    for name, schema in model.model_json_schema()["properties"].items():
        schema = {key: value for key, value in schema.items()
                  if key not in ("title", "default", "description")}
        choices = [item for item in schema.pop("anyOf", []) if item.get("type") != "null"]
        if choices:             # a query argument left out is the None
            schema |= choices[0] if len(choices) == 1 else {"anyOf": choices}
        described = model.model_fields[name].description or schema.pop("description", None)
        found.append({"name": name, "in": "query", "required": False, "schema": schema}
                     | ({"description": described} if described else {}))
    return found


def responses(rule: Rule, op: Operation, schemas: dict) -> dict:
    media = (ref(schemas, op.response, "serialization") if op.response is not None
             else {"type": "string"})
    answered = {str(status): {"description": "done" if status != 200 or rule.methods & {"POST"}
                              else "the page's data",
                              "content": {op.media: {"schema": media}}}
                for status in op.statuses}
    refused = {400, 401} | ({403} if op.admin else set()) | (
        {404} if rule.arguments else set()) | ({409} if "POST" in rule.methods else set()) | (
        set(op.refusals))
    for status in sorted(refused):
        model = shapes.PlanProblems if status == 422 else shapes.Problem
        answered[str(status)] = {"description": ERRORS[status], "content": {
            JSON: {"schema": ref(schemas, model, "serialization")}}}
    return answered


@api_route("/openapi.json", "openapi", response=shapes.ApiDocument)
def openapi_json():
    """This document."""
    return views.answer(shapes.ApiDocument, document())


# ---- the page -----------------------------------------------------------------------------

@bp.get("/api/docs")
def docs():
    made = document()
    operations = [(path, method, described) for path, item in made["paths"].items()
                  for method, described in item.items()]
    return render_template("apidoc.html", doc=made, operations=operations,
                           models=made["components"]["schemas"], type_text=type_text)


def type_text(schema: dict) -> str:
    """A schema in a few words for the page: `list of RecordRow`, `string ≤ 64`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(type_text(choice) for choice in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {type_text(schema.get('items', {}))}"
    if kind == "object":
        values = schema.get("additionalProperties")
        return f"object of {type_text(values)}" if isinstance(values, dict) and values else "object"
    if kind == "string":
        shown = schema.get("format") or ("one of " + ", ".join(schema["enum"])
                                         if "enum" in schema else "string")
        return f"{shown} ≤ {schema['maxLength']}" if "maxLength" in schema else shown
    if kind == "integer" and "maximum" in schema:
        return f"integer {schema.get('minimum', '')}–{schema['maximum']}"
    if kind == "null":
        return "null"
    if "enum" in schema:
        return "one of " + ", ".join(str(value) for value in schema["enum"])
    return kind or "any"
