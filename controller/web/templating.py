"""What templates use beyond the data: time and number formats (in the page's language),
the console's words for data values (`terms`), paging links, the CSRF token and the
overview's chart (an SVG drawn from the daily counts)."""
from __future__ import annotations

from datetime import datetime

from flask import Flask, request, url_for
from flask_babel import gettext

from controller.models import utcnow
from controller.web.i18n import number, time_pattern, when
from controller.web.security import csrf_token
from controller.web.terms import (labels, problem_name, problem_text, registry, said,
                                  schedule, term)

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 1000, 200, 26


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return gettext("%(hours)sh %(minutes)02dm", hours=hours, minutes=minutes)
    if minutes:
        return gettext("%(minutes)sm %(seconds)02ds", minutes=minutes, seconds=secs)
    return gettext("%(seconds)ss", seconds=secs)


def clock_words() -> dict[str, str]:
    """How `duration` and `when` say a length and a time in this language, for the script
    that updates a running execution's page (app.js): the templates with their placeholders,
    and the time's CLDR pattern."""
    return {"hm": gettext("%(hours)sh %(minutes)02dm"),
            "ms": gettext("%(minutes)sm %(seconds)02ds"),
            "s": gettext("%(seconds)ss"), "time": time_pattern()}


def ago(moment: datetime | None) -> str:
    if moment is None:
        return gettext("never")
    seconds = (utcnow() - moment).total_seconds()
    if seconds >= 0:
        return gettext("%(duration)s ago", duration=duration(seconds))
    return gettext("in %(duration)s", duration=duration(-seconds))


def page_url(**changes) -> str:
    """This page's URL with some query arguments changed (None drops one); keeps filters."""
    args = request.args.to_dict()
    args.pop("after", None)
    args.pop("before", None)
    for name, value in changes.items():
        if value is None or value == "":
            args.pop(name, None)
        else:
            args[name] = value
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def daily_chart(days: list[dict]) -> dict:
    """Stacked bars (succeeded below, failed on top) with a rounded-up scale."""
    peak = max([d["succeeded"] + d["failed"] for d in days] + [1])
    scale = nice_ceiling(peak)
    inner_h = CHART_HEIGHT - 2 * CHART_PAD
    slot = (CHART_WIDTH - 2 * CHART_PAD) / max(len(days), 1)
    bars = []
    for index, d in enumerate(days):
        ok_h = inner_h * d["succeeded"] / scale
        bad_h = inner_h * d["failed"] / scale
        x = CHART_PAD + index * slot + slot * 0.15
        base = CHART_HEIGHT - CHART_PAD
        bars.append({"x": round(x, 1), "w": round(slot * 0.7, 1), "day": d["day"],
                     "ok_y": round(base - ok_h, 1), "ok_h": round(ok_h, 1),
                     "bad_y": round(base - ok_h - bad_h, 1), "bad_h": round(bad_h, 1),
                     "succeeded": d["succeeded"], "failed": d["failed"],
                     "label": d["day"][5:] if len(days) <= 10 or index % 5 == 0 else ""})
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "pad": CHART_PAD, "bars": bars,
            "scale": scale, "mid": scale / 2,
            "mid_y": CHART_PAD + inner_h / 2, "base_y": CHART_HEIGHT - CHART_PAD}


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 × 10^n at or above `value`."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def install(app: Flask) -> None:
    app.jinja_env.filters.update(when=when, duration=duration, ago=ago, number=number,
                               term=term, registry=registry, said=said,
                               schedule=schedule)
    app.jinja_env.globals.update(csrf_token=csrf_token, page_url=page_url,
                                 daily_chart=daily_chart, labels=labels, clock_words=clock_words,
                                 problem_name=problem_name, problem_text=problem_text)
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
