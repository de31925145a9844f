"""Idempotent producers: InitProducerId, producer ids and sequences stored in
batch headers, duplicate suppression and sequence-gap rejection."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from kafka_wire import (ApiKey, ConnectionClosed, ErrorCode, RawConnection, api_versions_v0,
                        encode_record_batch, fetch_all_batches, raw_init_producer_id, raw_produce_v3,
                        require_version)
from silt_harness import (DeliveryTracker, HarnessError, client_errors_sink, confluent_conf,
                          consume_partitions, create_topic, kafka_python_kwargs, produce_all,
                          watermarks)

N = 20_000


def test_confluent_idempotent_producer_exactly_once_in_order(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    errors, error_cb = client_errors_sink()
    producer = Producer(confluent_conf(module_broker, error_cb=error_cb,
                                       **{"enable.idempotence": True, "linger.ms": 2,
                                          "batch.num.messages": 500}))
    tracker = DeliveryTracker()
    produce_all(producer, topic_name, ({"id": i, "value": b"idem-%06d" % i, "partition": 0}
                                       for i in range(N)), tracker)
    assert not tracker.failed, f"{len(tracker.failed)} failed, e.g. {list(tracker.failed.items())[:3]}"
    fatal = [e for e in errors if e.fatal()]
    assert not fatal, f"idempotent producer raised fatal errors: {fatal}"
    assert [tracker.ok[i] for i in range(N)] == [(0, i) for i in range(N)]

    msgs = consume_partitions(module_broker, topic_name, {0: N})[0]
    assert [m.value() for m in msgs] == [b"idem-%06d" % i for i in range(N)]
    assert [m.offset() for m in msgs] == list(range(N))

    # The broker kept the producer id and contiguous sequences in the batch headers.
    with RawConnection(module_broker.kafka_addr) as conn:
        batches = fetch_all_batches(conn, topic_name, 0, 0, N)
    assert len(batches) > 1, "expected the producer to send several batches"
    pids = {(b.producer_id, b.producer_epoch) for b in batches}
    assert len(pids) == 1, f"batches carry several producer ids/epochs: {pids}"
    (pid, epoch), = pids
    assert pid >= 0 and epoch >= 0, f"idempotent batches stored without a producer id: {pid}/{epoch}"
    expected_seq = 0
    for b in batches:
        assert b.crc_ok, f"batch at {b.base_offset} fails its CRC"
        assert b.base_sequence == expected_seq, \
            f"batch at offset {b.base_offset}: base_sequence {b.base_sequence}, expected {expected_seq}"
        expected_seq += b.record_count


def test_kafka_python_idempotent_producer(module_broker, topic_name):
    from kafka import KafkaProducer
    create_topic(module_broker, topic_name, 1)
    try:
        producer = KafkaProducer(**kafka_python_kwargs(module_broker, enable_idempotence=True,
                                                        acks="all", linger_ms=5))
    except TypeError as e:  # pragma: no cover - requirements pin a version that has it
        pytest.fail(f"installed kafka-python lacks enable_idempotence: {e}")
    n = 2_000
    try:
        futures = [producer.send(topic_name, value=b"kp-idem-%05d" % i, partition=0) for i in range(n)]
        producer.flush(timeout=120)
        offsets = [f.get(timeout=60).offset for f in futures]
    finally:
        producer.close(timeout=30)
    assert offsets == list(range(n))
    msgs = consume_partitions(module_broker, topic_name, {0: n})[0]
    assert [m.value() for m in msgs] == [b"kp-idem-%05d" % i for i in range(n)]


def test_raw_duplicate_batch_is_not_appended_twice(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    now = int(time.time() * 1000)
    with RawConnection(module_broker.kafka_addr) as conn:
        _, versions = api_versions_v0(conn)
        require_version(versions, ApiKey.INIT_PRODUCER_ID, 0)
        require_version(versions, ApiKey.PRODUCE, 3)
        err, pid, epoch = raw_init_producer_id(conn)
        assert err == ErrorCode.NONE and pid >= 0 and epoch >= 0, f"InitProducerId: {err} {pid} {epoch}"
        err2, pid2, _ = raw_init_producer_id(conn)
        assert err2 == ErrorCode.NONE and pid2 != pid, "two InitProducerId calls returned the same producer id"

        def batch(first_seq: int, count: int) -> bytes:
            return encode_record_batch([(None, b"seq-%d" % (first_seq + i)) for i in range(count)],
                                       now, pid, epoch, first_seq)

        first = batch(0, 5)
        assert raw_produce_v3(conn, topic_name, 0, first) == (ErrorCode.NONE, 0)
        # A retry of the same batch (same producer id, epoch and sequence).
        err, base = raw_produce_v3(conn, topic_name, 0, first)
        assert err in (ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER), f"duplicate batch: error {err}"
        if err == ErrorCode.NONE:
            assert base == 0, f"duplicate batch acknowledged at offset {base}, original was at 0"
        assert watermarks(module_broker, topic_name, 0) == (0, 5), "duplicate batch was appended"

        assert raw_produce_v3(conn, topic_name, 0, batch(5, 5)) == (ErrorCode.NONE, 5)
        # A gap in the sequence: 10..14 were never sent.
        err, _ = raw_produce_v3(conn, topic_name, 0, batch(15, 5))
        assert err == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, f"sequence gap: error {err}, want 45"
        assert watermarks(module_broker, topic_name, 0) == (0, 10)

        # Non-idempotent batches (producer id -1) are not deduplicated.
        plain = encode_record_batch([(None, b"plain")], now)
        assert raw_produce_v3(conn, topic_name, 0, plain) == (ErrorCode.NONE, 10)
        assert raw_produce_v3(conn, topic_name, 0, plain) == (ErrorCode.NONE, 11)

    msgs = consume_partitions(module_broker, topic_name, {0: 12})[0]
    assert [m.value() for m in msgs] == [b"seq-%d" % i for i in range(10)] + [b"plain", b"plain"]


def test_raw_corrupt_batch_crc_is_rejected(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    good = bytearray(encode_record_batch([(b"k", b"v")], int(time.time() * 1000)))
    good[-1] ^= 0xFF  # flip a bit in the last record's payload; CRC no longer matches
    with RawConnection(module_broker.kafka_addr) as conn:
        try:
            err, _ = raw_produce_v3(conn, topic_name, 0, bytes(good))
        except ConnectionClosed as e:  # closing the connection is also acceptable
            err = f"connection dropped: {e!r}"
    assert err != ErrorCode.NONE, "a batch with a bad CRC was accepted"
    if isinstance(err, int):
        assert err == ErrorCode.CORRUPT_MESSAGE, f"bad CRC: error {err}, Kafka answers CORRUPT_MESSAGE (2)"
    assert watermarks(module_broker, topic_name, 0) == (0, 0)
    if not module_broker.alive():
        raise HarnessError("broker died on a corrupt batch")
