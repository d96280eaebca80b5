"""Keyset paging shared by every list: a page is `LIMIT size+1` rows past a cursor on a unique
indexed column, so page 1 and page 2,000 cost the same and nothing loads a whole table."""
from __future__ import annotations

from flask import request
from peewee import Field, SelectQuery

from controller.web.forms import int_arg

DEFAULT_SIZE = 50
MAX_SIZE = 500


def page_size() -> int:
    return max(1, min(int_arg("size", DEFAULT_SIZE), MAX_SIZE))


def keyset(query: SelectQuery, key: Field, *, descending: bool = True, serialize=lambda row: row,
           count: SelectQuery | None = None) -> dict:
    """One page of `query` ordered by `key`, after `?after=` or before `?before=` (a key value).
    Returns the serialized items, the cursors of the neighbouring pages (None at either end)
    and the number of rows that match (from `count`, a lighter query, when given)."""
    size = page_size()
    after, before = cursor(key, "after"), cursor(key, "before")
    filtered = query
    if before is not None:
        filtered = filtered.where(key > before if descending else key < before)
        order = key.asc() if descending else key.desc()
    else:
        if after is not None:
            filtered = filtered.where(key < after if descending else key > after)
        order = key.desc() if descending else key.asc()
    rows = list(filtered.order_by(order).limit(size + 1))
    more = len(rows) > size
    rows = rows[:size]
    if before is not None:
        rows.reverse()
    keys = [getattr(row, key.name) for row in rows]
    has_next = more if before is None else True
    has_prev = after is not None if before is None else more
    return {"items": [serialize(row) for row in rows],
            "total": (count if count is not None else query).count(),
            "after": keys[-1] if keys and has_next else None,
            "before": keys[0] if keys and has_prev else None,
            "size": size}


def cursor(key: Field, name: str):
    """The `?after=`/`?before=` value in the key's type; None when absent."""
    if isinstance(key.db_value(0), int):
        return int_arg(name)
    return request.args.get(name) or None
