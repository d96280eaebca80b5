"""A client of keyturn's request queue written from the README alone, as another system would:
it imports pika and PyNaCl, never keyturn. Reads one JSON object on stdin
({"url", "integration", "private_key", "request"}), signs and sends the request with a reply
queue of its own, and prints {"sent": <the message body>, "reply": <the answer>}."""
import base64
import json
import sys
import time
import uuid

import pika
from nacl.signing import SigningKey


def main() -> None:
    job = json.load(sys.stdin)
    payload = json.dumps(job["request"])
    key = SigningKey(base64.b64decode(job["private_key"]))
    signature = key.sign(payload.encode("utf-8")).signature
    body = json.dumps({"integration": job["integration"], "payload": payload,
                       "signature": base64.b64encode(signature).decode()}).encode()
    connection = pika.BlockingConnection(pika.URLParameters(job["url"]))
    channel = connection.channel()
    reply_to = f"integration.{job['integration']}.reply.{uuid.uuid4()}"
    channel.queue_declare(reply_to, exclusive=True)
    correlation_id = str(uuid.uuid4())
    channel.basic_publish("keyturn.bus", "keyturn.requests", body, pika.BasicProperties(
        content_type="application/json", delivery_mode=2, reply_to=reply_to,
        correlation_id=correlation_id))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, properties, answer = channel.basic_get(reply_to, auto_ack=True)
        if method is not None and properties.correlation_id == correlation_id:
            print(json.dumps({"sent": body.decode(), "reply": json.loads(answer)}))
            connection.close()
            return
        connection.sleep(0.1)
    sys.exit("no reply")


if __name__ == "__main__":
    main()
