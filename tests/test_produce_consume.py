"""Produce/consume round trips for every compression codec with three
independent clients (confluent-kafka/librdkafka, kafka-python, kcat).

The big confluent-kafka round trip checks, for 100,000 keyed records with
headers per codec: exact content, per-partition order, contiguous offsets
from 0 with no gaps or duplicates, and that every record sits at the
partition and offset its delivery report promised.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from confluent_kafka import Producer

from silt_harness import (DeliveryTracker, HarnessError, client_errors_sink, confluent_conf,
                          consume_partitions, create_topic, kafka_python_kwargs, produce_all)

CODECS = ["gzip", "snappy", "lz4", "zstd"]
BIG_RECORDS = 100_000
BIG_PARTITIONS = 6
KEYS = 4099  # distinct keys; prime so keys and partitions don't line up
SMALL_RECORDS = 2_000
KCAT_RECORDS = 1_000
_FILLER = bytes(range(32, 127)) * 3


def make_record(i: int, codec: str) -> tuple[bytes, bytes, list]:
    """Deterministic record #i: key, value, headers (incl. a null value,
    an empty value and a repeated header key, whose order must survive)."""
    key = b"key-%05d" % (i % KEYS)
    value = b"%s-value-%07d-" % (codec.encode(), i) + _FILLER[: i % 181]
    headers = [("seq", b"%d" % i), ("codec", codec.encode()), ("empty", b""), ("null", None),
               ("dup", b"first"), ("dup", b"second")]
    return key, value, headers


def seq_of(headers) -> int:
    for k, v in headers or ():
        if k == "seq":
            return int(v)
    raise AssertionError(f"record has no seq header: {headers!r}")


def check_partition_log(partition: int, msgs: list, expected_count: int, problems: list):
    offsets = [m.offset() for m in msgs]
    if offsets != list(range(expected_count)):
        for want, got in zip(range(expected_count), offsets):
            if want != got:
                problems.append(f"partition {partition}: offset {want} expected, got {got} "
                                f"(first gap/duplicate)")
                break
        else:
            problems.append(f"partition {partition}: {len(offsets)} records, expected {expected_count}")


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_100k_keyed_records_with_headers(module_broker, topic_name, codec):
    create_topic(module_broker, topic_name, BIG_PARTITIONS)
    errors, error_cb = client_errors_sink()
    producer = Producer(confluent_conf(
        module_broker, acks="all", error_cb=error_cb,
        **{"compression.type": codec, "linger.ms": 20, "queue.buffering.max.messages": 200_000,
           "message.timeout.ms": 180_000}))
    tracker = DeliveryTracker()

    def records():
        for i in range(BIG_RECORDS):
            key, value, headers = make_record(i, codec)
            yield {"id": i, "key": key, "value": value, "headers": headers}

    t0 = time.monotonic()
    produce_all(producer, topic_name, records(), tracker, flush_timeout_s=240)
    produce_s = time.monotonic() - t0
    assert not tracker.failed, (f"{len(tracker.failed)} deliveries failed, e.g. "
                                f"{list(tracker.failed.items())[:3]}; client errors {errors[:5]}")
    assert len(tracker.ok) == BIG_RECORDS

    # Partitioning by key: every key went to one partition only.
    key_partition: dict[bytes, int] = {}
    for i, (p, _) in tracker.ok.items():
        k = make_record(i, codec)[0]
        assert key_partition.setdefault(k, p) == p, f"key {k!r} delivered to two partitions"
    counts = {p: 0 for p in range(BIG_PARTITIONS)}
    for p, _ in tracker.ok.values():
        counts[p] += 1
    assert sum(1 for c in counts.values() if c) > 1, f"all records in one partition: {counts}"

    t0 = time.monotonic()
    consumed = consume_partitions(module_broker, topic_name, counts, timeout_s=240)
    consume_s = time.monotonic() - t0

    problems: list[str] = []
    seen: set[int] = set()
    for p, msgs in consumed.items():
        check_partition_log(p, msgs, counts[p], problems)
        last_seq = -1
        for m in msgs:
            seq = seq_of(m.headers())
            key, value, headers = make_record(seq, codec)
            if (m.key(), m.value(), m.headers()) != (key, value, headers):
                problems.append(f"p{p}@{m.offset()}: got {(m.key(), m.value(), m.headers())!r}, "
                                f"expected {(key, value, headers)!r}")
            if seq <= last_seq:
                problems.append(f"p{p}@{m.offset()}: seq {seq} after {last_seq} (order broken)")
            if seq in seen:
                problems.append(f"p{p}@{m.offset()}: seq {seq} consumed twice")
            if tracker.ok.get(seq) != (p, m.offset()):
                problems.append(f"seq {seq} delivered at {tracker.ok.get(seq)} but read at {(p, m.offset())}")
            seen.add(seq)
            last_seq = seq
            if len(problems) > 20:
                break
    missing = BIG_RECORDS - len(seen)
    assert not problems and not missing, (
        f"{codec}: {missing} records missing; problems (first 20):\n" + "\n".join(problems[:20]))
    print(f"{codec}: produced {BIG_RECORDS} in {produce_s:.1f}s, consumed in {consume_s:.1f}s")


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_round_trip(module_broker, topic_name, codec):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    create_topic(module_broker, topic_name, 3)
    producer = KafkaProducer(**kafka_python_kwargs(module_broker, acks="all", compression_type=codec,
                                                    linger_ms=10))
    try:
        futures = []
        for i in range(SMALL_RECORDS):
            key, value, headers = make_record(i, codec)
            # kafka-python does not support null header values; drop that one.
            headers = [(k, v) for k, v in headers if v is not None]
            futures.append(producer.send(topic_name, key=key, value=value, headers=headers))
        producer.flush(timeout=120)
        placed = {i: f.get(timeout=60) for i, f in enumerate(futures)}
    finally:
        producer.close(timeout=30)
    ends: dict[int, int] = {}
    for md in placed.values():
        ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    assert sum(ends.values()) == SMALL_RECORDS, f"offsets are not dense: ends {ends}"

    consumer = KafkaConsumer(**kafka_python_kwargs(module_broker, group_id=None, enable_auto_commit=False,
                                                   auto_offset_reset="none"))
    got: dict[int, list] = {p: [] for p in ends}
    try:
        tps = [TopicPartition(topic_name, p) for p in ends]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + 120
        while sum(len(v) for v in got.values()) < SMALL_RECORDS:
            if time.monotonic() > deadline:
                raise HarnessError(f"kafka-python consumer read {[len(v) for v in got.values()]} "
                                   f"of {ends} within 120s")
            for tp, recs in consumer.poll(timeout_ms=500, max_records=5000).items():
                got[tp.partition].extend(recs)
    finally:
        consumer.close()

    for p, recs in got.items():
        assert [r.offset for r in recs] == list(range(ends[p])), f"partition {p} offsets not contiguous"
        for r in recs:
            seq = seq_of(r.headers)
            key, value, headers = make_record(seq, codec)
            assert (r.key, r.value) == (key, value), f"p{p}@{r.offset}: {r.key!r} {r.value!r}"
            assert r.headers == [(k, v) for k, v in headers if v is not None]
            assert (placed[seq].partition, placed[seq].offset) == (p, r.offset)

    # Cross-check: librdkafka reads what kafka-python wrote, byte for byte.
    cross = consume_partitions(module_broker, topic_name, ends, timeout_s=120)
    for p, msgs in cross.items():
        assert [(m.offset(), m.key(), m.value()) for m in msgs] == \
               [(r.offset, r.key, r.value) for r in got[p]], f"partition {p}: clients disagree"


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_round_trip(module_broker, topic_name, codec):
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (tests/run installs it with apt-get)"
    create_topic(module_broker, topic_name, 1)
    lines = [f"k{i}:{codec} value {i} " + "x" * (i % 50) for i in range(KCAT_RECORDS)]
    produce = subprocess.run(
        [kcat, "-b", module_broker.bootstrap, "-t", topic_name, "-P", "-K:", "-z", codec,
         "-X", "acks=all", "-X", "broker.address.family=v4"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    assert produce.returncode == 0, f"kcat -P failed ({produce.returncode}): {produce.stderr}"

    consume = subprocess.run(
        [kcat, "-b", module_broker.bootstrap, "-t", topic_name, "-C", "-o", "beginning", "-e",
         "-q", "-f", "%k:%s\\n", "-X", "broker.address.family=v4"],
        capture_output=True, text=True, timeout=120)
    assert consume.returncode == 0, f"kcat -C failed ({consume.returncode}): {consume.stderr}"
    got = consume.stdout.splitlines()
    assert len(got) == KCAT_RECORDS, f"kcat read {len(got)} of {KCAT_RECORDS} records; stderr {consume.stderr}"
    assert got == lines
