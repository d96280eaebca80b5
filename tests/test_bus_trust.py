"""The bus trust rules of DESIGN.md on the daemon's consumers: a zone's key speaks only for its
own zone's records, one poison message is dead-lettered alone while the rest of its batch is
applied, and every number and string in a message is bounded."""
import contextlib
import time

import pytest

from controller.daemon import Daemon
from controller.models import Account, Asset, AuditEvent, Record, WorkerSeen
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from controller.results import apply_result_batch
from shared import zonecrypto
from shared.broker import (HEARTBEAT_ACTOR, HEARTBEATS_QUEUE, RESULT_ACTOR, RESULTS_QUEUE,
                           publish)
from shared.messages import BadMessage, Heartbeat, RotateCommand, RotateResult, parse_envelope, seal
from tests.inventory_helpers import build_fleet
from tests.processes import wait_until


@contextlib.contextmanager
def daemon_running(ctl):
    """The daemon's consumers on the in-process broker, for the length of a `with` block."""
    daemon = Daemon(ctl)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def zone_channel(ctl, zone):
    """What a worker of `zone` seals with (its zone key, the controller's public key)."""
    return zonecrypto.Channel(zonecrypto.read_private_key(ctl.settings.zone_key_path(zone)),
                              ctl.private_key.public_key)


@pytest.fixture
def two_zones(ctl):
    """Zone a (asset a-1) and zone b (asset b-1), alice on each; one record per asset pending."""
    build_fleet(ctl, zone="a", assets=("a-1",), users=("alice",), node="/a")
    build_fleet(ctl, zone="b", assets=("b-1",), users=("alice",), node="/b")
    plan = save_plan(parse_spec({"name": "p", "usernames": ["alice"], "nodes": ["/a", "/b"]}),
                     ctl.vault)
    start_execution(ctl, plan)
    return {r.account.asset.name: r for r in Record.select(Record, Account, Asset).join(Account).join(Asset)}


def result(record, zone, status="success", **fields):
    now = time.time()
    return RotateResult(record_id=record.id, attempt=record.attempt, zone=zone, worker_id="w",
                        status=status, started_at=now, finished_at=now, **fields)


def test_a_zone_cannot_speak_for_another_zones_records(ctl, two_zones):
    victim, own = two_zones["a-1"], two_zones["b-1"]
    forged = result(victim, "b", host_key="ssh-ed25519 AAAAforged")
    applied = apply_result_batch([forged, result(own, "b")])
    assert applied.changed == 1 and list(applied.refused) == [0]
    assert "zone b" in applied.refused[0] and "zone a" in applied.refused[0]
    assert Record.get_by_id(victim.id).status == "pending"          # untouched
    assert Asset.get(Asset.name == "a-1").host_key is None          # nothing pinned either
    victim_account = Account.get_by_id(victim.account_id)
    assert victim_account.secret_current == victim.old_secret       # still the old secret
    assert Record.get_by_id(own.id).status == "success"
    audit = AuditEvent.get(AuditEvent.action == "result.refused")
    assert (audit.actor, audit.target) == ("zone:b", f"record/{victim.id}")


def test_the_daemon_dead_letters_a_forged_result_and_applies_the_rest(ctl, two_zones):
    victim, own = two_zones["a-1"], two_zones["b-1"]
    with daemon_running(ctl):
        channel_b = zone_channel(ctl, "b")
        publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", result(victim, "b"), channel_b))
        publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", result(own, "b"), channel_b))
        wait_until(lambda: Record.get_by_id(own.id).status == "success", 30, what="the good result")
        wait_until(lambda: len(ctl.broker.dead_letters) == 1, 30, what="the forged one dead-lettered")
    assert Record.get_by_id(victim.id).status == "pending"


def poison_results(ctl, record):
    """Each of the reviewers' poison messages, as published by someone on the bus."""
    channel = zone_channel(ctl, "a")
    now = time.time()
    fields = dict(attempt=1, zone="a", worker_id="w", status="success", started_at=now,
                  finished_at=now)
    clear_nul = dict(seal("result", result(record, "a"), channel), zone="a\x00")
    huge_id = seal("result", RotateResult.model_construct(record_id=2**63, **fields), channel)
    huge_id["record_id"] = 2**63
    far_time = seal("result", RotateResult.model_construct(
        record_id=record.id, **(fields | {"finished_at": 1e300})), channel)
    nul_error = seal("result", RotateResult.model_construct(
        record_id=record.id, **(fields | {"status": "failed", "error": "x\x00y"})), channel)
    long_worker = seal("result", RotateResult.model_construct(
        record_id=record.id, **(fields | {"worker_id": "w" * 100_000})), channel)
    return [clear_nul, huge_id, far_time, nul_error, long_worker]


def test_poison_results_are_dead_lettered_alone_and_the_batch_applies(ctl, two_zones):
    record, other = two_zones["a-1"], two_zones["b-1"]
    for body in poison_results(ctl, record):
        publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, body)
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR,
            seal("result", result(other, "b"), zone_channel(ctl, "b")))
    with daemon_running(ctl):
        wait_until(lambda: Record.get_by_id(other.id).status == "success", 30, what="the good result")
        wait_until(lambda: len(ctl.broker.dead_letters) == 5, 30, what="five dead letters")
    assert Record.get_by_id(record.id).status == "pending"


def test_a_poison_heartbeat_does_not_stop_the_others(ctl, two_zones):
    channel = zone_channel(ctl, "a")
    beat = dict(worker_id="host:1", zone="a", host="host", version="0.1", in_flight=0)
    publish(ctl.broker, HEARTBEATS_QUEUE, HEARTBEAT_ACTOR,
            seal("heartbeat", Heartbeat.model_construct(**beat, sent_at=1e300), channel))
    publish(ctl.broker, HEARTBEATS_QUEUE, HEARTBEAT_ACTOR,
            seal("heartbeat", Heartbeat.model_construct(**(beat | {"in_flight": -1}), sent_at=time.time()), channel))
    publish(ctl.broker, HEARTBEATS_QUEUE, HEARTBEAT_ACTOR,
            seal("heartbeat", Heartbeat(**(beat | {"worker_id": "host:2"}), sent_at=time.time()), channel))
    with daemon_running(ctl):
        wait_until(lambda: WorkerSeen.select().count() == 1, 30, what="the good heartbeat")
        wait_until(lambda: len(ctl.broker.dead_letters) == 2, 30, what="two dead letters")
    assert WorkerSeen.get().worker_id == "host:2"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("field, value", [
    ("zone", "a\n"), ("zone", "a\x00"), ("record_id", 2**63), ("record_id", 0),
    ("attempt", 10**6), ("box", "x" * (1024 * 1024 + 1)),
])
def test_envelope_fields_are_bounded(ctl, field, value):
    envelope = {"v": 1, "kind": "result", "zone": "a", "record_id": 1, "attempt": 1, "box": "x"}
    parse_envelope(envelope)
    with pytest.raises(BadMessage, match=field):
        parse_envelope(envelope | {field: value})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("model, field, value", [
    (RotateResult, "started_at", float("nan")), (RotateResult, "started_at", -1.0),
    (RotateResult, "error", "e" * 4001), (RotateResult, "error_code", "Bad Code"),
    (RotateResult, "login_index", 10**9), (RotateResult, "worker_id", "w\nforged log line"),
    (RotateCommand, "not_after", 1e300), (RotateCommand, "timeout", 1e9),
    (RotateCommand, "username", "alice\n"), (RotateCommand, "new_secret", "s" * 20_000),
    (RotateCommand, "new_secret", "a\x00b"), (RotateCommand, "login_secrets", ["x"] * 10),
])
def test_message_bodies_are_bounded(ctl, model, field, value):
    now = time.time()
    valid = {RotateResult: dict(record_id=1, attempt=1, zone="a", worker_id="w", status="failed",
                                started_at=now, finished_at=now),
             RotateCommand: dict(record_id=1, attempt=1, zone="a", username="alice",
                                 login_username="root", login_secrets=["pw"], new_secret="new",
                                 not_after=now + 60, asset=dict(name="a-1", address="127.0.0.1",
                                                                port=22, platform="linux"))}[model]
    model.model_validate(valid)
    with pytest.raises(ValueError, match=field):
        model.model_validate(valid | {field: value})
