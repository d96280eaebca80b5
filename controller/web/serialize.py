"""Rows as plain dicts: what both a page and its JSON twin show. No secret ever goes in here;
an account or record says only whether a secret exists. Phrases (a rollout, where it
stands) are said with `gettext`: in the page's language, and English under /api/v1."""
from __future__ import annotations

from flask_babel import gettext, ngettext

from controller.actions import RETRYABLE
from controller.gates import waiting
from controller.models import Account, AuditEvent, Execution, LogLine, Plan, Record, User, WorkerSeen
from controller.rollout import describe


def schedule_text(plan: Plan) -> str:
    if plan.crontab:
        return f"cron {plan.crontab}"
    if plan.interval_hours:
        return f"every {plan.interval_hours} h"
    return "manual"


def plan_row(plan: Plan) -> dict:
    return {"id": plan.id, "name": plan.name, "usernames": plan.usernames,
            "strategy": plan.strategy, "secret_type": plan.secret_type,
            "schedule": schedule_text(plan), "interval_hours": plan.interval_hours,
            "crontab": plan.crontab, "next_run_at": plan.next_run_at,
            "recipients": plan.recipients, "active": plan.active,
            "rollout": describe(plan.rollout, gettext),
            "created_at": plan.created_at, "updated_at": plan.updated_at}


def execution_row(e: Execution) -> dict:
    end = e.finished_at
    return {"id": e.id, "plan_id": e.plan_id, "plan": e.plan_name, "trigger": e.trigger,
            "started_by": e.started_by, "retry_of": e.retry_of_id, "status": e.status,
            "started_at": e.created_at, "finished_at": end,
            "duration": (end - e.created_at).total_seconds() if end else None,
            "total": e.total, "succeeded": e.succeeded, "failed": e.failed,
            "unverified": e.unverified, "skipped": e.skipped, "ended": e.ended,
            "rollout": describe(e.rollout, gettext), "wave": e.wave,
            "waves": len((e.rollout or {}).get("waves") or []), "paused_by": e.paused_by,
            "pause_reason": e.pause_reason, "waiting": waiting(e, gettext, ngettext),
            "state": course(e)}


def course(e: Execution) -> str | None:
    """Where a rollout stands in words: why it is paused, what it waits on, which wave."""
    waves = len((e.rollout or {}).get("waves") or [])
    at = (gettext("wave %(wave)s of %(waves)s", wave=e.wave, waves=waves)
          if waves and e.status in ("running", "paused") else None)
    said = [part for part in (at, e.pause_reason, waiting(e, gettext, ngettext)) if part]
    return "; ".join(said) or None


def record_row(r: Record) -> dict:
    """A record fetched by `records.listing()` (with its account, asset and execution, and
    `later`: whether the account has a later record, so this one is no longer retried)."""
    asset, username = r.names()
    return {"id": r.id, "execution": r.execution_id, "plan": r.execution.plan_name,
            "asset": asset, "account": username, "account_deleted": r.account_id is None,
            "account_id": r.account_id, "action": r.action, "status": r.status,
            "error_code": r.error_code, "error": r.error, "worker": r.worker_id,
            "attempt": r.attempt, "retry_of": r.retry_of_id, "ignored": r.ignored,
            "retryable": r.status in RETRYABLE and not r.later,
            "created_at": r.created_at, "started_at": r.started_at,
            "finished_at": r.finished_at}


def log_row(line: LogLine) -> dict:
    return {"id": line.id, "at": line.at, "level": line.level, "message": line.message}


def worker_row(w: WorkerSeen) -> dict:
    return {"id": w.worker_id, "zone": w.zone, "host": w.host, "version": w.version,
            "schema": w.message_schema, "in_flight": w.in_flight, "last_seen": w.last_seen}


def account_row(a: Account) -> dict:
    """An account fetched with its asset."""
    return {"id": a.id, "asset": a.asset.name, "asset_id": a.asset_id, "username": a.username,
            "secret_type": a.secret_type, "privileged": a.privileged,
            "has_secret": a.secret_current is not None,
            "in_rotation": a.busy_execution, "current_since": a.current_since,
            "pending_since": a.pending_since}


def user_row(u: User) -> dict:
    return {"id": u.id, "username": u.username, "role": u.role, "email": u.email,
            "active": u.active, "totp_enrolled": u.totp_enrolled,
            "has_token": u.api_token_hash is not None, "created_at": u.created_at}


def audit_row(event: AuditEvent) -> dict:
    return {"id": event.id, "at": event.at, "actor": event.actor, "address": event.address,
            "action": event.action, "outcome": event.outcome, "target": event.target,
            "detail": event.detail, "before": event.before, "after": event.after}
