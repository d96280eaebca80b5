"""The worker agent with a real dramatiq Worker: sealed commands in, sealed results and heartbeats
out, bad messages to the dead letters; on the in-process broker and, as the `keyturn worker`
process, on RabbitMQ. Also its CLI commands."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import pika
import pytest
from click.testing import CliRunner

from shared.broker import (HEARTBEATS_QUEUE, RESULTS_QUEUE, ROTATE_ACTOR, WORKER_PUBLISHES,
                           make_broker, publish, rotate_queue)
from shared.bus import check_bus
from shared.cli import cli
from shared.errors import KeyturnError
from shared.messages import (AssetTarget, Envelope, Heartbeat, RotateCommand, RotateProgress,
                             RotateResult, open_envelope, seal)
from shared.settings import load_settings
from shared.zonecrypto import (Channel, decode_public_key, encode_public_key, generate_private_key,
                               write_private_key)
from worker.agent import WorkerAgent, start_worker

OPS = ("ops", "ops-pw-agent")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def host(ssh_farm):
    host, = ssh_farm.start_hosts(1, users={"alice": "alice-0", "bob": "bob-0"}, sudo_user=OPS)
    yield host
    host.close()


@pytest.fixture
def zones(tmp_path):
    """Settings with keys for zones dmz and east on the worker's side; the controller's channels."""
    settings = load_settings(data_dir=tmp_path / "data", worker_threads=2, heartbeat_interval=0.2)
    controller_key = generate_private_key()
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "controller.pub").write_text(encode_public_key(controller_key.public_key))
    channels = {}
    for zone in ("dmz", "east", "west"):
        zone_key = generate_private_key()
        if zone != "west":                        # west exists, but this worker does not serve it
            write_private_key(settings.zone_key_path(zone), zone_key)
        channels[zone] = Channel(controller_key, zone_key.public_key)
    return settings, channels


def sealed_command(host, channels, zone: str, record_id: int, username: str, new: str) -> dict:
    command = RotateCommand(
        record_id=record_id, attempt=1, zone=zone, login_username=OPS[0], login_secrets=[OPS[1]],
        username=username, new_secret=new, timeout=5, not_after=time.time() + 600,
        asset=AssetTarget(name=f"{zone}-1", address=host.address, port=host.port, platform="linux",
                          host_key=host.host_public_key))
    return seal("rotate", command, channels[zone])


def drain(broker, queue_name: str) -> list[Envelope]:
    """Take every message off an in-process broker's (unconsumed) queue."""
    envelopes, queue = [], broker.queues.get(queue_name)
    while queue is not None and not queue.empty():
        envelopes.append(Envelope.model_validate(dramatiq.Message.decode(queue.get_nowait()).args[0]))
    return envelopes


def test_agent_rotates_and_sends_dead_letters_aside(host, zones, caplog):
    settings, channels = zones
    broker = make_broker(None)
    caplog.set_level(logging.INFO)
    agent = start_worker(settings, ["dmz", "east"], broker)
    try:
        garbage = [{"not": "an envelope"},
                   sealed_command(host, channels, "west", 1, "alice", "x-west"),
                   sealed_command(host, channels, "dmz", 2, "alice", "x-dmz") | {"zone": "east"},
                   sealed_command(host, channels, "dmz", 3, "alice", "x-dmz") | {"box": "AAAA"}]
        for envelope in garbage:
            publish(broker, rotate_queue("dmz"), ROTATE_ACTOR, envelope)
        broker.join(rotate_queue("dmz"), fail_fast=False, timeout=30_000)
        assert len(broker.dead_letters_by_queue[rotate_queue("dmz")]) == len(garbage)
        assert caplog.text.count("goes to the dead letters") == len(garbage)
        assert "zone 'west' is not served by this worker" in caplog.text
        assert drain(broker, RESULTS_QUEUE) == []

        publish(broker, rotate_queue("dmz"), ROTATE_ACTOR,
                sealed_command(host, channels, "dmz", 10, "alice", "alice-new-dmz"))
        publish(broker, rotate_queue("east"), ROTATE_ACTOR,
                sealed_command(host, channels, "east", 11, "bob", "bob-new-east"))
        broker.join(rotate_queue("dmz"), fail_fast=False, timeout=30_000)   # old dead letters
        broker.join(rotate_queue("east"), timeout=30_000)
        assert len(broker.dead_letters) == len(garbage)
        results, started = {}, {}
        for envelope in drain(broker, RESULTS_QUEUE):
            body = open_envelope(envelope, channels[envelope.zone])
            if envelope.kind == "progress":    # each command's "started", before its result
                assert envelope.record_id not in results
                started[envelope.record_id] = body
            else:
                assert envelope.kind == "result"
                results[envelope.record_id] = body
        assert sorted(results) == sorted(started) == [10, 11]
        assert all(isinstance(p, RotateProgress) and p.worker_id == agent.worker_id
                   and p.stage == "started" and p.attempt == 1 for p in started.values())
        assert started[10].at <= results[10].started_at + 1
        assert all(isinstance(r, RotateResult) and r.status == "success" for r in results.values())
        assert results[10].worker_id == f"{socket.gethostname()}:{os.getpid()}"
        assert host.password_works("alice", "alice-new-dmz")
        assert host.password_works("bob", "bob-new-east")

        beats = [open_envelope(e, channels[e.zone]) for e in drain(broker, HEARTBEATS_QUEUE)]
        assert {beat.zone for beat in beats} == {"dmz", "east"}
        assert all(isinstance(beat, Heartbeat) and beat.worker_id == agent.worker_id for beat in beats)
    finally:
        agent.stop()
    assert "alice-new-dmz" not in caplog.text and OPS[1] not in caplog.text


def test_agent_restarted_with_more_zones_on_the_same_broker(host, zones):
    """As the embedded mode does when a zone is added while `serve` runs."""
    settings, channels = zones
    broker = make_broker(None)
    start_worker(settings, ["dmz"], broker).stop()
    agent = start_worker(settings, ["dmz", "east"], broker)
    try:
        for record_id, zone in ((31, "dmz"), (32, "east")):
            publish(broker, rotate_queue(zone), ROTATE_ACTOR,
                    sealed_command(host, channels, zone, record_id, "bob", f"bob-{zone}-31"))
            broker.join(rotate_queue(zone), timeout=30_000)
        results = [open_envelope(e, channels[e.zone]) for e in drain(broker, RESULTS_QUEUE)
                   if e.kind == "result"]
        assert sorted((r.record_id, r.status) for r in results) == [(31, "success"), (32, "success")]
    finally:
        agent.stop()


def test_progress_messages_can_be_turned_off_for_an_older_controller(host, zones):
    settings, channels = zones
    broker = make_broker(None)
    agent = start_worker(settings.model_copy(update={"worker_progress": False}), ["dmz"], broker)
    try:
        publish(broker, rotate_queue("dmz"), ROTATE_ACTOR,
                sealed_command(host, channels, "dmz", 41, "bob", "bob-quiet-41"))
        broker.join(rotate_queue("dmz"), timeout=30_000)
        assert [e.kind for e in drain(broker, RESULTS_QUEUE)] == ["result"]
    finally:
        agent.stop()


def test_missing_keys_stop_start_up_with_one_line(zones, tmp_path):
    settings, _ = zones
    with pytest.raises(KeyturnError, match=r"no private key for zone west at .*keyturn zone keygen west"):
        WorkerAgent(settings, ["dmz", "west"], make_broker(None))
    bare = load_settings(data_dir=tmp_path / "bare")
    with pytest.raises(KeyturnError, match="no controller public key: set KEYTURN_CONTROLLER_PUBLIC_KEY"):
        WorkerAgent(bare, ["dmz"], make_broker(None))
    with pytest.raises(KeyturnError, match="KEYTURN_CONTROLLER_PUBLIC_KEY: public key is not base64"):
        WorkerAgent(load_settings(data_dir=tmp_path / "bare", controller_public_key="??"), ["dmz"],
                    make_broker(None))


def test_zone_keygen_writes_a_private_key_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    first = runner.invoke(cli, ["zone", "keygen", "dmz"])
    assert first.exit_code == 0, first.output
    path = tmp_path / "data" / "zones" / "dmz.key"
    assert path.stat().st_mode & 0o777 == 0o600
    public_key = first.stdout.splitlines()[0]
    decode_public_key(public_key)
    again = runner.invoke(cli, ["zone", "keygen", "dmz"])
    assert again.stdout.splitlines()[0] == public_key and "kept the existing" in again.stderr
    elsewhere = runner.invoke(cli, ["zone", "keygen", "dmz", "--out", str(tmp_path / "k")])
    assert elsewhere.exit_code == 0 and (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert elsewhere.stdout.splitlines()[0] != public_key


def test_worker_command_needs_a_broker(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli, ["worker", "--zone", "dmz"])
    assert result.exit_code == 1
    assert "no KEYTURN_BROKER_URL" in result.output and "keyturn serve" in result.output


def test_worker_process_on_rabbitmq_rotates_and_stops_on_sigterm(host, zones, rabbitmq_url, tmp_path):
    settings, channels = zones
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")} | {
        "KEYTURN_DATA_DIR": str(settings.data_dir), "KEYTURN_BROKER_URL": rabbitmq_url,
        "KEYTURN_HEARTBEAT_INTERVAL": "0.5", "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "worker.log"
    broker = make_broker(rabbitmq_url)
    check_bus(broker, WORKER_PUBLISHES)       # what the controller's daemon declares
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--zone", "dmz"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        publish(broker, rotate_queue("dmz"), ROTATE_ACTOR,
                sealed_command(host, channels, "dmz", 21, "alice", "alice-via-rabbitmq"))
        broker.close()
        started = open_envelope(next_envelope(rabbitmq_url, RESULTS_QUEUE), channels["dmz"])
        assert isinstance(started, RotateProgress) and started.record_id == 21   # before its result
        result = open_envelope(next_envelope(rabbitmq_url, RESULTS_QUEUE), channels["dmz"])
        assert (result.record_id, result.status) == (21, "success")
        assert started.worker_id == result.worker_id
        assert result.worker_id == f"{socket.gethostname()}:{process.pid}"
        assert host.password_works("alice", "alice-via-rabbitmq")
        beat = open_envelope(next_envelope(rabbitmq_url, HEARTBEATS_QUEUE), channels["dmz"])
        assert beat.worker_id == result.worker_id
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert "stopped" in text and "Traceback" not in text and "alice-via-rabbitmq" not in text


def next_envelope(url: str, queue: str, timeout: float = 30) -> Envelope:
    """The next message on a RabbitMQ queue (taken off it), waiting for it to appear."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, _, body = channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker:   # not declared yet
                channel = connection.channel()
                body = None
            if body is not None:
                return Envelope.model_validate(dramatiq.Message.decode(body).args[0])
            time.sleep(0.1)
        raise AssertionError(f"nothing on {queue} within {timeout} s")
    finally:
        connection.close()
