"""The HTTP listener: /health, /ready and Prometheus /metrics.

Metric names are matched loosely (the exact names may still change) but
values are checked: after producing to a topic, a Produce request counter
and a bytes-in series for that topic must be positive."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from silt_harness import (DeliveryTracker, confluent_conf, create_topic, parse_prometheus,
                          produce_all, wait_until)

pytestmark = pytest.mark.silt_only(reason="Silt's HTTP listener (/health, /ready, /metrics); Kafka has none")


def metrics(broker):
    status, headers, body = broker.http_get("/metrics")
    assert status == 200, f"/metrics returned {status}: {body[:200]!r}"
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("text/plain"), f"/metrics content-type {ctype!r}, want Prometheus text"
    return parse_prometheus(body.decode())


def test_health(broker):
    status, _, body = broker.http_get("/health")
    assert status == 200, f"/health returned {status}: {body[:200]!r}"


def test_unknown_path_is_404(broker):
    status, _, _ = broker.http_get("/no-such-endpoint")
    assert status == 404, f"unknown HTTP path returned {status}"


def test_metrics_have_silt_series(broker):
    samples = metrics(broker)
    silt = [name for name, _, _ in samples if name.startswith("silt_")]
    assert silt, f"no silt_ series in /metrics; names: {sorted({n for n, _, _ in samples})[:30]}"


def test_metrics_count_produce_requests_and_topic_bytes_in(broker, topic_name):
    create_topic(broker, topic_name, 1)
    tracker = DeliveryTracker()
    produce_all(Producer(confluent_conf(broker, acks="all")), topic_name,
                ({"id": i, "value": b"m" * 100, "partition": 0} for i in range(200)), tracker)
    assert not tracker.failed

    def produce_requests():
        found = [(n, lbl, v) for n, lbl, v in metrics(broker)
                 if n.startswith("silt_") and "request" in n and "produce" in (n + lbl).lower()
                 and "duration" not in n and "bucket" not in n and v > 0]
        return found

    def topic_bytes_in():
        return [(n, lbl, v) for n, lbl, v in metrics(broker)
                if n.startswith("silt_") and "bytes_in" in n and topic_name in lbl and v > 0]

    # Metrics may be updated just after the response is sent; poll briefly.
    reqs = wait_until(produce_requests, 10, "a silt_ requests counter for Produce with a value > 0",
                      diagnostics=lambda: "\n".join(f"{n}{l} {v}" for n, l, v in metrics(broker)
                                                    if n.startswith("silt_"))[:4000])
    assert any(v >= 1 for _, _, v in reqs), reqs
    bytes_in = wait_until(topic_bytes_in, 10, f"a silt_ bytes_in series labelled with topic {topic_name}",
                          diagnostics=lambda: "\n".join(f"{n}{l} {v}" for n, l, v in metrics(broker)
                                                        if n.startswith("silt_"))[:4000])
    assert sum(v for _, _, v in bytes_in) >= 200 * 100, \
        f"bytes_in for {topic_name} is {bytes_in}, but 20,000 bytes of values were produced"


def test_ready_once_every_partition_log_is_open(broker):
    create_topic(broker, "ready-topic", partitions=8)

    def is_ready():
        status, _, body = broker.http_get("/ready")
        return status == 200 and body.startswith(b"ready:")

    wait_until(is_ready, 30.0, "/ready to answer 200 once the logs are open")
    status, _, body = broker.http_get("/ready")
    # 8 user partitions plus the internal offsets topic's.
    count = int(body.split()[1])
    assert count >= 8, f"/ready counted {count} partitions: {body!r}"
