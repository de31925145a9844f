"""The raw load generator (`silt perf produce --raw`, `silt perf consume
--raw`) against a real broker: what it reports as acknowledged is exactly
what a Kafka client then reads, record for record and byte for byte, and
the raw consumer reads back exactly what is there."""

from __future__ import annotations

import json

from silt_harness import consume_partitions, run_silt, watermarks

#: librdkafka-free runs finish in seconds; this bounds a stuck one.
PERF_TIMEOUT_S = 120.0
_MASK = (1 << 64) - 1


def perf_payload(size: int) -> bytes:
    """The value every `silt perf produce` record carries (src/perf/produce.rs,
    `payload`): xorshift64 from a fixed seed, mapped to A-Z."""
    state = 0x9E3779B97F4A7C15
    out = bytearray()
    for _ in range(size):
        state ^= (state << 13) & _MASK
        state ^= state >> 7
        state ^= (state << 17) & _MASK
        out.append(ord("A") + state % 26)
    return bytes(out)


def perf(silt_bin, broker, *args: str) -> dict:
    """Runs `silt perf ARGS --json` against `broker`; returns its final report."""
    result = run_silt(silt_bin, "perf", *args, "--bootstrap-servers", broker.bootstrap, "--json",
                      timeout_s=PERF_TIMEOUT_S)
    assert result.returncode == 0, f"silt perf {' '.join(args)} failed:\n{result.stderr.decode()[-3000:]}"
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def high_watermarks(broker, topic: str, partitions: int) -> dict[int, int]:
    return {p: watermarks(broker, topic, p)[1] for p in range(partitions)}


def test_raw_produce_delivers_exactly_the_records_it_reports(silt_bin, broker, topic_name):
    # 4 connections over 3 partitions (two share partition 0), 140 records of
    # 100 B per 16 KiB batch: every connection sends full requests and then
    # a smaller one for its remainder.
    records, size = 10_007, 100
    report = perf(silt_bin, broker, "produce", "--raw", "--topic", topic_name, "--partitions", "3",
                  "--records", str(records), "--record-size", str(size), "--acks", "all",
                  "--connections", "4", "--in-flight", "3", "--batch-size", "16384")
    assert report["records"] == records and report["errors"] == 0, report
    assert report["bytes"] > records * size, "bytes are whole record batches"
    assert report["latency"]["count"] > 0, "every request's round trip is timed"
    ends = high_watermarks(broker, topic_name, 3)
    assert sum(ends.values()) == records, ends
    assert all(end > 0 for end in ends.values()), f"every partition takes a share: {ends}"
    got = consume_partitions(broker, topic_name, ends)
    value = perf_payload(size)
    messages = [m for msgs in got.values() for m in msgs]
    assert len(messages) == records
    assert all(m.value() == value and m.key() is None for m in messages), "every record is the perf payload"


def test_raw_produce_for_a_duration_counts_only_what_was_acknowledged(silt_bin, broker, topic_name):
    report = perf(silt_bin, broker, "produce", "--raw", "--topic", topic_name, "--partitions", "2",
                  "--duration-s", "1", "--record-size", "1024", "--connections", "2")
    assert report["records"] > 0 and report["errors"] == 0, report
    assert sum(high_watermarks(broker, topic_name, 2).values()) == report["records"]


def test_raw_consume_reads_back_every_record(silt_bin, broker, topic_name):
    records = 6_001
    perf(silt_bin, broker, "produce", "--raw", "--topic", topic_name, "--partitions", "2",
         "--records", str(records), "--record-size", "512", "--batch-size", "65536")
    one = perf(silt_bin, broker, "consume", "--raw", "--topic", topic_name)
    # Five connections on two partitions: each partition is read in ranges.
    five = perf(silt_bin, broker, "consume", "--raw", "--topic", topic_name, "--connections", "5")
    assert one["records"] == five["records"] == records, (one, five)
    assert one["errors"] == five["errors"] == 0
    assert one["bytes"] > records * 512
    # librdkafka's consumer agrees on the count.
    assert perf(silt_bin, broker, "consume", "--topic", topic_name)["records"] == records


def test_raw_consume_of_an_empty_topic_reads_nothing(silt_bin, broker, topic_name):
    perf(silt_bin, broker, "produce", "--raw", "--topic", topic_name, "--partitions", "3", "--records", "0")
    assert perf(silt_bin, broker, "consume", "--raw", "--topic", topic_name, "--connections", "2")["records"] == 0


def test_raw_mode_refuses_what_it_cannot_measure(silt_bin, broker, topic_name):
    cases = [
        (["produce", "--raw", "--acks", "0"], "--acks 1 or all"),
        (["produce", "--raw", "--compression", "lz4"], "--compression must be none"),
        (["produce", "--raw", "--throughput", "100"], "--throughput is not supported"),
        (["consume", "--raw", "--group", "g"], "--group is not supported"),
        (["consume", "--raw"], "does not exist"),
    ]
    for args, message in cases:
        result = run_silt(silt_bin, "perf", *args, "--topic", topic_name, "--bootstrap-servers", broker.bootstrap,
                          timeout_s=PERF_TIMEOUT_S)
        assert result.returncode != 0, f"silt perf {' '.join(args)} should fail"
        assert message in result.stderr.decode(), (args, result.stderr.decode()[-2000:])
