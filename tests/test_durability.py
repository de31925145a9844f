"""Nothing acknowledged is lost across SIGTERM, SIGKILL and a torn write at
the tail of the newest segment."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from silt_harness import (DeliveryTracker, HarnessError, confluent_conf, describe_topic_configs,
                          consume_partitions, create_topic, produce_all, wait_for_partitions,
                          watermarks)

N = 5_000
M = 3_000
PARTITIONS = 3


def produce_batch(broker, topic: str, lo: int, hi: int, acks) -> dict[int, tuple[int, int]]:
    # Small batches: under load librdkafka would otherwise send a partition's
    # whole share as one batch, and one batch never rolls a segment.
    producer = Producer(confluent_conf(broker, acks=acks, **{"linger.ms": 5, "batch.size": 8192}))
    tracker = DeliveryTracker()
    produce_all(producer, topic, ({"id": i, "key": b"key-%d" % (i % 97), "value": b"durable-%06d" % i}
                                  for i in range(lo, hi)), tracker)
    assert not tracker.failed, f"{len(tracker.failed)} deliveries failed: {list(tracker.failed.items())[:3]}"
    return tracker.ok


def assert_all_present(broker, topic: str, placed: dict[int, tuple[int, int]], context: str):
    ends: dict[int, int] = {p: 0 for p in range(PARTITIONS)}
    for p, off in placed.values():
        ends[p] = max(ends[p], off + 1)
    for p in range(PARTITIONS):
        low, high = watermarks(broker, topic, p)
        assert (low, high) == (0, ends[p]), \
            f"{context}: partition {p} watermarks ({low}, {high}), acknowledged records end at {ends[p]}"
    consumed = consume_partitions(broker, topic, ends)
    at = {(p, m.offset()): m.value() for p, msgs in consumed.items() for m in msgs}
    for p, msgs in consumed.items():
        assert [m.offset() for m in msgs] == list(range(ends[p])), f"{context}: partition {p} has gaps"
    lost = [i for i, pos in placed.items() if at.get(pos) != b"durable-%06d" % i]
    assert not lost, f"{context}: {len(lost)} acknowledged records lost or changed, e.g. seq {lost[:5]}"


def newest_segment(data_dir: Path, topic: str, partition: int) -> Path:
    segments = [p for p in data_dir.glob("**/*.log") if p.parent.name == f"{topic}-{partition}"]
    if not segments:
        listing = "\n".join(str(p.relative_to(data_dir)) for p in sorted(data_dir.rglob("*")))
        raise HarnessError(f"no *.log segment for {topic}-{partition} under {data_dir}:\n{listing}")
    return max(segments, key=lambda p: p.name)  # names are zero-padded base offsets


def test_sigterm_then_sigkill_lose_nothing_acknowledged(broker, topic_name):
    create_topic(broker, topic_name, PARTITIONS, {"retention.ms": "123456789"})
    placed = produce_batch(broker, topic_name, 0, N, acks="all")

    code = broker.stop(signal.SIGTERM)
    assert code == 0, f"SIGTERM exit code {code}, want 0\n{broker.log_tail()}"
    broker.restart()
    wait_for_partitions(broker, topic_name, PARTITIONS)
    assert_all_present(broker, topic_name, placed, "after SIGTERM + restart")
    cfg = describe_topic_configs(broker, topic_name)
    assert cfg["retention.ms"].value == "123456789", "topic config lost across restart"

    placed.update(produce_batch(broker, topic_name, N, N + M, acks=1))
    broker.kill9()
    broker.restart()
    wait_for_partitions(broker, topic_name, PARTITIONS)
    assert_all_present(broker, topic_name, placed, "after kill -9 + restart")

    # The log continues without a gap after recovery.
    more = produce_batch(broker, topic_name, N + M, N + M + 100, acks="all")
    placed.update(more)
    assert_all_present(broker, topic_name, placed, "after producing past the recovered tail")


def test_sigint_is_graceful(broker, topic_name):
    create_topic(broker, topic_name, PARTITIONS)
    placed = produce_batch(broker, topic_name, 0, 500, acks="all")
    code = broker.stop(signal.SIGINT)
    assert code == 0, f"SIGINT exit code {code}, want 0\n{broker.log_tail()}"
    broker.restart()
    wait_for_partitions(broker, topic_name, PARTITIONS)
    assert_all_present(broker, topic_name, placed, "after SIGINT + restart")


@pytest.mark.silt_only(reason="writes into Silt's segment files, rolled at 16 KiB; Kafka refuses "
                               "segment.bytes under 1 MiB")
def test_torn_write_at_segment_tail_is_recovered(broker, topic_name):
    # Small segments, so recovery has to deal with several per partition.
    create_topic(broker, topic_name, PARTITIONS, {"segment.bytes": "16384"})
    placed = produce_batch(broker, topic_name, 0, N, acks="all")
    broker.kill9()
    segments = {p: len([s for s in broker.data_dir.glob("**/*.log") if s.parent.name == f"{topic_name}-{p}"])
                for p in range(PARTITIONS)}
    assert max(segments.values()) > 1, f"expected segments to roll at 16 KiB, got {segments}"

    torn = {}
    for p in range(PARTITIONS):
        seg = newest_segment(broker.data_dir, topic_name, p)
        size = seg.stat().st_size
        # A plausible-looking batch header (base offset, length) followed by
        # junk: what a crash in the middle of an append leaves behind.
        garbage = (10**6).to_bytes(8, "big") + (500).to_bytes(4, "big") + b"\xde\xad\xbe\xef" * 5
        with open(seg, "ab") as f:
            f.write(garbage)
        torn[p] = (seg, size)

    broker.restart()
    wait_for_partitions(broker, topic_name, PARTITIONS)
    assert_all_present(broker, topic_name, placed, "after a torn write + restart")

    more = produce_batch(broker, topic_name, N, N + 300, acks="all")
    placed.update(more)
    assert_all_present(broker, topic_name, placed, "after producing past a truncated torn tail")


def test_kill9_during_continuous_produce_loses_nothing_acknowledged(broker, topic_name):
    """Kill the broker while a producer is mid-stream: every record whose
    delivery report said success must be there after restart."""
    create_topic(broker, topic_name, PARTITIONS)
    producer = Producer(confluent_conf(broker, acks=1, **{"linger.ms": 1, "message.timeout.ms": 5000,
                                                          "retries": 0,
                                                          "queue.buffering.max.messages": 500_000}))
    tracker = DeliveryTracker()
    produced = 0
    deadline = time.monotonic() + 60
    # Keep producing faster than acks come back so records are in flight
    # when the broker dies; stop once 2,000 are acknowledged.
    while len(tracker.ok) < 2_000:
        if time.monotonic() > deadline or produced >= 400_000:
            producer.flush(30)
            raise HarnessError(f"only {len(tracker.ok)} of {produced} records acknowledged within 60s")
        for _ in range(200):
            producer.produce(topic_name, key=b"key-%d" % (produced % 97), value=b"durable-%06d" % produced,
                             on_delivery=tracker.callback(produced))
            produced += 1
        producer.poll(0.01)
    broker.kill9()
    acknowledged_at_kill = len(tracker.ok)
    producer.flush(30)  # remaining records fail (broker gone); bounded by message.timeout.ms
    broker.restart()
    wait_for_partitions(broker, topic_name, PARTITIONS)

    ends = {p: watermarks(broker, topic_name, p)[1] for p in range(PARTITIONS)}
    consumed = consume_partitions(broker, topic_name, ends)
    at = {(p, m.offset()): m.value() for p, msgs in consumed.items() for m in msgs}
    lost = [i for i, pos in tracker.ok.items() if at.get(pos) != b"durable-%06d" % i]
    assert not lost, (f"{len(lost)} of {len(tracker.ok)} acknowledged records lost after kill -9 "
                      f"({acknowledged_at_kill} acknowledged at the kill, {produced} produced), "
                      f"e.g. seq {lost[:5]}")
