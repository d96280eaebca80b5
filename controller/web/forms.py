"""What a request may carry, checked before anything reaches the database.

Ids and counts are ASCII digits within 63 bits (`str.isdigit()` also takes '²' and '١٢٣');
text has no NUL, single-line text no control character, and no text is longer than its
column; request bodies are the pydantic models below (the inventory's and the plans' fields
are checked by `controller.names` and `controller.plans.PlanSpec`, shared with the CLI). A
bad value is a 400 that names the field and says what it must be, never quoting the value."""
from __future__ import annotations

import json
import re
from typing import Annotated, Any

from flask import request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

from controller.models import Account, Asset, Node, User, Zone
from shared.errors import N_, Invalid, Said, translated
from shared.problems import plain

DIGITS = re.compile(r"[0-9]{1,18}")          # 10**18 - 1 < 2**63 - 1: every value fits a BIGINT
LARGEST = 10 ** 18 - 1
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NUL = "\x00"
MAX_DEPTH = 32                # JSON nesting; no body of ours nests more than three levels
MAX_QUERY_VALUE = 1024        # any query argument: longer than every column it is compared with
SECRET_MAX = 16 * 1024        # a password or an OpenSSH private key (RSA 8192 with passphrase)


class BadInput(BadRequest):
    """Request values that are not what their fields take: a 400 naming each field."""

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems.items()))
        self.fields = list(problems)
        self.problems = problems

    def said(self, translate) -> str:
        """The problems through `translate` (a gettext; `Said` ones filled in), each field by
        its label in that language when the catalogue has one."""
        return "; ".join(f"{translated(field, translate)}: {translated(problem, translate)}"
                         for field, problem in self.problems.items())


# ---- numbers ------------------------------------------------------------------------------

def whole_number(value: Any) -> int:
    """A non-negative int within 63 bits, from an int or from ASCII digits; else ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 18:
        return value
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    raise Invalid(N_("a whole number of at most 18 digits"))


def number(field: str, value: Any) -> int:
    """`value` as a whole number, or a `BadInput` naming `field`."""
    try:
        return whole_number(value)
    except ValueError as exc:
        raise BadInput({field: Said(exc.template)}) from None


def int_arg(name: str, default: int | None = None) -> int | None:
    """The request argument `name` (query or form field) as a whole number; `default` when
    absent or blank."""
    value = request.values.get(name, "")
    return number(name, value) if value.strip() else default


class IdConverter(IntegerConverter):
    """`<int:...>` in routes: ASCII digits within 63 bits, so an id past a BIGINT is a 404
    before any query (werkzeug's own takes any length, and any Unicode decimal digit)."""

    regex = DIGITS.pattern


# ---- text ---------------------------------------------------------------------------------

def _text(limit: int, lines: bool, strip: bool):
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value            # pydantic names the wrong type
        value = value.strip() if strip else value
        if NUL in value:
            raise Invalid(N_("must not contain NUL"))
        if not lines and CONTROL.search(value):
            raise Invalid(N_("must be one line, without control characters"))
        if len(value) > limit:
            raise Invalid(N_("at most %(max_length)s characters"), max_length=limit)
        return value
    return check


def text(limit: int, *, lines: bool = False, strip: bool = True):
    """A str of at most `limit` characters: one line unless `lines` (then only NUL is refused)."""
    shape = {"type": "string", "maxLength": limit,
             "pattern": "^[^\\u0000]*$" if lines else "^[^\\u0000-\\u001f\\u007f]*$"}
    return Annotated[str, BeforeValidator(_text(limit, lines, strip)), WithJsonSchema(shape)]


Secret = text(SECRET_MAX, lines=True, strip=False)
Query = text(MAX_QUERY_VALUE)


def _whole_or_blank(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return whole_number(value)


def _flag(value: Any) -> Any:
    """A form's checkbox: absent or blank is off, any other text is on; JSON sends a bool."""
    if value is None or value == "":
        return False
    return bool(value) if isinstance(value, str) else value


# A whole number within 63 bits, from a JSON number or ASCII digits; blank: not given.
WholeNumber = Annotated[int | None, BeforeValidator(_whole_or_blank), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": LARGEST}, {"type": "null"}]})]
Flag = Annotated[bool, BeforeValidator(_flag), WithJsonSchema({"type": "boolean"})]
# A flag an edit may leave out: null or absent keeps the value, else as `Flag`.
KeptFlag = Annotated[bool | None, BeforeValidator(lambda value: None if value is None
                                                   else _flag(value)),
                     WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "null"}]})]


# ---- bodies -------------------------------------------------------------------------------

class Body(BaseModel):
    """The fields of a form or a JSON object that a view reads. Fields a model does not name
    pass as they are (only checked by `check_request`)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)


class StepUp(Body):
    """What an action that needs a fresh TOTP check also takes: the code (a session's recent
    check, or a token scope, may stand for it)."""

    code: text(16) | None = Field(None, description="a TOTP code from the user's authenticator")


class Login(Body):
    username: text(User.username.max_length) = ""
    password: Secret = ""


class NewUser(StepUp):
    username: text(User.username.max_length) = ""
    password: Secret = ""
    role: text(User.role.max_length) = ""
    email: text(User.email.max_length) | None = None


class Role(StepUp):
    role: text(User.role.max_length) = ""


class Profile(Body):
    email: text(User.email.max_length) | None = None
    file_password: Secret | None = None
    # The console's language (`controller.web.i18n.LANGUAGES`); blank: the browser's; absent: kept.
    language: text(User.language.max_length) | None = None


class PasswordChange(Body):
    current: Secret = ""
    new: Secret = ""


class Token(StepUp):
    scope: text(User.api_token_scopes.max_length) | None = None


class NewZone(Body):
    name: text(Zone.name.max_length) = ""
    public_key: text(Zone.public_key.max_length) | None = Field(
        None, description="the zone's base64 Curve25519 key; none: a key pair is made here")
    trust_first_use: Flag = False


class NewNode(Body):
    path: text(Node.path.max_length) = Field("", description="e.g. /prod/web")


class NewAsset(Body):
    name: text(Asset.name.max_length) = ""
    address: text(Asset.address.max_length) = ""
    port: Annotated[WholeNumber, WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "null"}]})] = Field(
        None, description="none: the platform's default")
    platform: text(Asset.platform.max_length) = ""
    zone: text(Zone.name.max_length) = ""
    node: text(Node.path.max_length) | None = None
    host_key: text(4096) | None = Field(None, description="an OpenSSH public key line to pin")
    params: dict[str, Any] | None = Field(None, description="the platform's params")


class AccountFields(Body):
    username: text(Account.username.max_length) = ""
    secret: Secret | None = Field(None, description="becomes its current secret")
    privileged: Flag = False
    secret_type: text(Account.secret_type.max_length) | None = None


class AssetEdit(Body):
    """The fields an edit changes (those not sent stay); blank or null: the default."""

    name: text(Asset.name.max_length) | None = None
    address: text(Asset.address.max_length) | None = None
    port: Annotated[WholeNumber, WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "null"}]})] = Field(
        None, description="null: the platform's default")
    platform: text(Asset.platform.max_length) | None = Field(
        None, description="its params and host key go unless sent too")
    zone: text(Zone.name.max_length) | None = None
    node: text(Node.path.max_length) | None = Field(None, description="blank: in no node")
    host_key: text(4096) | None = Field(None, description="blank: none pinned")
    params: dict[str, Any] | None = Field(None, description="replaces its params")


class AccountEdit(Body):
    """What an account edit changes (null or not sent: kept)."""

    username: text(Account.username.max_length) | None = None
    privileged: KeptFlag = None
    secret: Secret | None = Field(None, description="becomes its current secret")
    secret_type: text(Account.secret_type.max_length) | None = None


class NodeEdit(Body):
    path: text(Node.path.max_length) = Field("", description="its new path, e.g. /eu/web")


class NodeDelete(Body):
    confirm: Flag = Field(False, description="delete it with the nodes and assets under it")


class ZoneEdit(Body):
    name: text(Zone.name.max_length) | None = Field(
        None, description="its new name (its workers need restarting with it)")
    trust_first_use: KeptFlag = None


# ---- query strings ------------------------------------------------------------------------

Size = Annotated[WholeNumber, WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": 500}, {"type": "null"}]})]


class ById(Body):
    """A page of a list kept in id order: `after`/`before` are ids from the last answer."""

    size: Size = Field(None, description="rows a page holds (at most 500)")
    after: WholeNumber = None
    before: WholeNumber = None


class ByName(Body):
    """A page of a list kept in name order: `after`/`before` are names from the last answer."""

    size: Size = Field(None, description="rows a page holds (at most 500)")
    after: Query = ""
    before: Query = ""


class OverviewQuery(Body):
    days: Annotated[WholeNumber, Field(description="7 or 30 (other values: 7)")] = None


class PlanQuery(ByName):
    q: Query = Field("", description="part of a plan's name")


class ExecutionQuery(ById):
    plan: Query = ""
    status: Query = ""
    trigger: Query = ""


class RecordQuery(ById):
    plan: Query = ""
    execution: WholeNumber = None
    asset: Query = ""
    account: Query = ""
    status: Query = ""


class LogFilterQuery(Body):
    level: Query = Field("", description="warning: warnings and errors; error: errors only")
    account: Query = Field("", description="part of user@asset: that account's lines only")


class LogQuery(LogFilterQuery):
    after: Annotated[WholeNumber, Field(description="the last log line's id already read")] = None


class ExecutionPageQuery(ById, LogFilterQuery):
    log_before: Annotated[WholeNumber, Field(
        description="show the log lines before this line's id (paging back)")] = None


class AssetQuery(ByName):
    q: Query = Field("", description="part of a name or an address")
    node: Query = Field("", description="a node's path")


class AccountQuery(ById):
    asset: Query = ""
    username: Query = ""
    privileged: Query = Field("", description="any value: privileged accounts only")


class AuditQuery(ById):
    actor: Query = Field("", description="exactly this actor")
    action: Query = Field("", description="exactly this action, or a kind ending in . or *")
    target: Query = Field("", description="this target or what is under it")
    outcome: Query = Field("", description="done or refused")
    since: Query = Field("", description="from this date or UTC time on")
    until: Query = Field("", description="to the end of this date, or before this UTC time")


def parse(model: type[Body], data: Any) -> dict:
    """`data` as `model` would have it, as a dict (extra fields kept), or `BadInput` naming
    every bad field (never quoting its value)."""
    try:
        return model.model_validate(data).model_dump()
    except ValidationError as exc:
        problems = {}
        for error in exc.errors(include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or "body"
            problems.setdefault(field, plain(error))
        raise BadInput(problems) from None


# ---- the whole request --------------------------------------------------------------------

def check_request() -> None:
    """Before any view: query arguments are short single-line text, form fields hold no NUL,
    a JSON body parses, nests at most `MAX_DEPTH` deep and holds no NUL."""
    for name, value in request.args.items(multi=True):
        if CONTROL.search(value):
            raise BadInput({label(name): Said(N_("must be one line, without control characters"))})
        if len(value) > MAX_QUERY_VALUE:
            raise BadInput({label(name): Said(N_("at most %(max_length)s characters"),
                                              max_length=MAX_QUERY_VALUE)})
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if request.is_json and request.get_data():
        try:
            check_json(json.loads(request.get_data()))
        except (ValueError, RecursionError):
            raise BadInput({"body": "not valid JSON"}) from None
    else:
        for name, value in request.form.items(multi=True):
            if NUL in value:
                raise BadInput({label(name): Said(N_("must not contain NUL"))})


def label(name: str) -> str:
    """A field's name as a message may say it: one of ours is short and printable."""
    return name if len(name) <= 64 and not CONTROL.search(name) else "a field"


def check_json(body: Any) -> None:
    """Walk `body` without recursion: no deeper than `MAX_DEPTH`, no NUL in keys or strings."""
    pending = [(body, 0, "body")]
    while pending:
        value, depth, where = pending.pop()
        if depth > MAX_DEPTH:
            raise BadInput({"body": f"nested deeper than {MAX_DEPTH} levels"})
        if isinstance(value, str) and NUL in value:
            raise BadInput({where: "must not contain NUL"})
        if isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    raise BadInput({where: "field names must not contain NUL"})
                pending.append((item, depth + 1, label(key) if depth == 0 else where))
        elif isinstance(value, list):
            pending.extend((item, depth + 1, where) for item in value)
