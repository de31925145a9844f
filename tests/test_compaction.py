"""Log compaction (`cleanup.policy=compact`) and topic-level compression
(`compression.type`), through confluent-kafka (librdkafka), against Silt and
Apache Kafka alike.

Compaction is asynchronous in both brokers: the tests configure small
segments, `segment.ms` and a short cleaner backoff, then poll (with a
deadline) until the log has the shape compaction must give it. The active
segment is never cleaned, in Kafka as in Silt: after writing, the tests wait
past `segment.ms` and write one record to another key, which rolls the
segment (both brokers roll on the append after `segment.ms`)."""

from __future__ import annotations

import signal
import struct
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from silt_harness import (CLIENT_TIMEOUT_S, DeliveryTracker, admin_client, confluent_conf, consume_partitions,
                          create_topic, describe_topic_configs, future_result, produce_all, wait_until, watermarks)

#: Broker settings that make the cleaner look for work often.
CLEANER_ENV = {"SILT_LOG__CLEANER_BACKOFF_MS": "200", "SILT_LOG__RETENTION_CHECK_INTERVAL_MS": "200",
               "SILT_LOG__CLEANER_DEDUPE_BUFFER_SIZE": str(16 << 20)}
#: Topic settings that make a log cleanable within a second of being written.
COMPACT_TOPIC = {"cleanup.policy": "compact", "segment.bytes": str(1 << 20), "segment.ms": "300",
                 "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0",
                 "delete.retention.ms": "1000"}
KEYS = 100
ROUNDS = 1000
COMPACTION_TIMEOUT_S = 120.0
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def partition_dir(broker, topic: str) -> Path:
    found = [p for p in Path(broker.data_dir).rglob(f"{topic}-0") if p.is_dir()]
    assert len(found) == 1, f"the log directory of {topic}-0 under {broker.data_dir}: {found}"
    return found[0]


def stored_codecs(broker, topic: str) -> set[str]:
    """The codecs of the batches in the partition's segment files (both
    brokers store magic v2 batches in `<base offset>.log` files)."""
    codecs = set()
    for log in sorted(partition_dir(broker, topic).glob("*.log")):
        data = log.read_bytes()
        at = 0
        while at + 61 <= len(data):
            length = struct.unpack_from(">i", data, at + 8)[0]
            attributes = struct.unpack_from(">h", data, at + 21)[0]
            codecs.add(CODECS.get(attributes & 7, f"codec {attributes & 7}"))
            at += 12 + length
    return codecs


def produce(broker, topic: str, records: list[tuple[str, bytes | None]], **conf):
    p = Producer(confluent_conf(broker, acks="all", **{"linger.ms": 20, **conf}))
    tracker = DeliveryTracker()
    produce_all(p, topic, [{"id": i, "key": k.encode(), "value": v, "partition": 0} for i, (k, v) in enumerate(records)], tracker)
    assert not tracker.failed, f"produce to {topic} failed: {list(tracker.failed.items())[:3]}"
    return tracker


def read_all(broker, topic: str) -> list:
    _, high = watermarks(broker, topic, 0)
    return consume_partitions(broker, topic, {0: high}, timeout_s=CLIENT_TIMEOUT_S)[0]


def roll(broker, topic: str):
    """Makes everything written so far sealed: waits past segment.ms, then appends to another key."""
    _, high = watermarks(broker, topic, 0)
    # Rolled once a segment starts at or past `high`: counting files would
    # race with the cleaner, which merges segments meanwhile.
    last_base = lambda: max(int(p.name.split(".")[0]) for p in partition_dir(broker, topic).glob("*.log"))  # noqa: E731
    wait_until(lambda: produce(broker, topic, [("roll", b"r")]) and last_base() >= high, 30,
               f"{topic} to roll to a new segment after offset {high}", interval_s=0.4)


def compaction_done(broker, topic: str, expected: dict[bytes, tuple[int, bytes]]):
    """True once a read from 0 gives every key of `expected` exactly once, at its offset."""
    seen = [(m.key(), m.offset(), m.value()) for m in read_all(broker, topic) if m.key() != b"roll"]
    return len(seen) == len(expected) and all(expected.get(k) == (o, v) for k, o, v in seen)


# -- topic-level compression ---------------------------------------------------

@pytest.mark.parametrize("producer_codec", ["none", "gzip"])
def test_topic_compression_recompresses_on_append(broker, topic_name, producer_codec):
    create_topic(broker, topic_name, 1, {"compression.type": "zstd"})
    records = [(f"k{i}", f"value-{i}".encode() * 10) for i in range(500)]
    produce(broker, topic_name, records, **{"compression.type": producer_codec})
    got = read_all(broker, topic_name)
    assert [(m.key().decode(), m.value()) for m in got] == records
    assert [m.offset() for m in got] == list(range(len(records)))
    assert stored_codecs(broker, topic_name) == {"zstd"}, "the leader stores the topic's codec"


def test_every_compression_type_is_accepted_and_described(broker, topic_name):
    for i, codec in enumerate(["uncompressed", "gzip", "snappy", "lz4", "zstd", "producer"]):
        name = f"{topic_name}-{i}"
        create_topic(broker, name, 1, {"compression.type": codec})
        assert describe_topic_configs(broker, name)["compression.type"].value == codec


# -- compaction configs ----------------------------------------------------------

def test_compaction_configs_are_accepted_and_described(broker, topic_name):
    create_topic(broker, topic_name, 1, {"cleanup.policy": "compact,delete", "min.cleanable.dirty.ratio": "0.2",
                                         "min.compaction.lag.ms": "100", "max.compaction.lag.ms": "600000",
                                         "delete.retention.ms": "5000"})
    configs = describe_topic_configs(broker, topic_name)
    assert {k: configs[k].value for k in ("cleanup.policy", "min.cleanable.dirty.ratio", "min.compaction.lag.ms",
                                          "max.compaction.lag.ms", "delete.retention.ms")} == {
        "cleanup.policy": "compact,delete", "min.cleanable.dirty.ratio": "0.2", "min.compaction.lag.ms": "100",
        "max.compaction.lag.ms": "600000", "delete.retention.ms": "5000"}
    admin = admin_client(broker)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("compression.type", "lz4", incremental_operation=AlterConfigOpType.SET)])
    future_result(admin.incremental_alter_configs([res])[res], "IncrementalAlterConfigs")
    configs = describe_topic_configs(broker, topic_name)
    assert (configs["cleanup.policy"].value, configs["compression.type"].value) == ("compact", "lz4")


def test_a_keyless_record_is_refused_by_a_compacted_topic(broker, topic_name):
    create_topic(broker, topic_name, 1, {"cleanup.policy": "compact"})
    p = Producer(confluent_conf(broker, acks="all", retries=0))
    tracker = DeliveryTracker()
    produce_all(p, topic_name, [{"id": "nokey", "value": b"v", "partition": 0}], tracker)
    assert "nokey" in tracker.failed, "a record without a key was accepted by a compacted topic"


# -- the log cleaner -------------------------------------------------------------------

def test_overwritten_keys_compact_to_the_latest_values(broker_factory, topic_name):
    broker = broker_factory(dict(CLEANER_ENV))
    create_topic(broker, topic_name, 1, COMPACT_TOPIC)
    records = [(f"key-{k:03}", f"{r}".encode()) for r in range(ROUNDS) for k in range(KEYS)]
    produce(broker, topic_name, records, **{"compression.type": "lz4", "batch.num.messages": 1000})
    expected = {f"key-{k:03}".encode(): ((ROUNDS - 1) * KEYS + k, f"{ROUNDS - 1}".encode()) for k in range(KEYS)}
    roll(broker, topic_name)
    wait_until(lambda: compaction_done(broker, topic_name, expected), COMPACTION_TIMEOUT_S,
               f"{topic_name} to compact to {KEYS} latest values at their original offsets", interval_s=0.5)
    low, high = watermarks(broker, topic_name, 0)
    assert low == 0, "compaction keeps the log start"
    assert high >= KEYS * ROUNDS + 1


def test_tombstones_disappear_after_delete_retention(broker_factory, topic_name):
    broker = broker_factory(dict(CLEANER_ENV))
    create_topic(broker, topic_name, 1, dict(COMPACT_TOPIC, **{"delete.retention.ms": "4000"}))
    produce(broker, topic_name, [("a", b"1"), ("b", b"1"), ("a", None), ("c", b"1"), ("b", b"2")])
    roll(broker, topic_name)
    kept = lambda: [(m.key(), m.value()) for m in read_all(broker, topic_name) if m.key() != b"roll"]  # noqa: E731
    # First the older values go; the tombstone stays for delete.retention.ms after that pass.
    wait_until(lambda: kept() == [(b"a", None), (b"c", b"1"), (b"b", b"2")], COMPACTION_TIMEOUT_S,
               "the values superseded by newer records and by the tombstone to be removed", interval_s=0.2,
               diagnostics=lambda: f"read {kept()}")

    def tombstone_gone():
        # Kafka's cleaner runs only for new dirty data, not for a tombstone's
        # horizon alone (Silt's also does): give it some, in a new segment.
        roll(broker, topic_name)
        return kept() == [(b"c", b"1"), (b"b", b"2")]
    wait_until(tombstone_gone, COMPACTION_TIMEOUT_S, "the tombstone of a to be removed after delete.retention.ms",
               interval_s=0.5, diagnostics=lambda: f"read {kept()}")


def test_kill_during_cleaning_leaves_a_correct_log(broker_factory, topic_name):
    # A slow cleaner (64 KiB/s) so that SIGKILL lands in the middle of a pass.
    env = dict(CLEANER_ENV, SILT_LOG__CLEANER_IO_MAX_BYTES_PER_SECOND=str(64 << 10))
    broker = broker_factory(env)
    create_topic(broker, topic_name, 1, COMPACT_TOPIC)
    records = [(f"key-{k:03}", f"{r}-".encode() * 8) for r in range(300) for k in range(KEYS)]
    produce(broker, topic_name, records, **{"compression.type": "none", "batch.num.messages": 1000})
    expected = {f"key-{k:03}".encode(): (299 * KEYS + k, b"299-" * 8) for k in range(KEYS)}
    roll(broker, topic_name)
    cleaned = lambda: list(partition_dir(broker, topic_name).glob("*.cleaned"))  # noqa: E731
    wait_until(cleaned, COMPACTION_TIMEOUT_S, "the cleaner to start writing a cleaned segment", interval_s=0.02)
    broker.stop(signal.SIGKILL)
    broker.restart()
    latest: dict[bytes, tuple[int, bytes]] = {}
    offsets = []
    for m in read_all(broker, topic_name):
        offsets.append(m.offset())
        if m.key() != b"roll":
            latest[m.key()] = (m.offset(), m.value())
    assert offsets == sorted(set(offsets)), "offsets ascend without repeats after the restart"
    assert latest == expected, "every key's latest value survives a kill in the middle of cleaning"
