"""The part of an execution's log a page or a poll shows. A 10,000-account execution writes some
40,000 lines, so nothing loads them all: the page shows the latest `LOG_SHOWN` (or those before a
cursor, to page back), the live poll takes at most `LOG_SHOWN` after the last one it has, and
both may narrow to the problems (warnings and errors) or to one account's lines."""
from __future__ import annotations

from typing import NamedTuple

from peewee import JOIN, fn

from controller.models import Account, Asset, LogLine, Record
from controller.web import serialize

LOG_SHOWN = 500
LEVELS = {"": None, "warning": ("warning", "error"), "error": ("error",)}


class LogFilter(NamedTuple):
    """What the reader narrowed the log to: a level (`LEVELS`) and part of `user@asset`."""

    level: str = ""
    account: str = ""

    def args(self) -> dict[str, str]:
        """As query arguments (those set), for links and the poll."""
        return {name: value for name, value in self._asdict().items() if value}


class LogWindow(NamedTuple):
    lines: list[dict]
    older: int | None        # the cursor of the page before (None: this is the first line)


def log_filter(level: str, account: str) -> LogFilter:
    return LogFilter(level if level in LEVELS else "", account.strip())


def matching(execution_id: int, wanted: LogFilter):
    """The condition on LogLine for one execution's lines that pass the filter."""
    condition = LogLine.execution == execution_id
    if LEVELS[wanted.level]:
        condition &= LogLine.level.in_(LEVELS[wanted.level])
    if wanted.account:
        name = (fn.COALESCE(Account.username, Record.account_name).concat("@")
                .concat(fn.COALESCE(Asset.name, Record.asset_name)))
        records = (Record.select(Record.id).join(Account, JOIN.LEFT_OUTER)
                   .join(Asset, JOIN.LEFT_OUTER)
                   .where((Record.execution == execution_id) & name.contains(wanted.account)))
        condition &= LogLine.record.in_(records)
    return condition


def latest(execution_id: int, wanted: LogFilter = LogFilter(), before: int | None = None,
           limit: int = LOG_SHOWN) -> LogWindow:
    """The last `limit` lines (before the line `before`), oldest first."""
    condition = matching(execution_id, wanted)
    if before is not None:
        condition &= LogLine.id < before
    rows = list(LogLine.select().where(condition).order_by(LogLine.id.desc()).limit(limit + 1))
    older = rows[limit - 1].id if len(rows) > limit else None
    return LogWindow([serialize.log_row(line) for line in reversed(rows[:limit])], older)


def after(execution_id: int, last: int, wanted: LogFilter = LogFilter(),
          limit: int = LOG_SHOWN) -> list[dict]:
    """Up to `limit` lines after the line `last`, oldest first (what the live poll appends)."""
    return [serialize.log_row(line) for line in LogLine.select()
            .where(matching(execution_id, wanted) & (LogLine.id > last))
            .order_by(LogLine.id).limit(limit)]


def last_id(execution_id: int) -> int:
    """The newest line's id (0: none), from which a page that shows older lines polls."""
    return (LogLine.select(fn.MAX(LogLine.id)).where(LogLine.execution == execution_id)
            .scalar() or 0)
