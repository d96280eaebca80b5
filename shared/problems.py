"""pydantic's validation errors in the words keyturn uses with people: "give at least 1",
"a whole number", "one of 'random' or 'specific'", never "List should have at least 1 item
after validation". One place for the CLI, the console, the API and CSV import."""
from __future__ import annotations

import re

from shared.errors import N_, FieldError, KeyturnError, Said

PARAMS = re.compile(r"%\((\w+)\)s")
CHOICES = re.compile(r"\^\(([\w-]+(?:\|[\w-]+)+)\)\$")      # a pattern that only lists values

WORDS = {
    "missing": N_("is required"),
    "too_short": N_("give at least %(min_length)s"),
    "too_long": N_("give at most %(max_length)s"),
    "string_too_short": N_("at least %(min_length)s characters"),
    "string_too_long": N_("at most %(max_length)s characters"),
    "string_pattern_mismatch": N_("does not have the form it takes"),
    "string_type": N_("must be text"),
    "int_parsing": N_("must be a whole number"),
    "int_type": N_("must be a whole number"),
    "int_from_float": N_("must be a whole number"),
    "float_parsing": N_("must be a number"),
    "float_type": N_("must be a number"),
    "bool_parsing": N_("must be true or false"),
    "bool_type": N_("must be true or false"),
    "list_type": N_("must be a list"),
    "dict_type": N_("must be an object"),
    "greater_than": N_("must be more than %(gt)s"),
    "greater_than_equal": N_("must be at least %(ge)s"),
    "less_than": N_("must be less than %(lt)s"),
    "less_than_equal": N_("must be at most %(le)s"),
    "literal_error": N_("must be one of %(expected)s"),
    "extra_forbidden": N_("is not a field here"),
}


def plain(error: dict) -> Said:
    """One pydantic error (from `errors(include_input=False)`) as a short phrase (a `Said`: the
    console says it in the page's language); a validator's own ValueError keeps its words."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    choices = kind == "string_pattern_mismatch" and CHOICES.fullmatch(str(ctx.get("pattern", "")))
    if choices:                                    # `^(quorum|classic)$`: say the values
        return Said(N_("must be one of %(choices)s"), choices=", ".join(choices.group(1).split("|")))
    rule = ctx.get("error")
    if isinstance(rule, KeyturnError) and not isinstance(rule, FieldError):
        return Said(rule.template, **rule.params)
    words = WORDS.get(kind)
    if words is None:
        return Said(error["msg"].removeprefix("Value error, "))
    try:
        return Said(words, **{name: ctx[name] for name in PARAMS.findall(words)})
    except KeyError:
        return Said(error["msg"])
