"""ListOffsets (earliest, latest, by timestamp) and DeleteRecords."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)

from kafka_wire import ErrorCode, RawConnection, raw_fetch
from silt_harness import (HarnessError, DeliveryTracker, admin_client, confluent_conf,
                          consume_partitions, create_topic, future_result, kafka_python_kwargs,
                          produce_all, watermarks)

N = 1_000
CHUNKS = 8  # produce in several flushes so the log holds several batches
T0 = 1_700_000_000_000  # ms
STEP_MS = 10


def ts(i: int) -> int:
    return T0 + i * STEP_MS


def produce_timestamped(broker, topic: str, n: int = N):
    producer = Producer(confluent_conf(broker, acks="all", **{"linger.ms": 5}))
    per_chunk = n // CHUNKS
    for c in range(CHUNKS):
        lo, hi = c * per_chunk, (n if c == CHUNKS - 1 else (c + 1) * per_chunk)
        tracker = DeliveryTracker()
        produce_all(producer, topic, ({"id": i, "value": b"rec-%d" % i, "partition": 0,
                                      "timestamp": ts(i)} for i in range(lo, hi)), tracker)
        assert not tracker.failed, tracker.failed
        assert sorted(o for _, o in tracker.ok.values()) == list(range(lo, hi))


def assign_only_consumer(broker, **extra) -> Consumer:
    conf = confluent_conf(broker, **{"group.id": "silt-tests-assign-only", "enable.auto.commit": False})
    conf.update(extra)
    return Consumer(conf)


# Cases: (timestamp asked, expected offset). -1 means "no record at or after".
TIME_CASES = [
    (T0 - 1_000_000, 0),
    (ts(0), 0),
    (ts(1), 1),
    (ts(1) - 3, 1),
    (ts(N // CHUNKS), N // CHUNKS),            # first record of the second batch
    (ts(N // CHUNKS) - 1, N // CHUNKS),
    (ts(N // CHUNKS - 1), N // CHUNKS - 1),    # last record of the first batch
    (ts(517) - 7, 517),                        # middle of a batch
    (ts(N - 1), N - 1),
    (ts(N - 1) + 1, -1),
]


def test_offsets_for_times_confluent(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    produce_timestamped(module_broker, topic_name)
    c = assign_only_consumer(module_broker)
    try:
        wrong = []
        for t, want in TIME_CASES:
            (res,) = c.offsets_for_times([TopicPartition(topic_name, 0, t)], timeout=10)
            assert res.error is None, f"offsets_for_times({t}) error {res.error}"
            if res.offset != want:
                wrong.append(f"T={t} (record {(t - T0) / STEP_MS:.1f}): got {res.offset}, want {want}")
        assert not wrong, "ListOffsets by timestamp:\n" + "\n".join(wrong)
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False) == (0, N)
    finally:
        c.close()

    # The timestamps themselves survive the round trip (CreateTime topic).
    got = consume_partitions(module_broker, topic_name, {0: N})[0]
    bad = [(m.offset(), m.timestamp()) for m in got if m.timestamp() != (TIMESTAMP_CREATE_TIME, ts(m.offset()))]
    assert not bad, f"records with wrong timestamps (offset, (type, ts)): {bad[:5]}"


def test_offsets_kafka_python(module_broker, topic_name):
    from kafka import KafkaConsumer, TopicPartition as KpTopicPartition
    create_topic(module_broker, topic_name, 1)
    produce_timestamped(module_broker, topic_name)
    consumer = KafkaConsumer(**kafka_python_kwargs(module_broker, group_id=None, enable_auto_commit=False))
    try:
        tp = KpTopicPartition(topic_name, 0)
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: N}
        for t, want in TIME_CASES:
            res = consumer.offsets_for_times({tp: t})[tp]
            if want == -1:
                assert res is None, f"offsets_for_times({t}) = {res}, expected None (no such record)"
            else:
                assert res is not None and res.offset == want, f"offsets_for_times({t}) = {res}, want {want}"
                assert res.timestamp == ts(want), f"timestamp for offset {want}: {res.timestamp}"
    finally:
        consumer.close()


def test_log_append_time_topic(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    tracker = DeliveryTracker()
    produce_all(Producer(confluent_conf(module_broker, acks="all")), topic_name,
                ({"id": i, "value": b"v", "partition": 0, "timestamp": T0} for i in range(5)), tracker)
    after = int(time.time() * 1000)
    assert not tracker.failed
    msgs = consume_partitions(module_broker, topic_name, {0: 5})[0]
    for m in msgs:
        kind, stamp = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME, f"offset {m.offset()}: timestamp type {kind}"
        assert before - 1000 <= stamp <= after + 1000, \
            f"LogAppendTime {stamp} not within produce window [{before}, {after}] (client sent {T0})"


def test_delete_records_moves_low_watermark(broker, topic_name):
    create_topic(broker, topic_name, 1)
    produce_timestamped(broker, topic_name)
    admin = admin_client(broker)
    cut = 300  # falls in the middle of the second batch

    fs = admin.delete_records([TopicPartition(topic_name, 0, cut)], request_timeout=30)
    (fut,) = fs.values()
    deleted = future_result(fut, f"DeleteRecords up to {cut}")
    assert deleted.low_watermark == cut, f"DeleteRecords low watermark {deleted.low_watermark}, want {cut}"
    assert watermarks(broker, topic_name, 0) == (cut, N)

    from kafka import KafkaConsumer, TopicPartition as KpTopicPartition
    kc = KafkaConsumer(**kafka_python_kwargs(broker, group_id=None, enable_auto_commit=False))
    try:
        tp = KpTopicPartition(topic_name, 0)
        assert kc.beginning_offsets([tp]) == {tp: cut}
        assert kc.end_offsets([tp]) == {tp: N}
    finally:
        kc.close()

    # Reading below the low watermark is OFFSET_OUT_OF_RANGE on the wire ...
    with RawConnection(broker.kafka_addr) as conn:
        fp = raw_fetch(conn, topic_name, 0, 10)
        assert fp.error_code == ErrorCode.OFFSET_OUT_OF_RANGE, \
            f"Fetch at offset 10 < log start {cut}: error {fp.error_code}, want OFFSET_OUT_OF_RANGE"
        fp = raw_fetch(conn, topic_name, 0, cut)
        assert fp.error_code == ErrorCode.NONE and fp.records, f"Fetch at {cut}: error {fp.error_code}"

    # ... which a client with auto.offset.reset=error surfaces ...
    c = assign_only_consumer(broker, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic_name, 0, 10)])
        deadline = time.monotonic() + 30
        err = None
        while err is None:
            if time.monotonic() > deadline:
                raise HarnessError("no offset-out-of-range error within 30s when consuming below the low watermark")
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is not None, f"consumed offset {msg.offset()} below the low watermark {cut}"
            err = msg.error()
        assert err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE), err
    finally:
        c.close()

    # ... and earliest reset lands exactly on the new log start.
    got = consume_partitions(broker, topic_name, {0: N}, start_offsets={0: 10},
                             **{"auto.offset.reset": "earliest"})[0]
    assert [m.offset() for m in got] == list(range(cut, N))
    assert [m.value() for m in got] == [b"rec-%d" % i for i in range(cut, N)]


def test_delete_records_edge_cases(broker, topic_name):
    create_topic(broker, topic_name, 1)
    produce_timestamped(broker, topic_name, 200)
    admin = admin_client(broker)

    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 500)], request_timeout=30).values()
    with pytest.raises(KafkaException) as excinfo:
        future_result(fut, "DeleteRecords beyond the high watermark")
    assert excinfo.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, excinfo.value
    assert watermarks(broker, topic_name, 0) == (0, 200)

    # Offset -1 means "up to the high watermark".
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, -1)], request_timeout=30).values()
    assert future_result(fut, "DeleteRecords to -1").low_watermark == 200
    assert watermarks(broker, topic_name, 0) == (200, 200)

    # The log start survives a graceful restart, and the log goes on from there.
    assert broker.stop() == 0
    broker.restart()
    assert watermarks(broker, topic_name, 0) == (200, 200)
    tracker = DeliveryTracker()
    produce_all(Producer(confluent_conf(broker, acks="all")), topic_name,
                [{"id": 0, "value": b"after", "partition": 0}], tracker)
    assert tracker.ok[0] == (0, 200), f"record after restart landed at {tracker.ok[0]}, want offset 200"
