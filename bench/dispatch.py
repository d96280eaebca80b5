"""Dispatch throughput: a plan over 100,000 accounts, from `plan run` until every message is in
RabbitMQ and every record is committed, on SQLite and on PostgreSQL; the reference is raw pika
publishing as many messages of the same size in the same run.

    python -m bench.dispatch [--accounts 100000]
"""
from __future__ import annotations

import os

import click
import pika

from bench.support import Stopwatch, bench_plan, queue_depth, report, temp_vhost
from controller.models import Execution, Record
from controller.planning import run_plan
from shared.broker import rotate_queue


def keyturn_dispatch(kind: str, accounts: int) -> dict:
    with bench_plan(kind, accounts) as (ctl, plan, amqp):
        with Stopwatch() as watch:
            execution = run_plan(ctl, plan)
        queued = queue_depth(amqp, rotate_queue("bench"))
        dispatched = Record.select().where(Record.status == "dispatched").count()
        assert execution.total == accounts == queued == dispatched, (execution.total, queued, dispatched)
        size = average_message_size(amqp)
        Execution.delete().execute()
        return {"run": f"keyturn {kind}", "accounts": accounts, "seconds": watch.seconds,
                "per_second": accounts / watch.seconds, "message_bytes": size}


def average_message_size(url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    sizes = []
    for _ in range(100):
        _, _, body = channel.basic_get(rotate_queue("bench"), auto_ack=False)
        sizes.append(len(body))
    connection.close()
    return sum(sizes) // len(sizes)


def raw_pika(count: int, size: int) -> dict:
    """The reference: a pika BlockingConnection publishing persistent messages, nothing else."""
    body = os.urandom(size // 2 + 1).hex().encode()[:size]
    with temp_vhost() as amqp:
        connection = pika.BlockingConnection(pika.URLParameters(amqp))
        channel = connection.channel()
        channel.queue_declare("raw", durable=True)
        properties = pika.BasicProperties(delivery_mode=2)
        with Stopwatch() as watch:
            for _ in range(count):
                channel.basic_publish("", "raw", body, properties)
            connection.process_data_events(0)
            while queue_depth(amqp, "raw") < count:
                connection.process_data_events(0.01)
        connection.close()
    return {"run": "raw pika", "accounts": count, "seconds": watch.seconds,
            "per_second": count / watch.seconds, "message_bytes": size}


@click.command()
@click.option("--accounts", default=100_000, show_default=True)
def main(accounts):
    rows = [keyturn_dispatch("sqlite", accounts), keyturn_dispatch("postgres", accounts)]
    rows.append(raw_pika(accounts, rows[0]["message_bytes"]))
    reference = rows[-1]["per_second"]
    for row in rows:
        row["ratio_to_raw"] = row["per_second"] / reference
    report("dispatch throughput (target: >= 5000/s and >= 0.3 x raw pika)", rows)


if __name__ == "__main__":
    main()
