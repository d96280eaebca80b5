"""Least-privilege RabbitMQ accounts, derived from the bus names in `shared.broker`, and the
`keyturn broker-account` commands that print them or set them with `rabbitmqctl`.

RabbitMQ checks three regexes per user and virtual host: configure (declare, delete), write
(publish to an exchange; bind to a queue) and read (consume; bind from an exchange), and topic
permissions on the routing keys of a topic exchange. dramatiq's messages go through the
`keyturn.bus` topic exchange (`shared.bus`), so topic permissions say which queues a zone's
workers may publish to; none of these accounts but the controller's may use the default
exchange, which reaches every queue.
"""
from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass

import click
import pika
from dramatiq.common import dq_name, xq_name

from shared.bounded import ZONE_NAME
from shared.broker import (BUS_EXCHANGE, EVENTS_EXCHANGE, HEARTBEATS_QUEUE, REQUESTS_QUEUE,
                           RESULTS_QUEUE, WORKER_PUBLISHES, rotate_queue)
from shared.errors import KeyturnError
from shared.settings import load_settings

DEFAULT_EXCHANGE = "amq.default"          # how RabbitMQ names the default exchange in permissions
NOTHING = "^$"
ANY_ZONE = ZONE_NAME.pattern.removeprefix(r"\A").removesuffix(r"\Z")
INTEGRATION_PREFIX = "integration"
BROKER_NAME = re.compile(r"\A[\x21-\x7e]{1,255}\Z")   # a user or virtual host name we pass on


@dataclass(frozen=True)
class Account:
    role: str                  # what the account is for, for people
    user: str
    configure: str
    write: str
    read: str
    topics: tuple[tuple[str, str, str], ...] = ()   # (topic exchange, write regex, read regex)


def alternatives(*patterns: str) -> str:
    """A regex matching exactly one of these patterns."""
    return "^(" + "|".join(patterns) + ")$"


def only(*names: str) -> str:
    """A regex matching exactly these names."""
    return alternatives(*map(re.escape, names))


def with_companions(queue: str) -> tuple[str, str, str]:
    """A dramatiq queue with its delay queue (retries) and dead-letter queue."""
    return queue, dq_name(queue), xq_name(queue)


def zone_account(zone: str, user: str | None = None) -> Account:
    """A zone's workers: consume and retry their own zone's queue, publish results and
    heartbeats, nothing else (no other zone's queue, no results, no dead letters; they create
    and delete nothing: the controller declares their queues)."""
    check_name("zone", zone)
    queue, delay, _dead = with_companions(rotate_queue(zone))
    return Account(f"the workers of zone {zone}", user or f"keyturn-zone-{zone}",
                   configure=NOTHING,
                   write=only(BUS_EXCHANGE, queue, delay),   # publish; bind its queues to the bus
                   read=only(BUS_EXCHANGE, queue, delay),    # consume; bind from the bus
                   topics=((BUS_EXCHANGE, only(*WORKER_PUBLISHES, queue, delay),
                            only(queue, delay)),))


def controller_account(user: str | None = None) -> Account:
    """The controller (daemon, console, CLI): every keyturn queue and exchange, and the default
    exchange (it publishes commands to each zone and replies to integrations' reply queues)."""
    names = [BUS_EXCHANGE, EVENTS_EXCHANGE]
    for queue in (RESULTS_QUEUE, HEARTBEATS_QUEUE, REQUESTS_QUEUE):
        names += with_companions(queue)
    suffixes = "|".join(map(re.escape, with_companions("")[1:]))     # .DQ, .XQ
    every_zone = f"{re.escape(rotate_queue(''))}{ANY_ZONE}({suffixes})?"
    own = [*map(re.escape, names), every_zone]
    return Account("the controller", user or "keyturn-controller", configure=alternatives(*own),
                   write=alternatives(re.escape(DEFAULT_EXCHANGE), *own),
                   read=alternatives(*own))


def integration_account(name: str, user: str | None = None) -> Account:
    """Another system: publish requests only, read events through queues of its own named
    `integration.NAME.*` (for events bound to keyturn.events, for replies)."""
    check_name("integration", name)
    own = re.escape(f"{INTEGRATION_PREFIX}.{name}.") + ".+"
    return Account(f"the integration {name}", user or f"keyturn-integration-{name}",
                   configure=f"^{own}$",
                   write=f"^({re.escape(BUS_EXCHANGE)}|{own})$",      # publish; bind own queues
                   read=f"^({re.escape(EVENTS_EXCHANGE)}|{own})$",    # consume; bind from events
                   topics=((BUS_EXCHANGE, only(REQUESTS_QUEUE), NOTHING),
                           (EVENTS_EXCHANGE, NOTHING, ".*")))


def check_name(kind: str, name: str) -> None:
    if not ZONE_NAME.match(name):
        raise KeyturnError(f"{kind} name {name!r}: use lowercase ASCII letters, digits, - and _")


def permission_commands(account: Account, vhost: str, *, new_user: bool = False) -> list[list[str]]:
    """rabbitmqctl arguments that give `account` exactly its permissions (an existing user's
    stale topic permissions cleared first)."""
    commands = [["set_permissions", "-p", vhost, account.user, account.configure, account.write,
                 account.read]]
    if not new_user:
        commands.append(["clear_topic_permissions", "-p", vhost, account.user])
    commands += [["set_topic_permissions", "-p", vhost, account.user, exchange, write, read]
                 for exchange, write, read in account.topics]
    return commands


class Rabbitmqctl:
    """Runs rabbitmqctl (a command line such as `rabbitmqctl -n rabbit@mq`); a password goes on
    its standard input, never on a command line."""

    def __init__(self, command: str):
        self.argv = shlex.split(command)

    def run(self, args: list[str], stdin: str | None = None, *, unless: str | None = None) -> bool:
        """Run one command; False if it failed saying `unless`, KeyturnError for other failures."""
        try:
            done = subprocess.run([*self.argv, "-q", *args], input=stdin, capture_output=True,
                                  text=True, timeout=120)
        except FileNotFoundError:
            raise KeyturnError(f"{self.argv[0]} not found: run this on a RabbitMQ node, or "
                               f"name it with --rabbitmqctl") from None
        if done.returncode == 0:
            return True
        said = (done.stderr or done.stdout).strip()
        if unless and unless in said:
            return False
        raise KeyturnError(f"rabbitmqctl {args[0]} failed: "
                           f"{(said.splitlines() or ['no output'])[-1][:300]}")


def apply(account: Account, vhost: str, ctl: Rabbitmqctl, password: str | None) -> str | None:
    """Create the user (or keep it, changing its password only if one is given) and set its
    permissions; returns the password when it was generated here."""
    generated = None if password else secrets.token_urlsafe(24)
    created = ctl.run(["add_user", account.user], stdin=f"{password or generated}\n",
                      unless="already exists")
    if not created:
        generated = None
        if password:
            ctl.run(["change_password", account.user], stdin=password + "\n")
    for args in permission_commands(account, vhost, new_user=created):
        ctl.run(args)
    return generated


# ---- the commands ------------------------------------------------------------------------

def account_options(command):
    for option in reversed([
        click.option("--vhost", help="RabbitMQ virtual host (default: KEYTURN_BROKER_URL's, "
                                     "else /)."),
        click.option("--user", help="RabbitMQ user name (default: keyturn-<role>[-NAME])."),
        click.option("--apply", "do_apply", is_flag=True,
                     help="Run the commands (creates the user with a generated password, "
                          "printed once, unless --password-stdin)."),
        click.option("--password-stdin", is_flag=True,
                     help="With --apply: the user's password from standard input."),
        click.option("--rabbitmqctl", "rabbitmqctl", default="rabbitmqctl", show_default=True,
                     help="How to run rabbitmqctl, e.g. 'rabbitmqctl -n rabbit@mq'."),
    ]):
        command = option(command)
    return command


def handle(account: Account, vhost, do_apply, password_stdin, rabbitmqctl) -> None:
    vhost = vhost or default_vhost()
    for what, name in (("user", account.user), ("virtual host", vhost)):
        if not BROKER_NAME.match(name):
            raise KeyturnError(f"RabbitMQ {what} {name!r}: use 1 to 255 printable characters, "
                               f"no spaces")
    ctl = Rabbitmqctl(rabbitmqctl)
    if not do_apply:
        prefix = shlex.join(ctl.argv)
        click.echo(f"# {account.role}: RabbitMQ user {account.user} on virtual host {vhost}")
        click.echo(f"{prefix} add_user {shlex.quote(account.user)}   # asks for the password")
        for args in permission_commands(account, vhost):
            click.echo(f"{prefix} {shlex.join(args)}")
        return
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    if password_stdin and not password:
        raise click.ClickException("no password on standard input")
    generated = apply(account, vhost, ctl, password)
    click.echo(f"{account.user}: permissions for {account.role} set on virtual host {vhost}",
               err=True)
    if generated:
        click.echo(f"the generated password of {account.user} follows (shown once)", err=True)
        click.echo(generated)


def default_vhost() -> str:
    url = load_settings().broker_url
    return pika.URLParameters(url.split(";")[0]).virtual_host if url else "/"


@click.group("broker-account")
def broker_account():
    """Least-privilege RabbitMQ accounts for zones' workers, the controller and integrations."""


@broker_account.command("zone")
@click.argument("name")
@account_options
def zone_command(name, user, **options):
    """The account of a zone's workers: its own queue only (printed, or set with --apply)."""
    handle(zone_account(name, user), **options)


@broker_account.command("controller")
@account_options
def controller_command(user, **options):
    """The controller's account: keyturn's queues and exchanges."""
    handle(controller_account(user), **options)


@broker_account.command("integration")
@click.argument("name")
@account_options
def integration_command(name, user, **options):
    """An integration's account: publish requests, read events through its own queues."""
    handle(integration_account(name, user), **options)
