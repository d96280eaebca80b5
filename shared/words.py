"""Counted nouns for messages the CLI and the console print: "1 record", "2 records"."""
from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """`count` and `word`, or `many` (default: `word` + "s") unless the count is one."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"
