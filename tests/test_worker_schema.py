"""A controller meeting a worker of a message schema it does not speak: the worker's heartbeats
(sealed with its zone's key, like any) are read for who it is and which schema it speaks, the
zones page and `zone list` say so, and its zone's records wait as pending instead of being sent
to a worker that cannot read them and failing; forged or unbounded ones are refused."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from controller.daemon import open_heartbeat, record_heartbeats
from controller.dispatch import dispatch_pending
from controller.models import Account, Asset, Record, WorkerSeen, Zone
from controller.planning import start_execution
from controller.plans import parse_spec, save_plan
from shared import zonecrypto
from shared.broker import HEARTBEAT_ACTOR, HEARTBEATS_QUEUE, publish
from shared.messages import BadMessage, ForeignHeartbeat, parse_envelope
from tests.inventory_helpers import build_fleet
from tests.processes import keyturn_env, wait_until
from tests.test_bus_trust import daemon_running, zone_channel

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def future_heartbeat(channel, zone="a", v=2, **body) -> dict:
    """A heartbeat as a worker speaking schema `v` might send it (with fields we do not know)."""
    sealed = {"v": v, "worker_id": "new-box:9", "zone": zone, "host": "new-box",
              "version": "0.2.0", "in_flight": 1, "sent_at": time.time(), "load": [1, 2]} | body
    return {"v": v, "kind": "heartbeat", "zone": zone, "record_id": None, "attempt": None,
            "box": channel.seal(json.dumps(sealed).encode()), "trace": "x"}


@pytest.fixture
def two_zones(ctl):
    build_fleet(ctl, zone="a", assets=("a-1",), users=("alice",), node="/a")
    build_fleet(ctl, zone="b", assets=("b-1",), users=("alice",), node="/b")
    return save_plan(parse_spec({"name": "p", "usernames": ["alice"], "nodes": ["/a", "/b"]}),
                     ctl.vault)


def statuses() -> dict[str, str]:
    return {r.account.asset.name: r.status
            for r in Record.select(Record, Account, Asset).join(Account).join(Asset)}


def test_a_worker_of_another_schema_is_shown_and_its_zone_waits(ctl, two_zones, as_admin):
    publish(ctl.broker, HEARTBEATS_QUEUE, HEARTBEAT_ACTOR, future_heartbeat(zone_channel(ctl, "a")))
    with daemon_running(ctl):
        wait_until(lambda: WorkerSeen.select().count() == 1, 30, what="the heartbeat")
    seen = WorkerSeen.get()
    assert (seen.worker_id, seen.zone, seen.version, seen.message_schema) == (
        "new-box:9", "a", "0.2.0", 2)
    assert not ctl.broker.dead_letters

    page = as_admin.get("/zones").text
    assert "speaks message schema 2; this controller speaks 1" in page
    assert "records of this zone wait as pending" in page
    zone_a = as_admin.get("/api/v1/zones").json["zones"][0]
    assert zone_a["other_schemas"] == [2] and zone_a["workers"][0]["schema"] == 2

    start_execution(ctl, two_zones)
    dispatch_pending(ctl)
    assert statuses() == {"a-1": "pending", "b-1": "dispatched"}   # zone b is not held up
    WorkerSeen.update(lost_at=WorkerSeen.last_seen).execute()      # that worker went away
    dispatch_pending(ctl)
    assert statuses() == {"a-1": "dispatched", "b-1": "dispatched"}


def test_a_foreign_heartbeat_is_bounded_and_must_be_sealed_by_its_zone(ctl, two_zones):
    own = zone_channel(ctl, "a")
    assert isinstance(open_heartbeat(ctl, future_heartbeat(own)), ForeignHeartbeat)
    stranger = zonecrypto.Channel(zonecrypto.generate_private_key(), ctl.private_key.public_key)
    refused = {
        "another key": future_heartbeat(stranger),
        "zone b's key for zone a": future_heartbeat(zone_channel(ctl, "b")),
        "routing that lies": future_heartbeat(own) | {"zone": "b"},
        "a body of another version": future_heartbeat(own, v=3) | {"v": 2},
        "an unbounded version": future_heartbeat(own, v=10**9),
        "an unknown zone": future_heartbeat(own, zone="nowhere"),
        "a NUL in the host": future_heartbeat(own, host="a\x00b"),
        "a long version": future_heartbeat(own, version="9" * 65),
        "a result of schema 2": future_heartbeat(own) | {"kind": "result"},
    }
    for what, message in refused.items():
        try:
            open_heartbeat(ctl, message)
        except BadMessage:
            continue
        pytest.fail(f"accepted a heartbeat with {what}")
    record_heartbeats([open_heartbeat(ctl, future_heartbeat(own))])
    assert WorkerSeen.get().message_schema == 2


def test_a_message_of_another_schema_is_refused_naming_both_versions(ctl):
    with pytest.raises(BadMessage, match="message schema 2: this keyturn speaks 1"):
        parse_envelope({"v": 2, "kind": "result", "zone": "a", "box": "x"})
    with pytest.raises(BadMessage, match="not a keyturn envelope"):
        parse_envelope({"v": 10**9, "kind": "result", "zone": "a", "box": "x"})


def test_zone_list_names_a_worker_of_another_schema(ctl, two_zones):
    record_heartbeats([open_heartbeat(ctl, future_heartbeat(zone_channel(ctl, "a")))])
    listed = subprocess.run(["keyturn", "zone", "list"], capture_output=True, text=True,
                            timeout=60, env=keyturn_env(ctl.settings, None) | {"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    assert "speaks message schema 2, not 1" in listed.stdout
    assert Zone.select().count() == 2
