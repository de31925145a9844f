"""Partition reassignment on a three-node cluster (KIP-455), driven by
Apache Kafka's own `kafka-reassign-partitions` tool as an operator runs it:
--execute, --verify, --list and --cancel, through AlterPartitionReassignments
and ListPartitionReassignments.

- Moving a replica under an acks=all writer: the new replica copies the
  partition, joins the ISR, the old one leaves (and the leader moves when it
  was the leader), and the history checker finds every acknowledged record
  exactly once.
- A reassignment to a dead broker stays in progress (the new replica cannot
  catch up), is listed with its adding and removing replicas, and --cancel
  puts the partition back on its original replicas.
- A replica added after DeleteRecords starts at the leader's log start
  instead of asking forever for offset 0.

Both run against the suite's broker kind: Apache Kafka's KRaft cluster in the
oracle pass and Silt's cluster in the Silt pass.
"""

from __future__ import annotations

import json
import subprocess
import time

from broker_process import HarnessError
from cluster_harness import CLUSTER_SIZE, Cluster, read_all
from history import History, check
from kafka_cli import run_kafka_tool

ALL = list(range(1, CLUSTER_SIZE + 1))
#: How long a reassignment may take to complete once its new replica is live.
REASSIGN_TIMEOUT_S = 90.0
#: The writer's pace while replicas move.
WRITE_RATE_PER_S = 1_000
#: Records acknowledged before the move starts.
RECORDS_BEFORE = 3_000


def reassign_tool(cluster: Cluster, *args: str, check_exit: bool = True) -> subprocess.CompletedProcess:
    """Runs `kafka-reassign-partitions` (ReassignPartitionsCommand) against the cluster."""
    return run_kafka_tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
                          "--bootstrap-server", cluster.bootstrap, *args, check=check_exit)


def plan_file(tmp_path, topic: str, replicas: list[int], name: str = "plan.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": replicas}]}))
    return str(path)


def wait_for_replicas(cluster: Cluster, topic: str, replicas: list[int], timeout_s: float) -> tuple[int, list[int]]:
    """Waits until Metadata gives the partition exactly `replicas` (in order)
    with all of them in the ISR; returns (leader, isr)."""
    view = cluster.via(ALL)
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = view.partition(topic)
            leader, now, isr = seen
            if now == replicas and sorted(isr) == sorted(replicas) and leader in replicas:
                return leader, isr
        except HarnessError as e:
            seen = e
        time.sleep(0.2)
    raise HarnessError(f"{topic}-0 did not reach replicas {replicas} with a full ISR within {timeout_s:.0f}s; "
                       f"last seen (leader, replicas, isr): {seen}\n{cluster.log_tail()}")


def test_reassign_moves_a_replica_under_load(cluster: Cluster, topic_name, tmp_path):
    """[a, b] → [b, c] with a writer running: c copies the partition and
    joins, a leaves, the leadership moves off a, nothing acknowledged is lost."""
    view = cluster.via(ALL)
    view.create_topic(topic_name, replication_factor=2, config={"min.insync.replicas": "1"})
    leader, replicas, _ = view.partition(topic_name)
    # Move away from the leader, so leadership must move too.
    a = leader
    b = next(r for r in replicas if r != a)
    c = next(i for i in ALL if i not in replicas)
    history = History()
    writer = cluster.writer(ALL, topic_name, history, rate_per_s=WRITE_RATE_PER_S)
    writer.wait_acked(RECORDS_BEFORE, 60, cluster.log_tail)
    plan = plan_file(tmp_path, topic_name, [b, c])
    started = time.monotonic()
    executed = reassign_tool(cluster, "--reassignment-json-file", plan, "--execute")
    assert "Successfully started partition reassignment" in executed.stdout, executed.stdout
    tool_s = time.monotonic() - started
    new_leader, isr = wait_for_replicas(cluster, topic_name, [b, c], REASSIGN_TIMEOUT_S)
    print(f"reassignment: tool {tool_s:.1f} s, completed {time.monotonic() - started:.1f} s after --execute "
          f"with {history.acked_count()} records acknowledged")
    assert new_leader != a, f"leadership stayed on {a}, which left the replicas"
    verified = reassign_tool(cluster, "--reassignment-json-file", plan, "--verify")
    assert f"Reassignment of partition {topic_name}-0 is completed" in verified.stdout, verified.stdout
    listed = reassign_tool(cluster, "--list")
    assert f"{topic_name}-0" not in listed.stdout, f"completed, yet still listed:\n{listed.stdout}"
    acked = history.acked_count()
    writer.wait_acked(acked + 500, 60, cluster.log_tail)
    writer.finish(RECORDS_BEFORE)
    read_all(cluster.via([b, c]), topic_name, 1, history, reader="after")
    report = check(history)
    print(report.summary())
    assert report.valid, report.summary()


def test_reassign_to_a_dead_broker_is_listed_and_cancelled(cluster: Cluster, topic_name, tmp_path):
    """A reassignment whose new replica is down stays in progress, --list
    shows it, and --cancel restores the original replicas."""
    view = cluster.via(ALL)
    view.create_topic(topic_name, replication_factor=2)
    _, replicas, _ = view.partition(topic_name)
    a, b = replicas
    c = next(i for i in ALL if i not in replicas)
    cluster.kill9(c)
    plan = plan_file(tmp_path, topic_name, [a, c])
    reassign_tool(cluster, "--reassignment-json-file", plan, "--execute")
    # The tool prints "Current partition reassignments:" then one line per
    # partition: "<topic>-0: replicas: 1,3,2. adding: 3. removing: 2."
    deadline = time.monotonic() + 30
    while True:
        listed = reassign_tool(cluster, "--list").stdout
        if f"{topic_name}-0: replicas: {a},{c},{b}. adding: {c}. removing: {b}." in listed:
            break
        assert time.monotonic() < deadline, f"the reassignment is not listed as expected:\n{listed}"
        time.sleep(1)
    leader, now, isr = view.partition(topic_name)
    assert now == [a, c, b] and c not in isr, f"(leader, replicas, isr) = {(leader, now, isr)} mid-reassignment"
    verified = reassign_tool(cluster, "--reassignment-json-file", plan, "--verify", check_exit=False)
    assert f"Reassignment of partition {topic_name}-0 is still in progress" in verified.stdout, verified.stdout
    # --preserve-throttles: clearing them would ask every broker, the dead one too.
    cancelled = reassign_tool(cluster, "--reassignment-json-file", plan, "--cancel", "--preserve-throttles")
    assert f"{topic_name}-0" in cancelled.stdout, cancelled.stdout
    wait_for_replicas(cluster, topic_name, [a, b], REASSIGN_TIMEOUT_S)
    listed = reassign_tool(cluster, "--list").stdout
    assert f"{topic_name}-0" not in listed, f"cancelled, yet still listed:\n{listed}"
    cluster.restart(c)


def test_a_new_replica_starts_at_the_leaders_log_start(cluster: Cluster, topic_name, tmp_path):
    """A replica added after DeleteRecords moved the leader's log start
    copies from that start (OFFSET_OUT_OF_RANGE, then ListOffsets), joins the
    ISR, and, made sole replica, serves exactly the records kept."""
    from confluent_kafka import TopicPartition
    from silt_harness import consume_partitions, watermarks
    view = cluster.via(ALL)
    view.create_topic(topic_name, replication_factor=1)
    a = view.partition(topic_name)[0]
    b = next(i for i in ALL if i != a)
    history = History()
    writer = cluster.writer(ALL, topic_name, history, rate_per_s=WRITE_RATE_PER_S)
    writer.wait_acked(2_000, 60, cluster.log_tail)
    writer.finish(2_000)
    _, end = watermarks(view, topic_name, 0)
    start = end - 500
    deleted = view.admin().delete_records([TopicPartition(topic_name, 0, start)])
    for future in deleted.values():
        future.result(timeout=30)
    assert watermarks(view, topic_name, 0) == (start, end)
    reassign_tool(cluster, "--reassignment-json-file", plan_file(tmp_path, topic_name, [a, b]), "--execute")
    wait_for_replicas(cluster, topic_name, [a, b], REASSIGN_TIMEOUT_S)
    reassign_tool(cluster, "--reassignment-json-file", plan_file(tmp_path, topic_name, [b], "to-b.json"), "--execute")
    leader, _ = wait_for_replicas(cluster, topic_name, [b], REASSIGN_TIMEOUT_S)
    assert leader == b
    only_b = cluster.via([b])
    assert watermarks(only_b, topic_name, 0) == (start, end), "the new replica starts where the leader's log did"
    got = consume_partitions(only_b, topic_name, {0: end}, start_offsets={0: start}, timeout_s=60)[0]
    assert [m.offset() for m in got] == list(range(start, end))
    acked = {offset: rid for rid, partition, offset in history.acks if partition == 0}
    assert [m.value().decode() for m in got] == [acked[o] for o in range(start, end)], "the records the leader had"

