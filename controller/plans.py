"""Saving plans: one validated spec for the CLI, the console and the API."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator

from controller import names
from controller.audit import audit
from controller.db import database
from controller.models import Asset, Node, Plan, PlanAsset, PlanNode, utcnow
from controller.rollout import LIMITS, parse_brake, parse_waves, plan_rollout
from controller.scheduling import refresh_next_run, validate_crontab
from controller.secretgen import (DEFAULT_LENGTH, PasswordRules, RuleError, normalise_private_key,
                                  validate_given_secret)
from controller.vault import Vault
from controller.windows import parse_windows
from shared.dialogues import typeable
from shared.errors import Invalid, KeyturnError, Said
from shared.problems import plain
from shared.platforms import PLATFORMS, SecretType, borrowed_params, param_names, platform

SECRET_TYPES = "^(" + "|".join(SecretType) + ")$"
ROLLOUT_FIELDS = ("waves", "max_failures", "window", *LIMITS)


class PlanError(KeyturnError):
    """A plan cannot be saved; `errors` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class PlanSpec(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    usernames: list[str] = Field(min_length=1)
    assets: list[Annotated[str, Field(max_length=Asset.name.max_length)]] = []
    nodes: list[Annotated[str, Field(max_length=Node.path.max_length)]] = []
    strategy: str = Field(default="random", pattern="^(random|specific)$")
    secret_type: str = Field(default=SecretType.PASSWORD.value, pattern=SECRET_TYPES)
    key_type: str = Field(default="ed25519", pattern="^(ed25519|rsa)$")
    secret: SecretStr | None = None
    passphrase: SecretStr | None = None      # opens a given private key; never stored
    length: int = DEFAULT_LENGTH
    lowercase: bool = True
    uppercase: bool = True
    digits: bool = True
    symbols: bool = True
    exclude_symbols: str = Field(default="", max_length=Plan.exclude_symbols.max_length)
    params: dict = {}
    ssh_timeout: float | None = Field(default=None, gt=0, le=600)
    interval_hours: int | None = Field(default=None, ge=1, le=24 * 366)
    crontab: str | None = Field(default=None, max_length=Plan.crontab.max_length)
    recipients: list[str] = []
    active: bool = True
    # How it rolls out (`controller.rollout`): waves with a failure brake, a maintenance
    # window, and at most so many rotations in flight per asset and per zone, and new SSH
    # connections per second per zone.
    waves: list[str] | None = None
    max_failures: str | None = Field(default=None, max_length=12)
    window: str | None = Field(default=None, max_length=200)
    asset_limit: int | None = Field(default=None, ge=1, le=1000)
    zone_limit: int | None = Field(default=None, ge=1, le=100_000)
    connect_rate: float | None = Field(default=None, gt=0, le=10_000)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return names.plan_name(name)

    @field_validator("usernames")
    @classmethod
    def _usernames(cls, usernames: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(name.strip() for name in usernames if name.strip()))
        bad = [names.shown(name) for name in cleaned     # some platform's account name
               if not any(kind.account_name.match(name) for kind in PLATFORMS.values())]
        if bad:
            raise Invalid("not a valid user name: %(names)s", names=", ".join(bad[:5]))
        if not cleaned:
            raise Invalid("name at least one user")
        return cleaned

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict) -> dict:
        """Each key must be some platform's param; each platform checks the ones it knows (one
        plan may cover UNIX hosts and databases together)."""
        sealed = sorted(borrowed_params() & set(params))
        if sealed:
            raise Invalid("%(param)s is the secret of another account of the asset "
                          "(root, enable), never a plan's param", param=sealed[0])
        unknown = sorted(set(params) - param_names())
        if unknown:
            raise Invalid("unknown param %(param)s: use one of %(params)s",
                          param=names.shown(unknown[0]),
                          params=", ".join(sorted(param_names() - borrowed_params())))
        for kind in PLATFORMS.values():
            kind.parse_params(params)
        return params

    @field_validator("waves", mode="before")
    @classmethod
    def _waves(cls, waves) -> list[str] | None:
        if waves is None or (isinstance(waves, str) and not waves.strip()):
            return None
        if not isinstance(waves, (str, list)) or not all(isinstance(w, str) for w in (
                waves if isinstance(waves, list) else [])):
            raise Invalid("a text such as 1,5%,25%,100% or a list of such parts")
        return parse_waves(waves)

    @field_validator("max_failures")
    @classmethod
    def _brake(cls, brake: str | None) -> str | None:
        return parse_brake(brake) if brake and brake.strip() else None

    @field_validator("window")
    @classmethod
    def _window(cls, window: str | None) -> str | None:
        return parse_windows(window).text if window and window.strip() else None

    @field_validator("crontab")
    @classmethod
    def _crontab(cls, line: str | None) -> str | None:
        return validate_crontab(line) if line and line.strip() else None

    @model_validator(mode="after")
    def _rules(self):
        if not self.assets and not self.nodes:
            raise RuleError("targets", "name at least one asset or node")
        if self.interval_hours and self.crontab:
            raise RuleError("crontab", "choose an interval or a crontab line, not both")
        if self.max_failures is not None and not self.waves:
            raise RuleError("max_failures", "a failure brake stops between waves: give waves too")
        if self.strategy == "specific":
            if self.secret is None:
                raise RuleError("secret", "is required with the specific strategy")
            if self.secret_type == SecretType.SSH_KEY:
                self.secret = SecretStr(normalise_private_key(
                    self.secret.get_secret_value(),
                    self.passphrase.get_secret_value() if self.passphrase else None))
            else:
                validate_given_secret(self.secret.get_secret_value())
        elif self.secret_type == SecretType.PASSWORD:
            self.rules.validate()
        return self

    @property
    def rollout(self) -> dict | None:
        """What `Plan.rollout` stores."""
        return plan_rollout(self.waves, self.max_failures, self.window,
                            {name: getattr(self, name) for name in LIMITS})

    @property
    def rules(self) -> PasswordRules:
        return PasswordRules(self.length, self.lowercase, self.uppercase, self.digits, self.symbols,
                             self.exclude_symbols)

    def protected_usernames(self) -> list[str]:
        """Usernames that secure mode will never rotate, each with the platforms that protect
        it, e.g. `root (on Linux, MySQL / MariaDB)`."""
        from controller.plan_notes import protected_names

        return [f"{name} (on {', '.join(where)})" for name, where in protected_names(self.usernames)]


def parse_spec(data: dict) -> PlanSpec:
    """Validate a plan form/command; every problem is reported by field, never with its value."""
    try:
        return PlanSpec.model_validate(data)
    except ValidationError as exc:
        errors = {}
        for error in exc.errors(include_input=False):
            rule_error = (error.get("ctx") or {}).get("error")
            if isinstance(rule_error, (RuleError, names.BadName)):
                errors[rule_error.field] = rule_error.message
            else:
                field = ".".join(str(part) for part in error["loc"]) or "plan"
                errors.setdefault(field, plain(error))
        raise PlanError(errors) from None


def save_plan(spec: PlanSpec, vault: Vault, plan: Plan | None = None, *, now=None) -> Plan:
    """Create `spec` as a new plan, or overwrite `plan` with it; its next run is planned from
    `now` (default: the current time)."""
    assets = {a.name: a for a in Asset.select().where(Asset.name.in_(spec.assets))}
    nodes = {n.path: n for n in Node.select().where(Node.path.in_(spec.nodes))}
    missing = {"assets": [a for a in spec.assets if a not in assets],
               "nodes": [n for n in spec.nodes if n not in nodes]}
    errors = {field: Said("unknown: %(names)s", names=", ".join(names))
              for field, names in missing.items() if names}
    clash = Plan.select().where((Plan.name == spec.name) & (Plan.id != (plan.id if plan else -1)))
    if clash.exists():
        errors["name"] = Said("another plan has this name")
    typed_on = sorted(a.name for a in assets.values() if platform(a.platform).typed_secrets)
    if spec.secret and typed_on and not typeable(spec.secret.get_secret_value()):
        errors["secret"] = Said("holds a tab or another control character, which the CLI of "
                                "%(asset)s cannot take", asset=typed_on[0])
    if errors:
        raise PlanError(errors)
    fields = spec.model_dump(exclude={"assets", "nodes", "secret", "passphrase", *ROLLOUT_FIELDS})
    fields["rollout"] = spec.rollout
    fields["given_secret"] = vault.encrypt(spec.secret.get_secret_value()) if spec.secret else None
    fields["updated_at"] = utcnow()
    before = None if plan is None else plan_fields(plan)
    with database.atomic():
        if plan is None:
            plan = Plan.create(**fields)
        else:
            Plan.update(**fields).where(Plan.id == plan.id).execute()
            PlanAsset.delete().where(PlanAsset.plan == plan).execute()
            PlanNode.delete().where(PlanNode.plan == plan).execute()
            plan = Plan.get_by_id(plan.id)
        PlanAsset.insert_many([{"plan": plan, "asset": a} for a in assets.values()]).execute()
        PlanNode.insert_many([{"plan": plan, "node": n} for n in nodes.values()]).execute()
        refresh_next_run(plan, now)
        audit("plan.add" if before is None else "plan.edit", f"plan/{plan.name}", before=before,
              after=plan_fields(plan))
    return plan


UNAUDITED = ("id", "created_at", "updated_at", "next_run_at")


def plan_fields(plan: Plan) -> dict:
    """A plan's fields as the audit log keeps them (its given secret only said to change),
    with the names of the assets and nodes it targets."""
    fields = {f.name: getattr(plan, f.name) for f in Plan._meta.sorted_fields
              if f.name not in UNAUDITED}
    fields["secret"] = fields.pop("given_secret")
    fields["assets"] = sorted(a for (a,) in Asset.select(Asset.name).join(PlanAsset).where(
        PlanAsset.plan == plan.id).tuples())
    fields["nodes"] = sorted(n for (n,) in Node.select(Node.path).join(PlanNode).where(
        PlanNode.plan == plan.id).tuples())
    return fields


def delete_plan(plan: Plan) -> None:
    """Delete a plan; its executions and records stay (they keep its name)."""
    before = plan_fields(plan)
    with database.atomic():
        plan.delete_instance()
        audit("plan.delete", f"plan/{plan.name}", before=before)
