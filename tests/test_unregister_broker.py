"""Removing a broker: UnregisterBroker (API key 64, KIP-500), driven by
Apache Kafka's own `kafka-cluster unregister --bootstrap-server ... --id N`
on three voters and one broker-only node, as Kafka 4.4 answers it:

- an id that is not registered: BROKER_ID_NOT_REGISTERED, "Broker ID 9 is
  not currently registered";
- a stopped broker: it disappears from Metadata, DescribeCluster and
  `kafka-cluster list-endpoints`; the partitions keep it in their replica
  lists, it leaves their ISRs, and one it alone held stays offline; the
  others keep taking acks=all writes; asking again is BROKER_ID_NOT_REGISTERED;
- restarted, the broker registers again and catches up into the ISRs;
- a live broker: it leaves the cluster the same way and stays out while it
  runs (Kafka's broker gets STALE_BROKER_EPOCH on every heartbeat).

Runs against the suite's broker kind.
"""

from __future__ import annotations

import re
import subprocess
import time

from cluster_harness import CLUSTER_SIZE, QUORUM_TOOL_TIMEOUT_S, Cluster, read_all
from history import History, check
from kafka_cli import run_kafka_tool
from test_cluster_roles import kafka_tool, mixed_cluster  # noqa: F401 (a fixture)

VOTERS = list(range(1, CLUSTER_SIZE + 1))
BROKER = CLUSTER_SIZE + 1
#: How long a broker may take to leave or rejoin what clients see.
SETTLE_TIMEOUT_S = 60.0
#: How long an unregistered live broker is watched for coming back.
STAYS_OUT_S = 8.0


def unregister(cluster: Cluster, broker_id: int) -> subprocess.CompletedProcess:
    """`kafka-cluster unregister`, through the voters."""
    return run_kafka_tool("org.apache.kafka.tools.ClusterTool", "unregister",
                          "--bootstrap-server", cluster.bootstrap_of(VOTERS), "--id", str(broker_id),
                          check=False, timeout_s=QUORUM_TOOL_TIMEOUT_S)


def listed(cluster: Cluster) -> dict[str, list[int]]:
    """The brokers each of Metadata, DescribeCluster and `kafka-cluster list-endpoints` names."""
    admin = cluster.via(VOTERS).admin()
    endpoints = kafka_tool(cluster, "org.apache.kafka.tools.ClusterTool", "list-endpoints",
                           "--bootstrap-server", cluster.bootstrap_of(VOTERS))
    return {
        "metadata": sorted(b.id for b in admin.list_topics(timeout=30).brokers.values()),
        "describe_cluster": sorted(n.id for n in admin.describe_cluster(request_timeout=30).result(timeout=30).nodes),
        "list_endpoints": sorted(int(m) for m in re.findall(r"^(\d+)\s", endpoints, re.M)),
    }


def wait_listed(cluster: Cluster, wanted: list[int]):
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (seen := sorted(b.id for b in cluster.via(VOTERS).admin().list_topics(timeout=30).brokers.values())) != wanted:
        assert time.monotonic() < deadline, f"Metadata lists brokers {seen}, not {wanted}\n{cluster.log_tail()}"
        time.sleep(0.5)


def test_unregister_a_stopped_then_a_live_broker(mixed_cluster: Cluster, topic_name):
    cluster = mixed_cluster
    view = cluster.via(VOTERS)
    solo = f"{topic_name}-solo"
    kafka_tool(cluster, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster.bootstrap_of(VOTERS),
               "--create", "--topic", topic_name, "--replica-assignment", f"{BROKER}:1,1:{BROKER}",
               "--config", "min.insync.replicas=1")
    kafka_tool(cluster, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster.bootstrap_of(VOTERS),
               "--create", "--topic", solo, "--replica-assignment", str(BROKER))
    for p in (0, 1):
        view.wait_for_isr(topic_name, p, 2, SETTLE_TIMEOUT_S)
    view.wait_for_leader(solo, 0, timeout_s=SETTLE_TIMEOUT_S)

    unknown = unregister(cluster, 9)
    assert unknown.returncode != 0 and "Broker ID 9 is not currently registered" in unknown.stderr, unknown.stderr[-2000:]

    # A stopped broker.
    cluster.kill9(BROKER)
    wait_listed(cluster, VOTERS)
    done = unregister(cluster, BROKER)
    assert done.returncode == 0 and f"Broker {BROKER} is no longer registered." in done.stdout, (done.stdout, done.stderr[-2000:])
    assert listed(cluster) == {"metadata": VOTERS, "describe_cluster": VOTERS, "list_endpoints": VOTERS}
    assert view.partition(topic_name, 0) == (1, [BROKER, 1], [1])
    assert view.partition(topic_name, 1) == (1, [1, BROKER], [1])
    leader, replicas, _ = view.partition(solo, 0)
    assert (leader, replicas) == (-1, [BROKER]), "the partition only the broker held is offline"
    again = unregister(cluster, BROKER)
    assert again.returncode != 0 and f"Broker ID {BROKER} is not currently registered" in again.stderr, again.stderr[-2000:]

    history = History()
    for p in (0, 1):
        cluster.writer(VOTERS, topic_name, history, name=f"p{p}", partition=p).finish(300)
    read_all(view, topic_name, 2, history, reader="after")
    report = check(history)
    assert report.valid, report.summary()

    # Restarted, it registers again and catches up.
    cluster.restart(BROKER)
    wait_listed(cluster, [*VOTERS, BROKER])
    for p in (0, 1):
        view.wait_for_isr(topic_name, p, 2, SETTLE_TIMEOUT_S)

    # A live broker: out of the cluster, and it stays out while it runs.
    done = unregister(cluster, BROKER)
    assert done.returncode == 0, (done.stdout, done.stderr[-2000:])
    wait_listed(cluster, VOTERS)
    for p in (0, 1):
        leader, replicas, isr = view.partition(topic_name, p)
        assert leader == 1 and BROKER not in isr and BROKER in replicas, (p, leader, replicas, isr)
    time.sleep(STAYS_OUT_S)
    assert listed(cluster)["metadata"] == VOTERS, f"broker {BROKER} came back without a restart"
    assert BROKER not in view.partition(topic_name, 0)[2], "the unregistered broker rejoined an ISR"
