"""Consumer groups with the KIP-848 consumer protocol (`group.protocol=consumer`,
librdkafka's ConsumerGroupHeartbeat) and server-side assignment: three
members share a 6-partition topic and consume every record exactly once,
committing after every batch and on revocation; when one closes, the others
take over its partitions from the committed offsets.

The member helpers live here (not in silt_harness.py, which another suite
owns): each member runs on its own thread, polls a batch, records it,
commits it synchronously, and commits what it still holds when partitions
are revoked. Brokers run with a short consumer heartbeat interval so that
reconciliation takes seconds.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from silt_harness import (DeliveryTracker, HarnessError, admin_client, confluent_conf, create_topic,
                          future_result, produce_all, stop_all, wait_until, watermarks)

PARTITIONS = 6
RECORDS_PER_ROUND = 300
#: Faster heartbeats than Kafka's 5 s so that revocations complete quickly.
BROKER_ENV = {
    "SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS": "0",
    "SILT_GROUPS__CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
    "SILT_GROUPS__CONSUMER_SESSION_TIMEOUT_MS": "10000",
}
#: How long a round of consuming, or a reassignment, may take.
ROUND_TIMEOUT_S = 60.0
#: Upper bound on one member thread's life.
MEMBER_LIFETIME_S = 180.0


class Member:
    """One `group.protocol=consumer` member on its own thread."""

    def __init__(self, name: str, broker, group: str, topic: str, assignor: str | None = None):
        self.name = name
        self.assignor = assignor
        self.broker = broker
        self.group = group
        self.topic = topic
        self.lock = threading.Lock()
        self.seen: list[tuple[int, int, bytes]] = []
        self.assignment: frozenset[int] = frozenset()
        self.pending: dict[int, int] = {}
        self.errors: list[str] = []
        self.commit_retries: list[str] = []
        self.crash: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)
        self._consumer = None

    def start(self) -> "Member":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0):
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"member {self.name} did not stop within {timeout_s:.0f}s")

    def _commit(self, partitions=None):
        from confluent_kafka import KafkaException, TopicPartition
        nxt = {p: o for p, o in self.pending.items() if partitions is None or p in partitions}
        if not nxt:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in nxt.items()],
                                  asynchronous=False)
        except KafkaException as e:
            # A commit a reconciliation overtook (STALE_MEMBER_EPOCH, ...) is retried after the next poll.
            with self.lock:
                self.commit_retries.append(f"{nxt}: {e!r}")
            return
        for p in nxt:
            self.pending.pop(p, None)

    def _on_revoke(self, consumer, partitions):
        self._commit({tp.partition for tp in partitions})

    def _run(self):
        from confluent_kafka import Consumer
        deadline = time.monotonic() + MEMBER_LIFETIME_S

        def on_error(err):
            with self.lock:
                self.errors.append(str(err))

        try:
            conf = {"group.id": self.group, "group.protocol": "consumer", "client.id": self.name,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False, "error_cb": on_error}
            if self.assignor is not None:
                conf["group.remote.assignor"] = self.assignor
            self._consumer = Consumer(confluent_conf(self.broker, **conf))
            self._consumer.subscribe([self.topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
            while not self._stop.is_set() and time.monotonic() < deadline:
                msgs = self._consumer.consume(num_messages=100, timeout=0.2)
                batch = []
                for m in msgs:
                    if m.error() is not None:
                        with self.lock:
                            self.errors.append(str(m.error()))
                        continue
                    batch.append((m.partition(), m.offset(), m.value()))
                    self.pending[m.partition()] = max(self.pending.get(m.partition(), 0), m.offset() + 1)
                with self.lock:
                    self.seen.extend(batch)
                assignment = frozenset(tp.partition for tp in self._consumer.assignment())
                self._commit(assignment)
                with self.lock:
                    self.assignment = assignment
        except BaseException as e:  # reported by check()
            self.crash = e
        finally:
            if self._consumer is not None:
                try:
                    self._consumer.close()  # revokes (committing) and leaves with member epoch -1
                except BaseException as e:
                    if self.crash is None:
                        self.crash = e

    def snapshot(self):
        with self.lock:
            return list(self.seen), self.assignment

    def check(self):
        if self.crash is not None:
            raise HarnessError(f"member {self.name} crashed: {self.crash!r}")
        with self.lock:
            if self.errors:
                raise HarnessError(f"member {self.name} reported errors: {self.errors[:5]}")

    def describe(self) -> str:
        with self.lock:
            return (f"{self.name}: assignment={sorted(self.assignment)} seen={len(self.seen)} "
                    f"pending={self.pending} commit_retries={self.commit_retries[:3]} "
                    f"errors={self.errors[:3]} crash={self.crash!r}")


def _produce_round(broker, topic: str, start: int) -> list[bytes]:
    from confluent_kafka import Producer
    producer = Producer(confluent_conf(broker, **{"linger.ms": 5}))
    tracker = DeliveryTracker()
    values = [f"record-{i}".encode() for i in range(start, start + RECORDS_PER_ROUND)]
    produce_all(producer, topic, ({"id": v, "value": v, "partition": i % PARTITIONS}
                                  for i, v in enumerate(values)), tracker)
    assert not tracker.failed, f"undelivered: {list(tracker.failed.items())[:3]}"
    return values


def _all_seen(members) -> list[bytes]:
    return [v for m in members for (_, _, v) in m.snapshot()[0]]


def _diagnostics(broker, members):
    return lambda: "\n".join([m.describe() for m in members] + [broker.log_tail(30)])


def _wait_consumed(broker, members, expected: list[bytes], what: str):
    want = collections.Counter(expected)

    def done():
        for m in members:
            m.check()
        return collections.Counter(_all_seen(members)) == want
    wait_until(done, ROUND_TIMEOUT_S, what, interval_s=0.1, diagnostics=_diagnostics(broker, members))


def _wait_assignment(broker, members, sizes: list[int], what: str):
    def done():
        for m in members:
            m.check()
        owned = [m.snapshot()[1] for m in members]
        union = frozenset().union(*owned)
        return sorted(len(o) for o in owned) == sorted(sizes) and len(union) == PARTITIONS \
            and sum(len(o) for o in owned) == PARTITIONS
    wait_until(done, ROUND_TIMEOUT_S, what, interval_s=0.1, diagnostics=_diagnostics(broker, members))


def _assert_exactly_once(members, expected: list[bytes]):
    counts = collections.Counter(_all_seen(members))
    duplicates = {v: n for v, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} records consumed more than once, e.g. {list(duplicates.items())[:5]}"
    missing = set(expected) - set(counts)
    assert not missing, f"{len(missing)} records never consumed, e.g. {sorted(missing)[:5]}"


@pytest.mark.parametrize("assignor", [None, "uniform", "range"])
def test_consumer_protocol_members_share_and_take_over(broker_factory, assignor):
    """`None`: the client names no assignor and the broker's default (uniform) applies."""
    broker = broker_factory(dict(BROKER_ENV))
    topic = "cp-orders"
    group = "cp-group"
    create_topic(broker, topic, partitions=PARTITIONS)
    expected = _produce_round(broker, topic, 0)
    members = [Member(f"m{i}", broker, group, topic, assignor).start() for i in range(3)]
    try:
        _wait_assignment(broker, members, [2, 2, 2], "three members with two partitions each")
        _wait_consumed(broker, members, expected, "the first round consumed once")
        expected += _produce_round(broker, topic, RECORDS_PER_ROUND)
        _wait_consumed(broker, members, expected, "the second round consumed once")

        # The group is a consumer-protocol group, described by ConsumerGroupDescribe.
        admin = admin_client(broker)
        described = future_result(admin.describe_consumer_groups([group], request_timeout=30)[group],
                                  f"DescribeConsumerGroups({group})")
        assert len(described.members) == 3, described
        assert described.partition_assignor == (assignor or "uniform"), described
        assert str(getattr(described, "type", "CONSUMER")).upper().endswith("CONSUMER"), described

        # One member closes (committing on revocation, leaving with epoch -1):
        # the other two take its partitions from the committed offsets.
        leaving = members[0]
        leaving.stop()
        leaving.check()
        survivors = members[1:]
        _wait_assignment(broker, survivors, [3, 3], "the two remaining members with three partitions each")
        expected += _produce_round(broker, topic, 2 * RECORDS_PER_ROUND)
        _wait_consumed(broker, members, expected, "the third round consumed once by the survivors")
        _assert_exactly_once(members, expected)
        seen_by_leaver = len(leaving.snapshot()[0])
        assert seen_by_leaver > 0, "the member that left had consumed its share before leaving"
    finally:
        stop_all(members)
    # Every partition's committed offset reached its end: nothing left uncommitted.
    from confluent_kafka import Consumer, TopicPartition
    probe = Consumer(confluent_conf(broker, **{"group.id": group, "enable.auto.commit": False}))
    try:
        committed = probe.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        probe.close()
    for tp in committed:
        assert tp.offset == watermarks(broker, topic, tp.partition)[1], f"partition {tp.partition}: {tp}"
    broker.assert_alive("after the consumer-protocol group")


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__]))
