"""CreatePartitions on a three-node cluster, driven by Apache Kafka's own
`kafka-topics --alter --partitions N [--replica-assignment ...]` as an
operator runs it, and by an admin client for the refusals and validate_only.

- With an explicit assignment, each new partition's replicas are the named
  brokers, in order, all in sync, led by the first; without one, the new
  partitions get the topic's replication factor on distinct brokers.
- A broker that is down (fenced) may be named: the partition starts on the
  live replicas, led by the first live one, and the returning broker
  catches up and joins the ISR.
- Every new partition takes acks=all writes and serves them back.
- A bad assignment is refused with Kafka's INVALID_REPLICA_ASSIGNMENT and
  its message, word for word; validate_only creates nothing.

Runs against the suite's broker kind: Apache Kafka's KRaft cluster in the
oracle pass and Silt's cluster in the Silt pass.
"""

from __future__ import annotations

import re
import time

from broker_process import HarnessError
from cluster_harness import CLUSTER_SIZE, Cluster, read_all
from history import History, check
from test_cluster_roles import kafka_tool

ALL = list(range(1, CLUSTER_SIZE + 1))
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
#: How long a new partition may take to have its leader and full ISR.
SETTLE_TIMEOUT_S = 60.0
#: Records written to each new partition.
RECORDS_PER_PARTITION = 300


def topics_tool(cluster: Cluster, *args: str) -> str:
    return kafka_tool(cluster, TOPIC_COMMAND, "--bootstrap-server", cluster.bootstrap, *args)


def described(cluster: Cluster, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """`kafka-topics --describe`: partition → (leader, replicas, isr)."""
    out = topics_tool(cluster, "--describe", "--topic", topic)
    rows = {}
    for m in re.finditer(r"Partition: (\d+)\s+Leader: (-?\d+)\s+Replicas: ([\d,]*)\s+Isr: ([\d,]*)", out):
        ids = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
        rows[int(m.group(1))] = (int(m.group(2)), ids(m.group(3)), ids(m.group(4)))
    return rows


def wait_settled(cluster: Cluster, topic: str, partition: int, replicas: list[int] | None, isr_size: int):
    """Waits until Metadata gives the partition a leader and an ISR of
    `isr_size` (and exactly `replicas`, in order, when given)."""
    view = cluster.via(ALL)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = view.partition(topic, partition)
            leader, now, isr = seen
            if leader >= 0 and len(isr) == isr_size and (replicas is None or now == replicas):
                return seen
        except HarnessError as e:
            seen = e
        time.sleep(0.2)
    raise HarnessError(f"{topic}-{partition} did not settle on replicas {replicas} with {isr_size} in sync within "
                       f"{SETTLE_TIMEOUT_S:.0f}s; last seen (leader, replicas, isr): {seen}\n{cluster.log_tail()}")


def create_partitions(cluster: Cluster, topic: str, total: int, assignment=None, validate_only=False):
    """CreatePartitions through an admin client; None, or (error name, message)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewPartitions
    new = NewPartitions(topic, total, replica_assignment=assignment) if assignment is not None else NewPartitions(topic, total)
    future = cluster.via(ALL).admin().create_partitions([new], validate_only=validate_only, request_timeout=30)[topic]
    try:
        future.result(timeout=60)
        return None
    except KafkaException as e:
        return e.args[0].name(), e.args[0].str()


def write_and_read(cluster: Cluster, topic: str, partitions: list[int], total: int):
    """An acks=all writer per partition, then every partition read back: the
    history checker finds each acknowledged record exactly once."""
    history = History()
    writers = [cluster.writer(ALL, topic, history, name=f"p{p}", partition=p) for p in partitions]
    for w in writers:
        w.finish(RECORDS_PER_PARTITION)
    read_all(cluster.via(ALL), topic, total, history, reader="after")
    report = check(history)
    print(report.summary())
    assert report.valid, report.summary()
    acked = {p: 0 for p in partitions}
    for _, partition, _ in history.acks:
        acked[partition] = acked.get(partition, 0) + 1
    assert all(acked[p] >= RECORDS_PER_PARTITION for p in partitions), f"acknowledged per partition: {acked}"


def test_added_partitions_land_where_assigned_or_placed(cluster: Cluster, topic_name):
    view = cluster.via(ALL)
    view.create_topic(topic_name, replication_factor=2, config={"min.insync.replicas": "2"})
    _, first, _ = view.partition(topic_name)
    a, b = first
    c = next(i for i in ALL if i not in first)

    # kafka-topics lists every partition's replicas, the existing ones first.
    existing = ":".join(map(str, first))
    topics_tool(cluster, "--alter", "--topic", topic_name, "--partitions", "3",
                "--replica-assignment", f"{existing},{c}:{a},{b}:{c}")
    for partition, replicas in ((1, [c, a]), (2, [b, c])):
        leader, now, isr = wait_settled(cluster, topic_name, partition, replicas, 2)
        assert leader == replicas[0], f"{topic_name}-{partition}: leader {leader}, replicas {now}"
    rows = described(cluster, topic_name)
    assert [rows[p][1] for p in range(3)] == [first, [c, a], [b, c]], rows

    topics_tool(cluster, "--alter", "--topic", topic_name, "--partitions", "5")
    for partition in (3, 4):
        leader, replicas, isr = wait_settled(cluster, topic_name, partition, None, 2)
        assert len(set(replicas)) == 2 and set(replicas) <= set(ALL) and leader in replicas, (partition, replicas)
    write_and_read(cluster, topic_name, [1, 2, 3, 4], 5)


def known_everywhere(cluster: Cluster, topic: str, timeout_s: float = 30.0):
    """Waits until every node's Metadata lists `topic`. Silt checks an admin
    request against the image of the node it reaches, which may apply a new
    topic's record a moment after the node that created it (Kafka's
    brokers forward admin requests to the active controller instead)."""
    deadline = time.monotonic() + timeout_s
    for node in ALL:
        while topic not in cluster.via([node]).admin().list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, f"node {node} does not list {topic} after {timeout_s:.0f}s"
            time.sleep(0.1)


def test_bad_assignments_are_refused_as_kafka_refuses_them(cluster: Cluster, topic_name):
    view = cluster.via(ALL)
    view.create_topic(topic_name, replication_factor=2)
    known_everywhere(cluster, topic_name)
    refused = {
        "count": create_partitions(cluster, topic_name, 3, [[1, 2]]),
        "factor": create_partitions(cluster, topic_name, 2, [[1]]),
        "unregistered": create_partitions(cluster, topic_name, 2, [[1, 9]]),
        "twice": create_partitions(cluster, topic_name, 2, [[1, 1, 9]]),
        "same count": create_partitions(cluster, topic_name, 1),
    }
    assert create_partitions(cluster, topic_name, 2) is None
    refused["fewer"] = create_partitions(cluster, topic_name, 1)
    assert refused == {
        "count": ("INVALID_REPLICA_ASSIGNMENT",
                  "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."),
        "factor": ("INVALID_REPLICA_ASSIGNMENT",
                   "The manual partition assignment includes a partition with 1 replica(s), but this is not "
                   "consistent with previous partitions, which have 2 replica(s)."),
        "unregistered": ("INVALID_REPLICA_ASSIGNMENT",
                         "The manual partition assignment includes broker 9, but no such broker is registered."),
        "twice": ("INVALID_REPLICA_ASSIGNMENT", "The manual partition assignment includes the broker 1 more than once."),
        "same count": ("INVALID_PARTITIONS", "Topic already has 1 partition(s)."),
        "fewer": ("INVALID_PARTITIONS", f"The topic {topic_name} currently has 2 partition(s); 1 would not be an increase."),
    }
    assert create_partitions(cluster, topic_name, 3, [[3, 1]], validate_only=True) is None
    assert create_partitions(cluster, topic_name, 4, validate_only=True) is None
    time.sleep(1)
    assert sorted(described(cluster, topic_name)) == [0, 1], "validate_only created nothing"


def test_a_fenced_broker_may_be_assigned_and_catches_up(cluster: Cluster, topic_name):
    """Kafka starts the partition on its live replicas; the named broker that
    is down joins the ISR once it is back."""
    view = cluster.via(ALL)
    view.create_topic(topic_name, replication_factor=2, config={"min.insync.replicas": "1"})
    down = 3
    cluster.kill9(down)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while down in {b.id for b in view.admin().list_topics(timeout=30).brokers.values()}:
        assert time.monotonic() < deadline, f"broker {down} still listed {SETTLE_TIMEOUT_S:.0f}s after SIGKILL"
        time.sleep(0.5)
    assert create_partitions(cluster, topic_name, 2, [[down, 1]]) is None
    leader, replicas, isr = wait_settled(cluster, topic_name, 1, [down, 1], 1)
    assert (leader, isr) == (1, [1]), (leader, replicas, isr)
    cluster.restart(down)
    wait_settled(cluster, topic_name, 1, [down, 1], 2)
    write_and_read(cluster, topic_name, [1], 2)
