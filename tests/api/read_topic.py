"""Reads a Kafka topic from its beginning with a standard client (confluent-kafka), as an
operator following TrueValue's events would, and prints each record as one JSON line:
{"partition", "offset", "key", "headers": {name: value}, "value"}.

usage: read_topic.py BROKERS TOPIC COUNT [TIMEOUT_SECONDS]
Stops after COUNT records, when TIMEOUT_SECONDS (default 20) pass without reaching them, or
when no record came for 3 seconds after the first.
"""

import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main():
    brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"read-topic-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    # Every partition from its start, without joining a group.
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else [0]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = 0
    until = time.monotonic() + timeout
    last = None
    while seen < count and time.monotonic() < until:
        if last is not None and time.monotonic() - last > 3:
            break
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        last = time.monotonic()
        headers = {k: (v.decode() if v is not None else None) for k, v in (message.headers() or [])}
        key = message.key()
        print(
            json.dumps(
                {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": key.decode() if key is not None else None,
                    "headers": headers,
                    "value": message.value().decode(),
                }
            ),
            flush=True,
        )
        seen += 1
    consumer.close()


if __name__ == "__main__":
    main()
