"""How a plan rolls out: in waves with a failure brake, inside a maintenance window, under
rate limits. This module is the arithmetic (what the plan form, the CLI and the API accept,
and what an execution does with it); `controller.steering` changes executions' states by it.

A plan's rollout is stored as given (`Plan.rollout`: waves as typed, e.g. `["1", "10%",
"100%"]`); an execution keeps a copy taken when it started, its waves resolved to cumulative
counts of its accounts (`Execution.rollout`), so editing the plan never changes a run."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
MAX_WAVES = 20
WAVE = re.compile(r"^(?:(\d{1,7})|(\d{1,3}(?:\.\d{1,2})?)%)$")
LIMITS = ("asset_limit", "zone_limit", "connect_rate")
WAVES_HELP = "cumulative counts or percentages of the plan's accounts, e.g. 1,5%,25%,100%"


def parse_waves(text: str | Sequence[str]) -> list[str]:
    """`1,10%,50%,100%` (or its parts as a list) as its cleaned parts; ValueError says what is
    wrong. Each wave holds more accounts than the one before, and the last one holds them all."""
    parts = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    parts = [part for part in parts if part]
    if not parts:
        raise ValueError(f"name at least one wave: {WAVES_HELP}")
    if len(parts) > MAX_WAVES:
        raise ValueError(f"at most {MAX_WAVES} waves")
    counts, shares = [], []
    for part in parts:
        match = WAVE.match(part)
        if not match:
            raise ValueError(f"{part[:20]!r} is neither a count nor a percentage: {WAVES_HELP}")
        if match.group(1) is not None:
            counts.append(int(match.group(1)))
            if counts[-1] < 1:
                raise ValueError("a wave holds at least 1 account")
        else:
            shares.append(float(match.group(2)))
            if not 0 < shares[-1] <= 100:
                raise ValueError(f"{part} is not a share of the accounts (above 0%, at most 100%)")
    for values, unit in ((counts, ""), (shares, "%")):
        if any(later <= earlier for earlier, later in zip(values, values[1:])):
            raise ValueError(f"waves are cumulative: each {'percentage' if unit else 'count'} "
                             f"must be larger than the one before")
    if parts[-1] != "100%":
        raise ValueError("the last wave must be 100% (every account of the plan)")
    return parts


def wave_counts(waves: Sequence[str], total: int) -> list[int]:
    """The cumulative number of accounts after each wave, for a run of `total` accounts: a
    percentage rounds up (so 1% of 40 is one account), a count is capped at the total, and a
    wave that would add nobody is dropped."""
    counts: list[int] = []
    for part in waves:
        if part.endswith("%"):
            wanted = math.ceil(total * float(part[:-1]) / 100 - 1e-9)
        else:
            wanted = int(part)
        reached = min(total, max(wanted, counts[-1] if counts else 0))
        if reached > (counts[-1] if counts else 0):
            counts.append(reached)
    return counts


def parse_brake(text: str) -> str:
    """`2%` or `3`: how many failed or unverified accounts a wave may have and the next one
    still start; ValueError says what is wrong."""
    cleaned = text.strip()
    match = WAVE.match(cleaned)
    if not match or (match.group(2) is not None and float(match.group(2)) > 100):
        raise ValueError("a count of accounts (0 stops at the first failure) or a percentage "
                         "of each wave's accounts, e.g. 2%")
    return cleaned


def brake_exceeded(brake: str, failures: int, size: int) -> bool:
    """Does a wave of `size` accounts, `failures` of which failed or are unverified, stop the
    rollout under `brake`?"""
    if brake.endswith("%"):
        return failures * 100 > float(brake[:-1]) * size
    return failures > int(brake)


def spread(items: Sequence[T], *keys: Callable[[T], object]) -> list[T]:
    """`items` in an order that takes turns across the values of the first key (zones), and
    within each across those of the next (nodes, then assets): any prefix of it, a first wave,
    holds a share of every zone, node and asset in proportion to its size rather than the first
    N of one rack. Stable: items with equal keys keep their order."""
    if not keys or len(items) < 2:
        return list(items)
    groups: dict[object, list[T]] = defaultdict(list)
    for item in items:
        groups[keys[0](item)].append(item)
    placed = []
    for number, group in enumerate(groups.values()):
        ordered = spread(group, *keys[1:])
        placed += [((index + 0.5) / len(ordered), number, item)
                   for index, item in enumerate(ordered)]
    return [item for _, _, item in sorted(placed, key=lambda entry: entry[:2])]


def plan_rollout(waves, max_failures, window, limits: dict) -> dict | None:
    """What `Plan.rollout` stores for a plan's (validated) fields; None: none of them."""
    rollout = {"waves": waves, "max_failures": max_failures if waves else None,
               "window": window} | limits
    if waves and max_failures is None:
        rollout["max_failures"] = "0"
    cleaned = {key: value for key, value in rollout.items() if value is not None}
    return cleaned or None


def execution_rollout(plan_rollout_: dict | None, total: int) -> dict | None:
    """The copy an execution keeps: its waves as cumulative counts of its `total` accounts."""
    if not plan_rollout_:
        return None
    copied = dict(plan_rollout_)
    if "waves" in copied:
        copied["waves"] = wave_counts(copied["waves"], total)
    return copied


def english(text: str, **values) -> str:
    """`say` for the CLI, the API and the logs: the English phrase with its values."""
    return text % values if values else text


def english_counted(one: str, many: str, number: int, **values) -> str:
    """`say_counted` for the CLI, the API and the logs (the console's is `ngettext`)."""
    return english(one if number == 1 else many, **values)


def describe(rollout: dict | None, say: Callable[..., str] = english) -> list[str]:
    """The rollout in words, one phrase a part (a plan's or an execution's), for pages and the
    CLI. `say` puts a phrase into words (the console's `gettext`, in the page's language;
    its texts are extracted for the catalogue by that name)."""
    if not rollout:
        return []
    said = []
    if rollout.get("waves"):
        said.append(say("waves %(waves)s, brake %(brake)s",
                        waves=",".join(str(w) for w in rollout["waves"]),
                        brake=rollout.get("max_failures", "0")))
    if rollout.get("window"):
        said.append(say("window %(window)s", window=rollout["window"]))
    if rollout.get("asset_limit"):
        said.append(say("at most %(limit)s in flight per asset", limit=rollout["asset_limit"]))
    if rollout.get("zone_limit"):
        said.append(say("at most %(limit)s in flight per zone", limit=rollout["zone_limit"]))
    if rollout.get("connect_rate"):
        said.append(say("at most %(rate)s new SSH connections/s per zone",
                        rate=format(rollout["connect_rate"], "g")))
    return said
