"""Fetch long-polling, driven with hand-encoded Fetch v4 requests so the
timing is observable: a parked fetch must be woken by a produce, and an
idle one must return empty after max_wait_ms."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from kafka_wire import (ApiKey, ErrorCode, RawConnection, Reader, api_versions_v0, decode_fetch,
                        decode_record_batches, encode_fetch, raw_fetch, request_frame,
                        require_version)
from silt_harness import DeliveryTracker, confluent_conf, create_topic, produce_all

FETCH_VERSION = 4
LONG_WAIT_MS = 20_000
#: A parked fetch must not answer within this window (it has 20 s to wait).
PARKED_CHECK_S = 1.0
#: After the produce, the parked fetch must answer well before max_wait_ms.
WAKE_DEADLINE_S = 10.0


def produce_one(broker, topic: str, value: bytes):
    tracker = DeliveryTracker()
    produce_all(Producer(confluent_conf(broker, acks="all")), topic,
                [{"id": 0, "value": value, "key": b"k", "partition": 0}], tracker, flush_timeout_s=30)
    assert not tracker.failed, tracker.failed
    return tracker.ok[0]


def test_parked_fetch_is_woken_by_produce(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    with RawConnection(module_broker.kafka_addr) as conn:
        _, versions = api_versions_v0(conn)
        require_version(versions, ApiKey.FETCH, FETCH_VERSION)
        corr = conn.next_correlation_id()
        conn.send(request_frame(ApiKey.FETCH, FETCH_VERSION, corr,
                                encode_fetch(FETCH_VERSION, topic_name, 0, 0,
                                             max_wait_ms=LONG_WAIT_MS, min_bytes=1)))
        assert conn.nothing_received_for(PARKED_CHECK_S), (
            f"broker answered a Fetch(max_wait_ms={LONG_WAIT_MS}, min_bytes=1) on an empty partition "
            f"within {PARKED_CHECK_S}s instead of parking it")

        t_produce = time.monotonic()
        assert produce_one(module_broker, topic_name, b"wake-up") == (0, 0)
        payload = conn.read_frame(timeout_s=WAKE_DEADLINE_S + 5)
        waited = time.monotonic() - t_produce

    r = Reader(payload)
    assert r.int32() == corr
    _, parts = decode_fetch(FETCH_VERSION, r)
    fp = parts[(topic_name, 0)]
    assert fp.error_code == ErrorCode.NONE, f"Fetch error {fp.error_code}"
    assert fp.records, (f"parked Fetch came back empty {waited:.1f}s after the produce: "
                        "it timed out instead of being woken by the append")
    assert waited < WAKE_DEADLINE_S, f"parked Fetch answered {waited:.1f}s after the produce"
    assert fp.high_watermark == 1
    batches = decode_record_batches(fp.records)
    assert batches and all(b.crc_ok for b in batches), "fetched batch CRC mismatch"
    values = [(rec.offset, rec.key, rec.value) for b in batches for rec in b.records]
    assert values == [(0, b"k", b"wake-up")]


def test_fetch_with_short_max_wait_returns_empty(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    with RawConnection(module_broker.kafka_addr) as conn:
        t0 = time.monotonic()
        fp = raw_fetch(conn, topic_name, 0, 0, max_wait_ms=300, version=FETCH_VERSION, timeout_s=10)
        took = time.monotonic() - t0
    assert fp.error_code == ErrorCode.NONE, f"empty Fetch returned error {fp.error_code}"
    assert fp.records == b"", f"expected no records, got {len(fp.records)} bytes"
    assert fp.high_watermark == 0
    # Kafka holds the request for max_wait_ms when min_bytes is not met.
    assert 0.25 <= took < 5, f"Fetch(max_wait_ms=300) on an empty partition took {took:.3f}s"


def test_fetch_with_data_available_does_not_wait(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    produce_one(module_broker, topic_name, b"already-there")
    with RawConnection(module_broker.kafka_addr) as conn:
        t0 = time.monotonic()
        fp = raw_fetch(conn, topic_name, 0, 0, max_wait_ms=LONG_WAIT_MS, version=FETCH_VERSION, timeout_s=30)
        took = time.monotonic() - t0
    assert fp.error_code == ErrorCode.NONE and fp.records
    assert took < 5, f"Fetch with min_bytes already satisfied waited {took:.1f}s"


def test_fetch_unknown_partition(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    with RawConnection(module_broker.kafka_addr) as conn:
        fp = raw_fetch(conn, topic_name, 7, 0, max_wait_ms=100, version=FETCH_VERSION)
    assert fp.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, \
        f"Fetch of partition 7 of a 1-partition topic: error {fp.error_code}"
