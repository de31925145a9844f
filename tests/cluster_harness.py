"""A three-node cluster for the failure tests: Apache Kafka (KRaft) or Silt,
each node its own process in its own Linux network namespace, so one node
can be SIGKILLed, restarted, or cut off from the others while the test's
clients still reach every node.

Network (`NetLab`): a bridge in the test's namespace holds 10.A.B.1/24;
node i lives in namespace `<tag>-n<i>` behind a veth pair with 10.A.B.(10+i).
Nothing outside the bridge is routed, and everything is deleted at close.
A partition is an nftables table inside the isolated node's namespace that
drops its traffic to and from the other nodes (not from the clients). Each
node has its own address, so every node uses the same fixed ports (Kafka
9092, node-to-node 9093) without any free-port search.

Needs root (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables): tests/run
installs them; without them the fixture fails, it never skips.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from broker_process import (KAFKA_SCRIPT, Broker, BrokerProcess, HarnessError, KafkaBroker)
from history import History
from kafka_cli import run_kafka_tool
from kafka_wire import ApiKey, ConnectionClosed, RawConnection, Writer

#: How many nodes the failure tests' cluster has.
CLUSTER_SIZE = 3
#: The Kafka listener and the node-to-node (controller / Raft) port on every node.
KAFKA_PORT = 9092
CLUSTER_PORT = 9093
#: Deadline for one `ip`/`nft` command.
NET_COMMAND_TIMEOUT_S = 10.0
#: Deadline for a metadata-quorum tool run (a JVM start).
QUORUM_TOOL_TIMEOUT_S = 60.0
#: Deadline for one node's answer to a Metadata request.
METADATA_TIMEOUT_S = 3.0
#: Kafka's heap per node: three JVMs share the test machine.
KAFKA_CLUSTER_HEAP = "-Xmx512m -Xms128m"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=NET_COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{' '.join(argv)} took over {NET_COMMAND_TIMEOUT_S:.0f}s")
    if check and done.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class NetLab:
    """A bridge and one network namespace per node (see the module doc)."""

    def __init__(self, size: int = CLUSTER_SIZE):
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise HarnessError(f"{tool} not found: tests/run installs iproute2 and nftables")
        if os.geteuid() != 0:
            raise HarnessError("the cluster tests need root for network namespaces (tests/run runs as root in CI)")
        self.tag = f"sct{random.randrange(16**4):04x}"
        self.bridge = f"{self.tag}-br"
        self.subnet = self._free_subnet()
        self.host_ip = f"{self.subnet}.1"
        self.size = size
        self.created_ns: list[str] = []
        self.bridge_made = False

    @staticmethod
    def _free_subnet() -> str:
        used = _run("ip", "-4", "-o", "addr", "show").stdout
        for _ in range(100):
            subnet = f"10.{random.randrange(200, 255)}.{random.randrange(0, 256)}"
            if f" {subnet}." not in used:
                return subnet
        raise HarnessError("no free 10.x.y.0/24 subnet for the cluster bridge")

    def netns(self, i: int) -> str:
        return f"{self.tag}-n{i}"

    def ip(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    def up(self) -> NetLab:
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self.bridge_made = True
            _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i in range(1, self.size + 1):
                ns, host_end, ns_end = self.netns(i), f"{self.tag}-h{i}", f"{self.tag}-v{i}"
                _run("ip", "netns", "add", ns)
                self.created_ns.append(ns)
                _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                _run("ip", "link", "set", ns_end, "netns", ns)
                _run("ip", "link", "set", host_end, "master", self.bridge)
                _run("ip", "link", "set", host_end, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", ns_end)
                _run("ip", "-n", ns, "link", "set", ns_end, "up")
        except BaseException:
            self.close()
            raise
        return self

    def isolate(self, i: int):
        """Drops node i's traffic to and from every other node (both ways;
        the test's clients on the bridge address still reach it)."""
        others = ", ".join(self.ip(j) for j in range(1, self.size + 1) if j != i)
        rules = (f"table inet silt_partition {{\n"
                 f"  chain in {{ type filter hook input priority 0; ip saddr {{ {others} }} drop; }}\n"
                 f"  chain out {{ type filter hook output priority 0; ip daddr {{ {others} }} drop; }}\n"
                 f"}}\n")
        try:
            done = subprocess.run(["ip", "netns", "exec", self.netns(i), "nft", "-f", "-"], input=rules,
                                  capture_output=True, text=True, timeout=NET_COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"nft in {self.netns(i)} took over {NET_COMMAND_TIMEOUT_S:.0f}s")
        if done.returncode != 0:
            raise HarnessError(f"nft -f in {self.netns(i)} failed: {done.stderr.strip()}\n{rules}")

    def heal(self, i: int):
        _run("ip", "netns", "exec", self.netns(i), "nft", "delete", "table", "inet", "silt_partition")

    def close(self):
        # The pairs go first, from this side: deleting a namespace deletes
        # its end only once no process is left in it (a SIGKILLed JVM may
        # still be exiting), and host ends were seen to outlive it.
        for i in range(1, len(self.created_ns) + 1):
            _run("ip", "link", "delete", f"{self.tag}-h{i}", check=False)
        for ns in self.created_ns:
            _run("ip", "netns", "delete", ns, check=False)
        self.created_ns = []
        if self.bridge_made:
            _run("ip", "link", "delete", self.bridge, check=False)
            self.bridge_made = False


class KafkaClusterNode(KafkaBroker):
    """One Apache Kafka KRaft node (broker+controller) of a static 3-voter
    quorum, started by `tests/kafka/kafka start-node` in its namespace."""

    def __init__(self, data_dir: Path, node_id: int, host: str, netns: str, voters: str,
                 cluster_id: str, props: dict[str, str] | None = None):
        super().__init__(data_dir, props, name=f"kafka-node{node_id}")
        self.node_id = node_id
        self.netns = netns
        self.voters = voters
        self.cluster_id = cluster_id
        self.kafka_host = host
        self.kafka_port = KAFKA_PORT

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, str(KAFKA_SCRIPT), "start-node", str(self.data_dir),
                str(self.node_id), self.kafka_host, str(KAFKA_PORT), str(CLUSTER_PORT), self.voters,
                self.cluster_id, *(f"{k}={v}" for k, v in self.props.items())]

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env.setdefault("KAFKA_HEAP_OPTS", KAFKA_CLUSTER_HEAP)
        return env


class SiltClusterNode(Broker):
    """One `silt broker` of a 3-node cluster, configured as issue 15 and
    docs/cluster.md shape it: `[node] id`, `[cluster] listen` and
    `[cluster] voters` in a TOML file, the Kafka listener by environment."""

    def __init__(self, silt_bin: Path, data_dir: Path, node_id: int, host: str, netns: str,
                 voters: list[str], voter: bool = True):
        super().__init__(silt_bin, data_dir, name=f"silt-node{node_id}",
                         env={"SILT_KAFKA__LISTEN": f"{host}:{KAFKA_PORT}", "SILT_HTTP__LISTEN": f"{host}:0"})
        self.node_id = node_id
        self.netns = netns
        self.config_path = Path(data_dir).parent / f"node{node_id}.toml"
        voter_list = ", ".join(f'"{v}"' for v in voters)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        roles = "" if voter else 'roles = ["broker"]\n'
        self.config_path.write_text(f"[node]\nid = {node_id}\n\n[cluster]\nlisten = \"{host}:{CLUSTER_PORT}\"\n"
                                    f"voters = [{voter_list}]\n{roles}")

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, str(self.silt_bin), "broker", "--config", str(self.config_path)]


class Cluster:
    """Three nodes of one kind on a NetLab, addressed by node id 1..3."""

    def __init__(self, kind: str, base_dir: Path, silt_bin: Path | None = None,
                 kafka_props: dict[str, str] | None = None, broker_only: int = 0):
        self.kind = kind
        #: Nodes CLUSTER_SIZE+1.. are brokers that do not vote in the metadata
        #: quorum (`process.roles=broker`; Silt: `roles = ["broker"]`).
        self.broker_only = broker_only
        #: Clients handed out, closed before the network goes: a client left
        #: running would try the vanished addresses through the default route.
        self.clients: list = []
        self.net = NetLab(CLUSTER_SIZE + broker_only).up()
        try:
            self._make_nodes(kind, base_dir, silt_bin, kafka_props)
        except BaseException:
            self.net.close()
            raise

    def _make_nodes(self, kind: str, base_dir: Path, silt_bin: Path | None, kafka_props: dict[str, str] | None):
        ids = range(1, CLUSTER_SIZE + 1)
        brokers = range(CLUSTER_SIZE + 1, CLUSTER_SIZE + 1 + self.broker_only)
        self.nodes: dict[int, BrokerProcess] = {}
        if kind == "kafka":
            voters = ",".join(f"{i}@{self.net.ip(i)}:{CLUSTER_PORT}" for i in ids)
            cluster_id = _random_cluster_id()
            for i in ids:
                self.nodes[i] = KafkaClusterNode(base_dir / f"node{i}", i, self.net.ip(i), self.net.netns(i),
                                                 voters, cluster_id, kafka_props)
            for i in brokers:
                # A broker-only node has no controller listener.
                props = {**(kafka_props or {}), "process.roles": "broker",
                         "listeners": f"PLAINTEXT://{self.net.ip(i)}:{KAFKA_PORT}"}
                self.nodes[i] = KafkaClusterNode(base_dir / f"node{i}", i, self.net.ip(i), self.net.netns(i),
                                                 voters, cluster_id, props)
        elif kind == "silt":
            assert silt_bin is not None, "a Silt cluster needs the silt binary"
            voters = [f"{i}@{self.net.ip(i)}:{CLUSTER_PORT}" for i in ids]
            for i in [*ids, *brokers]:
                self.nodes[i] = SiltClusterNode(silt_bin, base_dir / f"node{i}", i, self.net.ip(i),
                                                self.net.netns(i), voters, voter=i in ids)
        else:
            raise HarnessError(f"unknown broker kind {kind!r}")

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Cluster:
        """Starts every node at once (a quorum node is ready only once a
        majority runs) and waits for all of them."""
        errors = start_all(self.nodes.values())
        if errors:
            raise HarnessError(f"the {self.kind} cluster did not start: {errors[0]}")
        return self

    def kill9(self, node_id: int):
        self.nodes[node_id].kill9()

    def restart(self, node_id: int):
        self.nodes[node_id].restart()

    def close(self) -> list[str]:
        """Stops every node gracefully and deletes the network. Returns the
        problems found (a node that died on its own, an unclean exit)."""
        problems = []
        for client in self.clients:
            client.close()
        self.clients = []
        try:
            started = [n for n in self.nodes.values() if n.proc is not None]
            crashed = [n for n in started if not n.stopped_by_test and n.proc.poll() is not None]
            running = [n for n in started if n.alive()]
            for node in crashed:
                node.stop()
                problems.append(f"{node.name} exited on its own with code {node.proc.returncode}\n"
                                f"{node.log_tail(40)}")
            if self.kind == "kafka":
                # A Kafka broker's controlled shutdown waits for the controller
                # quorum, which the other nodes are leaving at the same time:
                # stopping a whole KRaft cluster took from 7 s to over 30 s
                # here. The test's verdict is in; the oracle's shutdown is not
                # what these tests are about.
                for node in running:
                    node.kill9()
                running = []
            # SIGTERM to every node first: stopped one at a time, the last
            # nodes would wait for a quorum that is already gone.
            for node in running:
                node._send(signal.SIGTERM)
            for node in running:
                try:
                    code = node.stop(signal.SIGTERM)
                    if code != 0:
                        problems.append(f"{node.name} exited with code {code} on SIGTERM\n{node.log_tail(40)}")
                except HarnessError as e:
                    problems.append(str(e))
        finally:
            self.net.close()
        return problems

    # -- addresses ---------------------------------------------------------------
    def bootstrap_of(self, node_ids) -> str:
        return ",".join(f"{self.net.ip(i)}:{KAFKA_PORT}" for i in node_ids)

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_of(self.nodes)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(node.log_tail(n) for node in self.nodes.values())

    def via(self, node_ids) -> ClientView:
        """A client view bootstrapped from only these nodes."""
        view = ClientView(self, node_ids)
        self.clients.append(view)
        return view

    def group_reader(self, node_ids, topic: str, group: str, history: History, **kwargs) -> GroupReader:
        """A started GroupReader bootstrapped from these nodes."""
        r = GroupReader(self.bootstrap_of(node_ids), topic, group, history, **kwargs)
        self.clients.append(r)
        return r.start()

    def writer(self, node_ids, topic: str, history: History, **kwargs) -> RecordWriter:
        """A started RecordWriter bootstrapped from these nodes."""
        w = RecordWriter(self.bootstrap_of(node_ids), topic, history, **kwargs)
        self.clients.append(w)
        return w.start()

    # -- the metadata quorum --------------------------------------------------------
    def active_controller(self, via_ids) -> int:
        """The metadata quorum's leader, asked with Kafka's own tool
        (DescribeQuorum, kafka-metadata-quorum.sh describe --status) through
        the brokers `via_ids`."""
        done = run_kafka_tool("org.apache.kafka.tools.MetadataQuorumCommand",
                              "--bootstrap-server", self.bootstrap_of(via_ids), "describe", "--status",
                              check=False, timeout_s=QUORUM_TOOL_TIMEOUT_S)
        m = re.search(r"^LeaderId:\s+(-?\d+)", done.stdout, re.M)
        if done.returncode != 0 or m is None:
            raise HarnessError(f"kafka-metadata-quorum describe --status failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr[-2000:]}")
        return int(m.group(1))


class ClientView:
    """What clients see through some nodes only; quacks like a broker for
    silt_harness helpers (`bootstrap`, `log_tail`).

    `partition()` asks those nodes alone, with a raw Metadata request each:
    a confluent-kafka client would also ask every other broker it learns of,
    and an isolated node answers with its stale view."""

    def __init__(self, cluster: Cluster, node_ids):
        self.cluster = cluster
        self.node_ids = list(node_ids)
        self.bootstrap = cluster.bootstrap_of(self.node_ids)
        self._admin = None

    def log_tail(self, n: int = 30) -> str:
        return self.cluster.log_tail(n)

    def close(self):
        # AdminClient has no close(): dropping the last reference destroys it.
        self._admin = None

    def admin(self):
        from confluent_kafka.admin import AdminClient
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "broker.address.family": "v4"})
        return self._admin

    def partition(self, topic: str, partition: int = 0) -> tuple[int, list[int], list[int]]:
        """(leader, replicas, isr) as the first of this view's nodes that
        answers a Metadata request says; leader -1 when none."""
        errors = []
        for node in self.node_ids:
            try:
                return metadata_of(self.cluster.net.ip(node), topic, partition)
            except (OSError, TimeoutError, ConnectionClosed, ValueError, HarnessError) as e:
                errors.append(f"node {node}: {e!r}")
        raise HarnessError(f"no metadata for {topic}-{partition}: {'; '.join(errors)}")

    def wait_for_leader(self, topic: str, partition: int = 0, not_in=(), timeout_s: float = 60.0,
                        interval_s: float = 0.05) -> tuple[int, float]:
        """Polls Metadata until the partition has a leader outside `not_in`;
        returns it and the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout_s
        last = None
        while True:
            try:
                last = self.partition(topic, partition)
                if last[0] >= 0 and last[0] not in not_in:
                    return last[0], time.monotonic() - start
            except Exception as e:  # metadata may fail while nodes die and elect
                last = repr(e)
            if time.monotonic() >= deadline:
                raise HarnessError(f"no leader for {topic}-{partition} outside {list(not_in)} within "
                                   f"{timeout_s:.0f}s (last metadata {last})\n{self.log_tail()}")
            time.sleep(interval_s)

    def wait_for_isr(self, topic: str, partition: int, size: int, timeout_s: float = 60.0) -> list[int]:
        start = time.monotonic()
        last = None
        while True:
            try:
                last = self.partition(topic, partition)
                if len(last[2]) >= size:
                    return last[2]
            except Exception as e:
                last = repr(e)
            if time.monotonic() - start >= timeout_s:
                raise HarnessError(f"ISR of {topic}-{partition} not {size} within {timeout_s:.0f}s "
                                   f"(last metadata {last})\n{self.log_tail()}")
            time.sleep(0.1)

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = CLUSTER_SIZE,
                     config: dict | None = None, timeout_s: float = 60.0):
        """CreateTopics, then waits until every partition has a leader and a full ISR.

        Asked again (with a fresh admin client, so a fresh controller lookup)
        while the answer is retriable, as an application would: right after
        a controller dies, librdkafka may wait on a controller id that names
        the dead node (Kafka's brokers name a random broker they still think
        alive) and time out. TOPIC_ALREADY_EXISTS on a later attempt means an
        earlier one did create it."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic
        retriable = {KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER,
                     KafkaError._TRANSPORT}
        deadline = time.monotonic() + timeout_s
        for attempt in itertools.count(1):
            if attempt > 1:
                self._admin = None
            fs = self.admin().create_topics([NewTopic(name, num_partitions=partitions,
                                                      replication_factor=replication_factor,
                                                      config=dict(config or {}))],
                                            operation_timeout=15, request_timeout=15)
            try:
                fs[name].result(timeout=timeout_s)
                break
            except KafkaException as e:
                code = e.args[0].code()
                if attempt > 1 and code == KafkaError.TOPIC_ALREADY_EXISTS:
                    break
                if code not in retriable or time.monotonic() >= deadline:
                    raise
        for p in range(partitions):
            self.wait_for_leader(name, p, timeout_s=timeout_s)
            self.wait_for_isr(name, p, replication_factor, timeout_s=timeout_s)


class RecordWriter:
    """An idempotent acks=all confluent-kafka producer on its own thread,
    writing `<name>-<seq>` values to one partition and recording every
    attempt and outcome in a History. At most `in_flight_max` records are
    unresolved at once, so a stall does not pile up an unbounded queue, and
    with `rate_per_s` it keeps to that pace."""

    def __init__(self, bootstrap: str, topic: str, history: History, name: str = "w",
                 partition: int = 0, in_flight_max: int = 2000, rate_per_s: float = 0.0, **conf):
        from confluent_kafka import Producer
        self.topic, self.history, self.name, self.partition = topic, history, name, partition
        self.in_flight_max = in_flight_max
        self.rate_per_s = rate_per_s
        self.errors: list = []
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "broker.address.family": "v4",
            "acks": "all", "enable.idempotence": True, "linger.ms": 5,
            "message.timeout.ms": 60000, "error_cb": self.errors.append, **conf})
        self.sent = 0
        #: monotonic time of each acknowledgement, in order (failover gaps).
        self.ack_times: list[float] = []
        self._stop = threading.Event()
        self._min_records = 0
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> RecordWriter:
        self._thread.start()
        return self

    def _callback(self, rid: str):
        def cb(err, msg):
            if err is None:
                self.history.ok(rid, msg.partition(), msg.offset())
                self.ack_times.append(time.monotonic())
            else:
                # librdkafka cannot tell "not written" from "maybe written"
                # in general: every failure is indeterminate.
                self.history.info(rid, str(err))
        return cb

    def _run(self):
        started = time.monotonic()
        try:
            while not (self._stop.is_set() and self.sent >= self._min_records):
                paced = self.rate_per_s and self.sent >= self.rate_per_s * (time.monotonic() - started)
                if paced or self.sent - self.history.resolved_count() >= self.in_flight_max:
                    self.producer.poll(0.05)
                    continue
                rid = self.history.invoke(self.name, self.sent, self.partition)
                while True:
                    try:
                        self.producer.produce(self.topic, key=self.name.encode(), value=rid.encode(),
                                              partition=self.partition, on_delivery=self._callback(rid))
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.sent += 1
                self.producer.poll(0)
        except BaseException as e:  # reported by finish()
            self.failure = e

    def wait_acked(self, count: int, timeout_s: float, diagnostics=None):
        deadline = time.monotonic() + timeout_s
        while self.history.acked_count() < count:
            if self.failure is not None or not self._thread.is_alive():
                raise HarnessError(f"writer {self.name} stopped: {self.failure!r}")
            if time.monotonic() > deadline:
                raise HarnessError(f"writer {self.name}: {self.history.acked_count()} of {count} records "
                                   f"acknowledged after {timeout_s:.0f}s (client errors {self.errors[-5:]})"
                                   + (f"\n{diagnostics()}" if diagnostics else ""))
            time.sleep(0.05)

    def finish(self, min_records: int, timeout_s: float = 90.0) -> int:
        """Stops once `min_records` were sent, then waits for every outcome."""
        self._min_records = min_records
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"writer {self.name} did not stop within {timeout_s:.0f}s")
        if self.failure is not None:
            raise HarnessError(f"writer {self.name} failed: {self.failure!r}")
        left = self.producer.flush(timeout_s)
        if left:
            raise HarnessError(f"writer {self.name}: {left} records without an outcome after {timeout_s:.0f}s")
        return self.sent

    def close(self):
        """Stops the thread (if finish() was not reached) and the producer."""
        self._min_records = 0
        self._stop.set()
        self._thread.join(timeout=30)
        if self.producer is not None:
            self.producer.purge()
            self.producer.close()
            self.producer = None


class GroupReader:
    """A confluent-kafka consumer in a consumer group on its own thread: it
    records every record it reads into a History (as reader `name`) and
    commits synchronously after each batch. `finish()` commits once more
    (retried until it succeeds, bounded) and closes it."""

    #: Records one consume() call returns at most.
    BATCH_MAX = 1000

    def __init__(self, bootstrap: str, topic: str, group: str, history: History, name: str = "group"):
        from confluent_kafka import Consumer
        self.history, self.name = history, name
        self.errors: list = []
        self.commit_errors: list = []
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "error_cb": self.errors.append})
        self.consumer.subscribe([topic])
        #: partition -> next offset to read, as far as this reader got.
        self.positions: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"group-reader-{name}", daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> GroupReader:
        self._thread.start()
        return self

    def _commit(self) -> bool:
        from confluent_kafka import KafkaError, KafkaException
        try:
            self.consumer.commit(asynchronous=False)
            return True
        except KafkaException as e:  # e.g. NOT_COORDINATOR while a node restarts
            if e.args and e.args[0].code() == KafkaError._NO_OFFSET:
                return True  # nothing read since the last successful commit
            self.commit_errors.append(e)
            return False

    def _run(self):
        try:
            while not self._stop.is_set():
                msgs = self.consumer.consume(num_messages=self.BATCH_MAX, timeout=0.2)
                read = False
                for m in msgs:
                    if m.error() is not None:
                        self.errors.append(m.error())
                        continue
                    key = m.key().decode() if m.key() is not None else None
                    self.history.read(m.partition(), m.offset(), key, m.value().decode("utf-8", "replace"),
                                      reader=self.name)
                    self.positions[m.partition()] = m.offset() + 1
                    read = True
                if read:
                    self._commit()
        except BaseException as e:  # reported by wait_for/finish
            self.failure = e

    def wait_for(self, ends: dict[int, int], timeout_s: float):
        """Until this reader has read every partition up to `ends`."""
        deadline = time.monotonic() + timeout_s
        while any(self.positions.get(p, 0) < end for p, end in ends.items()):
            if self.failure is not None or not self._thread.is_alive():
                raise HarnessError(f"group reader {self.name} stopped: {self.failure!r}")
            if time.monotonic() > deadline:
                raise HarnessError(f"group reader {self.name} at {self.positions} after {timeout_s:.0f}s, "
                                   f"wanted {ends} (errors {self.errors[-5:]})")
            time.sleep(0.05)

    def finish(self, timeout_s: float = 60.0):
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"group reader {self.name} did not stop within {timeout_s:.0f}s")
        deadline = time.monotonic() + timeout_s
        while not self._commit():
            if time.monotonic() > deadline:
                raise HarnessError(f"group reader {self.name}: no commit succeeded within {timeout_s:.0f}s: "
                                   f"{self.commit_errors[-3:]}")
            time.sleep(0.2)
        self.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=30)
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


def committed_offsets(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch), -1001 where none."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": group,
                  "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in got}


def read_all(view: ClientView, topic: str, partitions: int, history: History, reader: str,
             timeout_s: float = 90.0):
    """Consumes every partition from 0 to its high watermark into `history`."""
    from silt_harness import consume_partitions, watermarks
    ends = {p: watermarks(view, topic, p)[1] for p in range(partitions)}
    got = consume_partitions(view, topic, ends, timeout_s=timeout_s)
    for p, msgs in got.items():
        for m in msgs:
            key = m.key().decode() if m.key() is not None else None
            history.read(p, m.offset(), key, m.value().decode("utf-8", "replace"), reader=reader)
    return ends


def start_all(nodes, **start_args) -> list[BaseException]:
    """Starts every node at once, each in its own thread (a quorum node is
    ready only once a majority runs); returns what failed, after all ended."""
    errors: list[BaseException] = []

    def start(node: BrokerProcess):
        try:
            node.start(**start_args)
        except BaseException as e:  # reported by the caller, after every thread ended
            errors.append(e)
    threads = [threading.Thread(target=start, args=(n,), name=f"start-{n.name}") for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def metadata_of(host: str, topic: str, partition: int, port: int = KAFKA_PORT) -> tuple[int, list[int], list[int]]:
    """(leader, replicas, isr) of one partition as the node at `host`:`port`
    sees it (Metadata v8, to that node only)."""
    body = Writer().int32(1).string(topic).int8(0).int8(0).int8(0).bytes()
    with RawConnection((host, port), timeout_s=METADATA_TIMEOUT_S) as conn:
        r = conn.request(ApiKey.METADATA, 8, body, timeout_s=METADATA_TIMEOUT_S)
    r.int32()  # throttle
    for _ in range(r.int32()):
        r.int32(), r.string(), r.int32(), r.string()  # brokers: id, host, port, rack
    r.string()  # cluster id
    r.int32()  # controller id (Kafka: a random broker, not the active controller)
    found = None
    for _ in range(r.int32()):
        topic_error, name = r.int16(), r.string()
        r.int8()  # is_internal
        for _ in range(r.int32()):
            error, index, leader = r.int16(), r.int32(), r.int32()
            r.int32()  # leader epoch
            replicas, isr, _offline = ([r.int32() for _ in range(r.int32())] for _ in range(3))
            if name == topic and index == partition:
                found = (error, leader, replicas, isr)
        r.int32()  # topic authorized operations
        if name == topic and topic_error != 0:
            raise HarnessError(f"{host}: Metadata of {topic} failed with error {topic_error}")
    if found is None:
        raise HarnessError(f"{host}: Metadata lacks {topic}-{partition}")
    return found[1], found[2], found[3]


def _random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64, no padding, not starting with '-'."""
    import base64
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def started_cluster(cluster_kind, request, tmp_path, **options):
    """The body of a cluster fixture: `options` go to `Cluster` (broker_only=...)."""
    import pytest
    if cluster_kind == "kafka":
        request.getfixturevalue("kafka_installed")
        c = Cluster("kafka", tmp_path, **options)
    else:
        c = Cluster("silt", tmp_path, silt_bin=request.getfixturevalue("silt_bin"), **options)
    try:
        c.start()
    except BaseException:
        c.close()
        raise
    yield c
    problems = c.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
