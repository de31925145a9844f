"""Failure tests of a three-node cluster (issue 15, docs/cluster.md
"Failures"): SIGKILL of a partition leader, SIGKILL of the active
controller, a network partition that isolates a leader, and a rolling
restart under a consumer group. Real processes,
real faults (SIGKILL, nftables in per-node network namespaces), real
clients, and a history checker (tests/history.py) that judges the outcome.

They run against the suite's broker kind (`--broker`): Apache Kafka's KRaft
cluster in the oracle pass and Silt's cluster in the Silt pass; both must
pass. `tests/cluster/repeat N --broker silt|kafka` runs them N times in a row.
Each prints its failover figures; with SILT_CLUSTER_FIGURES=<file> they are
also appended there as JSON lines (tests/cluster/repeat uses this).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from cluster_harness import CLUSTER_SIZE, KAFKA_PORT, Cluster, committed_offsets, read_all
from history import History, Report, check
from kafka_wire import ConnectionClosed, RawConnection, encode_produce_v3, encode_record_batch, ApiKey

#: Records the leader-kill test writes at least.
LEADER_KILL_RECORDS = 20_000
#: The writers' pace: enough records on both sides of the fault, without
#: piling up hundreds of thousands while a node restarts.
WRITE_RATE_PER_S = 2_000
#: A new partition leader must appear this soon after the old one died.
#: Silt: issue 15's bar. Kafka with default settings fences a dead broker
#: after broker.session.timeout.ms (9 s); when the dead leader was also the
#: active controller a new controller is elected first
#: (controller.quorum.fetch.timeout.ms, 2 s): measured 9-11.2 s here.
LEADER_FAILOVER_MAX_S = {"silt": 10.0, "kafka": 13.0}
#: Deadline for a restarted or healed node to be back in the ISR.
REJOIN_TIMEOUT_S = 60.0
#: Topic settings of every test topic.
TOPIC_CONFIG = {"min.insync.replicas": "2"}
ALL = list(range(1, CLUSTER_SIZE + 1))


def record_figure(test: str, kind: str, **figures):
    line = {"test": test, "broker": kind, **{k: round(v, 3) for k, v in figures.items()}}
    print(f"cluster figures: {json.dumps(line)}")
    path = os.environ.get("SILT_CLUSTER_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def judge(history: History, tmp_path) -> Report:
    """Checks the history; an invalid one is kept in tmp_path/history.json
    for `python tests/history.py` (a failure test that fails once is a bug
    to find, not a run to retry)."""
    report = check(history)
    print(report.summary())
    if not report.valid:
        kept = tmp_path / "history.json"
        kept.write_text(history.dump())
        print(f"history kept in {kept}")
    return report


def others(node: int) -> list[int]:
    return [i for i in ALL if i != node]


def test_leader_kill(cluster: Cluster, topic_name, tmp_path):
    """SIGKILL the partition leader under an idempotent acks=all writer: a
    new leader within 10 s, every acknowledged record read exactly once in
    order, and the killed node back in the ISR after a restart."""
    view = cluster.via(ALL)
    view.create_topic(topic_name, config=TOPIC_CONFIG)
    leader, replicas, isr = view.partition(topic_name)
    assert sorted(isr) == ALL, f"ISR {isr} before the kill"
    controller = cluster.active_controller(ALL)
    history = History()
    writer = cluster.writer(ALL, topic_name, history, rate_per_s=WRITE_RATE_PER_S)
    writer.wait_acked(LEADER_KILL_RECORDS // 4, 60, cluster.log_tail)
    killed_at = time.monotonic()
    cluster.kill9(leader)
    acked_at_kill = history.acked_count()
    new_leader, _ = cluster.via(others(leader)).wait_for_leader(topic_name, not_in={leader}, timeout_s=60)
    failover_s = time.monotonic() - killed_at
    writer.wait_acked(acked_at_kill + 1000, 60, cluster.log_tail)
    resumed_s = next(t for t in writer.ack_times[acked_at_kill:] if t > killed_at) - killed_at
    restarted_at = time.monotonic()
    cluster.restart(leader)
    restart_s = time.monotonic() - restarted_at
    view.wait_for_isr(topic_name, 0, CLUSTER_SIZE, REJOIN_TIMEOUT_S)
    rejoin_s = time.monotonic() - restarted_at - restart_s
    writer.finish(LEADER_KILL_RECORDS)
    read_all(view, topic_name, 1, history, reader="after")
    report = judge(history, tmp_path)
    record_figure("leader_kill", cluster.kind, failover_s=failover_s, writes_resumed_s=resumed_s,
                  restart_s=restart_s, isr_rejoin_s=rejoin_s, leader_was_controller=float(leader == controller))
    assert report.valid, report.summary()
    assert report.stats["acknowledged"] >= LEADER_KILL_RECORDS, report.summary()
    assert new_leader in replicas
    bound = LEADER_FAILOVER_MAX_S[cluster.kind]
    assert failover_s <= bound, f"new leader {new_leader} {failover_s:.1f}s after SIGKILL of {leader}, " \
                                f"promised {bound}s (leader was the active controller: {leader == controller})"


def test_controller_kill(cluster: Cluster, topic_name, tmp_path):
    """SIGKILL the active controller: the other two voters elect another,
    topic creation keeps working, and the killed node rejoins."""
    controller = cluster.active_controller(ALL)
    assert controller in ALL, f"active controller {controller}"
    survivors = others(controller)
    view = cluster.via(survivors)
    killed_at = time.monotonic()
    cluster.kill9(controller)
    # Created at once: the admin client retries until a controller answers.
    # The dead node may still be unfenced and get replicas of it (so far
    # Kafka does so), hence the default min.insync.replicas (1) here.
    view.create_topic(topic_name, partitions=3, replication_factor=2)
    created_s = time.monotonic() - killed_at
    new_controller = cluster.active_controller(survivors)
    assert new_controller in survivors, f"active controller {new_controller} after killing {controller}"

    history = History()
    writer = cluster.writer(survivors, topic_name, history, rate_per_s=WRITE_RATE_PER_S)
    writer.wait_acked(2000, 60, cluster.log_tail)
    cluster.restart(controller)
    # The restarted node is a broker again: a topic needing all three is created.
    cluster.via(ALL).create_topic(f"{topic_name}-rf3", replication_factor=CLUSTER_SIZE, config=TOPIC_CONFIG)
    writer.finish(4000)
    read_all(view, topic_name, 3, history, reader="after")
    report = judge(history, tmp_path)
    record_figure("controller_kill", cluster.kind, topic_created_s=created_s)
    assert report.valid, report.summary()
    assert report.stats["acknowledged"] == report.stats["attempted"], report.summary()


def raw_produce_to(cluster: Cluster, node: int, topic: str, history: History, seq: int) -> int | str:
    """One acks=all produce sent straight to `node` (no client re-routing to
    another leader), recorded in `history` as producer "iso". Returns the
    error code, or what went wrong on the connection."""
    rid = history.invoke("iso", seq, 0)
    batch = encode_record_batch([(b"iso", rid.encode())], int(time.time() * 1000))
    try:
        with RawConnection((cluster.net.ip(node), KAFKA_PORT)) as conn:
            r = conn.request(ApiKey.PRODUCE, 3, encode_produce_v3(topic, 0, batch, acks=-1, timeout_ms=3000))
            r.int32()  # topics
            r.string()
            r.int32()  # partitions
            _p, err, base = r.int32(), r.int16(), r.int64()
    except (TimeoutError, ConnectionClosed, OSError) as e:
        history.info(rid, repr(e))
        return repr(e)
    if err == 0:
        history.ok(rid, 0, base)
    else:
        history.info(rid, f"error {err}")
    return err


def test_network_partition(cluster: Cluster, topic_name, tmp_path):
    """Cut the partition leader off from the other two nodes (clients still
    reach it): it cannot acknowledge acks=all, the majority elects a new
    leader, and after healing the old leader drops its divergent tail and
    serves the same log as the new leader."""
    from confluent_kafka import ElectionType, TopicPartition
    view = cluster.via(ALL)
    view.create_topic(topic_name, config=TOPIC_CONFIG)
    leader, replicas, isr = view.partition(topic_name)
    assert sorted(isr) == ALL, f"ISR {isr} before the partition"
    # The old leader is made leader again after healing, by preferred election.
    assert replicas[0] == leader, f"leader {leader} of a new topic is not its preferred replica {replicas}"
    majority = cluster.via(others(leader))
    history = History()
    writer = cluster.writer(ALL, topic_name, history, rate_per_s=WRITE_RATE_PER_S,
                            **{"request.timeout.ms": 5000})
    writer.wait_acked(2000, 60, cluster.log_tail)
    cluster.net.isolate(leader)
    isolated_at = time.monotonic()
    first = raw_produce_to(cluster, leader, topic_name, history, 0)
    new_leader, _ = majority.wait_for_leader(topic_name, not_in={leader}, timeout_s=60)
    failover_s = time.monotonic() - isolated_at
    second = raw_produce_to(cluster, leader, topic_name, history, 1)
    isolated_s = time.monotonic() - isolated_at
    cluster.net.heal(leader)
    acked_at_heal = history.acked_count()
    majority.wait_for_isr(topic_name, 0, CLUSTER_SIZE, REJOIN_TIMEOUT_S)
    writer.wait_acked(acked_at_heal + 1000, 60, cluster.log_tail)
    writer.finish(0)
    assert first != 0 and second != 0, \
        f"the isolated leader {leader} acknowledged acks=all: {first}, {second}"
    read_all(view, topic_name, 1, history, reader="new-leader")
    # The old leader, preferred again, must serve exactly the same log.
    fs = view.admin().elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic_name, 0)])
    fs.result(timeout=60)
    view.wait_for_leader(topic_name, not_in=set(others(leader)), timeout_s=60)
    read_all(view, topic_name, 1, history, reader="old-leader")
    report = judge(history, tmp_path)
    record_figure("network_partition", cluster.kind, failover_s=failover_s, isolated_s=isolated_s)
    print(f"acks=all produce to the isolated leader: {first!r}, then {second!r}")
    assert report.valid, report.summary()
    iso_read = [r for r in history.reads if r[4].startswith("iso-")]
    assert not iso_read, f"records the isolated leader took were not truncated: {iso_read}"


def test_rolling_restart(cluster: Cluster, topic_name, tmp_path):
    """Restart the three nodes one after the other (SIGTERM, exit 0, start
    again, wait for full ISRs) under a writer per partition and a consumer
    group: nothing acknowledged is lost, and the group keeps its offsets."""
    partitions = 3
    view = cluster.via(ALL)
    view.create_topic(topic_name, partitions=partitions, config=TOPIC_CONFIG)
    history = History()
    writers = [cluster.writer(ALL, topic_name, history, name=f"w{p}", partition=p,
                              rate_per_s=WRITE_RATE_PER_S / (2 * partitions)) for p in range(partitions)]
    group = f"{topic_name}-group"
    reader = cluster.group_reader(ALL, topic_name, group, history)
    for w in writers:
        w.wait_acked(500, 60, cluster.log_tail)
    started = time.monotonic()
    for node in ALL:
        code = cluster.nodes[node].stop()
        assert code == 0, f"node {node} exited with {code} on SIGTERM\n{cluster.nodes[node].log_tail(40)}"
        cluster.restart(node)
        for p in range(partitions):
            view.wait_for_isr(topic_name, p, CLUSTER_SIZE, REJOIN_TIMEOUT_S)
    rolled_s = time.monotonic() - started
    for w in writers:
        w.finish(0)
    ends = read_all(view, topic_name, partitions, history, reader="after")
    reader.wait_for(ends, 60)
    reader.finish()
    committed = committed_offsets(view.bootstrap, topic_name, group, partitions)
    report = judge(history, tmp_path)
    record_figure("rolling_restart", cluster.kind, rolled_s=rolled_s)
    assert report.valid, report.summary()
    assert report.stats["acknowledged"] == report.stats["attempted"], report.summary()
    assert committed == ends, f"the group's committed offsets {committed}, end offsets {ends}"
