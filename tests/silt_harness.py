"""Black-box harness for the Silt broker: bounded waits, Kafka client
helpers and Prometheus text parsing; the broker processes (Silt's and
Apache Kafka's) live in broker_process.py and are re-exported here.

Everything here talks to a real broker process on 127.0.0.1. Nothing sleeps
to synchronise: every wait is a poll with a deadline that names what it
waited for (see `wait_until`).

The raw wire codec lives in kafka_wire.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from broker_process import (  # noqa: F401  (re-exported for the tests)
    BROKER_READY_TIMEOUT_S, BROKER_STOP_TIMEOUT_S, KAFKA_SCRIPT, RAW_IO_TIMEOUT_S, REPO_ROOT,
    Broker, BrokerProcess, HarnessError, KafkaBroker, default_silt_bin, free_port, kafka_props_for)

#: Default deadline for a client operation (admin call, flush, consume).
CLIENT_TIMEOUT_S = 60.0


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               interval_s: float = 0.05, diagnostics: Callable[[], str] | None = None):
    """Poll `predicate` until it returns a truthy value or `timeout_s` passes.

    Returns the truthy value. On timeout raises HarnessError naming `what`
    and, if given, appending `diagnostics()`. The poll interval is a pacing
    delay between checks of a condition, not a synchronisation sleep: the
    condition itself decides when we proceed.
    """
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # the predicate may race with startup
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout_s:.1f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            if diagnostics is not None:
                msg += "\n" + diagnostics()
            raise HarnessError(msg)
        time.sleep(interval_s)


# ---------------------------------------------------------------------------
# Client helpers (confluent-kafka, kafka-python)
# ---------------------------------------------------------------------------

def client_errors_sink():
    """An error_cb for confluent-kafka clients that records errors instead of
    printing them; tests include them in failure messages."""
    errors: list = []

    def cb(err):
        errors.append(err)
    return errors, cb


def confluent_conf(broker: Broker, **extra) -> dict:
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "socket.timeout.ms": 30000,
    }
    # Keys are librdkafka property names as given ("linger.ms" via **{...});
    # callbacks such as error_cb keep their Python names.
    conf.update(extra)
    return conf


def admin_client(broker: Broker):
    from confluent_kafka.admin import AdminClient
    return AdminClient(confluent_conf(broker))


def future_result(fut, what: str, timeout_s: float = CLIENT_TIMEOUT_S):
    import concurrent.futures
    try:
        return fut.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise HarnessError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def create_topic(broker: Broker, name: str, partitions: int = 1, config: dict | None = None,
                 replication_factor: int = 1):
    """Create a topic with confluent-kafka's AdminClient and wait until its
    metadata shows every partition with a leader."""
    from confluent_kafka.admin import NewTopic
    admin = admin_client(broker)
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                       replication_factor=replication_factor,
                                       config=dict(config or {}))],
                             operation_timeout=30, request_timeout=30)
    future_result(fs[name], f"CreateTopics({name})")
    wait_for_partitions(broker, name, partitions)


def describe_topic_configs(broker: Broker, topic: str) -> dict:
    """DescribeConfigs for one topic: {name: confluent ConfigEntry}."""
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = admin_client(broker)  # must outlive the future, or it fails with _DESTROY
    res = ConfigResource(ResourceType.TOPIC, topic)
    fs = admin.describe_configs([res], request_timeout=30)
    return future_result(fs[res], f"DescribeConfigs({topic})")


def wait_for_partitions(broker: Broker, topic: str, partitions: int,
                        timeout_s: float = CLIENT_TIMEOUT_S):
    admin = admin_client(broker)

    def ready():
        md = admin.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return False
        return all(p.leader == 0 for p in t.partitions.values())
    wait_until(ready, timeout_s, f"metadata of topic {topic!r} to show {partitions} partitions led by node 0",
               diagnostics=broker.log_tail)
    # Metadata can name the leader a moment before the leader serves the
    # partition (Apache Kafka answers NOT_LEADER meanwhile): wait until each
    # one answers ListOffsets.
    c = _offsets_consumer(broker)
    try:
        for p in range(partitions):
            _query_watermarks(c, topic, p)
    finally:
        c.close()


class DeliveryTracker:
    """Collects confluent-kafka delivery reports by an opaque per-record id."""

    def __init__(self):
        self.ok: dict[object, tuple[int, int]] = {}
        self.failed: dict[object, object] = {}

    def callback(self, ident):
        def cb(err, msg):
            if err is not None:
                self.failed[ident] = err
            else:
                self.ok[ident] = (msg.partition(), msg.offset())
        return cb


def produce_all(producer, topic: str, records: Iterable[dict], tracker: DeliveryTracker,
                flush_timeout_s: float = 180.0):
    """Produce `records` (dicts of produce() kwargs plus 'id') and wait for
    every delivery report. Local queue-full is handled by polling, bounded by
    the same deadline as the flush."""
    deadline = time.monotonic() + flush_timeout_s
    count = 0
    for rec in records:
        rec = dict(rec)
        ident = rec.pop("id")
        while True:
            try:
                producer.produce(topic, on_delivery=tracker.callback(ident), **rec)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"producer queue stayed full for {flush_timeout_s:.0f}s "
                                       f"after {count} records")
                producer.poll(0.05)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    if remaining:
        raise HarnessError(f"{remaining} of {count} records still undelivered after "
                           f"{flush_timeout_s:.0f}s flush")
    return count


def consume_partitions(broker: Broker, topic: str, end_offsets: dict[int, int],
                       start_offsets: dict[int, int] | None = None,
                       timeout_s: float = 180.0, **conf_extra) -> dict[int, list]:
    """Read every partition in `end_offsets` from its start offset (default 0)
    up to the given end offset using confluent-kafka with manual assignment,
    and return {partition: [Message, ...]} in the order received.

    Finishes when each partition has reported end-of-partition at or beyond
    its end offset; fails on any consumer error or on the deadline.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    start_offsets = start_offsets or {p: 0 for p in end_offsets}
    conf = confluent_conf(
        broker,
        **{"group.id": "silt-tests-assign-only",  # required by the client; never joined
           "enable.auto.commit": False, "enable.auto.offset.store": False,
           "enable.partition.eof": True, "auto.offset.reset": "error",
           "check.crcs": True, "fetch.wait.max.ms": 100})
    conf.update(conf_extra)
    consumer = Consumer(conf)
    out: dict[int, list] = {p: [] for p in end_offsets}
    position = dict(start_offsets)
    done = {p for p, end in end_offsets.items() if start_offsets[p] >= end}
    try:
        consumer.assign([TopicPartition(topic, p, start_offsets[p]) for p in end_offsets])
        deadline = time.monotonic() + timeout_s
        while len(done) < len(end_offsets):
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"timed out after {timeout_s:.0f}s consuming {topic}: positions {position}, "
                    f"wanted {end_offsets}\n{broker.log_tail(30)}")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= end_offsets[msg.partition()]:
                            done.add(msg.partition())
                        continue
                    raise HarnessError(f"consumer error on {topic}: {err}")
                out[msg.partition()].append(msg)
                position[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()
    return out


def _offsets_consumer(broker: Broker):
    from confluent_kafka import Consumer
    return Consumer(confluent_conf(broker, **{"group.id": "silt-tests-assign-only",
                                              "enable.auto.commit": False}))


def _query_watermarks(consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) with `consumer`. Right after a topic is created or the
    broker restarted, Apache Kafka answers NOT_LEADER until the partition is
    loaded; a client retries that, and so does this (bounded by
    CLIENT_TIMEOUT_S). Other errors fail at once."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition
    transient = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}
    failed: list[KafkaException] = []

    def query():
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        except KafkaException as e:
            if e.args and e.args[0].code() in transient:
                raise
            failed.append(e)
            return True
    got = wait_until(query, CLIENT_TIMEOUT_S, f"the watermarks of {topic}-{partition}")
    if failed:
        raise failed[0]
    return got


def watermarks(broker: Broker, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) of one partition (ListOffsets, retried while not led yet)."""
    c = _offsets_consumer(broker)
    try:
        return _query_watermarks(c, topic, partition)
    finally:
        c.close()


def assert_broker_serves(broker: Broker, topic: str = "silt-liveness"):
    """The broker process is alive and a brand-new client can produce a record
    and read it back. Used after every piece of hostile input."""
    from confluent_kafka import Producer
    broker.assert_alive("before the liveness check")
    marker = f"alive-{time.monotonic_ns()}".encode()
    errors, error_cb = client_errors_sink()
    p = Producer(confluent_conf(broker, acks="all", error_cb=error_cb,
                                **{"message.timeout.ms": 30000}))
    tracker = DeliveryTracker()
    produce_all(p, topic, [{"id": 0, "value": marker, "partition": 0}], tracker, flush_timeout_s=60)
    assert not tracker.failed, f"liveness produce failed: {tracker.failed} (client errors {errors})"
    partition, offset = tracker.ok[0]
    got = consume_partitions(broker, topic, {partition: offset + 1}, {partition: offset}, timeout_s=60)
    values = [m.value() for m in got[partition]]
    assert values == [marker], f"liveness record read back as {values!r}, wanted [{marker!r}]"
    broker.assert_alive("after the liveness check")


def kafka_python_kwargs(broker: Broker, **extra) -> dict:
    kw = {"bootstrap_servers": broker.bootstrap, "request_timeout_ms": 30000,
          "api_version_auto_timeout_ms": 10000}
    kw.update(extra)
    return kw


# -- Prometheus text ---------------------------------------------------------

_SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)')


def parse_prometheus(text: str) -> list[tuple[str, str, float]]:
    """[(metric_name, raw_label_block, value)] for every sample line."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        samples.append((m.group("name"), m.group("labels") or "", value))
    return samples


# ---------------------------------------------------------------------------
# Consumer groups (added for tests/test_groups*.py)
# ---------------------------------------------------------------------------

#: Broker settings for group tests: no initial rebalance delay (Kafka's
#: group.initial.rebalance.delay.ms, default 3000) and a minimum session
#: timeout low enough for the short client session timeouts below.
GROUP_BROKER_ENV = {
    "SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS": "0",
    "SILT_GROUPS__MIN_SESSION_TIMEOUT_MS": "1000",
}
#: Client session timeout for group members: a killed member is noticed
#: after this long.
GROUP_SESSION_TIMEOUT_MS = 3000
GROUP_HEARTBEAT_INTERVAL_MS = 500
#: Rebalance timeout (max.poll.interval.ms): bounds how long a rebalance can
#: wait for a member that does not rejoin.
GROUP_MAX_POLL_INTERVAL_MS = 20000
#: Upper bound on one consumer thread's life.
GROUP_CONSUMER_LIFETIME_S = 150.0


class GroupConsumer:
    """One group member on its own thread: poll a batch, record it as
    processed, commit the batch's offsets synchronously, repeat. A commit
    that a rebalance overtook stays in `pending` and is retried after the
    next poll; clients with a revocation hook commit there too.

    Shared state (read it under `lock`): `seen` [(partition, offset, value)]
    in processing order, `assignment` (partitions, refreshed after every
    poll), `committed` {partition: next offset} of the last successful
    commits, `commit_errors`, `errors` (consumer errors), `crash` (an
    exception that ended the thread). Subclasses implement `_open`, `_poll`,
    `_commit`, `_assignment`, `_close` for one client library.
    """

    client = "?"

    def __init__(self, name: str, broker: Broker, group: str, topic: str, **conf):
        self.name = name
        self.broker = broker
        self.group = group
        self.topic = topic
        self.conf = conf
        self.lock = threading.Lock()
        self.seen: list[tuple[int, int, bytes]] = []
        self.assignment: frozenset[int] = frozenset()
        self.committed: dict[int, int] = {}
        self.commit_errors: list[str] = []
        #: Commits refused because a rebalance overtook them (ILLEGAL_GENERATION,
        #: REBALANCE_IN_PROGRESS); their offsets stay pending and are committed
        #: again after the next poll, as an application would.
        self.commit_retries: list[str] = []
        self.pending: dict[int, int] = {}
        self.errors: list[str] = []
        self.crash: BaseException | None = None
        self.closed = False
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "GroupConsumer":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0):
        """Finish the current batch and its commit, then close (leave the
        group) and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"consumer {self.name} did not stop within {timeout_s:.0f}s")

    def _run(self):
        deadline = time.monotonic() + GROUP_CONSUMER_LIFETIME_S
        try:
            self._open()
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._step()
        except BaseException as e:  # reported by check()
            self.crash = e
        finally:
            try:
                self._close()
            except BaseException as e:
                if self.crash is None:
                    self.crash = e
            self.closed = True

    def _step(self):
        recs = self._poll()
        with self.lock:
            self.seen.extend(recs)
            self.polls += 1
        for p, o, _ in recs:
            self.pending[p] = max(self.pending.get(p, 0), o + 1)
        a = frozenset(self._assignment())
        self._commit_pending(a)
        with self.lock:
            self.assignment = a

    def _commit_pending(self, assignment=None):
        """Commit every pending offset (of partitions still assigned, when
        `assignment` is given: committing a partition another member now owns
        could move its offset backwards)."""
        nxt = {p: o for p, o in self.pending.items() if assignment is None or p in assignment}
        if not nxt:
            return
        try:
            self._commit(nxt)
        except Exception as e:
            with self.lock:
                if _is_rebalance_error(e):
                    self.commit_retries.append(f"commit {nxt}: {e!r}")
                else:
                    self.commit_errors.append(f"commit {nxt}: {e!r}")
                    for p in nxt:
                        self.pending.pop(p, None)
            return
        with self.lock:
            self.committed.update(nxt)
            for p in nxt:
                self.pending.pop(p, None)

    # -- views -------------------------------------------------------------
    def snapshot(self):
        with self.lock:
            return list(self.seen), self.assignment, dict(self.committed)

    def check(self):
        """Raise if the thread crashed or the client reported errors."""
        if self.crash is not None:
            raise HarnessError(f"consumer {self.name} ({self.client}) crashed: {self.crash!r}")
        with self.lock:
            if self.errors:
                raise HarnessError(f"consumer {self.name} ({self.client}) errors: {self.errors[:5]}")

    def describe(self) -> str:
        with self.lock:
            return (f"{self.name}({self.client}): assignment={sorted(self.assignment)} "
                    f"seen={len(self.seen)} committed={self.committed} pending={self.pending} "
                    f"polls={self.polls} commit_retries={self.commit_retries[:3]} "
                    f"commit_errors={self.commit_errors[:3]} errors={self.errors[:3]} crash={self.crash!r}")


def _is_rebalance_error(e: BaseException) -> bool:
    text = repr(e)
    return any(k in text for k in ("ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "IllegalGeneration",
                                   "RebalanceInProgress", "CommitFailedError"))


class ConfluentGroupConsumer(GroupConsumer):
    client = "confluent-kafka"

    def _open(self):
        from confluent_kafka import Consumer
        errors = self.errors

        def error_cb(err):
            # Transport hiccups are retried by librdkafka; keep only fatal ones.
            if err.fatal():
                errors.append(str(err))
        conf = confluent_conf(self.broker, **{
            "group.id": self.group, "client.id": self.name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": GROUP_SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": GROUP_HEARTBEAT_INTERVAL_MS,
            "max.poll.interval.ms": GROUP_MAX_POLL_INTERVAL_MS,
            "fetch.wait.max.ms": 100, "error_cb": error_cb})
        conf.update(self.conf)
        self.c = Consumer(conf)
        self.c.subscribe([self.topic], on_revoke=self._on_revoke)

    def _on_revoke(self, consumer, partitions):
        # Runs inside consume(): commit what was processed from the partitions
        # being taken away, so their next owner starts after it.
        revoked = {tp.partition for tp in partitions if tp.topic == self.topic}
        keep = {p: o for p, o in self.pending.items() if p not in revoked}
        self.pending = {p: o for p, o in self.pending.items() if p in revoked}
        try:
            self._commit_pending()
        finally:
            self.pending.update(keep)

    def _poll(self):
        out = []
        for m in self.c.consume(num_messages=200, timeout=0.2):
            if m.error() is not None:
                self.errors.append(str(m.error()))
                continue
            out.append((m.partition(), m.offset(), m.value()))
        return out

    def _commit(self, nxt):
        from confluent_kafka import TopicPartition
        res = self.c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in nxt.items()],
                            asynchronous=False)
        bad = [(tp.partition, str(tp.error)) for tp in res or () if tp.error is not None]
        if bad:
            raise HarnessError(f"partition commit errors {bad}")

    def _assignment(self):
        member = self.c.memberid()
        with self.lock:
            self._member_id = member
        return {tp.partition for tp in self.c.assignment() if tp.topic == self.topic}

    def _close(self):
        if hasattr(self, "c"):
            self.c.close()

    def member_id(self) -> str:
        """The member id as of the last poll. (Calling the Consumer from the
        test thread while the consumer thread polls it can block for good in
        confluent-kafka, so the consumer thread records it.)"""
        with self.lock:
            return getattr(self, "_member_id", None)


class KafkaPythonGroupConsumer(GroupConsumer):
    client = "kafka-python"

    def _open(self):
        from kafka import KafkaConsumer
        kw = kafka_python_kwargs(
            self.broker, group_id=self.group, client_id=self.name, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=GROUP_HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=GROUP_MAX_POLL_INTERVAL_MS, fetch_max_wait_ms=100)
        kw.update(self.conf)
        self.c = KafkaConsumer(self.topic, **kw)

    def _poll(self):
        out = []
        for tp, recs in self.c.poll(timeout_ms=200, max_records=200).items():
            for r in recs:
                out.append((tp.partition, r.offset, r.value))
        return out

    def _commit(self, nxt):
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata
        self.c.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                       for p, o in nxt.items()})

    def _assignment(self):
        return {tp.partition for tp in self.c.assignment() if tp.topic == self.topic}

    def _close(self):
        if hasattr(self, "c"):
            self.c.close(autocommit=False)


class AioKafkaGroupConsumer(GroupConsumer):
    """aiokafka needs its event loop running for heartbeats, so the whole
    thread body is one coroutine."""
    client = "aiokafka"

    def _run(self):
        import asyncio
        asyncio.run(self._arun())

    async def _arun(self):
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
        deadline = time.monotonic() + GROUP_CONSUMER_LIFETIME_S
        kw = dict(bootstrap_servers=self.broker.bootstrap, group_id=self.group, client_id=self.name,
                  enable_auto_commit=False, auto_offset_reset="earliest",
                  session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
                  heartbeat_interval_ms=GROUP_HEARTBEAT_INTERVAL_MS,
                  max_poll_interval_ms=GROUP_MAX_POLL_INTERVAL_MS, fetch_max_wait_ms=100,
                  request_timeout_ms=30000)
        kw.update(self.conf)
        c = None
        me = self

        async def commit(nxt):
            try:
                await c.commit({TopicPartition(me.topic, p): o for p, o in nxt.items()})
            except Exception as e:
                with me.lock:
                    if _is_rebalance_error(e):
                        me.commit_retries.append(f"commit {nxt}: {e!r}")
                        return
                    me.commit_errors.append(f"commit {nxt}: {e!r}")
            else:
                with me.lock:
                    me.committed.update(nxt)
            for p in nxt:
                me.pending.pop(p, None)

        class Listener(ConsumerRebalanceListener):
            # Awaited by aiokafka before it rejoins: commit what was processed
            # from the partitions being taken away.
            async def on_partitions_revoked(self, revoked):
                gone = {tp.partition for tp in revoked if tp.topic == me.topic}
                nxt = {p: o for p, o in me.pending.items() if p in gone}
                if nxt:
                    await commit(nxt)

            async def on_partitions_assigned(self, assigned):
                pass
        try:
            c = AIOKafkaConsumer(**kw)
            c.subscribe([self.topic], listener=Listener())
            await c.start()
            while not self._stop.is_set() and time.monotonic() < deadline:
                batches = await c.getmany(timeout_ms=200, max_records=200)
                recs = [(tp.partition, r.offset, r.value) for tp, rs in batches.items() for r in rs]
                with self.lock:
                    self.seen.extend(recs)
                    self.polls += 1
                for p, o, _ in recs:
                    self.pending[p] = max(self.pending.get(p, 0), o + 1)
                a = frozenset(tp.partition for tp in c.assignment() if tp.topic == self.topic)
                nxt = {p: o for p, o in self.pending.items() if p in a}
                if nxt:
                    await commit(nxt)
                with self.lock:
                    self.assignment = a
        except BaseException as e:
            self.crash = e
        finally:
            if c is not None:
                try:
                    await c.stop()
                except BaseException as e:
                    if self.crash is None:
                        self.crash = e
            self.closed = True


GROUP_CONSUMER_CLASSES = {
    "confluent": ConfluentGroupConsumer,
    "kafka-python": KafkaPythonGroupConsumer,
    "aiokafka": AioKafkaGroupConsumer,
}


def stop_all(consumers: list[GroupConsumer]):
    """Stops every group consumer, then reports every one that failed to stop cleanly."""
    problems = []
    for c in consumers:
        try:
            c.stop()
        except HarnessError as e:
            problems.append(str(e))
    if problems:
        raise HarnessError("; ".join(problems))


def wait_for_balanced_group(consumers: list[GroupConsumer], partitions: int,
                            timeout_s: float = CLIENT_TIMEOUT_S, broker: Broker | None = None):
    """Wait until the members' own views of their assignments are pairwise
    disjoint, cover all `partitions`, and are balanced (sizes differ by at
    most one, none empty)."""
    def balanced():
        for c in consumers:
            c.check()
        views = [c.snapshot()[1] for c in consumers]
        union = set().union(*views)
        if sum(len(v) for v in views) != len(union) or union != set(range(partitions)):
            return False
        sizes = [len(v) for v in views]
        return min(sizes) >= 1 and max(sizes) - min(sizes) <= 1

    def diag():
        out = "\n".join(c.describe() for c in consumers)
        return out + ("\n" + broker.log_tail(30) if broker else "")
    wait_until(balanced, timeout_s, f"{len(consumers)} group members to hold a balanced, disjoint "
               f"assignment covering all {partitions} partitions", interval_s=0.1, diagnostics=diag)


def produce_keyed(broker: Broker, topic: str, ids: Iterable[int], partitions: int,
                  tag: bytes = b"r") -> dict[int, tuple[int, int]]:
    """Produce one keyed record per id to partition id % partitions, value
    b"<tag>-<id>"; returns {id: (partition, offset)}."""
    from confluent_kafka import Producer
    errors, error_cb = client_errors_sink()
    p = Producer(confluent_conf(broker, acks="all", error_cb=error_cb, **{"linger.ms": 5}))
    tracker = DeliveryTracker()
    recs = ({"id": i, "key": b"key-%d" % i, "value": b"%s-%d" % (tag, i), "partition": i % partitions}
            for i in ids)
    produce_all(p, topic, recs, tracker, flush_timeout_s=60)
    if tracker.failed:
        raise HarnessError(f"{len(tracker.failed)} deliveries failed, e.g. "
                           f"{list(tracker.failed.items())[:3]}; client errors {errors[:5]}")
    return dict(tracker.ok)


# ---------------------------------------------------------------------------
# The operator CLI, the metric catalogue and external tools (added for
# tests/test_cli.py, test_metrics.py and test_deploy.py)
# ---------------------------------------------------------------------------

#: How long one `silt <command>` run may take before it counts as hung.
CLI_TIMEOUT_S = 60.0


def run_silt(silt_bin: Path, *args: str, input: bytes | None = None,
             timeout_s: float = CLI_TIMEOUT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `silt ARGS` to completion with a deadline; output is captured as text
    (stdout) and text (stderr). A run past the deadline is killed and fails."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SILT_")}
    full_env.pop("RUST_LOG", None)
    full_env.update(env or {})
    try:
        return subprocess.run([str(silt_bin), *args], input=input, capture_output=True,
                              timeout=timeout_s, env=full_env, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"`silt {' '.join(args)}` did not finish within {timeout_s:.0f}s; "
                           f"stderr so far: {e.stderr!r}") from None


def require_tool(name: str) -> str:
    """The path of an external tool tests/run installs; fails (never skips) without it."""
    import shutil
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"{name} is not installed: tests/run installs it (Debian package "
                           f"'prometheus' for prometheus and promtool)")
    return path


_CATALOGUE_ROW_RE = re.compile(r"^\|\s*`(?P<name>silt_[a-z0-9_]+)`\s*\|\s*(?P<type>counter|gauge|histogram)\s*\|")


def metric_catalogue() -> dict[str, dict]:
    """docs/metrics.md as {name: {"type", "planned"}}; metrics under a
    "## Planned" heading are not exported yet."""
    catalogue = {}
    planned = False
    for line in (REPO_ROOT / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("## "):
            planned = line.startswith("## Planned")
        m = _CATALOGUE_ROW_RE.match(line)
        if m:
            catalogue[m.group("name")] = {"type": m.group("type"), "planned": planned}
    return catalogue


def metric_families(text: str) -> dict[str, str]:
    """{family name: type} from the # TYPE lines of Prometheus text."""
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families[name] = kind
    return families
