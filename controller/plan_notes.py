"""What an operator is told when a plan is saved, before it ever runs: the accounts secure mode
will skip (names a platform protects, and accounts that are their asset's privileged one,
whatever their name) and the recipients no result mail reaches. The CLI prints these notes,
the console shows them as warnings, the API returns them."""
from __future__ import annotations

from peewee import JOIN

from controller.models import Account, Asset, Node, Plan
from controller.notify import recipients
from controller.planning import plan_assets
from shared.platforms import PLATFORMS
from shared.words import plural

ASSETS_NAMED = 3


def plan_notes(plan: Plan, secure_mode: bool) -> list[str]:
    notes = []
    if secure_mode:
        notes += [f"secure mode is on, so {name} will be skipped (it is protected on "
                  f"{', '.join(where)})" for name, where in protected_names(plan.usernames)]
        notes += [f"secure mode is on, so {name} will be skipped on {assets}: it is the "
                  f"privileged account there" for name, assets in privileged_targets(plan)]
    unreachable = recipients(plan)[1]
    if unreachable:
        notes.append(f"no result mail reaches {', '.join(unreachable)}: "
                     f"{'it has' if len(unreachable) == 1 else 'they have'} no email address "
                     "(or no active user of that name)")
    return notes


def protected_names(usernames: list[str]) -> list[tuple[str, list[str]]]:
    """Each username some platform protects, with the titles of those platforms."""
    found = []
    for name in usernames:
        where = [kind.title for kind in PLATFORMS.values()
                 if name.lower() in kind.protected_usernames]
        if where:
            found.append((name, where))
    return found


def privileged_targets(plan: Plan) -> list[tuple[str, str]]:
    """Each of the plan's usernames that is the privileged account of an asset it targets,
    with those assets named (the first few, then how many more)."""
    protected = {name.lower() for name, _ in protected_names(plan.usernames)}
    on: dict[str, list[str]] = {}
    for username, asset in (Account.select(Account.username, Asset.name).join(Asset)
                            .join(Node, JOIN.LEFT_OUTER)
                            .where(Account.privileged & Account.username.in_(plan.usernames)
                                   & plan_assets(plan))
                            .order_by(Account.username, Asset.name).tuples()):
        if username.lower() not in protected:
            on.setdefault(username, []).append(asset)
    return [(name, ", ".join(assets[:ASSETS_NAMED]) + (
        f" and {plural(len(assets) - ASSETS_NAMED, 'more asset')}" if len(assets) > ASSETS_NAMED
        else "")) for name, assets in on.items()]
