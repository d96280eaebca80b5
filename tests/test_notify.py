"""Result mail on SQLite and PostgreSQL, delivered to a real SMTP server in this process
(aiosmtpd on 127.0.0.1): the counts, the encrypted archive opened with the recipient's file
password, no secret for a recipient without one, once per execution, never for a retry."""
import email
import email.policy
import io
import ipaddress
import logging
import ssl
import time
from datetime import datetime, timedelta, timezone

import openpyxl
import pytest
import pyzipper
from pydantic import SecretStr
from aiosmtpd.controller import Controller as SMTPController
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.actions import retry_failed
from controller.models import Execution, LogLine, Record, User, utcnow
from controller.notify import (Notifier, notify_execution_finished, pending_notifications,
                               results_workbook)
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_results
from shared.messages import RotateResult
from tests.inventory_helpers import build_fleet
from tests.processes import free_port

SMTP_LOGIN, SMTP_PASSWORD = "mailer", "smtp-pw"
FILE_PASSWORD = "archive pw ü"


class Inbox:
    """An aiosmtpd handler that keeps what it receives and refuses the addresses it is told to."""

    def __init__(self, refuse=(), refuse_data=()):
        self.refuse = set(refuse)
        self.refuse_data = set(refuse_data)       # accepted as recipients, message refused
        self.received = []          # (recipients, raw bytes, authenticated)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_data & set(envelope.rcpt_tos):
            return "554 5.6.0 message refused"
        self.received.append((list(envelope.rcpt_tos), envelope.content, session.authenticated))
        return "250 OK"

    def message_to(self, address):
        [raw] = [raw for recipients, raw, _ in self.received if recipients == [address]]
        return raw, email.message_from_bytes(raw, policy=email.policy.default)



def authenticate(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=isinstance(auth_data, LoginPassword)
                      and (auth_data.login, auth_data.password)
                      == (SMTP_LOGIN.encode(), SMTP_PASSWORD.encode()))


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, trusted by the client through SSL_CERT_FILE."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def smtp(ctl):
    """Start SMTP servers pointed at by the controller's settings; stopped after the test."""
    started = []

    def start(security="none", inbox=None, **server_options):
        inbox = inbox or Inbox()
        port = free_port()
        server = SMTPController(inbox, hostname="127.0.0.1", port=port, **server_options)
        server.start()
        started.append(server)
        ctl.settings.smtp_host, ctl.settings.smtp_port = "127.0.0.1", port
        ctl.settings.smtp_security = security
        return inbox

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def finished(ctl):
    """An ended scheduled execution of three accounts: one success, one failed, one unverified;
    the plan mails alice (file password), bob (none), carol (no email) and a stranger."""
    build_fleet(ctl, assets=("web-1",), users=("u1", "u2", "u3"))
    User.create(username="alice", email="alice@example.test", password_hash="-",
                file_password=ctl.vault.encrypt(FILE_PASSWORD))
    User.create(username="bob", email="bob@example.test", password_hash="-")
    User.create(username="carol", password_hash="-")
    plan = save_plan(parse_spec({"name": "nightly", "usernames": ["u1", "u2", "u3"],
                                 "nodes": ["/prod"], "recipients": ["alice", "bob", "carol",
                                                                    "stranger"]}), ctl.vault)
    execution = start_execution(ctl, plan, trigger="schedule", started_by="scheduler")
    outcomes = {"u1": ("success", None), "u2": ("failed", "permission denied for passwd"),
                "u3": ("unverified", "could not log in with the new secret")}
    end(execution, lambda record: outcomes[record.account.username])
    return Execution.get_by_id(execution.id)


def end(execution, outcome):
    now = time.time()
    apply_results([RotateResult(record_id=r.id, attempt=r.attempt, zone="dmz", worker_id="w1",
                                status=outcome(r)[0], error=outcome(r)[1], started_at=now,
                                finished_at=now)
                   for r in Record.select().where(Record.execution == execution.id)])


def secrets_of(ctl, execution):
    return {(r.account.username, ctl.vault.decrypt(r.old_secret), ctl.vault.decrypt(r.new_secret))
            for r in Record.select().where(Record.execution == execution.id)}


def opened_sheet(message, password):
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename().endswith(".zip")
    with pyzipper.AESZipFile(io.BytesIO(attachment.get_content())) as archive:
        [name] = archive.namelist()
        with pytest.raises(RuntimeError):
            archive.read(name, pwd=b"wrong password")
        book = openpyxl.load_workbook(io.BytesIO(archive.read(name, pwd=password.encode())))
    return [[cell.value for cell in row] for row in book.active.iter_rows()]


# ---- content ------------------------------------------------------------------------------

def test_each_recipient_gets_the_result_and_only_the_archive_carries_secrets(ctl, smtp, finished):
    inbox = smtp()
    outcome = notify_execution_finished(ctl, finished.id)
    assert outcome == ("sent to alice, bob; not sent to carol, stranger "
                       "(no active user with an email address)")
    assert len(inbox.received) == 2

    raw, message = inbox.message_to("alice@example.test")
    body = message.get_body(("plain",)).get_content()
    assert message["Subject"] == f"keyturn: plan nightly, execution {finished.id}: failed"
    assert "success 1, unverified 1, failed 1, total 3" in body
    assert "web-1 u2: failed: permission denied for passwd" in body
    assert "web-1 u3: unverified: could not log in with the new secret" in body
    rows = opened_sheet(message, FILE_PASSWORD)
    assert rows[0] == ["asset", "account", "old secret", "new secret", "status", "error"]
    assert {(row[1], row[2], row[3]) for row in rows[1:]} == secrets_of(ctl, finished)
    assert {row[1]: row[4] for row in rows[1:]} == {"u1": "success", "u2": "failed",
                                                   "u3": "unverified"}
    assert not any(new in raw.decode() for _, _, new in secrets_of(ctl, finished))

    raw, message = inbox.message_to("bob@example.test")
    assert not list(message.iter_attachments())
    body = message.get_body(("plain",)).get_content()
    assert "success 1, unverified 1, failed 1, total 3" in body
    assert "set a file password" in body
    for _, old, new in secrets_of(ctl, finished):
        assert old not in raw.decode() and old not in body
        assert new not in raw.decode() and new not in body


def test_spreadsheet_cells_stay_text():
    book = openpyxl.load_workbook(io.BytesIO(results_workbook(
        [("web-1", "u1", "=1+2", "@SUM(A1)", "success", ""),
         ("web-1", "u2", "bell\x07", "x", "failed", "")])))
    rows = [[cell.value for cell in row] for row in book.active.iter_rows()]
    assert rows[1][2:4] == ["=1+2", "@SUM(A1)"]
    assert "control characters" in rows[2][2] and "bell" not in rows[2][2]


# ---- once, and never for retries ----------------------------------------------------------

def test_mail_goes_out_once_and_never_for_a_retry(ctl, smtp, finished):
    inbox = smtp()
    assert pending_notifications() == [finished.id]
    assert Notifier(ctl).tick(utcnow()) == [finished.id]
    assert notify_execution_finished(ctl, finished.id) is None
    assert Notifier(ctl).tick(utcnow()) == []           # a restarted daemon: still done
    assert len(inbox.received) == 2
    assert LogLine.get(LogLine.message.startswith("result mail: ")).execution_id == finished.id

    retry = retry_failed(ctl, finished.id, "tester")
    assert retry.trigger == "retry" and retry.total == 2
    end(retry, lambda record: ("success", None))
    assert Execution.get_by_id(retry.id).status == "success"
    assert pending_notifications() == []
    assert notify_execution_finished(ctl, retry.id) is None
    assert len(inbox.received) == 2


def test_a_running_execution_has_no_mail_yet(ctl, smtp, finished):
    inbox = smtp()
    Execution.update(status="running", finished_at=None).where(
        Execution.id == finished.id).execute()
    assert notify_execution_finished(ctl, finished.id) is None
    assert inbox.received == []


def test_without_an_smtp_host_the_log_says_so(ctl, finished):
    assert notify_execution_finished(ctl, finished.id).startswith(
        "not sent: no SMTP host is configured")
    assert pending_notifications() == []


def test_a_refused_address_is_reported_and_not_retried(ctl, smtp, finished):
    inbox = smtp(inbox=Inbox(refuse={"bob@example.test"}))
    outcome = notify_execution_finished(ctl, finished.id)
    assert outcome.startswith("sent to alice; failed for bob (550 5.1.1 no such mailbox)")
    assert [recipients for recipients, _, _ in inbox.received] == [["alice@example.test"]]
    assert pending_notifications() == []


def test_an_address_that_cannot_be_sent_fails_alone_and_once(ctl, smtp, finished, caplog):
    """An address saved before addresses were checked (CR/LF: a header injection) fails
    for its user only; the others get the mail once, and nothing is retried."""
    User.update(email="bob@example.test\r\nBcc: eve@example.test").where(
        User.username == "bob").execute()
    inbox = smtp()
    with caplog.at_level(logging.WARNING, logger="controller.notify"):
        outcome = notify_execution_finished(ctl, finished.id)
    assert outcome.startswith("sent to alice; failed for bob (ValueError)")
    assert [recipients for recipients, _, _ in inbox.received] == [["alice@example.test"]]
    assert "not sent to bob (ValueError)" in caplog.text
    secrets = [secret for _, old, new in secrets_of(ctl, finished) for secret in (old, new)]
    assert not any(secret in caplog.text for secret in secrets + [FILE_PASSWORD])
    assert pending_notifications() == []
    assert Notifier(ctl).tick(utcnow() + timedelta(hours=2)) == []
    assert len(inbox.received) == 1


def test_a_message_the_server_refuses_for_one_recipient_is_not_resent_to_the_others(
        ctl, smtp, finished):
    inbox = smtp(inbox=Inbox(refuse_data={"alice@example.test"}))
    notifier = Notifier(ctl)
    assert notifier.tick(utcnow()) == [finished.id]
    assert notifier.tick(utcnow() + timedelta(hours=2)) == []
    assert [recipients for recipients, _, _ in inbox.received] == [["bob@example.test"]]
    line = LogLine.get(LogLine.message.startswith("result mail: ")).message
    assert "sent to bob; failed for alice (554 5.6.0 message refused)" in line


# ---- transport ----------------------------------------------------------------------------

@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_tls_and_login(ctl, smtp, finished, certificate, monkeypatch, security):
    cert_file, key_file = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    tls = ({"tls_context": context, "require_starttls": True} if security == "starttls"
           else {"ssl_context": context, "auth_require_tls": False})   # aiosmtpd: TLS unseen
    inbox = smtp(security, authenticator=authenticate, auth_required=True, **tls)
    ctl.settings.smtp_user = SMTP_LOGIN
    ctl.settings.smtp_password = SecretStr(SMTP_PASSWORD)
    with pytest.raises(ssl.SSLCertVerificationError):
        notify_execution_finished(ctl, finished.id)         # an unknown certificate is refused
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    assert notify_execution_finished(ctl, finished.id).startswith("sent to alice, bob")
    assert [authenticated for _, _, authenticated in inbox.received] == [True, True]


def test_smtp_failures_are_logged_without_secrets_and_retried_later(ctl, smtp, finished,
                                                                    caplog):
    ctl.settings.smtp_host, ctl.settings.smtp_port = "127.0.0.1", free_port()    # nobody there
    notifier, now = Notifier(ctl), utcnow()
    with caplog.at_level(logging.WARNING, logger="controller.notify"):
        assert notifier.tick(now) == []
    assert f"result mail for execution {finished.id} failed (ConnectionRefusedError" in caplog.text
    assert "retrying in 0:01:00" in caplog.text
    secrets = [secret for _, old, new in secrets_of(ctl, finished) for secret in (old, new)]
    assert not any(secret in caplog.text for secret in secrets + [FILE_PASSWORD])
    assert pending_notifications() == [finished.id]

    inbox = smtp()
    assert notifier.tick(now + timedelta(seconds=30)) == []      # still waiting
    assert inbox.received == []
    assert notifier.tick(now + timedelta(seconds=61)) == [finished.id]
    assert len(inbox.received) == 2


def test_the_service_mails_on_its_own_thread(ctl, smtp, finished):
    inbox = smtp()
    notifier = Notifier(ctl, period=0.05)
    notifier.start()
    try:
        deadline = time.monotonic() + 10
        while len(inbox.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        notifier.stop()
    assert len(inbox.received) == 2 and pending_notifications() == []
