"""A broker that does not vote in the metadata quorum (issue 15's `roles`):
three controller+broker nodes and a fourth with `roles = ["broker"]` (Kafka:
`process.roles=broker`). It follows the metadata log as an observer (an
openraft learner in Silt), serves clients, leads and follows partitions, and
comes back after a SIGKILL with its replicas back in the ISR.

Runs against the suite's broker kind, like the failure tests.
"""

from __future__ import annotations

import re
import time

import pytest

from cluster_harness import CLUSTER_SIZE, QUORUM_TOOL_TIMEOUT_S, Cluster, read_all, started_cluster
from history import History, check
from kafka_cli import run_kafka_tool

VOTERS = list(range(1, CLUSTER_SIZE + 1))
BROKER_ONLY = CLUSTER_SIZE + 1
ALL = [*VOTERS, BROKER_ONLY]
REJOIN_TIMEOUT_S = 60.0


@pytest.fixture
def mixed_cluster(cluster_kind, request, tmp_path):
    """Three voters and one broker-only node."""
    yield from started_cluster(cluster_kind, request, tmp_path, broker_only=1)


def kafka_tool(cluster: Cluster, main_class: str, *args: str) -> str:
    """Runs one of Kafka's tools; its stdout."""
    return run_kafka_tool(main_class, *args, timeout_s=QUORUM_TOOL_TIMEOUT_S).stdout


def quorum_replication(cluster: Cluster) -> str:
    """`kafka-metadata-quorum describe --replication`: one row per voter and observer."""
    return kafka_tool(cluster, "org.apache.kafka.tools.MetadataQuorumCommand",
                      "--bootstrap-server", cluster.bootstrap_of(VOTERS), "describe", "--replication")


def test_a_broker_only_node_serves_leads_and_recovers(mixed_cluster: Cluster, topic_name):
    cluster = mixed_cluster
    via_broker = cluster.via([BROKER_ONLY])
    brokers = sorted(b.id for b in via_broker.admin().list_topics(timeout=30).brokers.values())
    assert brokers == ALL, f"Metadata through the broker-only node lists brokers {brokers}"
    deadline = time.monotonic() + 30
    while True:
        rows = quorum_replication(cluster)
        observer = re.search(rf"^{BROKER_ONLY}\s.*Observer", rows, re.M)
        if observer:
            break
        assert time.monotonic() < deadline, f"node {BROKER_ONLY} is not an observer of the quorum:\n{rows}"
        time.sleep(1)
    assert not re.search(rf"^{BROKER_ONLY}\s.*(Leader|Follower)", rows, re.M), rows

    # A topic created through the broker-only node (kafka-topics with an
    # explicit assignment), led by it, replicated to a voter.
    kafka_tool(cluster, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster.bootstrap_of([BROKER_ONLY]),
               "--create", "--topic", topic_name, "--replica-assignment", f"{BROKER_ONLY}:1",
               "--config", "min.insync.replicas=1")
    via_broker.wait_for_leader(topic_name, timeout_s=60)
    via_broker.wait_for_isr(topic_name, 0, 2, timeout_s=60)
    leader, replicas, _ = via_broker.partition(topic_name)
    assert (leader, replicas) == (BROKER_ONLY, [BROKER_ONLY, 1])

    history = History()
    writer = cluster.writer(ALL, topic_name, history, rate_per_s=1_000)
    writer.wait_acked(2_000, 60, cluster.log_tail)
    cluster.kill9(BROKER_ONLY)
    cluster.via(VOTERS).wait_for_leader(topic_name, not_in={BROKER_ONLY}, timeout_s=60)
    acked = history.acked_count()
    writer.wait_acked(acked + 1_000, 60, cluster.log_tail)
    cluster.restart(BROKER_ONLY)
    cluster.via(VOTERS).wait_for_isr(topic_name, 0, 2, REJOIN_TIMEOUT_S)
    writer.finish(3_000)
    read_all(cluster.via(ALL), topic_name, 1, history, reader="after")
    report = check(history)
    print(report.summary())
    assert report.valid, report.summary()
