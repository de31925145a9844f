#!/usr/bin/env python3
"""Real client traffic for the fuzz seed corpora (run by fuzz/seed): admin
requests, produce in every codec, consumer groups, offsets and metadata,
from librdkafka (confluent-kafka) and kafka-python, against BOOTSTRAP.

    traffic.py BOOTSTRAP
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# Records per codec: enough for several batches and a few sealed segments.
RECORDS_PER_CODEC = 600
TIMEOUT_S = 30


def wait(futures):
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)


def produce(bootstrap, topic, codec, idempotent):
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "enable.idempotence": idempotent,
                         "linger.ms": 5, "batch.num.messages": 50})
    for i in range(RECORDS_PER_CODEC):
        headers = [("trace", f"t-{i}".encode()), ("empty", None)] if i % 3 == 0 else None
        key = None if i % 7 == 0 else f"key-{i % 13}".encode()
        producer.produce(topic, key=key, value=(f"{codec} record {i} " * (1 + i % 5)).encode(), headers=headers)
        if i % 100 == 99:
            producer.flush(TIMEOUT_S)
    assert producer.flush(TIMEOUT_S) == 0


def consume(bootstrap, topics, group):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe(topics)
    seen, deadline = 0, time.monotonic() + TIMEOUT_S
    while seen < 200 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            seen += 1
            if seen % 50 == 0:
                consumer.commit(message=message, asynchronous=False)
    consumer.committed([TopicPartition(topics[0], 0)], timeout=TIMEOUT_S)
    consumer.offsets_for_times([TopicPartition(topics[0], 0, 0)], timeout=TIMEOUT_S)
    consumer.get_watermark_offsets(TopicPartition(topics[0], 0), timeout=TIMEOUT_S)
    consumer.close()


def admin_requests(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait(admin.create_topics([NewTopic("fuzz-admin", 2, 1, config={"retention.ms": "3600000"})]))
    wait(admin.create_partitions([NewPartitions("fuzz-admin", 3)]))
    wait(admin.describe_configs([ConfigResource("TOPIC", "fuzz-admin"), ConfigResource("BROKER", "0")]))
    entry = ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
    wait(admin.incremental_alter_configs([ConfigResource("TOPIC", "fuzz-admin", incremental_configs=[entry])]))
    admin.describe_cluster().result(timeout=TIMEOUT_S)
    admin.list_consumer_groups().result(timeout=TIMEOUT_S)
    wait(admin.describe_consumer_groups(["fuzz-group"]))
    admin.list_topics(timeout=TIMEOUT_S)
    wait(admin.delete_records([TopicPartition("fuzz-admin", 0, 0)]))
    wait(admin.delete_topics(["fuzz-admin"]))


def kafka_python(bootstrap):
    """A second client library: other request versions and encodings."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
    for i in range(20):
        producer.send("fuzz-kafka-python", key=b"k", value=f"kafka-python {i}".encode(), headers=[("h", b"v")])
    producer.flush(TIMEOUT_S)
    consumer = KafkaConsumer("fuzz-kafka-python", bootstrap_servers=bootstrap, group_id="fuzz-kafka-python",
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    for _ in consumer:
        pass
    consumer.commit()
    consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.list_consumer_groups()
    admin.describe_consumer_groups(["fuzz-kafka-python"])
    admin.list_consumer_group_offsets("fuzz-kafka-python")
    admin.close()


def main(bootstrap):
    for codec in CODECS:
        produce(bootstrap, f"fuzz-{codec}", codec, idempotent=codec in ("none", "zstd"))
    consume(bootstrap, [f"fuzz-{codec}" for codec in CODECS], "fuzz-group")
    admin_requests(bootstrap)
    kafka_python(bootstrap)


if __name__ == "__main__":
    main(sys.argv[1])
