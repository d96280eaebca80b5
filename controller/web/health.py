"""Probes and metrics for the console's operators: `/healthz` (the process answers), `/readyz`
(the database and the broker answer within a short time) and `/metrics` (Prometheus).

The probes need no sign-in and say only "ok" or what is unreachable, never why in detail (no
address, no driver message). `/metrics` answers a scrape with KEYTURN_METRICS_TOKEN (sent as
`Authorization: Bearer ...`), one from a network in KEYTURN_METRICS_ALLOW, or a signed-in
console user, and refuses any other: behind a reverse proxy on the same machine every client
would seem to come from loopback, so loopback is not trusted by default either.
"""
from __future__ import annotations

import copy
import hmac
from ipaddress import ip_address

import pika
import pika.exceptions
from flask import Blueprint, Response, current_app, jsonify, request
from flask_login import current_user
from peewee import DatabaseError, InterfaceError
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controller.db import database
from controller.metrics import console_registry

bp = Blueprint("health", __name__)
ENDPOINTS = {"health.healthz", "health.readyz", "health.metrics"}   # no sign-in
BROKER_TIMEOUT = 3.0     # seconds for one broker node to accept a connection


def ctl():
    return current_app.extensions["keyturn.ctl"]


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    checks = {"database": database_check(), "broker": broker_check()}
    ready = all(state in ("ok", "embedded") for state in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


def database_check() -> str:
    try:
        database.execute_sql("SELECT 1")
    except (DatabaseError, InterfaceError):
        return "unreachable"
    return "ok"


def broker_check() -> str:
    """A fresh AMQP connection to any node of the broker (as the daemon would open one)."""
    settings = ctl().settings
    if settings.embedded:
        return "embedded"
    for parameters in ctl().broker.parameter_list:
        quick = copy.copy(parameters)
        quick.connection_attempts, quick.retry_delay = 1, 0
        quick.socket_timeout = quick.stack_timeout = quick.blocked_connection_timeout = \
            BROKER_TIMEOUT
        try:
            pika.BlockingConnection(quick).close()
            return "ok"
        except (pika.exceptions.AMQPError, OSError):
            continue
    return "unreachable"


@bp.get("/metrics")
def metrics():
    if not scrape_allowed():
        return plain(403, "refused: send the metrics token (Authorization: Bearer ...), or "
                          "scrape from a network in KEYTURN_METRICS_ALLOW")
    try:
        body = generate_latest(current_app.extensions["keyturn.metrics"])
    except (DatabaseError, InterfaceError):
        return plain(503, "the database is unreachable")
    # The process's own figures: in `keyturn serve` its daemon's (and embedded worker's).
    return Response(body + generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def plain(status: int, text: str) -> Response:
    return Response(f"metrics: {text}\n", status, content_type="text/plain; charset=utf-8")


def scrape_allowed() -> bool:
    """The metrics token, a client in KEYTURN_METRICS_ALLOW, or a signed-in console user."""
    settings = ctl().settings
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if settings.metrics_token is not None and scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), settings.metrics_token.get_secret_value().encode()):
        return True
    try:
        client = ip_address(request.remote_addr or "")
    except ValueError:
        client = None
    client = getattr(client, "ipv4_mapped", None) or client
    if client is not None and any(client in network for network in settings.metrics_networks):
        return True
    return current_user.is_authenticated


def install(app) -> None:
    app.extensions["keyturn.metrics"] = console_registry(app.extensions["keyturn.ctl"])
    app.register_blueprint(bp)
