"""`keyturn user`: console users from the command line (the first admin comes from init)."""
from __future__ import annotations

import sys

import click

from controller.audit import audit
from controller.models import User
from controller.runtime import start_controller
from controller.web import users
from shared.errors import KeyturnError
from shared.settings import load_settings


def read_password(from_stdin: bool) -> str:
    """A new user's password from standard input, or asked for until one passes the rules
    and is typed the same twice (a short one is refused before the second typing)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return users.check_password(password)
    while True:
        password = click.prompt("password", hide_input=True, err=True)
        try:
            users.check_password(password)
        except KeyturnError as exc:
            click.echo(f"{exc}; try again", err=True)
            continue
        if click.prompt("repeat the password", hide_input=True, err=True) == password:
            return password
        click.echo("the two passwords differ; try again", err=True)


@click.group()
def user():
    """Console and API users."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(users.ROLES), default="auditor", show_default=True)
@click.option("--email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_add(name, role, email, password_stdin):
    """Add a user; they enrol a TOTP authenticator at first sign-in."""
    start_controller(load_settings())
    users.create_user(name, read_password(password_stdin), role, email)
    click.echo(f"user {name} added with role {role}")


@user.command("token")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(users.TOKEN_SCOPES),
              help="Let the token do this without a TOTP code (reveal: secrets, admins only).")
def user_token(name, scopes):
    """Print a new API token for a user (replacing their previous one)."""
    start_controller(load_settings())
    token = users.new_api_token(users.user_by_name(name), scopes)
    click.echo(token)


@user.command("reset-mfa")
@click.argument("name")
def user_reset_mfa(name):
    """Make a user enrol a new authenticator at next sign-in (a lost phone); their sessions
    end."""
    start_controller(load_settings())
    users.reset_totp(users.user_by_name(name))
    audit("user.reset_mfa", f"user/{name}")
    click.echo(f"user {name} enrols a new authenticator at next sign-in")


@user.command("list")
def user_list():
    """Users with their role, state and whether they enrolled an authenticator."""
    start_controller(load_settings())
    for row in User.select().order_by(User.username):
        state = "active" if row.active else "inactive"
        click.echo(f"{row.username}\t{row.role}\t{state}\t"
                   f"{'enrolled' if row.totp_enrolled else 'not enrolled'}")
