"""pydantic's validation errors in the words keyturn uses with people: "give at least 1",
"a whole number", "one of 'random' or 'specific'", never "List should have at least 1 item
after validation". One place for the CLI, the console, the API and CSV import."""
from __future__ import annotations

import re

CHOICES = re.compile(r"\^\(([\w-]+(?:\|[\w-]+)+)\)\$")      # a pattern that only lists values

WORDS = {
    "missing": "is required",
    "too_short": "give at least {min_length}",
    "too_long": "give at most {max_length}",
    "string_too_short": "at least {min_length} characters",
    "string_too_long": "at most {max_length} characters",
    "string_pattern_mismatch": "does not have the form it takes",
    "string_type": "must be text",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of {expected}",
    "extra_forbidden": "is not a field here",
}


def plain(error: dict) -> str:
    """One pydantic error (from `errors(include_input=False)`) as a short phrase; a validator's
    own ValueError keeps its words."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    choices = kind == "string_pattern_mismatch" and CHOICES.fullmatch(str(ctx.get("pattern", "")))
    if choices:                                    # `^(quorum|classic)$`: say the values
        return "must be one of " + ", ".join(choices.group(1).split("|"))
    words = WORDS.get(kind)
    if words is None:
        return error["msg"].removeprefix("Value error, ")
    try:
        return words.format(**ctx)
    except (KeyError, IndexError):
        return error["msg"]
