"""The workers' progress message ("started a command") under the bus trust rules of DESIGN.md:
sealed and zone-bound like a result, bounded, informational only (a replay or duplicate logs and
changes nothing), a poison one dead-lettered alone; results of workers that never send it, and
messages of a newer schema, leave the consumer working."""
import json
import time

import pytest

from controller.models import AuditEvent, LogLine, Record, utcnow
from controller.progress import apply_progress_batch
from controller.results import apply_result_batch
from shared.broker import RESULT_ACTOR, RESULTS_QUEUE, publish
from shared.messages import BadMessage, RotateProgress, open_envelope, parse_envelope, seal
from tests.processes import wait_until
from tests.test_bus_trust import daemon_running, result, two_zones, zone_channel  # noqa: F401


def progress(record, zone, **fields):
    values = dict(record_id=record.id, attempt=record.attempt, zone=zone, worker_id="host:7",
                  at=time.time()) | fields
    return RotateProgress(**values)


def dispatched(*records):
    Record.update(status="dispatched", dispatched_at=utcnow()).where(
        Record.id.in_([r.id for r in records])).execute()


def lines_about(record) -> list[str]:
    return [line.message for line in LogLine.select().where(LogLine.record == record.id)
            .order_by(LogLine.id)]


def test_progress_logs_the_pick_up_once_and_changes_no_status(ctl, two_zones):
    record = two_zones["a-1"]
    dispatched(record)
    assert apply_progress_batch([progress(record, "a"), progress(record, "a")]) == {}
    assert apply_progress_batch([progress(record, "a", worker_id="host:8")]) == {}   # a replay
    picked = [line for line in lines_about(record) if "picked up" in line]
    assert picked == [f"record {record.id} (alice@a-1): picked up by worker host:7 (attempt 1)"]
    row = Record.get_by_id(record.id)
    assert (row.status, row.worker_id) == ("dispatched", None) and row.started_at is not None


@pytest.mark.parametrize("status", ["pending", "success", "failed", "unverified"])
def test_progress_for_a_record_not_in_flight_does_nothing(ctl, two_zones, status):
    record = two_zones["a-1"]
    Record.update(status=status).where(Record.id == record.id).execute()
    assert apply_progress_batch([progress(record, "a")]) == {}
    row = Record.get_by_id(record.id)
    assert (row.status, row.started_at) == (status, None) and lines_about(record) == []


def test_progress_of_an_earlier_attempt_does_nothing(ctl, two_zones):
    record = two_zones["a-1"]
    dispatched(record)
    Record.update(attempt=2).where(Record.id == record.id).execute()
    apply_progress_batch([progress(record, "a", attempt=1)])
    assert Record.get_by_id(record.id).started_at is None and lines_about(record) == []


def test_a_zone_cannot_report_progress_for_another_zones_record(ctl, two_zones):
    victim, own = two_zones["a-1"], two_zones["b-1"]
    dispatched(victim, own)
    refused = apply_progress_batch([progress(victim, "b"), progress(own, "b")])
    assert list(refused) == [0] and "zone b" in refused[0] and "zone a" in refused[0]
    assert Record.get_by_id(victim.id).started_at is None and lines_about(victim) == []
    assert Record.get_by_id(own.id).started_at is not None
    audit = AuditEvent.get(AuditEvent.action == "progress.refused")
    assert (audit.actor, audit.target, audit.outcome) == ("zone:b", f"record/{victim.id}", "refused")


def test_the_daemon_dead_letters_forged_and_poison_progress_alone(ctl, two_zones):
    victim, own = two_zones["a-1"], two_zones["b-1"]
    dispatched(victim, own)
    channel_a, channel_b = zone_channel(ctl, "a"), zone_channel(ctl, "b")
    now = time.time()
    fields = dict(record_id=victim.id, attempt=1, zone="a", worker_id="w", at=now)
    poison = [seal("progress", progress(victim, "b"), channel_b),            # forged
              seal("progress", RotateProgress.model_construct(**(fields | {"at": 1e300})), channel_a),
              seal("progress", RotateProgress.model_construct(
                  **(fields | {"worker_id": "w\nrecord 1: changed and proven"})), channel_a),
              seal("progress", RotateProgress.model_construct(**(fields | {"stage": "done"})), channel_a),
              seal("progress", progress(victim, "a"), channel_b) | {"zone": "a"},   # wrong key
              seal("progress", progress(victim, "a"), channel_a) | {"record_id": own.id}]
    for body in poison:
        publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, body)
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("progress", progress(own, "b"), channel_b))
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, seal("result", result(own, "b"), channel_b))
    with daemon_running(ctl):
        wait_until(lambda: Record.get_by_id(own.id).status == "success", 30, what="the good result")
        wait_until(lambda: len(ctl.broker.dead_letters) == len(poison), 30, what="the dead letters")
    assert Record.get_by_id(victim.id).status == "dispatched"
    assert Record.get_by_id(victim.id).started_at is None and lines_about(victim) == []
    story = lines_about(own)
    assert "picked up by worker host:7" in story[0] and "changed and proven by worker w" in story[1]
    assert AuditEvent.get(AuditEvent.action == "progress.refused").target == f"record/{victim.id}"


def test_results_of_a_worker_that_sends_no_progress_still_apply(ctl, two_zones):
    """A worker of the previous release: results only."""
    record = two_zones["a-1"]
    dispatched(record)
    assert apply_result_batch([result(record, "a")]).changed == 1
    assert Record.get_by_id(record.id).status == "success"
    assert [line for line in lines_about(record) if "picked up" in line] == []
    assert any("changed and proven" in line for line in lines_about(record))


def test_a_newer_workers_progress_is_dead_lettered_alone(ctl, two_zones):
    """A controller meeting a message it does not speak (a newer schema, an unknown kind or
    field) dead-letters that message and goes on; it is also what a controller of the previous
    release does with this release's progress messages (an unknown kind to it)."""
    record, other = two_zones["a-1"], two_zones["b-1"]
    dispatched(record, other)
    channel = zone_channel(ctl, "a")
    newer = [seal("progress", progress(record, "a"), channel) | {"v": 2},
             seal("progress", progress(record, "a"), channel) | {"kind": "progress-v2"},
             seal("progress", progress(record, "a"), channel) | {"box": channel.seal(json.dumps(
                 progress(record, "a").model_dump() | {"percent": 50}).encode())}]
    for body in newer:
        publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR, body)
    publish(ctl.broker, RESULTS_QUEUE, RESULT_ACTOR,
            seal("result", result(other, "b"), zone_channel(ctl, "b")))
    with daemon_running(ctl):
        wait_until(lambda: Record.get_by_id(other.id).status == "success", 30, what="the result")
        wait_until(lambda: len(ctl.broker.dead_letters) == len(newer), 30, what="the dead letters")
    assert Record.get_by_id(record.id).status == "dispatched"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("field, value", [
    ("record_id", 0), ("record_id", 2**63), ("attempt", 0), ("attempt", 10**6),
    ("zone", "A"), ("zone", "a\n"), ("worker_id", "w" * 256), ("worker_id", "w\nforged"),
    ("worker_id", "w\x00"), ("stage", "finished"), ("at", float("nan")), ("at", -1.0),
    ("at", 1e300), ("v", 2), ("secret", "hunter2"),
])
def test_progress_fields_are_bounded(ctl, field, value):
    valid = dict(record_id=1, attempt=1, zone="a", worker_id="w", at=time.time())
    RotateProgress.model_validate(valid)
    with pytest.raises(ValueError, match=field):
        RotateProgress.model_validate(valid | {field: value})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_progress_envelope_round_trips_and_must_match_its_body(ctl, two_zones):
    record = two_zones["a-1"]
    channel = zone_channel(ctl, "a")
    body = progress(record, "a")
    envelope = seal("progress", body, channel)
    assert (envelope["kind"], envelope["record_id"], envelope["attempt"]) == ("progress", record.id, 1)
    opened = open_envelope(parse_envelope(envelope), ctl.channel_for_zone_name("a"))
    assert opened == body
    with pytest.raises(BadMessage, match="routing"):
        open_envelope(parse_envelope(envelope | {"record_id": record.id + 1}),
                      ctl.channel_for_zone_name("a"))
