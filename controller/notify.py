"""Result mail: when an execution of a plan ends, each recipient of the plan gets one mail with
the counts and the accounts that did not succeed.

Secrets never travel in plain mail: a recipient with a file password also gets the per-account
results (old and new secrets included) as a spreadsheet inside an AES-256 zip opened with that
password; a recipient without one gets no secret and is asked to set one. Retries (trigger
`retry`) send no mail, and no mail goes out twice for an execution or to a recipient: each
recipient is sent to once, a failure for one is reported and not retried, and the outcome is
written to the execution's log.
"""
from __future__ import annotations

import io
import logging
import smtplib
import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Iterator

import openpyxl
import pyzipper
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from controller.executions import log
from controller.models import Account, Asset, Execution, Plan, Record, User, utcnow
from controller.runtime import Controller
from controller.scheduling import Ticker
from shared.settings import Settings

logger = logging.getLogger(__name__)

MAIL_LOG = "result mail: "          # how the outcome reads in the execution log
SMTP_TIMEOUT = 30
NOTIFY_SECONDS = 5.0
RETRY_SECONDS, RETRY_MAX_SECONDS = 60, 3600
LISTED_FAILURES = 100
COLUMNS = ("asset", "account", "old secret", "new secret", "status", "error")
NO_FILE_PASSWORD = ("No secrets are attached: set a file password in keyturn to receive the "
                    "new secrets in an encrypted archive.")


# ---- which executions need mail -----------------------------------------------------------

def pending_notifications(execution_ids: list[int] | None = None) -> list[int]:
    """Ended executions of plans, and those their failure brake paused, retries excepted,
    whose result mail is not done yet (among `execution_ids` when given). Resuming one makes
    its next stop mail again."""
    stopped = ((Execution.status.not_in(("running", "paused")))
               | (Execution.paused_by == "brake"))      # the failure brake mails too
    query = (Execution.select(Execution.id)
             .where(stopped & Execution.plan.is_null(False)
                    & (Execution.trigger != "retry") & Execution.notified_at.is_null()))
    if execution_ids is not None:
        query = query.where(Execution.id.in_(execution_ids))
    return [row for (row,) in query.order_by(Execution.id).tuples()]


def claim_notification(execution_id: int) -> bool:
    """Take the mail of one execution, so that two daemons never both send it."""
    return bool(Execution.update(notified_at=utcnow())
                .where((Execution.id == execution_id) & Execution.notified_at.is_null()).execute())


# ---- the mail -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """What every recipient of one execution's mail shares."""

    execution: Execution
    summary: str
    rows: list[tuple[str, ...]]

    @property
    def archive_name(self) -> str:
        return f"keyturn-execution-{self.execution.id}"


def load_report(ctl: Controller, execution: Execution) -> Report:
    records = (Record.select(Record, Account, Asset).join(Account).join(Asset)
               .where(Record.execution == execution.id).order_by(Asset.name, Account.username))
    rows = [(r.account.asset.name, r.account.username, reveal(ctl, r.old_secret),
             reveal(ctl, r.new_secret), r.status, r.error or "") for r in records]
    return Report(execution, summary_text(execution, rows), rows)


def reveal(ctl: Controller, ciphertext: bytes | None) -> str:
    return "" if ciphertext is None else ctl.vault.decrypt(ciphertext)


def summary_text(execution: Execution, rows: list[tuple[str, ...]]) -> str:
    """The part of the body without secrets: the plan, the counts and the failed accounts."""
    e = execution
    lines = [f"Plan:      {e.plan_name}",
             f"Execution: {e.id} ({e.trigger}, started by {e.started_by})",
             f"Result:    {e.status}" + (f" ({e.pause_reason})" if e.pause_reason else ""),
             f"Started:   {moment(e.created_at)}",
             f"Finished:  {moment(e.finished_at)}",
             f"Accounts:  success {e.succeeded}, unverified {e.unverified}, failed {e.failed}, "
             f"total {e.total}" + (f" ({e.skipped} skipped, see the execution log)"
                                   if e.skipped else "")]
    failures = [row for row in rows if row[4] in ("failed", "unverified")]
    if failures:
        lines += ["", "Accounts that did not succeed:"]
        lines += [f"  {asset} {account}: {status}: {error or 'no reason given'}"
                  for asset, account, _, _, status, error in failures[:LISTED_FAILURES]]
        if len(failures) > LISTED_FAILURES:
            lines.append(f"  ... and {len(failures) - LISTED_FAILURES} more")
    return "\n".join(lines)


def moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def results_workbook(rows: list[tuple[str, ...]]) -> bytes:
    """The per-account results as .xlsx; every cell is text, so a secret such as `=1+2` stays a
    secret and never becomes a formula."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "results"
    for row in [COLUMNS, *rows]:
        sheet.append([cell_text(value) for value in row])
        for cell in sheet[sheet.max_row]:
            cell.data_type = "s"
    data = io.BytesIO()
    book.save(data)
    return data.getvalue()


def cell_text(value: str) -> str:
    """A value a spreadsheet can hold: xlsx has no control characters (and openpyxl would put
    the value in its error message), so such a secret is left to the console."""
    if ILLEGAL_CHARACTERS_RE.search(value):
        return "(has control characters: reveal it in the console)"
    return value


def encrypted_zip(name: str, data: bytes, password: str) -> bytes:
    """`data` as file `name` inside a zip encrypted with AES-256 (WinZip AE-2)."""
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED,
                             encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        archive.writestr(name, data)
    return buffer.getvalue()


def build_message(ctl: Controller, report: Report, user: User) -> EmailMessage:
    """One recipient's mail: the shared summary, plus the encrypted archive when they have a
    file password to open it."""
    e = report.execution
    message = EmailMessage()
    message["From"] = ctl.settings.smtp_from
    message["To"] = user.email
    message["Subject"] = f"keyturn: plan {e.plan_name}, execution {e.id}: {e.status}"
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain=ctl.settings.smtp_from.rpartition("@")[2] or None)
    if user.file_password is None:
        message.set_content(f"{report.summary}\n\n{NO_FILE_PASSWORD}\n")
        return message
    message.set_content(f"{report.summary}\n\nThe per-account results, with the old and new "
                        f"secrets, are in {report.archive_name}.zip: open it with your keyturn "
                        f"file password.\n")
    archive = encrypted_zip(f"{report.archive_name}.xlsx", results_workbook(report.rows),
                            ctl.vault.decrypt(user.file_password))
    message.add_attachment(archive, maintype="application", subtype="zip",
                           filename=f"{report.archive_name}.zip")
    return message


# ---- sending ------------------------------------------------------------------------------

@contextmanager
def smtp_session(settings: Settings) -> Iterator[smtplib.SMTP]:
    """A connection per the settings: plain, STARTTLS or implicit TLS (certificates checked
    against the system's CAs, or SSL_CERT_FILE), logged in when a user is set."""
    context = ssl.create_default_context()
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT,
                                context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_user:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_user, password)
        yield smtp


def recipients(plan: Plan | None) -> tuple[list[User], list[str]]:
    """The plan's active recipients with an email address, and the names it has without one."""
    names = plan.recipients if plan else []
    users = list(User.select()
                 .where(User.username.in_(names) & User.active & User.email.is_null(False)
                        & (User.email != "")).order_by(User.username))
    found = {user.username for user in users}
    return users, [name for name in names if name not in found]


def deliver(ctl: Controller, execution: Execution) -> str:
    """Send the execution's mail to each recipient; returns the outcome for the log."""
    users, unreachable = recipients(Plan.get_or_none(Plan.id == execution.plan_id))
    if users and not ctl.settings.smtp_host:
        return "not sent: no SMTP host is configured (KEYTURN_SMTP_HOST)"
    sent, failed = send_all(ctl, load_report(ctl, execution), users) if users else ([], [])
    parts = [f"sent to {', '.join(sent)}" if sent else "",
             f"failed for {', '.join(failed)}" if failed else "",
             f"not sent to {', '.join(unreachable)} (no active user with an email address)"
             if unreachable else ""]
    return "; ".join(part for part in parts if part) or "the plan names no recipients"


def send_all(ctl: Controller, report: Report, users: list[User]) -> tuple[list[str], list[str]]:
    """Mail each user once over one SMTP session; returns who got it and who did not (with
    the reason). A recipient's failure (refused, an address that cannot be sent) is reported
    and not retried, so nobody gets the archive twice. Only a connection lost before anyone
    got the mail raises, for a later retry of the whole."""
    sent, failed = [], []
    with smtp_session(ctl.settings) as smtp:
        for user in users:
            try:
                smtp.send_message(build_message(ctl, report, user))
            except Exception as exc:
                if lost_connection(exc) and not sent:
                    raise
                failed.append(f"{user.username} ({refusal(exc)})")
                logger.warning("result mail for execution %s not sent to %s (%s)",
                               report.execution.id, user.username, refusal(exc))
            else:
                sent.append(user.username)
    return sent, failed


def lost_connection(exc: Exception) -> bool:
    """The SMTP server went away (not: it refused this one message)."""
    return isinstance(exc, smtplib.SMTPServerDisconnected) or (
        isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException))


def refusal(exc: Exception) -> str:
    """Why one recipient's mail failed, as the server said it, without any secret."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        return f"{code} {reply.decode(errors='replace')}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    return describe(exc)


def notify_execution_finished(ctl: Controller, execution_id: int) -> str | None:
    """Mail an ended execution's result to its plan's recipients, once. Returns the outcome
    (also written to the execution log), or None when no mail is due. SMTP errors raise and
    leave the mail pending for a retry."""
    if not pending_notifications([execution_id]) or not claim_notification(execution_id):
        return None
    try:
        outcome = deliver(ctl, Execution.get_by_id(execution_id))
    except Exception:
        Execution.update(notified_at=None).where(Execution.id == execution_id).execute()
        raise
    log(execution_id, MAIL_LOG + outcome)
    return outcome


class Notifier(Ticker):
    """The daemon's mailer: mails each pending execution; after a failure that execution waits
    a growing delay and the tick stops there, so an SMTP outage costs one attempt per tick."""

    def __init__(self, ctl: Controller, period: float = NOTIFY_SECONDS):
        super().__init__("keyturn-notify", period)
        self.ctl = ctl
        self._retry: dict[int, tuple[int, datetime]] = {}    # execution -> (failures, not before)

    def tick(self, now: datetime) -> list[int]:
        """Mail what is pending and due; returns the executions handled."""
        handled = []
        for execution_id in pending_notifications():
            failures, not_before = self._retry.get(execution_id, (0, now))
            if now < not_before:
                continue
            try:
                notify_execution_finished(self.ctl, execution_id)
            except Exception as exc:
                self._retry[execution_id] = (failures + 1, now + retry_delay(failures))
                logger.warning("result mail for execution %s failed (%s); retrying in %s",
                               execution_id, describe(exc), retry_delay(failures))
                break
            self._retry.pop(execution_id, None)
            handled.append(execution_id)
        return handled


def describe(exc: Exception) -> str:
    """An error for the log: SMTP and network errors say what the server said; any other
    error gives only its type, since its text might quote a secret."""
    if isinstance(exc, (smtplib.SMTPException, OSError)):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def retry_delay(failures: int) -> timedelta:
    return timedelta(seconds=min(RETRY_SECONDS * 2 ** failures, RETRY_MAX_SECONDS))
