"""`keyturn integration ...` and `keyturn webhook ...`: other systems as principals, and where
events are posted. `integration keygen` and `integration send` are the other side's tools
(for shell scripts): they need only the key file and KEYTURN_BROKER_URL, not the database."""
from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path

import click
import pika

from controller.cli import controller, operator, print_table
from controller.integrations import (ACTIONS, add_integration, grant_text, keygen, set_active,
                                     signing_key)
from controller.models import Integration, OutboxEvent, WebhookDelivery, WebhookSubscription
from shared.broker import BUS_EXCHANGE, REQUESTS_QUEUE
from shared.bus import broker_parameters
from shared.settings import load_settings

REPLY_SECONDS = 30.0


@click.group()
def integration():
    """Other systems that send signed requests on the keyturn.requests queue."""


@integration.command("add")
@click.argument("name")
@click.option("--public-key", required=True, help="Its Ed25519 public key (base64), e.g. from "
                                                  "`keyturn integration keygen`.")
@click.option("--allow", "grants", multiple=True, required=True, metavar="ACTION[:SCOPE]",
              help="rotate|verify:asset:NAME|node:/PATH|zone:NAME|*, run_plan:plan:NAME|*, "
                   "status[:plan:NAME|*] (repeatable).")
@click.option("--rate-limit", default=60, show_default=True, type=int,
              help="Signed requests per minute.")
def integration_add(name, public_key, grants, rate_limit):
    """Register an integration (audited)."""
    controller()
    created = add_integration(name, public_key, list(grants), rate_limit, operator())
    click.echo(f"integration {created.name} registered: "
               f"{', '.join(grant_text(g) for g in created.grants)}")


@integration.command("list")
def integration_list():
    """Integrations with what they may do."""
    controller()
    print_table("integrations", ["integration", "allowed", "rate/min", "state", "last used"],
                [[i.name, ", ".join(grant_text(g) for g in i.grants), i.rate_limit,
                  "active" if i.active else "disabled", i.last_used_at or ""]
                 for i in Integration.select().order_by(Integration.name)])


@integration.command("disable")
@click.argument("name")
def integration_disable(name):
    """Refuse the integration's requests from now on (audited)."""
    controller()
    set_active(name, False, operator())
    click.echo(f"integration {name} disabled")


@integration.command("enable")
@click.argument("name")
def integration_enable(name):
    """Accept the integration's requests again (audited)."""
    controller()
    set_active(name, True, operator())
    click.echo(f"integration {name} enabled")


@integration.command("keygen")
@click.option("--key-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (0600; it must not exist).")
def integration_keygen(key_file: Path):
    """Make a key pair for the other side: writes the private key, prints the public key."""
    private, public = keygen()
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(private + "\n")
    click.echo(public)


@integration.command("send")
@click.argument("name")
@click.argument("action", type=click.Choice(ACTIONS))
@click.option("--key-file", required=True, type=click.Path(exists=True, dir_okay=False,
                                                           path_type=Path))
@click.option("--account", "accounts", multiple=True, metavar="ASSET/USER")
@click.option("--node", help="rotate/verify every account of --username under this node.")
@click.option("--username", "usernames", multiple=True)
@click.option("--plan", "plan_name")
@click.option("--execution", "execution_id", type=int)
@click.option("--validity", default=60, show_default=True, type=int, help="Seconds.")
@click.option("--id", "request_id", help="Default: a random one.")
def integration_send(name, action, key_file, accounts, node, usernames, plan_name, execution_id,
                     validity, request_id):
    """Sign a request, send it to keyturn.requests and print the reply (exit 1 if refused)."""
    settings = load_settings()
    if not settings.broker_url:
        raise click.ClickException("set KEYTURN_BROKER_URL: requests travel over RabbitMQ")
    now = int(time.time())
    request = {"v": 1, "integration": name, "id": request_id or str(uuid.uuid4()), "time": now,
               "expires": now + validity, "action": action}
    if accounts:
        request["accounts"] = [dict(zip(("asset", "username"), account_ref(a))) for a in accounts]
    for key, value in (("node", node), ("usernames", list(usernames) or None),
                       ("plan", plan_name), ("execution", execution_id)):
        if value is not None:
            request[key] = value
    payload = json.dumps(request)
    signature = signing_key(key_file.read_text()).sign(payload.encode()).signature
    message = {"integration": name, "payload": payload,
               "signature": base64.b64encode(signature).decode()}
    answer = send_and_wait(settings.broker_url, name, message)
    click.echo(json.dumps(answer))
    if answer.get("outcome") != "accepted":
        raise SystemExit(1)


def account_ref(text: str) -> tuple[str, str]:
    asset, separator, user = text.rpartition("/")
    if not separator or not asset or not user:
        raise click.BadParameter(f"{text!r}: use ASSET/USER", param_hint="--account")
    return asset, user


def send_and_wait(broker_url: str, name: str, message: dict) -> dict:
    """Publish to keyturn.requests through the bus exchange, with a reply queue of our own
    (named `integration.NAME.…`, as an integration's broker account may declare), and wait
    for the answer."""
    connection = pika.BlockingConnection(broker_parameters(broker_url))
    try:
        channel = connection.channel()
        reply_queue = f"integration.{name}.reply.{uuid.uuid4()}"
        channel.queue_declare(reply_queue, exclusive=True)
        correlation = str(uuid.uuid4())
        channel.basic_publish(BUS_EXCHANGE, REQUESTS_QUEUE, json.dumps(message).encode(),
                              pika.BasicProperties(content_type="application/json",
                                                   reply_to=reply_queue,
                                                   correlation_id=correlation, delivery_mode=2))
        deadline = time.monotonic() + REPLY_SECONDS
        while time.monotonic() < deadline:
            method, properties, body = channel.basic_get(reply_queue, auto_ack=True)
            if method is not None and properties.correlation_id == correlation:
                return json.loads(body)
            connection.sleep(0.2)
        raise click.ClickException(f"no reply within {REPLY_SECONDS:.0f} s (is `keyturn daemon` "
                                   f"running?)")
    finally:
        connection.close()


# ---- webhooks -----------------------------------------------------------------------------

@click.group()
def webhook():
    """HTTP endpoints that receive events, signed (Standard Webhooks)."""


@webhook.command("add")
@click.argument("name")
@click.option("--url", required=True)
@click.option("--event", "event_types", multiple=True, required=True,
              help="An event type, or a prefix ending in * (repeatable).")
def webhook_add(name, url, event_types):
    """Subscribe a URL; prints its signing secret, this once (audited)."""
    from controller.webhooks import add_subscription

    ctl = controller()
    created, secret = add_subscription(ctl, name, url, list(event_types), operator())
    click.echo(f"webhook {created.name} subscribed to {', '.join(created.event_types)}")
    click.echo(f"signing secret (shown once): {secret}")


@webhook.command("list")
def webhook_list():
    """Webhooks with their deliveries by state."""
    controller()
    rows = []
    for s in WebhookSubscription.select().order_by(WebhookSubscription.name):
        counts = {status: s.deliveries.where(WebhookDelivery.status == status).count()
                  for status in ("pending", "delivered", "dead")}
        rows.append([s.name, s.url, ", ".join(s.event_types), "active" if s.active else "disabled",
                     counts["pending"], counts["delivered"], counts["dead"]])
    print_table("webhooks", ["webhook", "url", "events", "state", "pending", "delivered", "dead"],
                rows)


@webhook.command("disable")
@click.argument("name")
def webhook_disable(name):
    """Stop posting to a webhook; its pending deliveries end dead (audited)."""
    from controller.webhooks import set_active as set_webhook_active

    controller()
    set_webhook_active(name, False, operator())
    click.echo(f"webhook {name} disabled")


@webhook.command("deliveries")
@click.argument("name")
@click.option("--limit", default=50, show_default=True)
def webhook_deliveries(name, limit):
    """A webhook's latest deliveries."""
    from controller.webhooks import subscription_by_name

    controller()
    found = subscription_by_name(name)
    print_table(f"deliveries of {name}", ["event", "type", "status", "attempts", "HTTP", "error",
                                          "next attempt"],
                [[d.event.id, d.event.routing_key, d.status, d.attempts, d.last_status or "",
                  d.last_error or "", d.next_attempt_at if d.status == "pending" else ""]
                 for d in WebhookDelivery.select(WebhookDelivery, OutboxEvent).join(OutboxEvent)
                 .where(WebhookDelivery.subscription == found)
                 .order_by(WebhookDelivery.id.desc()).limit(limit)])
