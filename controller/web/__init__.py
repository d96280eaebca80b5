"""The web console and its JSON API: `create_app()` is the WSGI application factory
(`gunicorn 'controller.web:create_app()'`); `keyturn serve` runs it through `server.WebServer`."""
from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, timedelta

from flask import Flask, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from peewee import DatabaseError, DataError, IntegrityError
from werkzeug.exceptions import BadRequest, HTTPException

from controller.db import database
from controller.runtime import Controller, start_controller
from shared.settings import load_settings

SESSION_HOURS = 12
DATABASE_REFUSED = "the database refused a value of this request"


class JSONProvider(DefaultJSONProvider):
    """Times as ISO 8601 in UTC (the database keeps naive UTC), not HTTP dates."""

    @staticmethod
    def default(value):
        if isinstance(value, datetime):
            return value.isoformat() + "Z"
        if isinstance(value, date):
            return value.isoformat()
        return DefaultJSONProvider.default(value)


def session_key(ctl: Controller) -> bytes:
    """The cookie-signing key, derived from the master key so every controller process of one
    installation agrees on it and nothing new needs configuring."""
    settings = ctl.settings
    master = (settings.secret_key.get_secret_value() if settings.secret_key
              else settings.master_key_file.read_text())
    return hmac.new(master.strip().encode(), b"keyturn web session v1", hashlib.sha256).digest()


def create_app(ctl: Controller | None = None) -> Flask:
    from controller.web import (audit, auth, executions, forms, health, i18n, integrations,
                                inventory, openapi, overview, plans, records, security, team,
                                templating, upkeep, views)

    ctl = ctl or start_controller(load_settings())
    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.config.update(
        SECRET_KEY=session_key(ctl),
        SESSION_COOKIE_NAME="keyturn_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=ctl.settings.web_secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
    )
    app.extensions["keyturn.ctl"] = ctl
    app.extensions["keyturn.throttle"] = security.Throttle()
    security.trust_proxies(app, ctl.settings.web_trusted_proxies)
    app.url_map.converters["int"] = forms.IdConverter     # before any rule is added
    auth.login_manager.init_app(app)
    i18n.install(app)
    templating.install(app)
    for module in (auth, overview, plans, executions, records, inventory, upkeep, team, audit,
                   integrations, openapi):
        app.register_blueprint(module.bp)
    app.register_blueprint(views.api)
    health.install(app)
    app.before_request(auth.guard_request)
    app.before_request(forms.check_request)

    @app.teardown_appcontext
    def close_connection(_exc):
        """Each request thread opens its own connection on first query; give it back."""
        if not database.is_closed():
            database.close()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if views.is_api():
            named = {"fields": exc.fields} if isinstance(exc, forms.BadInput) else {}
            return jsonify(error=exc.description, **named), exc.code
        return render_template("error.html", problem=exc), exc.code

    @app.errorhandler(DataError)
    @app.errorhandler(IntegrityError)
    def refused(exc: DatabaseError):
        """The last resort: a value the validation let through and the database refused. The
        request's fault, not the server's; logged, since the validation should have said so."""
        app.logger.warning("the database refused a request to %s: %s", request.path,
                           type(exc).__name__)
        return http_error(BadRequest(DATABASE_REFUSED))

    @app.after_request
    def headers(response):
        """Pages may hold what only their viewer should see: never cached, never framed."""
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; "
                                    "style-src 'self'; frame-ancestors 'none'; "
                                    "form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app
