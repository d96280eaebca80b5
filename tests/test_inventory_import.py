"""CSV import: every row is checked before anything is written (each bad row named by line and
field), and a large file is written in short transactions that let other writers in."""
from __future__ import annotations

import io
import threading
import time
from datetime import datetime

import pytest

from controller import inventory
from controller.db import database
from controller.models import Asset, AuditEvent, Node
from shared.errors import KeyturnError
from tests.inventory_helpers import build_fleet

HEADER = "name,address,zone,port,node\n"


def csv_of(count: int, start: int = 0) -> bytes:
    return (HEADER + "".join(f"h{i},10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256},dmz,22,"
                             f"/dc/rack{i % 7}\n" for i in range(start, start + count))).encode()


def test_a_file_with_bad_rows_writes_nothing_and_names_each_row_and_field(ctl):
    build_fleet(ctl, users=())
    data = (HEADER + "ok-1,10.0.0.1,dmz,22,/new\n"
            "=cmd,10.0.0.2,dmz,22,\n"               # line 3: name
            "ok-2,10.0.0.3\\n,dmz,,\n"             # line 4: address
            "ok-3,10.0.0.4,dmz,²,\n"                # line 5: port
            "ok-4,10.0.0.5,nowhere,,\n"             # line 6: zone
            "web-1,10.0.0.6,dmz,,\n"                # line 7: taken
            "ok-1,10.0.0.7,dmz,,\n"                 # line 8: twice in the file
            "ok-5,10.0.0.8,dmz,,/a/../b\n").encode()  # line 9: node
    with pytest.raises(KeyturnError) as caught:
        inventory.import_assets(data)
    message = str(caught.value)
    assert message.startswith("nothing imported; fix 7 rows")
    for line, field in [(3, "name"), (4, "address"), (5, "port"), (6, "zone"), (7, "name"),
                        (8, "name"), (9, "node")]:
        assert f"line {line}: {field}:" in message, (line, field, message)
    assert "line 2:" not in message
    assert Asset.select().count() == 1 and not Node.select().where(Node.path == "/new").exists()


@pytest.mark.parametrize("data,words", [
    (b"name,address\nx,10.0.0.1\n", "CSV header lacks zone"),
    (b"name,address,zone\n\xff\xfe,10.0.0.1,dmz\n", "not UTF-8"),
    (b"name,address,zone\nx,10.0.0.1,\"" + b"a" * 200_000 + b"\"\n", "line 2"),
], ids=["header", "encoding", "huge-field"])
def test_unreadable_files_are_refused_clearly(ctl, data, words):
    build_fleet(ctl, users=())
    with pytest.raises(KeyturnError) as caught:
        inventory.import_assets(data)
    assert words in str(caught.value) and len(str(caught.value)) < 500
    assert Asset.select().count() == 1


def test_an_import_reports_what_it_wrote(ctl):
    build_fleet(ctl, users=())
    done = inventory.import_assets(csv_of(1200))
    assert (done.assets, done.nodes, done.transactions) == (1200, 8, 3)   # /dc and 7 racks
    rack = Asset.get(Asset.name == "h8")
    assert (rack.node.path, rack.address, rack.port, rack.zone.name) == ("/dc/rack1", "10.0.0.8",
                                                                        22, "dmz")
    assert isinstance(rack.created_at, datetime)


def test_the_console_imports_through_the_same_checks(as_admin, fleet):
    answer = as_admin.post("/api/v1/assets/import",
                           {"file": (io.BytesIO(csv_of(3)), "a.csv")},
                           content_type="multipart/form-data",
                           headers={"X-CSRF-Token": as_admin.csrf()})
    assert answer.status_code == 201 and (answer.json["created"], answer.json["nodes"]) == (3, 4)
    bad = (HEADER + "../../etc,10.0.0.1,dmz,,\n").encode()
    answer = as_admin.post("/api/v1/assets/import", {"file": (io.BytesIO(bad), "b.csv")},
                           content_type="multipart/form-data",
                           headers={"X-CSRF-Token": as_admin.csrf()})
    assert 400 <= answer.status_code < 500 and "line 2: name:" in answer.json["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_other_writers_get_in_while_a_large_import_runs(ctl):
    """SQLite has one write lock: while 30,000 rows are imported in one thread, another
    connection's write transactions succeed, land between the import's transactions, and
    each sees whole batches of at most IMPORT_BATCH rows."""
    build_fleet(ctl, users=())
    total = 30_000
    data = csv_of(total)
    importing, seen, failures, waits = threading.Event(), [], [], []

    def run_import():
        importing.set()
        try:
            inventory.import_assets(data)
        finally:
            database.close()

    importer = threading.Thread(target=run_import)
    importer.start()
    importing.wait()
    try:
        while importer.is_alive():
            started = time.monotonic()
            try:
                with database.atomic():          # BEGIN IMMEDIATE: takes the write lock
                    seen.append(Asset.select().count() - 1)
                    AuditEvent.create(actor="test", action="probe", target="import")
            except Exception as exc:             # "database is locked" would land here
                failures.append(exc)
            waits.append(time.monotonic() - started)
            time.sleep(0.005)
    finally:
        importer.join()
    assert not failures
    assert Asset.select().count() == total + 1
    inside = [count for count in seen if 0 < count < total]
    assert len(set(inside)) >= 3, seen           # the probe got in between several batches
    assert all(count % inventory.IMPORT_BATCH == 0 for count in seen), seen
    print(f"longest wait for the write lock: {max(waits) * 1000:.0f} ms over {len(waits)} probes")


def test_a_name_taken_during_the_write_stops_it_and_says_what_was_written(ctl, monkeypatch):
    build_fleet(ctl, users=())
    checked = inventory.checked_rows

    def then_someone_adds_h700(data):
        rows = checked(data)
        inventory.add_asset("h700", "10.9.9.9", 22, "linux", "dmz", None, None)
        return rows

    monkeypatch.setattr(inventory, "checked_rows", then_someone_adds_h700)
    with pytest.raises(KeyturnError) as caught:
        inventory.import_assets(csv_of(1200))
    assert str(caught.value).startswith("500 of 1200 assets imported (the rows before line 502); "
                                        "stopped at lines 502-1001")
    assert Asset.select().count() == 1 + 1 + 500
