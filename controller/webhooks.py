"""Webhooks: the events of chosen types POSTed to a subscriber's URL, signed the Standard
Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256
of "id.timestamp.body">`, keyed with the subscription's secret, shown once as `whsec_...`).

Deliveries are outbox rows written with their event (`events.emit`); the daemon's sender
claims due ones (`claims`), posts them, and on failure retries with exponential backoff
until `KEYTURN_WEBHOOK_MAX_ATTEMPTS`, then marks them dead. A destination must resolve to
public addresses only (no loopback, private, link-local or metadata address), checked when
the subscription is made and again at each delivery, which connects to the very address
checked; `KEYTURN_WEBHOOK_ALLOW_PRIVATE` lets loopback and private addresses through."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import logging
import re
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

from controller.audit import audit
from controller.claims import claim
from controller.db import database, id_in
from controller.events import TYPES, encode
from controller.models import OutboxEvent, WebhookDelivery, WebhookSubscription, utcnow
from controller.runtime import Controller
from shared.errors import KeyturnError

logger = logging.getLogger(__name__)
NAME = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,63}\Z")
TYPE_PATTERN = re.compile(r"\A(io\.keyturn\.[a-z_.]*\*|\*)\Z")
MAX_URL = 2048
MAX_TYPES = 32
SECRET_PREFIX = "whsec_"
TIMEOUT = 10.0
BATCH = 32
SENDERS = 8
MAX_BACKOFF = 6 * 3600.0
ERROR_CHARS = 300
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class Refused(KeyturnError):
    """A subscription or a destination that is not allowed."""


# ---- subscriptions ------------------------------------------------------------------------

def add_subscription(ctl: Controller, name: str, url: str, event_types: list[str],
                     actor: str) -> tuple[WebhookSubscription, str]:
    """Save a subscription; returns it and its secret, which is shown this once."""
    if not NAME.match(name or ""):
        raise Refused("name: 1-64 lower-case letters, digits, '_', '.' or '-'")
    if WebhookSubscription.get_or_none(WebhookSubscription.name == name):
        raise Refused("a webhook named %(name)s exists", name=name)
    destination(url, ctl.settings.webhook_allow_private)
    types = check_types(event_types)
    key = secrets.token_bytes(32)
    text = SECRET_PREFIX + base64.b64encode(key).decode()
    with database.atomic():
        created = WebhookSubscription.create(name=name, url=url, event_types=types,
                                             secret=ctl.vault.encrypt(text))
        audit("webhook.add", f"webhook/{name}", f"{url} for {', '.join(types)}", actor=actor)
    return created, text


def check_types(event_types: list[str]) -> list[str]:
    if not event_types or len(event_types) > MAX_TYPES:
        raise Refused("events: give 1 to %(most)s event types", most=MAX_TYPES)
    for kind in event_types:
        if kind not in TYPES and not TYPE_PATTERN.match(kind):
            raise Refused("events: %(kind)s is not an event type (known: %(types)s; or a prefix "
                          "ending in '*')", kind=repr(kind[:80]), types=", ".join(TYPES))
    return sorted(set(event_types))


def set_active(name: str, active: bool, actor: str) -> WebhookSubscription:
    found = subscription_by_name(name)
    found.active = active
    found.save(only=[WebhookSubscription.active])
    audit("webhook.enable" if active else "webhook.disable", f"webhook/{name}", actor=actor)
    return found


def subscription_by_name(name: str) -> WebhookSubscription:
    found = WebhookSubscription.get_or_none(WebhookSubscription.name == name)
    if found is None:
        raise KeyturnError("no webhook named %(name)s", name=name)
    return found


def wants(event_types: list[str], kind: str) -> bool:
    return any(kind == t or (t.endswith("*") and kind.startswith(t[:-1])) for t in event_types)


def queue_deliveries(events: list[tuple[int, str]]) -> None:
    """One pending delivery per (event, active subscription that wants its type), in the
    transaction that writes the events."""
    subscriptions = list(WebhookSubscription.select(WebhookSubscription.id,
                                                    WebhookSubscription.event_types)
                         .where(WebhookSubscription.active))
    rows = [{"subscription": s.id, "event": event_id} for event_id, kind in events
            for s in subscriptions if wants(s.event_types, kind)]
    for start in range(0, len(rows), 500):
        WebhookDelivery.insert_many(rows[start:start + 500]).execute()


# ---- destinations -------------------------------------------------------------------------

def destination(url: str, allow_private: bool) -> tuple[str, int, list[str]]:
    """(host, port, allowed addresses) of a webhook URL, or `Refused` saying why."""
    if not isinstance(url, str) or len(url) > MAX_URL or not url.isprintable():
        raise Refused("url: at most %(most)s printable characters", most=MAX_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("url: must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise Refused("url: must not hold a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port,
                                                           type=socket.SOCK_STREAM)}
    except (ValueError, OSError) as exc:
        raise Refused("url: cannot resolve %(host)s (%(why)s)", host=parts.hostname,
                      why=type(exc).__name__) from None
    for address in found:
        if (why := forbidden(ipaddress.ip_address(address.split("%")[0]), allow_private)):
            raise Refused("url: %(host)s resolves to %(address)s, %(why)s; not allowed as a webhook "
                          "destination", host=parts.hostname, address=address, why=why)
    return parts.hostname, port, sorted(found)


def forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
              allow_private: bool) -> str | None:
    """Why a webhook may not go to `address` (None: it may)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address in METADATA or address.is_link_local:
        return "a link-local or cloud metadata address"
    if address.is_loopback:
        return None if allow_private else "a loopback address (KEYTURN_WEBHOOK_ALLOW_PRIVATE allows it)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    if not address.is_global and not allow_private:
        return "a private address (KEYTURN_WEBHOOK_ALLOW_PRIVATE allows it)"
    return None


# ---- signing and sending ------------------------------------------------------------------

def signature(secret_text: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value (Standard Webhooks, scheme v1)."""
    key = base64.b64decode(secret_text.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post(url: str, allow_private: bool, headers: dict[str, str], body: bytes) -> int:
    """POST `body` to the checked address of `url`; returns the HTTP status (redirects are
    not followed: a 3xx is a failure)."""
    host, port, addresses = destination(url, allow_private)
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(host, port, timeout=TIMEOUT)
    # Connect to the address checked, not to a new lookup's (http.client's own hook; the
    # rebinding test fails should it ever go).
    connection._create_connection = (
        lambda _address, timeout, source: socket.create_connection((addresses[0], port), timeout,
                                                                   source))
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                           body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        connection.close()


def attempt(ctl: Controller, delivery: WebhookDelivery, secret_text: str,
            event: OutboxEvent) -> tuple[int | None, str | None]:
    """Send one delivery; returns (HTTP status or None, error or None)."""
    body = encode(ctl, event)
    timestamp = int(time.time())
    message_id = str(event.id)
    headers = {"content-type": "application/cloudevents+json", "webhook-id": message_id,
               "webhook-timestamp": str(timestamp),
               "webhook-signature": signature(secret_text, message_id, timestamp, body),
               "user-agent": "keyturn-webhooks"}
    try:
        status = post(delivery.subscription.url, ctl.settings.webhook_allow_private, headers, body)
    except Refused as exc:
        return None, str(exc)
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    return status, None if 200 <= status < 300 else f"the receiver answered HTTP {status}"


def deliver_due(ctl: Controller, pool: ThreadPoolExecutor | None = None) -> int:
    """Claim and send due deliveries; returns how many were attempted."""
    ids = claim(WebhookDelivery, (WebhookDelivery.status == "pending")
                & (WebhookDelivery.next_attempt_at <= utcnow()), limit=BATCH)
    if not ids:
        return 0
    deliveries = list(WebhookDelivery.select(WebhookDelivery, WebhookSubscription, OutboxEvent)
                      .join(WebhookSubscription).switch(WebhookDelivery).join(OutboxEvent)
                      .where(id_in(WebhookDelivery.id, ids)))
    keys = {d.subscription.id: ctl.vault.decrypt(d.subscription.secret) for d in deliveries}

    def send(delivery):
        if not delivery.subscription.active:
            return None, "the subscription is disabled"
        return attempt(ctl, delivery, keys[delivery.subscription.id], delivery.event)

    outcomes = list(pool.map(send, deliveries)) if pool else [send(d) for d in deliveries]
    for delivery, (status, error) in zip(deliveries, outcomes, strict=True):
        settle(ctl, delivery, status, error)
    return len(deliveries)


def settle(ctl: Controller, delivery: WebhookDelivery, status: int | None,
           error: str | None) -> None:
    attempts = delivery.attempts + 1
    changes = {"attempts": attempts, "last_status": status, "last_error": error,
               "claimed_until": None}
    if error is None:
        changes |= {"status": "delivered", "delivered_at": utcnow()}
    elif attempts >= ctl.settings.webhook_max_attempts or not delivery.subscription.active:
        changes["status"] = "dead"
        logger.warning("webhook %s: event %s is dead after %d attempts: %s",
                       delivery.subscription.name, delivery.event_id, attempts, error)
    else:
        wait = min(ctl.settings.webhook_retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF)
        changes["next_attempt_at"] = utcnow() + timedelta(seconds=wait)
    WebhookDelivery.update(changes).where(WebhookDelivery.id == delivery.id).execute()


class WebhookSender:
    """The daemon's webhook thread: posts due deliveries, several at once."""

    POLL_SECONDS = 1.0

    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyturn-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT + 5)

    def _run(self) -> None:
        with ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook") as pool:
            while not self._stop.is_set():
                try:
                    if deliver_due(self.ctl, pool):
                        continue
                except Exception:   # a database blip: the claims pass and the rows come back
                    logger.exception("sending webhooks failed; retrying")
                self._stop.wait(self.POLL_SECONDS)
