"""Integrations and webhooks in the console (and under /api/v1): everyone signed in sees them
and the delivery history; admins add and disable them after a fresh TOTP check, since an
integration may start rotations and a webhook receives every event it names. A webhook's
signing secret is shown once, to the admin who made it."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, url_for
from flask_babel import gettext
from flask_login import current_user

from controller import integrations, webhooks
from controller.models import Integration, OutboxEvent, WebhookDelivery, WebhookSubscription
from controller.web import forms, shapes
from controller.web.i18n import N_
from controller.web.security import admin_required, step_up_required
from controller.web.views import Done, action, form_data, is_api, page

bp = Blueprint("integrations", __name__)
HISTORY = 100


class NewIntegration(forms.StepUp):
    name: forms.text(Integration.name.max_length) = ""
    public_key: forms.text(Integration.public_key.max_length) = ""
    grants: forms.text(4096, lines=True) = ""          # one ACTION[:SCOPE] per line or space
    rate_limit: forms.text(6) = "60"


class NewWebhook(forms.StepUp):
    name: forms.text(WebhookSubscription.name.max_length) = ""
    url: forms.text(WebhookSubscription.url.max_length) = ""
    events: forms.text(4096, lines=True) = ""          # one type or prefix* per line or space


def integration_row(i: Integration) -> dict:
    return {"id": i.id, "name": i.name, "public_key": i.public_key, "active": i.active,
            "grants": [integrations.grant_text(g) for g in i.grants], "rate_limit": i.rate_limit,
            "last_used_at": i.last_used_at, "created_at": i.created_at}


def webhook_row(s: WebhookSubscription) -> dict:
    return {"id": s.id, "name": s.name, "url": s.url, "events": s.event_types, "active": s.active,
            "created_at": s.created_at}


def delivery_row(d: WebhookDelivery) -> dict:
    return {"id": d.id, "webhook": d.subscription.name, "event": d.event.id,
            "type": d.event.routing_key, "status": d.status, "attempts": d.attempts,
            "last_status": d.last_status, "last_error": d.last_error,
            "next_attempt_at": d.next_attempt_at if d.status == "pending" else None,
            "delivered_at": d.delivered_at}


@page(bp, "/integrations", "integrations/index.html", response=shapes.Integrations)
def index():
    deliveries = (WebhookDelivery.select(WebhookDelivery, WebhookSubscription, OutboxEvent)
                  .join(WebhookSubscription).switch(WebhookDelivery).join(OutboxEvent)
                  .order_by(WebhookDelivery.id.desc()).limit(HISTORY))
    return {"integrations": [integration_row(i) for i in Integration.select().order_by(Integration.name)],
            "webhooks": [webhook_row(s) for s in
                         WebhookSubscription.select().order_by(WebhookSubscription.name)],
            "deliveries": [delivery_row(d) for d in deliveries],
            "actions": integrations.ACTIONS}


@action(bp, "/integrations/new", response=shapes.IntegrationSaved, body=NewIntegration,
        statuses=(201,))
@admin_required
@step_up_required(N_("add an integration"), "integrations.index")
def add_integration():
    data = form_data(NewIntegration)
    rate = forms.number("rate_limit", data.get("rate_limit") or "60")
    created = integrations.add_integration(data["name"].strip(), data["public_key"],
                                           data["grants"].split(), rate, current_user.username)
    return Done(gettext("integration %(name)s registered", name=created.name), url_for("integrations.index"),
                {"integration": integration_row(created)}, 201)


@action(bp, "/integrations/<int:integration_id>/active", response=shapes.IntegrationSaved,
        body=forms.StepUp)
@admin_required
@step_up_required(N_("enable or disable an integration"), "integrations.index")
def toggle_integration(integration_id: int):
    found = Integration.get_or_none(Integration.id == integration_id) or abort(404)
    changed = integrations.set_active(found.name, not found.active, current_user.username)
    return Done(gettext("integration %(name)s enabled", name=found.name) if changed.active
                else gettext("integration %(name)s disabled", name=found.name),
                url_for("integrations.index"), {"integration": integration_row(changed)})


@action(bp, "/webhooks/new", response=shapes.WebhookCreated, body=NewWebhook, statuses=(201,))
@admin_required
@step_up_required(N_("add a webhook"), "integrations.index")
def add_webhook():
    data = form_data(NewWebhook)
    ctl = current_app.extensions["keyturn.ctl"]
    created, secret = webhooks.add_subscription(ctl, data["name"].strip(), data["url"].strip(),
                                                data["events"].split(), current_user.username)
    if is_api():
        return {"webhook": webhook_row(created), "secret": secret}, 201
    return render_template("integrations/secret.html", webhook=created, secret=secret)


@action(bp, "/webhooks/<int:webhook_id>/active", response=shapes.WebhookSaved,
        body=forms.StepUp)
@admin_required
@step_up_required(N_("enable or disable a webhook"), "integrations.index")
def toggle_webhook(webhook_id: int):
    found = WebhookSubscription.get_or_none(WebhookSubscription.id == webhook_id) or abort(404)
    changed = webhooks.set_active(found.name, not found.active, current_user.username)
    return Done(gettext("webhook %(name)s enabled", name=found.name) if changed.active
                else gettext("webhook %(name)s disabled", name=found.name),
                url_for("integrations.index"), {"webhook": webhook_row(changed)})
