"""/metrics against its catalogue (docs/metrics.md) and Prometheus's own
tools: `promtool check metrics` accepts the output, every exported family is
catalogued with its type and every catalogued (non-planned) metric is
exported, and a real Prometheus server scrapes a broker under load and
answers queries for its series."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer

from silt_harness import (GROUP_BROKER_ENV, HarnessError, admin_client, confluent_conf, create_topic,
                          free_port, metric_catalogue, metric_families, produce_keyed, require_tool,
                          wait_until)

pytestmark = pytest.mark.silt_only(reason="Silt's Prometheus /metrics and its catalogue; Kafka exposes JMX")

#: How long Prometheus may take to start answering and to scrape the series.
PROMETHEUS_READY_TIMEOUT_S = 60.0
PROMETHEUS_SERIES_TIMEOUT_S = 60.0
PROMETHEUS_STOP_TIMEOUT_S = 30.0
#: Attempts at starting Prometheus on a free port (another process may take it first).
PROMETHEUS_START_ATTEMPTS = 3


def metrics_text(broker) -> str:
    status, _, body = broker.http_get("/metrics")
    assert status == 200, status
    return body.decode()


def exercise(broker, topic: str) -> str:
    """Drives every code path that creates a metric series: produce, fetch,
    a group that rebalances and commits, an error response and a connection
    closed for bad input. Returns the group id."""
    create_topic(broker, topic, 2)
    produce_keyed(broker, topic, range(200), 2)
    group = f"{topic}-group"
    c = Consumer(confluent_conf(broker, **{"group.id": group, "auto.offset.reset": "earliest",
                                           "enable.auto.commit": False}))
    try:
        c.subscribe([topic])
        seen = []

        def consumed_some():
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                seen.append(m)
            return len(seen) >= 10
        wait_until(consumed_some, 60, "a group member to consume 10 records")
        c.commit(asynchronous=False)
    finally:
        c.close()
    # An error response: deleting a topic that does not exist.
    admin = admin_client(broker)
    fut = admin.delete_topics(["no-such-topic-for-metrics"], operation_timeout=10)["no-such-topic-for-metrics"]
    with pytest.raises(Exception):
        fut.result(timeout=30)
    # A connection closed for bad input: a negative length prefix.
    with socket.create_connection(broker.kafka_addr, timeout=10) as s:
        s.sendall(struct.pack(">i", -5))
        s.settimeout(10)
        assert s.recv(1) == b"", "the broker should close a connection that sends a negative size"
    return group


def test_promtool_accepts_metrics_and_they_match_the_catalogue(broker_factory, topic_name):
    promtool = require_tool("promtool")
    broker = broker_factory(env={**GROUP_BROKER_ENV, "SILT_METRICS__PER_PARTITION": "true"})
    group = exercise(broker, topic_name)
    # Tiering series appear once a segment is archived or read back, which this
    # short exercise does not do; tests/test_tiering.py checks them. Login and
    # TLS series need SASL and SSL listeners: tests/test_security.py checks them.
    wanted_families = {name for name, entry in metric_catalogue().items()
                       if not entry["planned"] and not name.startswith(("silt_tiering_", "silt_log_archived_",
                                                                        "silt_authentication_", "silt_tls_"))}

    def all_families():
        text = metrics_text(broker)
        missing = wanted_families - set(metric_families(text))
        return (text, missing) if not missing else None
    text, _ = wait_until(all_families, 30, "every catalogued metric to be exported",
                         diagnostics=lambda: f"missing: {sorted(wanted_families - set(metric_families(metrics_text(broker))))}")

    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert checked.returncode == 0, f"promtool check metrics:\n{checked.stdout.decode()}{checked.stderr.decode()}"

    catalogue = metric_catalogue()
    for name, kind in metric_families(text).items():
        assert name in catalogue, f"{name} is exported but not in docs/metrics.md"
        assert not catalogue[name]["planned"], f"{name} is exported but docs/metrics.md lists it as planned"
        assert catalogue[name]["type"] == kind, f"{name} is a {kind}, docs/metrics.md says {catalogue[name]['type']}"
    assert f'silt_consumer_group_lag{{group="{group}"' in text
    assert f'silt_partition_high_watermark{{partition="0",topic="{topic_name}"}}' in text
    assert 'silt_requests_total{api="Produce",version="' in text


def gauge_value(text: str, name: str) -> float:
    """The value of an unlabelled series in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_a_single_node_leads_every_partition_and_is_the_active_controller(broker, topic_name):
    create_topic(broker, topic_name, 3)

    def leads_the_new_topic():
        text = metrics_text(broker)
        partitions = gauge_value(text, "silt_partitions")
        return text if partitions >= 3 and gauge_value(text, "silt_leader_partitions") == partitions else None
    text = wait_until(leads_the_new_topic, 30, "silt_leader_partitions to equal silt_partitions with the new topic",
                      diagnostics=lambda: metrics_text(broker))
    assert gauge_value(text, "silt_active_controller") == 1
    assert gauge_value(text, "silt_under_replicated_partitions") == 0
    assert gauge_value(text, "silt_offline_partitions") == 0
    assert gauge_value(text, "silt_raft_current_term") >= 1
    applied = gauge_value(text, "silt_raft_applied_index")
    assert 1 <= applied <= gauge_value(text, "silt_raft_last_log_index")
    # A single node has no followers: nothing to shrink, expand or fetch.
    for name in ("silt_isr_shrinks_total", "silt_isr_expands_total", "silt_replica_fetch_bytes_total",
                 "silt_replica_fetcher_max_lag"):
        assert gauge_value(text, name) == 0, name


def test_per_partition_series_are_off_by_default(broker, topic_name):
    create_topic(broker, topic_name, 3)
    text = metrics_text(broker)
    assert "silt_partition_" not in text
    assert f'silt_topic_partitions{{topic="{topic_name}"}} 3' in text


class Prometheus:
    """A real Prometheus server on 127.0.0.1 scraping the given targets every second."""

    def __init__(self, binary: str, workdir, targets: list[str]):
        self.binary = binary
        self.workdir = workdir
        self.targets = targets
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = workdir / "prometheus.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        config = self.workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the config.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "silt", "scrape_interval": "1s",
                                "static_configs": [{"targets": self.targets}]}],
        }))
        for attempt in range(PROMETHEUS_START_ATTEMPTS):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(self.workdir))
            log.close()
            try:
                wait_until(self._ready, PROMETHEUS_READY_TIMEOUT_S, "Prometheus to answer /-/ready",
                           interval_s=0.2, diagnostics=self.log_tail)
                return self
            except HarnessError:
                exited = self.proc.poll() is not None
                self.stop()
                if not exited or attempt + 1 == PROMETHEUS_START_ATTEMPTS:
                    raise
                # It exited (most likely the port was taken in between): try another port.
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise HarnessError(f"prometheus exited with code {self.proc.returncode}\n{self.log_tail()}")
        try:
            return self._get("/-/ready")[0] == 200
        except OSError:
            return False

    def _get(self, path: str) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.base + path, timeout=10) as resp:
            return resp.status, resp.read()

    def query(self, promql: str) -> list[dict]:
        status, body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        return answer["data"]["result"]

    def log_tail(self) -> str:
        try:
            return "--- prometheus log ---\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            return "(no prometheus log)"

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=PROMETHEUS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=PROMETHEUS_STOP_TIMEOUT_S)


def test_a_real_prometheus_scrapes_the_broker_under_load(broker_factory, topic_name, tmp_path):
    binary = require_tool("prometheus")
    broker = broker_factory(env=dict(GROUP_BROKER_ENV))
    prometheus = Prometheus(binary, tmp_path, [f"{broker.http_host}:{broker.http_port}"])
    prometheus.start()
    try:
        group = exercise(broker, topic_name)
        producer = Producer(confluent_conf(broker, acks="all"))
        for i in range(2000):
            producer.produce(topic_name, value=b"x" * 100, partition=i % 2)
            producer.poll(0)
        assert producer.flush(60) == 0

        def series(promql: str, at_least: float):
            def found():
                result = prometheus.query(promql)
                return result if result and float(result[0]["value"][1]) >= at_least else None
            return wait_until(found, PROMETHEUS_SERIES_TIMEOUT_S, f"Prometheus to answer {promql} with >= {at_least}",
                              interval_s=0.5, diagnostics=lambda: f"last answer: {prometheus.query(promql)}\n{prometheus.log_tail()}")

        series('up{job="silt"}', 1)
        series(f'sum(silt_topic_records_in_total{{topic="{topic_name}"}})', 2200)
        series(f'sum(silt_topic_bytes_in_total{{topic="{topic_name}"}})', 2000 * 100)
        series('sum(silt_requests_total{api="Produce"})', 1)
        series('sum(silt_request_duration_seconds_count{api="Fetch"})', 1)
        series(f'sum(silt_consumer_group_lag{{group="{group}", topic="{topic_name}"}})', 1)
        series(f'silt_consumer_group_members{{group="{group}"}} + 1', 1)
        series("silt_process_resident_memory_bytes", 1)
        series("silt_storage_available_bytes", 1)
        series(f'silt_topic_partitions{{topic="{topic_name}"}}', 2)
    finally:
        prometheus.stop()
    assert prometheus.proc.returncode is not None
