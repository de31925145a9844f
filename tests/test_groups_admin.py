"""Consumer-group administration with confluent-kafka's AdminClient,
kafka-python's KafkaAdminClient and kcat's balanced consumer: ListGroups,
DescribeGroups, OffsetFetch for a whole group, DeleteGroups (refused while
the group has members, done once it is empty)."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import threading

from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions

from silt_harness import (GROUP_HEARTBEAT_INTERVAL_MS, GROUP_SESSION_TIMEOUT_MS,
                          ConfluentGroupConsumer, HarnessError, admin_client, future_result,
                          kafka_python_kwargs, create_topic, produce_keyed, wait_for_balanced_group,
                          wait_until)

PARTITIONS = 6
RECORDS = 600
CONSUME_TIMEOUT_S = 60.0
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69


def _describe(admin, group):
    fs = admin.describe_consumer_groups([group], request_timeout=30)
    return future_result(fs[group], f"describe_consumer_groups({group})")


def _confluent_offsets(admin, group, topic) -> dict[int, int]:
    fs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=30)
    res = future_result(fs[group], f"list_consumer_group_offsets({group})")
    assert res.group_id == group
    bad = [(tp.partition, str(tp.error)) for tp in res.topic_partitions if tp.error is not None]
    assert not bad, f"list_consumer_group_offsets partition errors {bad}"
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}


def _confluent_delete(admin, group):
    """None on success, else the KafkaError."""
    fs = admin.delete_consumer_groups([group], request_timeout=30)
    try:
        future_result(fs[group], f"delete_consumer_groups({group})")
        return None
    except KafkaException as e:
        return e.args[0]


def _listed(admin) -> dict[str, object]:
    res = future_result(admin.list_consumer_groups(request_timeout=30), "list_consumer_groups")
    assert not res.errors, f"list_consumer_groups errors {res.errors}"
    return {g.group_id: g for g in res.valid}


def test_admin_describe_list_offsets_and_delete(gbroker, topic_name):
    from kafka import KafkaAdminClient
    from kafka.errors import NoError

    create_topic(gbroker, topic_name, PARTITIONS)
    delivered = produce_keyed(gbroker, topic_name, range(RECORDS), PARTITIONS)
    end = {p: RECORDS // PARTITIONS for p in range(PARTITIONS)}
    assert sorted(o for _, o in delivered.values())[-1] == end[0] - 1
    group = f"group-{topic_name}"
    admin = admin_client(gbroker)
    kp = KafkaAdminClient(**kafka_python_kwargs(gbroker))
    members = [ConfluentGroupConsumer(f"admin-m{i}", gbroker, group, topic_name,
                                      **{"partition.assignment.strategy": "range"}) for i in range(2)]
    try:
        for m in members:
            m.start()
        wait_for_balanced_group(members, PARTITIONS, broker=gbroker)
        def all_committed():
            committed = {}
            for m in members:
                m.check()
                committed.update(m.snapshot()[2])
            return committed == end
        # A member may have consumed and committed all partitions before the
        # other joined, so look at the members' commits together.
        wait_until(all_committed, CONSUME_TIMEOUT_S, "the members to consume and commit all records",
                   interval_s=0.1, diagnostics=lambda: "\n".join(m.describe() for m in members))
        assignment = {m.member_id(): m.snapshot()[1] for m in members}

        # DescribeGroups (confluent): Stable, both members, their assignments.
        def described_stable():
            d = _describe(admin, group)
            return d if d.state == ConsumerGroupState.STABLE and len(d.members) == 2 else None
        d = wait_until(described_stable, 30, f"describe_consumer_groups({group}) to show 2 members, Stable",
                       interval_s=0.2)
        assert d.group_id == group
        assert d.is_simple_consumer_group is False
        assert d.partition_assignor == "range", f"partition_assignor {d.partition_assignor!r}"
        got = {mem.member_id: frozenset(tp.partition for tp in mem.assignment.topic_partitions
                                        if tp.topic == topic_name) for mem in d.members}
        assert got == assignment, f"described assignment {got}, the members hold {assignment}"
        assert {mem.client_id for mem in d.members} == {"admin-m0", "admin-m1"}
        assert all(mem.host for mem in d.members), "members without a host"

        # DescribeGroups (kafka-python).
        [info] = kp.describe_consumer_groups([group])
        assert info.error_code == 0 and info.group == group
        assert info.state == "Stable" and info.protocol_type == "consumer" and info.protocol == "range", info
        kp_assign = {}
        for mem in info.members:
            parts = set()
            for t, ps in mem.member_assignment.assignment:
                if t == topic_name:
                    parts |= set(ps)
            kp_assign[mem.member_id] = frozenset(parts)
            assert topic_name in mem.member_metadata.topics, mem.member_metadata
        assert kp_assign == assignment, f"kafka-python describe: {kp_assign}, members hold {assignment}"

        # ListGroups (both clients).
        listed = _listed(admin)
        assert group in listed, f"list_consumer_groups lacks {group}: {sorted(listed)}"
        assert listed[group].state == ConsumerGroupState.STABLE, listed[group].state
        assert listed[group].is_simple_consumer_group is False
        kp_listed = {g[0]: g for g in kp.list_consumer_groups()}
        assert group in kp_listed and kp_listed[group][1] == "consumer", kp_listed

        # Committed offsets for the whole group (both clients).
        assert _confluent_offsets(admin, group, topic_name) == end
        kp_offsets = {tp.partition: om.offset for tp, om in kp.list_consumer_group_offsets(group).items()
                      if tp.topic == topic_name}
        assert kp_offsets == end, f"kafka-python list_consumer_group_offsets: {kp_offsets}"

        # DeleteGroups is refused while the group has members.
        err = _confluent_delete(admin, group)
        assert err is not None and err.code() == NON_EMPTY_GROUP, \
            f"deleting a group with 2 members: {err!r}, want NON_EMPTY_GROUP (68)"
        [(g, kerr)] = kp.delete_consumer_groups([group])
        assert kerr.errno == NON_EMPTY_GROUP, f"kafka-python delete of a non-empty group: {kerr}"
        assert _confluent_offsets(admin, group, topic_name) == end, "a refused delete lost offsets"

        for m in members:
            m.stop()
        for m in members:
            m.check()
        d = wait_until(lambda: (lambda d: d if d.state == ConsumerGroupState.EMPTY else None)(
            _describe(admin, group)), 30, f"{group} to be Empty after both members closed", interval_s=0.2)
        assert d.members == [], f"Empty group still describes members {d.members}"
        assert _confluent_offsets(admin, group, topic_name) == end, "offsets gone once the group emptied"
        listed = _listed(admin)
        assert group in listed and listed[group].state == ConsumerGroupState.EMPTY, \
            f"an empty group with offsets must still be listed, as Empty: {listed.get(group)}"

        # Deleting the empty group works; it is then gone with its offsets.
        err = _confluent_delete(admin, group)
        assert err is None, f"deleting the empty group failed: {err}"
        assert group not in _listed(admin), "deleted group still listed"
        offs = _confluent_offsets(admin, group, topic_name)
        assert all(o < 0 for o in offs.values()), f"deleted group still has committed offsets {offs}"
        err = _confluent_delete(admin, group)
        assert err is not None and err.code() == GROUP_ID_NOT_FOUND, \
            f"deleting a deleted group: {err!r}, want GROUP_ID_NOT_FOUND (69)"

        # kafka-python deletes an empty group too: a simple-consumer group
        # that only ever committed offsets.
        simple = f"simple-{topic_name}"
        from confluent_kafka import Consumer
        from silt_harness import confluent_conf
        c = Consumer(confluent_conf(gbroker, **{"group.id": simple, "enable.auto.commit": False}))
        try:
            res = c.commit(offsets=[TopicPartition(topic_name, 0, 3)], asynchronous=False)
            assert all(tp.error is None for tp in res), res
        finally:
            c.close()
        assert _confluent_offsets(admin, simple, topic_name) == {0: 3}
        [(g, kerr)] = kp.delete_consumer_groups([simple])
        assert g == simple and kerr is NoError, f"kafka-python delete of an empty group: {kerr}"
        assert simple not in _listed(admin)
    finally:
        for m in members:
            m._stop.set()
        for m in members:
            m.stop()
        kp.close()


# -- kcat ---------------------------------------------------------------------

_ASSIGNED_RE = re.compile(r"assigned:\s*(.*)$")
_PARTITION_RE = re.compile(r"\[(\d+)\]")


class Kcat:
    """`kcat -G` balanced consumer printing "partition offset value" lines."""

    def __init__(self, broker, group, topic, name):
        kcat = shutil.which("kcat")
        if kcat is None:
            raise HarnessError("kcat is not installed (tests/run installs it)")
        self.name = name
        self.proc = subprocess.Popen(
            [kcat, "-b", broker.bootstrap, "-X", "broker.address.family=v4",
             "-X", "auto.offset.reset=earliest", "-X", f"client.id={name}",
             "-X", f"session.timeout.ms={GROUP_SESSION_TIMEOUT_MS}",
             "-X", f"heartbeat.interval.ms={GROUP_HEARTBEAT_INTERVAL_MS}",
             "-X", "partition.assignment.strategy=range",
             "-u", "-f", "%p %o %s\\n", "-G", group, topic],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lock = threading.Lock()
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
                        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self.threads:
            t.start()

    def _drain(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self.lock:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def records(self):
        with self.lock:
            lines = list(self.out)
        out = []
        for line in lines:
            p, o, v = line.split(" ", 2)
            out.append((int(p), int(o), v))
        return out

    def assignment(self) -> frozenset[int]:
        """Partitions from kcat's last "rebalanced ... assigned:" line."""
        with self.lock:
            lines = list(self.err)
        current: frozenset[int] = frozenset()
        for line in lines:
            if "rebalanced" in line and "revoked" in line:
                current = frozenset()
            m = _ASSIGNED_RE.search(line)
            if m:
                current = frozenset(int(x) for x in _PARTITION_RE.findall(m.group(1)))
        return current

    def describe(self):
        with self.lock:
            return f"{self.name}: exit={self.proc.poll()} out={len(self.out)} stderr tail={self.err[-5:]}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # kcat closes the consumer: LeaveGroup
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise HarnessError(f"kcat {self.name} did not exit within 30s of SIGTERM")
        for t in self.threads:
            t.join(timeout=5)


def test_kcat_balanced_consumers_split_the_topic(gbroker, topic_name):
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"kcat-{topic_name}"
    admin = admin_client(gbroker)
    kcats = [Kcat(gbroker, group, topic_name, f"kcat-{i}") for i in range(2)]

    class View:  # wait_for_balanced_group's interface over a kcat process
        def __init__(self, k):
            self.k = k

        def check(self):
            if self.k.proc.poll() is not None:
                raise HarnessError(f"kcat exited early: {self.k.describe()}")

        def snapshot(self):
            return [], self.k.assignment(), {}

        def describe(self):
            return self.k.describe()
    try:
        wait_for_balanced_group([View(k) for k in kcats], PARTITIONS, broker=gbroker)
        owner = {p: k.name for k in kcats for p in k.assignment()}
        delivered = produce_keyed(gbroker, topic_name, range(RECORDS), PARTITIONS)
        expected = {po: b"r-%d" % i for i, po in delivered.items()}

        def all_seen():
            for k in kcats:
                View(k).check()
            return set(expected) <= {(p, o) for k in kcats for p, o, _ in k.records()}
        wait_until(all_seen, CONSUME_TIMEOUT_S, f"two kcat -G consumers to print all {RECORDS} records",
                   interval_s=0.1, diagnostics=lambda: "\n".join(k.describe() for k in kcats))
        d = _describe(admin, group)
        described = {frozenset(tp.partition for tp in m.assignment.topic_partitions) for m in d.members}
        assert described == {k.assignment() for k in kcats}, \
            f"describe_consumer_groups shows {described}, kcat printed {[k.assignment() for k in kcats]}"
    finally:
        for k in kcats:
            k.stop()
    counts = collections.Counter((p, o) for k in kcats for p, o, _ in k.records())
    dups = {po: n for po, n in counts.items() if n > 1}
    assert not dups, f"records printed by more than one kcat or twice: {sorted(dups)[:10]}"
    for k in kcats:
        for p, o, v in k.records():
            assert v.encode() == expected[(p, o)], f"{k.name}: {p}@{o} value {v!r}"
            assert owner[p] == k.name, f"{k.name} printed {p}@{o}, but {owner[p]} was assigned {p}"
    assert sorted(collections.Counter(owner.values()).values()) == [3, 3], f"unbalanced {owner}"
    # Both kcats left on SIGTERM: the group is empty.
    d = wait_until(lambda: (lambda d: d if d.state == ConsumerGroupState.EMPTY else None)(
        _describe(admin, group)), 30, f"{group} to be Empty after both kcats exited", interval_s=0.2)
    assert d.members == []
