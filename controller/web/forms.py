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
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

from controller.models import User
from shared.problems import plain

DIGITS = re.compile(r"[0-9]{1,18}")          # 10**18 - 1 < 2**63 - 1: every value fits a BIGINT
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


# ---- numbers ------------------------------------------------------------------------------

def whole_number(value: Any) -> int:
    """A non-negative int within 63 bits, from an int or from ASCII digits; else ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 18:
        return value
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError("a whole number of at most 18 digits")


def number(field: str, value: Any) -> int:
    """`value` as a whole number, or a `BadInput` naming `field`."""
    try:
        return whole_number(value)
    except ValueError as exc:
        raise BadInput({field: str(exc)}) from None


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
            raise ValueError("must not contain NUL")
        if not lines and CONTROL.search(value):
            raise ValueError("must be one line, without control characters")
        if len(value) > limit:
            raise ValueError(f"at most {limit} characters")
        return value
    return check


def text(limit: int, *, lines: bool = False, strip: bool = True):
    """A str of at most `limit` characters: one line unless `lines` (then only NUL is refused)."""
    return Annotated[str, BeforeValidator(_text(limit, lines, strip))]


Secret = text(SECRET_MAX, lines=True, strip=False)


# ---- bodies -------------------------------------------------------------------------------

class Body(BaseModel):
    """The fields of a form or a JSON object that a view reads. Fields a model does not name
    pass as they are (only checked by `check_request`)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)


class Login(Body):
    username: text(User.username.max_length) = ""
    password: Secret = ""


class NewUser(Body):
    username: text(User.username.max_length) = ""
    password: Secret = ""
    role: text(User.role.max_length) = ""
    email: text(User.email.max_length) | None = None


class Role(Body):
    role: text(User.role.max_length) = ""


class Profile(Body):
    email: text(User.email.max_length) | None = None
    file_password: Secret | None = None


class PasswordChange(Body):
    current: Secret = ""
    new: Secret = ""


class Token(Body):
    scope: text(User.api_token_scopes.max_length) | None = None


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
            raise BadInput({label(name): "must be one line, without control characters"})
        if len(value) > MAX_QUERY_VALUE:
            raise BadInput({label(name): f"at most {MAX_QUERY_VALUE} characters"})
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
                raise BadInput({label(name): "must not contain NUL"})


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
