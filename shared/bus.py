"""dramatiq's RabbitMQ broker as keyturn runs it: publishing through the bus exchange, TLS with
a CA and client certificate from the settings, and a start-up check that turns a wrong CA,
password, virtual host or permission into one line instead of a consumer retrying forever."""
from __future__ import annotations

import logging
import ssl

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import BrokerConnectionError

from shared.broker import BUS_EXCHANGE, WORKER_PUBLISHES
from shared.errors import KeyturnError
from shared.settings import BrokerTls, SettingsError

logger = logging.getLogger(__name__)
REASON_CHARS = 300
DELIVERY_LIMIT = 5     # deliveries of one message, never settled, before it is dead-lettered


class BrokerSetupError(KeyturnError):
    """RabbitMQ refuses us for a reason waiting will not fix (certificate, password, virtual
    host, permissions)."""


class _ViaBus:
    """A pika channel whose publishing to the default exchange goes to the bus exchange instead
    (dramatiq's `enqueue` always names the default exchange)."""

    __slots__ = ("_channel",)

    def __init__(self, channel):
        self._channel = channel

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        return self._channel.basic_publish(exchange or BUS_EXCHANGE, routing_key, body,
                                           properties, mandatory)

    def __getattr__(self, name):
        return getattr(self._channel, name)


class BusBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker publishing through `keyturn.bus`, where each queue it declares
    (and its delay queue, for retries) is bound under its own name. The controller's broker
    declares the exchange and every queue. A worker's account may create nothing (a queue
    declared with a dead-letter exchange needs write access to the default exchange): its broker
    only checks that its zones' queues exist (a passive declare) and binds them, and leaves alone
    the controller's queues it publishes to."""

    channel = property(lambda self: _ViaBus(RabbitmqBroker.channel.fget(self)),
                       fdel=RabbitmqBroker.channel.fdel)

    def __init__(self, *, tls: BrokerTls | None, worker: bool, quorum: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.worker = worker
        self.quorum = quorum
        for parameters in self.parameter_list:
            if parameters.ssl_options is not None:      # an amqps:// URL
                parameters.ssl_options = pika.SSLOptions(
                    tls_context(tls or BrokerTls(None, None, None)), parameters.host)

    @property
    def parameter_list(self) -> list[pika.ConnectionParameters]:
        parameters = self.parameters
        return parameters if isinstance(parameters, list) else [parameters]

    def where(self) -> str:
        """host:port/vhost of the first URL, for messages (never the password)."""
        first = self.parameter_list[0]
        return f"{first.host}:{first.port}/{first.virtual_host}"

    def _ensure_queue(self, canonical_queue_name):
        if self.worker:
            if canonical_queue_name in WORKER_PUBLISHES:
                return          # the controller declares and binds them
        elif canonical_queue_name not in WORKER_PUBLISHES:
            # A controller declaring a zone's queue (to send it commands) declares the queues
            # its workers answer on too: their results wait even if no daemon ever ran yet.
            for queue in WORKER_PUBLISHES:
                self.declare_queue(queue, ensure=True)
        super()._ensure_queue(canonical_queue_name)

    def _declare_queue(self, queue_name):
        declared = (self._exists(queue_name) if self.worker else super()._declare_queue(queue_name))
        self._bind(queue_name)
        return declared

    def _declare_dq_queue(self, queue_name):
        declared = (self._exists(dq_name(queue_name)) if self.worker
                    else super()._declare_dq_queue(queue_name))
        self._bind(dq_name(queue_name))
        return declared

    def _build_queue_arguments(self, queue_name):
        """For the queue and its delay queue (dramatiq's retries wait there)."""
        return queue_arguments(queue_name, quorum=self.quorum)

    def _declare_xq_queue(self, queue_name):
        if self.worker:
            return self._exists(xq_name(queue_name))
        return self.channel.queue_declare(queue=xq_name(queue_name), durable=True,
                                          arguments=dead_letter_arguments(quorum=self.quorum))

    def _exists(self, queue_name: str):
        """A passive declare: RabbitMQ says NOT_FOUND (404) until the controller declared it."""
        return self.channel.queue_declare(queue=queue_name, passive=True)

    def _bind(self, queue_name: str) -> None:
        if not self.worker:
            self.channel.exchange_declare(BUS_EXCHANGE, exchange_type="topic", durable=True)
        self.channel.queue_bind(queue_name, BUS_EXCHANGE, routing_key=queue_name)


def queue_arguments(queue_name: str, *, quorum: bool) -> dict:
    """How every queue keyturn consumes is declared (dramatiq's and the requests queue), so
    that whoever declares it first declares it the same: dead letters go to `<name>.XQ`. As a
    quorum queue it is replicated over the cluster (it survives losing a node), and a message
    delivered DELIVERY_LIMIT times without being settled (one that kills every worker taking
    it) is dead-lettered instead of looping; dead-lettering waits until the dead-letter queue
    has the message (at-least-once, which needs `reject-publish`). Quorum queues take no
    `x-max-priority`, so keyturn uses no broker priorities."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}
    if quorum:
        arguments |= {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT,
                      "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return arguments


def dead_letter_arguments(*, quorum: bool) -> dict:
    """A dead-letter queue keeps messages for dramatiq's 7 days (replicated too: a dead letter
    is what an operator looks at when something went wrong)."""
    arguments = {"x-message-ttl": DEAD_MESSAGE_TTL}
    if quorum:
        arguments["x-queue-type"] = "quorum"
    return arguments


def broker_parameters(broker_url: str) -> list[pika.URLParameters]:
    """The KEYTURN_BROKER_URL setting (one URL, or one per cluster node separated by `;`) as
    pika's connection parameters: pika tries them in order until one node answers."""
    return [pika.URLParameters(url) for url in broker_url.split(";")]


def tls_context(tls: BrokerTls) -> ssl.SSLContext:
    """Verify RabbitMQ's certificate and host name against the CA (else the system's CAs), and
    present the client certificate if one is configured."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"KEYTURN_BROKER_CA: cannot load {tls.ca} ({_ssl_reason(exc)})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None:
        try:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(f"KEYTURN_BROKER_CERT: cannot load {tls.cert} with its key "
                                f"{tls.key} ({_ssl_reason(exc)})") from None
    return context


def declare_queues(broker, queues) -> None:
    """Declare (and bind) the queues this process has not declared yet (the controller's
    daemon, for zones registered while it runs: their workers wait for their queue)."""
    if isinstance(broker, StubBroker):
        return
    for queue in queues:
        if queue not in broker.queues or queue in broker.queues_pending:
            broker.declare_queue(queue, ensure=True)


def check_bus(broker, queues) -> None:
    """Connect and declare `queues` once at start-up. A refusal that waiting will not fix raises
    BrokerSetupError; a broker that is down, or a bus exchange the controller has not declared
    or queue the controller has not declared yet (a worker started first), is only logged: the
    consumers keep trying."""
    if isinstance(broker, StubBroker):
        return
    for queue in queues:
        try:
            broker.declare_queue(queue, ensure=True)
        except Exception as exc:
            reason, permanent = diagnose(exc)
            if permanent:
                raise BrokerSetupError(f"RabbitMQ at {broker.where()}: {reason}") from None
            logger.warning("RabbitMQ at %s is not ready (%s); the consumers keep trying",
                           broker.where(), reason)
            return


def diagnose(exc: Exception) -> tuple[str, bool]:
    """(what went wrong in one bounded line, whether it is permanent)."""
    if isinstance(exc, BrokerConnectionError) and isinstance(exc.message, Exception):
        exc = exc.message          # dramatiq wraps pika's error
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: certificate verify failed ({exc.verify_message}): is RabbitMQ's "
                f"certificate signed by KEYTURN_BROKER_CA, for this host name?"), True
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {_ssl_reason(exc)}", True
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "login refused: check the user and password in KEYTURN_BROKER_URL", True
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return f"no access to the virtual host ({_bounded(exc)})", True
    if isinstance(exc, pika.exceptions.IncompatibleProtocolError):
        text = _bounded(exc)
        hint = ("RabbitMQ asks for a client certificate: set KEYTURN_BROKER_CERT and "
                "KEYTURN_BROKER_KEY" if "CERTIFICATE_REQUIRED" in text
                else "does RabbitMQ want a client certificate (KEYTURN_BROKER_CERT and "
                     "KEYTURN_BROKER_KEY), or does this port speak the other protocol "
                     "(amqps:// or amqp://)?")
        return f"the connection ended during the handshake: {hint}", True
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        if exc.reply_code == 404:        # the controller has not declared the bus or queue yet
            return f"{exc.reply_text}: waiting for the controller to set up the bus", False
        if "inequivalent arg" in exc.reply_text:   # 406: declared before with other arguments
            return (f"{exc.reply_text}: the queue exists with other arguments (a classic queue "
                    f"and KEYTURN_BROKER_QUEUE_TYPE=quorum, or the other way round); set the "
                    f"queues' type, or move the queues (README: A RabbitMQ cluster)"), True
        return (f"{exc.reply_text}: give this account the permissions "
                f"`keyturn broker-account` prints"), True
    if isinstance(exc, pika.exceptions.AMQPError):
        return _bounded(exc), False
    raise exc


def _ssl_reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def _bounded(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"
