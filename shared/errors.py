"""The root of keyturn's own errors: the CLI prints any of them as one line, never a traceback.

An error is raised with a message template and its parameters, `KeyturnError("no plan named
%(name)s", name=name)`: its text (`str(exc)`, what the CLI, the API, the audit log and the logs
say) is the template filled in, in English; the console says the same through `exc.said(gettext)`,
the template in the page's language filled with the same parameters (data: names, values, stay
as they are). The templates are extracted for the console's catalogue by the names of the
error classes (`controller.web.catalogue.KEYWORDS`)."""
from __future__ import annotations

from typing import Callable


def N_(text: str) -> str:
    """Marks a text for the console's catalogue (translated where it is shown)."""
    return text


def english(text: str) -> str:
    return text


def fill(template: str, params: dict, translate: Callable[[str], str] | None = None) -> str:
    """`template` % `params`; a template that names no parameter is taken as it is. With
    `translate`, a parameter that is a `Said` (a phrase of ours inside another) is said
    through it too; any other parameter is data, filled in as it is."""
    if translate is not None:
        params = {name: translated(value, translate) if isinstance(value, Said) else value
                  for name, value in params.items()}
    return template % params if params else template


class Said(str):
    """A message as a str (its English text, what is stored, sent or joined) that remembers
    its template and parameters, so the console can say it in the page's language."""

    template: str
    params: dict

    def __new__(cls, template: str, /, **params):
        said = super().__new__(cls, fill(template, params))
        said.template, said.params = template, params
        return said


def counted(count: int, one: str, many: str) -> Said:
    """A counted noun as a `Said` ("1 asset", "2 assets", as `shared.words.plural` says it):
    each form is a template of its own (mark both with `N_`)."""
    return Said(one if count == 1 else many, count=f"{count:,}")


def translated(text, translate: Callable[[str], str]) -> str:
    """`text` (a `Said`, a `KeyturnError`, or plain text: a template without parameters)
    through `translate` (a gettext); empty stays empty (gettext("") is a catalogue's header)."""
    if isinstance(text, KeyturnError):
        return text.said(translate)
    if isinstance(text, Said):
        return fill(translate(text.template), text.params, translate)
    return translate(text) if text else ""


class KeyturnError(Exception):
    """A failure with a message meant for the operator (and free of secrets)."""

    def __init__(self, message: str = "", /, **params):
        self.template = message
        self.params = params
        super().__init__(fill(message, params))

    def said(self, translate: Callable[[str], str] = english) -> str:
        """The message through `translate` (a gettext), its parameters filled in."""
        if not self.template:
            return str(self.args[0]) if self.args else ""
        return fill(translate(self.template), self.params, translate)

    def __str__(self) -> str:
        return self.said()


class FieldError(KeyturnError):
    """A field's value breaks its rule: "`field`: `message`" (`message` a template as above;
    the field's name is data, said as it is)."""

    def __init__(self, field: str, message: str, /, **params):
        super().__init__(message, **params)
        self.field = field

    @property
    def message(self) -> Said:
        """What is wrong with the field, without its name."""
        return Said(self.template, **self.params)

    def said(self, translate: Callable[[str], str] = english) -> str:
        return f"{self.field}: {super().said(translate)}"


class Invalid(KeyturnError, ValueError):
    """A value a validator refuses (a ValueError, so that pydantic reports it by field)."""
