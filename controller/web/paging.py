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
    return keyset_union([query], key, descending=descending, serialize=serialize,
                        counts=[query if count is None else count])


def keyset_union(queries: list[SelectQuery], key: Field, *, descending: bool = True,
                 serialize=lambda row: row, counts: list[SelectQuery]) -> dict:
    """`keyset` over the union of `queries`, which match disjoint rows (the total is the sum
    of `counts`): each is paged alone and the pages merged by `key`. A filter that is an OR of
    two conditions on different indexes (an account's records, and those kept by name after
    it was deleted) stays a scan of the whole table on PostgreSQL; as two queries each uses
    its own index."""
    size = page_size()
    after, before = cursor(key, "after"), cursor(key, "before")
    rows = []
    for query in queries:
        rows += page_rows(query, key, descending, after, before, size + 1)
    if len(queries) > 1:      # one query's rows are in the database's order already
        rows.sort(key=lambda row: getattr(row, key.name), reverse=descending == (before is None))
    more = len(rows) > size
    rows = rows[:size]
    if before is not None:
        rows.reverse()
    keys = [getattr(row, key.name) for row in rows]
    has_next = more if before is None else True
    has_prev = after is not None if before is None else more
    return {"items": [serialize(row) for row in rows],
            "total": sum(count.count() for count in counts),
            "after": keys[-1] if keys and has_next else None,
            "before": keys[0] if keys and has_prev else None,
            "size": size}


def page_rows(query: SelectQuery, key: Field, descending: bool, after, before,
              limit: int) -> list:
    """The first `limit` rows of `query` past the cursor, nearest the cursor first."""
    if before is not None:
        query = query.where(key > before if descending else key < before)
        order = key.asc() if descending else key.desc()
    else:
        if after is not None:
            query = query.where(key < after if descending else key > after)
        order = key.desc() if descending else key.asc()
    return list(query.order_by(order).limit(limit))


def cursor(key: Field, name: str):
    """The `?after=`/`?before=` value in the key's type; None when absent."""
    if isinstance(key.db_value(0), int):
        return int_arg(name)
    return request.args.get(name) or None
