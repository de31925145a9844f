"""Consumer groups (classic protocol) with real clients: records are shared
out among the members of a group and each is consumed exactly once; members
that leave or die hand their partitions over at the committed offsets; and
committed offsets survive a broker restart.

Every consumer commits synchronously after processing each batch (and, on
revocation, before giving partitions up), so "processed" and "committed"
differ only inside a batch; that is what makes the exactly-once and
at-the-committed-offset assertions exact. A commit that a rebalance
overtakes (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS) stays pending and is
made again after the next poll, as an application would.

Brokers run with GROUP_BROKER_ENV (no initial rebalance delay, 1 s minimum
session timeout) so that joins and session expiry take seconds, not tens.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading

import pytest

from silt_harness import (GROUP_CONSUMER_CLASSES, GROUP_HEARTBEAT_INTERVAL_MS,
                          GROUP_MAX_POLL_INTERVAL_MS, GROUP_SESSION_TIMEOUT_MS,
                          ConfluentGroupConsumer, HarnessError, confluent_conf, create_topic,
                          kafka_python_kwargs, produce_keyed, stop_all, wait_for_balanced_group, wait_until,
                          watermarks)

PARTITIONS = 6
#: Records produced before the members start (consumed while they join and
#: rebalance) and after the group has settled (each consumed by its owner).
RECORDS_BEFORE_JOIN = 600
RECORDS_AFTER_JOIN = 600
#: How long consuming a few thousand records may take.
CONSUME_TIMEOUT_S = 60.0
#: A killed member must be gone from the group within its session timeout
#: (3 s) plus a rebalance; this bounds it generously.
TAKEOVER_TIMEOUT_S = 45.0


def _all_seen(consumers) -> collections.Counter:
    count = collections.Counter()
    for c in consumers:
        for p, o, _ in c.snapshot()[0]:
            count[(p, o)] += 1
    return count


def _committed_offsets(broker, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets as a fresh (non-member) confluent-kafka
    consumer reads them with OffsetFetch; -1001 (OFFSET_INVALID) if none."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(confluent_conf(broker, **{"group.id": group, "enable.auto.commit": False}))
    try:
        res = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        c.close()
    bad = [(tp.partition, str(tp.error)) for tp in res if tp.error is not None]
    assert not bad, f"OffsetFetch for group {group!r} returned partition errors {bad}"
    return {tp.partition: tp.offset for tp in res}


def _end_offsets(delivered: dict[int, tuple[int, int]]) -> dict[int, int]:
    end = {p: 0 for p in range(PARTITIONS)}
    for p, o in delivered.values():
        end[p] = max(end[p], o + 1)
    return end


#: (client, extra config, whether a commit may be overtaken by a rebalance).
#: Eager clients that rejoin only from inside poll() (kafka-python, and
#: librdkafka with the range assignor, which waits for the application to
#: serve the revocation) commit between polls, when the group is Stable or
#: PreparingRebalance, where Kafka accepts the member's generation. With
#: cooperative-sticky librdkafka keeps consuming while its background thread
#: rebalances, and aiokafka rebalances on a background task, so a commit can
#: meet the next generation: Kafka then answers ILLEGAL_GENERATION or
#: REBALANCE_IN_PROGRESS and the application commits again later.
def _raw_fetch_report(broker, topic, consumers, end) -> str:
    """For a diagnosis: what a raw Fetch returns at the position each
    partition's owner has reached, when that is short of the end."""
    from kafka_wire import RawConnection, decode_record_batches, raw_fetch
    lines = []
    try:
        with RawConnection(broker.kafka_addr) as conn:
            for c in consumers:
                seen, assignment, _ = c.snapshot()
                for p in sorted(assignment):
                    pos = max((o + 1 for q, o, _ in seen if q == p), default=0)
                    if pos >= end[p]:
                        continue
                    fp = raw_fetch(conn, topic, p, pos)
                    batches = [(b.base_offset, b.next_offset) for b in decode_record_batches(fp.records)]
                    lines.append(f"raw Fetch {topic}-{p}@{pos} (owner {c.name}): error {fp.error_code} "
                                 f"high_watermark {fp.high_watermark} batches {batches[:5]}; "
                                 f"ListOffsets (low, high) {watermarks(broker, topic, p)}; "
                                 f"produced end offset {end[p]}")
    except Exception as e:  # diagnostics must not hide the real failure
        lines.append(f"raw fetch report failed: {e!r}")
    return "\n".join(lines)


CLIENT_CASES = [
    pytest.param("kafka-python", {}, False, id="kafka-python"),
    pytest.param("confluent", {"partition.assignment.strategy": "range"}, False, id="confluent-range"),
    pytest.param("confluent", {"partition.assignment.strategy": "cooperative-sticky"}, True,
                 id="confluent-cooperative-sticky"),
    pytest.param("aiokafka", {}, True, id="aiokafka"),
]


@pytest.mark.parametrize("client,conf,overtaken_commits_ok", CLIENT_CASES)
def test_three_members_consume_each_record_exactly_once(gbroker, topic_name, client, conf,
                                                        overtaken_commits_ok):
    create_topic(gbroker, topic_name, PARTITIONS)
    delivered = produce_keyed(gbroker, topic_name, range(RECORDS_BEFORE_JOIN), PARTITIONS)
    group = f"group-{topic_name}"
    cls = GROUP_CONSUMER_CLASSES[client]
    consumers = [cls(f"{client}-{i}", gbroker, group, topic_name, **conf) for i in range(3)]
    stopped = False
    try:
        for c in consumers:
            c.start()
        wait_for_balanced_group(consumers, PARTITIONS, broker=gbroker)
        settled = {c.name: c.snapshot()[1] for c in consumers}
        after = produce_keyed(gbroker, topic_name,
                              range(RECORDS_BEFORE_JOIN, RECORDS_BEFORE_JOIN + RECORDS_AFTER_JOIN),
                              PARTITIONS)
        delivered.update(after)
        expected = {(p, o): b"r-%d" % i for i, (p, o) in delivered.items()}
        end = _end_offsets(delivered)

        def diag():
            return ("\n".join(c.describe() for c in consumers) + "\n"
                    + _raw_fetch_report(gbroker, topic_name, consumers, end) + "\n" + gbroker.log_tail(30))

        def everything_seen_and_committed():
            for c in consumers:
                c.check()
            if not set(expected) <= set(_all_seen(consumers)):
                return False
            committed = {}
            for c in consumers:
                _, assignment, comm = c.snapshot()
                committed.update({p: o for p, o in comm.items() if p in assignment})
            return committed == end
        wait_until(everything_seen_and_committed, CONSUME_TIMEOUT_S,
                   f"{len(expected)} records to be consumed by the group and every final owner "
                   f"to commit its partitions' end offsets {end}", interval_s=0.1, diagnostics=diag)
        final = {c.name: c.snapshot()[1] for c in consumers}
        broker_committed = _committed_offsets(gbroker, group, topic_name)
        stop_all(consumers)
        stopped = True
    finally:
        if not stopped:
            for c in consumers:
                c._stop.set()
            stop_all(consumers)

    for c in consumers:
        c.check()
    counts = _all_seen(consumers)
    dups = {k: n for k, n in counts.items() if n > 1}
    assert not dups, (f"{len(dups)} records consumed more than once, e.g. {sorted(dups.items())[:10]} "
                      f"(partition, offset): count; commit errors "
                      f"{[c.commit_errors[:3] for c in consumers]}")
    unexpected = set(counts) - set(expected)
    assert not unexpected, f"consumed records that were never produced: {sorted(unexpected)[:10]}"
    for c in consumers:
        for p, o, v in c.snapshot()[0]:
            assert v == expected[(p, o)], f"{c.name}: {p}@{o} has value {v!r}, want {expected[(p, o)]!r}"
    assert not any(c.commit_errors for c in consumers), \
        f"synchronous commits failed: {[(c.name, c.commit_errors[:3]) for c in consumers]}"
    if not overtaken_commits_ok:
        assert not any(c.commit_retries for c in consumers), (
            "commits between polls of an eager member were refused: "
            f"{[(c.name, c.commit_retries[:3]) for c in consumers]}")

    # The final assignment covers all partitions with no overlap, 2 each.
    views = list(final.values())
    assert final == settled, f"assignment changed after the group settled: {settled} -> {final}"
    assert set().union(*views) == set(range(PARTITIONS)), f"assignment {final} misses partitions"
    assert sum(len(v) for v in views) == PARTITIONS, f"overlapping assignment {final}"
    assert sorted(len(v) for v in views) == [2, 2, 2], f"unbalanced assignment {final}"
    # Records produced after the group settled went to their partition's owner.
    owner = {p: name for name, ps in final.items() for p in ps}
    after_pos = set(after.values())
    for c in consumers:
        for p, o, _ in c.snapshot()[0]:
            if (p, o) in after_pos:
                assert owner[p] == c.name, (f"{p}@{o}, produced after the group settled, was consumed "
                                            f"by {c.name}, but {owner[p]} owns partition {p}")
    # The broker holds the same commits the members made.
    assert broker_committed == end, (f"OffsetFetch returns {broker_committed}, the members committed "
                                     f"{end}")


# -- a member leaves, another dies --------------------------------------------

#: A group member in its own process, so that it can be SIGKILLed. It prints
#: one line per event, flushed at once: "ASSIGN p,p" after each poll whose
#: assignment changed, "R p o" per processed record, "A p o" before and
#: "C p o" after a successful synchronous commit of next offset o. Once it
#: has processed a record tagged b"s-" ("stop committing"), it stops
#: committing but keeps consuming, holding processed-but-uncommitted records
#: until it is killed.
_KILLABLE_MEMBER = r"""
import sys
from confluent_kafka import Consumer, TopicPartition
bootstrap, group, topic, session_ms, hb_ms, poll_ms = sys.argv[1:7]
c = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
              "group.id": group, "client.id": "killable", "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "session.timeout.ms": int(session_ms),
              "heartbeat.interval.ms": int(hb_ms), "max.poll.interval.ms": int(poll_ms),
              "partition.assignment.strategy": "range", "fetch.wait.max.ms": 100})
c.subscribe([topic])
out = sys.stdout
committing = True
last = None
while True:  # ends with SIGKILL (or the test's fallback terminate())
    msgs = c.consume(num_messages=50, timeout=0.2)
    nxt = {}
    for m in msgs:
        if m.error() is not None:
            out.write("E %s\n" % m.error())
            continue
        out.write("R %d %d\n" % (m.partition(), m.offset()))
        nxt[m.partition()] = m.offset() + 1
        if m.value().startswith(b"s-"):
            committing = False
    if nxt and committing:
        for p, o in nxt.items():
            out.write("A %d %d\n" % (p, o))
        out.flush()
        res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()],
                       asynchronous=False)
        for tp in res:
            if tp.error is None:
                out.write("C %d %d\n" % (tp.partition, tp.offset))
            else:
                out.write("E commit %d %s\n" % (tp.partition, tp.error))
    elif nxt:
        out.write("HOLDING\n")
    a = sorted(tp.partition for tp in c.assignment())
    if a != last:
        out.write("ASSIGN %s\n" % ",".join(map(str, a)))
        last = a
    out.flush()
"""


class KillableMember:
    """Runs _KILLABLE_MEMBER and parses its output on a drain thread."""

    def __init__(self, broker, group, topic):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _KILLABLE_MEMBER, broker.bootstrap, group, topic,
             str(GROUP_SESSION_TIMEOUT_MS), str(GROUP_HEARTBEAT_INTERVAL_MS),
             str(GROUP_MAX_POLL_INTERVAL_MS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lock = threading.Lock()
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._drain, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True)]
        for t in self._threads:
            t.start()

    def _drain(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self.lock:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def parsed(self):
        """(records [(p, o)], confirmed commits {p: o}, attempted {p: o},
        assignment set, holding?, errors)"""
        with self.lock:
            lines = list(self.lines)
        seen, confirmed, attempted, assignment, errors = [], {}, {}, set(), []
        holding = False
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "R":
                p, o = map(int, rest.split())
                seen.append((p, o))
            elif kind == "A":
                p, o = map(int, rest.split())
                attempted[p] = o
            elif kind == "C":
                p, o = map(int, rest.split())
                confirmed[p] = o
            elif kind == "ASSIGN":
                assignment = {int(x) for x in rest.split(",") if x}
            elif kind == "HOLDING":
                holding = True
            elif kind == "E":
                errors.append(rest)
        return seen, confirmed, attempted, frozenset(assignment), holding, errors

    def describe(self) -> str:
        seen, confirmed, attempted, assignment, holding, errors = self.parsed()
        with self.lock:
            err_tail = self.stderr[-10:]
        return (f"killable member (pid {self.proc.pid}, exit {self.proc.poll()}): assignment="
                f"{sorted(assignment)} seen={len(seen)} confirmed={confirmed} attempted={attempted} "
                f"holding={holding} errors={errors[:3]} stderr={err_tail}")

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=5)


class _KillableView:
    """Adapts KillableMember to wait_for_balanced_group's interface."""

    def __init__(self, member: KillableMember):
        self.m = member

    def check(self):
        if self.m.proc.poll() is not None:
            raise HarnessError(f"killable member exited early: {self.m.describe()}")

    def snapshot(self):
        seen, _, _, assignment, _, _ = self.m.parsed()
        return [(p, o, None) for p, o in seen], assignment, {}

    def describe(self):
        return self.m.describe()


def test_members_that_leave_or_die_hand_over_at_committed_offsets(gbroker, topic_name):
    """Three members: `stays`, `leaves` (closes cleanly: LeaveGroup) and a
    killable process (SIGKILL: only its session timeout tells the broker).
    The killed member processed some records it never committed. `stays`
    must end up owning all six partitions and resume each exactly at the
    committed offset: nothing lost, and the only records consumed twice are
    exactly the ones the killed member processed but had not committed."""
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"group-{topic_name}"
    delivered = produce_keyed(gbroker, topic_name, range(600), PARTITIONS, tag=b"r")
    conf = {"partition.assignment.strategy": "range"}
    stays = ConfluentGroupConsumer("stays", gbroker, group, topic_name, **conf)
    leaves = ConfluentGroupConsumer("leaves", gbroker, group, topic_name, **conf)
    killable = KillableMember(gbroker, group, topic_name)
    kview = _KillableView(killable)
    members = [stays, leaves]
    views = [stays, leaves, kview]

    def diag():
        return "\n".join(v.describe() for v in views) + "\n" + gbroker.log_tail(30)

    try:
        for c in members:
            c.start()
        wait_for_balanced_group(views, PARTITIONS, broker=gbroker)
        first = set(delivered.values())
        wait_until(lambda: first <= set(_seen_pairs(members, killable)), CONSUME_TIMEOUT_S,
                   "the first 600 records to be consumed", interval_s=0.1, diagnostics=diag)
        before = {c.name: c.snapshot()[1] for c in members}
        before["killable"] = kview.snapshot()[1]
        assert sum(len(v) for v in before.values()) == PARTITIONS and \
            set().union(*before.values()) == set(range(PARTITIONS)), f"assignment {before}"
        # Second wave: records tagged "s-" make the killable member stop
        # committing once it processes one.
        delivered2 = produce_keyed(gbroker, topic_name, range(600, 1200), PARTITIONS, tag=b"s")
        delivered.update(delivered2)
        end2 = _end_offsets(delivered)
        mine = {c.name: {po for po in delivered2.values() if po[0] in before[c.name]} for c in members}

        def wave2_processed():
            for v in views:
                v.check()
            if not killable.parsed()[4]:
                return False
            for c in members:
                seen, assignment, committed = c.snapshot()
                if not mine[c.name] <= {(p, o) for p, o, _ in seen}:
                    return False
                if any(committed.get(p) != end2[p] for p in before[c.name]):
                    return False
            return True
        wait_until(wave2_processed, CONSUME_TIMEOUT_S,
                   "the second wave to be processed by all three members and committed by the two "
                   "in-process ones, and the killable member to hold uncommitted records",
                   interval_s=0.1, diagnostics=diag)
        # The killable member commits nothing more once it holds, so the
        # group's committed offsets are now where a successor must resume.
        # (They need not be the killable member's own commits: a partition
        # may have been consumed and committed by another member before the
        # group settled.)
        committed_at_kill = _committed_offsets(gbroker, group, topic_name)
        # Kill first, so that the rebalance LeaveGroup starts has to wait
        # for the dead member's session to expire.
        killable.kill9()
        k_seen, _, _, _, _, k_errors = killable.parsed()
        stays_mark = len(stays.snapshot()[0])
        leaves.stop()
        assert not leaves.commit_errors, f"leaving member's commits failed: {leaves.commit_errors}"
        leaves_committed = leaves.snapshot()[2]

        wait_until(lambda: (stays.check() or True) and stays.snapshot()[1] == frozenset(range(PARTITIONS)),
                   TAKEOVER_TIMEOUT_S, "the remaining member to own all 6 partitions after one "
                   "member left and one was killed", interval_s=0.1, diagnostics=diag)
        # Third wave so that every partition has records past the handover.
        delivered3 = produce_keyed(gbroker, topic_name, range(1200, 1260), PARTITIONS, tag=b"t")
        delivered.update(delivered3)
        end3 = _end_offsets(delivered)
        wait_until(lambda: (stays.check() or True) and stays.snapshot()[2] == end3,
                   CONSUME_TIMEOUT_S, f"the remaining member to consume and commit up to {end3}",
                   interval_s=0.1, diagnostics=diag)
        broker_committed = _committed_offsets(gbroker, group, topic_name)
        stays.stop()
    finally:
        for c in members:
            c._stop.set()
        killable.kill9()
        stop_all(members)

    stays.check()
    leaves.check()
    assert not k_errors, f"killable member reported errors: {k_errors}"
    assert not stays.commit_errors, f"remaining member's commits failed: {stays.commit_errors}"
    # No loss.
    seen_all = collections.Counter(_seen_pairs(members, killable, k_seen))
    missing = set(delivered.values()) - set(seen_all)
    assert not missing, f"{len(missing)} records never consumed, e.g. {sorted(missing)[:10]}"
    # Duplicates are exactly the killed member's uncommitted records.
    k_parts = before["killable"]
    uncommitted = {(p, o) for p, o in k_seen if p in k_parts and o >= committed_at_kill[p]}
    assert uncommitted, ("test precondition: the killed member should hold processed but "
                         f"uncommitted records; committed at kill {committed_at_kill}")
    dups = {po for po, n in seen_all.items() if n > 1}
    assert dups == uncommitted, (
        f"records consumed twice {sorted(dups)[:10]} (of {len(dups)}) differ from the killed member's "
        f"uncommitted records {sorted(uncommitted)[:10]} (of {len(uncommitted)}): extra "
        f"{sorted(dups - uncommitted)[:10]}, not re-consumed {sorted(uncommitted - dups)[:10]}")
    # The survivor resumed each taken-over partition exactly at the commit.
    after_takeover = [(p, o) for p, o, _ in stays.snapshot()[0][stays_mark:]]
    first_after = {}
    for p, o in after_takeover:
        first_after.setdefault(p, o)
    for p in before["leaves"]:
        assert first_after.get(p) == leaves_committed[p], (
            f"partition {p} (left cleanly, committed {leaves_committed[p]}): the survivor resumed at "
            f"{first_after.get(p)}")
    for p in k_parts:
        assert first_after.get(p) == committed_at_kill[p], (
            f"partition {p} (killed member; committed {committed_at_kill[p]} when it was killed): "
            f"the survivor resumed at {first_after.get(p)}")
    assert broker_committed == end3, f"OffsetFetch returns {broker_committed}, want {end3}"


def _seen_pairs(members, killable, k_seen=None):
    out = []
    for c in members:
        out.extend((p, o) for p, o, _ in c.snapshot()[0])
    out.extend(k_seen if k_seen is not None else killable.parsed()[0])
    return out


# -- broker restart --------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_committed_offsets_survive_broker_restart(gbroker, topic_name, sig):
    """Commit an offset (with metadata) per partition as a group member,
    stop the broker, start it on the same data dir: committed() returns the
    same offsets and metadata, and a new member resumes exactly there.

    SIGKILL too: Kafka answers OffsetCommit only once the offsets are
    appended to __consumer_offsets, so a process crash (the OS keeps what
    was written) must not lose an acknowledged commit."""
    from confluent_kafka import Consumer, TopicPartition
    from kafka import KafkaAdminClient

    create_topic(gbroker, topic_name, PARTITIONS)
    produce_keyed(gbroker, topic_name, range(PARTITIONS * 50), PARTITIONS)
    group = f"group-{topic_name}"
    want = {p: 7 + 5 * p for p in range(PARTITIONS)}

    c = Consumer(confluent_conf(gbroker, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": GROUP_SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": GROUP_HEARTBEAT_INTERVAL_MS}))
    try:
        c.subscribe([topic_name])

        def owns_all():
            c.poll(0.1)  # serves the rebalance; the records are not processed
            return {tp.partition for tp in c.assignment()} == set(range(PARTITIONS))
        wait_until(owns_all, 30, "the only member to be assigned all 6 partitions", interval_s=0,
                   diagnostics=gbroker.log_tail)
        res = c.commit(offsets=[TopicPartition(topic_name, p, o, metadata=f"meta-{p}")
                                for p, o in want.items()], asynchronous=False)
        assert all(tp.error is None for tp in res), f"commit errors {res}"
    finally:
        c.close()

    def committed_now():
        probe = Consumer(confluent_conf(gbroker, **{"group.id": group, "enable.auto.commit": False}))
        try:
            res = probe.committed([TopicPartition(topic_name, p) for p in range(PARTITIONS)], timeout=30)
        finally:
            probe.close()
        assert all(tp.error is None for tp in res), f"committed() errors {res}"
        return {tp.partition: (tp.offset, tp.metadata) for tp in res}

    before = committed_now()
    assert before == {p: (o, f"meta-{p}") for p, o in want.items()}, f"committed() before restart: {before}"
    md = Consumer(confluent_conf(gbroker, **{"group.id": "silt-tests-assign-only"}))
    try:
        internal = md.list_topics(timeout=10).topics
    finally:
        md.close()
    assert "__consumer_offsets" in internal, ("Metadata does not list the internal __consumer_offsets "
                                              f"topic after commits: {sorted(internal)[:20]}")

    code = gbroker.stop(sig)
    if sig == signal.SIGTERM:
        assert code == 0, f"broker exited with {code} on SIGTERM\n{gbroker.log_tail()}"
    gbroker.restart()

    after = wait_until(lambda: committed_now(), 30, "OffsetFetch to answer after the restart",
                       diagnostics=gbroker.log_tail)
    assert after == before, f"committed offsets changed across the restart: {before} -> {after}"

    admin = KafkaAdminClient(**kafka_python_kwargs(gbroker))
    try:
        kp = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    # confluent-kafka sends commit metadata with its C string's NUL
    # terminator; kafka-python shows those bytes as they are stored.
    kp_offsets = {tp.partition: (om.offset, om.metadata.rstrip("\x00"))
                  for tp, om in kp.items() if tp.topic == topic_name}
    assert kp_offsets == before, f"kafka-python list_consumer_group_offsets after restart: {kp_offsets}"

    # A new member of the group starts exactly at the committed offsets.
    resumer = ConfluentGroupConsumer("resumer", gbroker, group, topic_name)
    try:
        resumer.start()
        wait_until(lambda: (resumer.check() or True) and
                   {p for p, _, _ in resumer.snapshot()[0]} == set(range(PARTITIONS)),
                   CONSUME_TIMEOUT_S, "a new member to consume from every partition after the restart",
                   interval_s=0.1, diagnostics=lambda: resumer.describe() + "\n" + gbroker.log_tail(30))
    finally:
        resumer.stop()
    resumer.check()
    first = {}
    for p, o, _ in resumer.snapshot()[0]:
        first.setdefault(p, o)
    assert first == want, f"new member resumed at {first}, committed offsets were {want}"
