"""The cluster benchmark (issue 15, "Bench"): a 3-node Silt cluster and a
3-node Apache Kafka KRaft cluster on 127.0.0.1, measured on the same cases
with the same clients.

1. Replication cost: `silt perf produce` (librdkafka) with acks=all, 1 KiB
   records, 6 partitions, into a topic of replication factor 1 and one of
   replication factor 3 with min.insync.replicas=2: MiB/s, records/s and
   latency (p50/p99) at the maximum rate, then p50/p99 at one offered rate
   (half the RF=3 maximum) for both topics. The RF=3 ÷ RF=1 ratio is printed.
   Every timed run starts with the page cache's dirty pages written out
   (`sync`): on this machine buffered writes run at page-cache speed until
   about 2 GB are dirty, then at the device's writeback speed (about 140 MB/s
   with fdatasync, measured with dd), so without it a run would pay for the
   bytes of the runs before it (RF=3 measured 147 then 46 MiB/s in two
   runs in a row). 512 MiB at RF=3 (1.5 GB written) stays inside that budget:
   the runs compare the brokers, not the disk.
2. Failover: an idempotent acks=all producer (cluster_harness.RecordWriter)
   writes at a steady rate to a 1-partition RF=3 topic (min.insync.replicas=2);
   the partition leader is SIGKILLed; the failover time is from the kill to
   the first write acknowledged after it (what a client waits), and, beside
   it, to the first Metadata answer of a surviving node naming another
   leader. The killed node is restarted and must rejoin the ISR before the
   next kill. At the end every acknowledged record is looked for in the
   partition (history.check): lost acknowledged records must be 0.

Both kinds run with their default settings (Silt: `[broker]`
heartbeat_interval_ms / session_timeout_ms defaults; Kafka:
broker.heartbeat.interval.ms / broker.session.timeout.ms defaults). Nodes
listen on 127.0.0.1 with a port pair each (no network namespaces, so no
partitions; killing a process needs none). Nothing here asserts a target:
targets are printed beside the figures.

Used by tests/bench/run (`--cluster-only`, `--no-cluster`, `--kills N`);
runnable alone:

    tests/bench/cluster_bench.py --silt-bin target/release/silt [--kinds silt,kafka] [--kills 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from broker_process import KAFKA_SCRIPT, Broker, BrokerProcess, HarnessError, KafkaBroker, free_port  # noqa: E402
from cluster_harness import RecordWriter, _random_cluster_id, metadata_of, start_all  # noqa: E402
from history import History, check  # noqa: E402
from silt_harness import consume_partitions, watermarks  # noqa: E402

#: Nodes per cluster.
CLUSTER_SIZE = 3
HOST = "127.0.0.1"
#: Each Kafka JVM's heap: three share the machine (24 GiB); fixed so it is not resized mid-run.
KAFKA_NODE_HEAP = os.environ.get("SILT_BENCH_KAFKA_NODE_HEAP_OPTS", "-Xms1g -Xmx1g")
#: The replication case: 1 KiB records, 6 partitions (two led by each node).
RECORD_BYTES = 1024
PARTITIONS = 6
MIN_INSYNC = 2
#: Volumes of the full and the quick run. 512 MiB: at 300+ MiB/s a 128 MiB
#: run lasted 0.4 s, too short to be a throughput rather than a queue filling.
FULL = dict(produce_bytes=512 * 1024 * 1024, warm_up_bytes=32 * 1024 * 1024, latency_s=5.0, kills=10,
            writer_rate=500.0)
QUICK = dict(produce_bytes=4 * 1024 * 1024, warm_up_bytes=0, latency_s=1.0, kills=1, writer_rate=200.0)
#: Targets of issue 15, printed beside the figures (never asserted).
TARGET_RF3_RATIO = 0.5
TARGET_FAILOVER_MEDIAN_S = 5.0
#: Acknowledgements that arrive within this long after the kill are the
#: killed leader's, already on their way (delivery reports are served by the
#: writer's poll loop): the failover ends with the first one after it. A
#: failover shorter than this reads as this long.
KILL_DRAIN_S = 0.2
#: Bounds on every wait, in seconds.
CLUSTER_START_TIMEOUT_S = 180.0
TOPIC_READY_TIMEOUT_S = 120.0
FAILOVER_TIMEOUT_S = 90.0
REJOIN_TIMEOUT_S = 180.0
PERF_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.02
#: Records the writer must have acknowledged since the last failover before the next kill.
STEADY_ACKS = 50


def log(msg: str) -> None:
    print(f"[cluster-bench] {msg}", file=sys.stderr, flush=True)


class SiltNode(Broker):
    """One `silt broker` of a loopback cluster: `[node] id`, `[cluster] listen`
    and `[cluster] voters` by environment (config/cluster.toml says how),
    fixed ports so that a restart keeps its address."""

    def __init__(self, silt_bin: Path, data_dir: Path, node_id: int, kafka_port: int, cluster_port: int,
                 voters: str):
        super().__init__(silt_bin, data_dir, name=f"silt-node{node_id}", env={
            "SILT_NODE__ID": str(node_id), "SILT_KAFKA__LISTEN": f"{HOST}:{kafka_port}",
            "SILT_HTTP__LISTEN": f"{HOST}:0", "SILT_CLUSTER__LISTEN": f"{HOST}:{cluster_port}",
            "SILT_CLUSTER__VOTERS": voters})
        self.node_id = node_id
        self.fixed_port = kafka_port


class KafkaNode(KafkaBroker):
    """One Apache Kafka KRaft node (broker+controller) of a static 3-voter
    quorum on loopback, started by `tests/kafka/kafka start-node`. Kafka's
    defaults and the C2 compiler (no KAFKA_JVM_OPTS), as for throughput."""

    def __init__(self, data_dir: Path, node_id: int, kafka_port: int, controller_port: int, voters: str,
                 cluster_id: str):
        super().__init__(data_dir, name=f"kafka-node{node_id}")
        self.node_id = node_id
        self.kafka_host, self.kafka_port, self.fixed_port = HOST, kafka_port, kafka_port
        self.controller_port, self.voters, self.cluster_id = controller_port, voters, cluster_id

    def _command(self) -> list[str]:
        return [str(KAFKA_SCRIPT), "start-node", str(self.data_dir), str(self.node_id), HOST, str(self.kafka_port),
                str(self.controller_port), self.voters, self.cluster_id]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_JVM_OPTS", "KAFKA_HEAP_OPTS")}
        env["KAFKA_HEAP_OPTS"] = KAFKA_NODE_HEAP
        return env


class LoopbackCluster:
    """Three nodes of one kind on 127.0.0.1, by node id 1..3. Quacks like a
    broker (`bootstrap`, `log_tail`) for silt_harness's client helpers."""

    def __init__(self, kind: str, base_dir: Path, silt_bin: Path | None):
        self.kind = kind
        ids = range(1, CLUSTER_SIZE + 1)
        ports = {i: (free_port(), free_port()) for i in ids}
        voters = ",".join(f"{i}@{HOST}:{ports[i][1]}" for i in ids)
        self.nodes: dict[int, BrokerProcess] = {}
        if kind == "silt":
            assert silt_bin is not None, "a Silt cluster needs the silt binary"
            for i in ids:
                self.nodes[i] = SiltNode(silt_bin, base_dir / f"silt-node{i}", i, *ports[i], voters)
        elif kind == "kafka":
            cluster_id = _random_cluster_id()
            for i in ids:
                self.nodes[i] = KafkaNode(base_dir / f"kafka-node{i}", i, *ports[i], voters, cluster_id)
        else:
            raise HarnessError(f"unknown cluster kind {kind!r}")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{n.fixed_port}" for n in self.nodes.values())

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(node.log_tail(n) for node in self.nodes.values())

    def start(self) -> LoopbackCluster:
        """Starts every node at once (a quorum node is ready only once a majority runs)."""
        errors = start_all(self.nodes.values(), timeout_s=CLUSTER_START_TIMEOUT_S)
        if errors:
            self.close()
            raise HarnessError(f"the {self.kind} cluster did not start: {errors[0]}")
        return self

    def close(self):
        """Silt: SIGTERM to every node at once (one at a time, the last would
        wait for a quorum already gone), then SIGKILL what is left after the
        deadline. Kafka: SIGKILL, as cluster_harness does (a KRaft broker's
        controlled shutdown waits for a quorum the others are leaving: over
        60 s here); its shutdown is not measured."""
        running = [n for n in self.nodes.values() if n.alive()]
        if self.kind == "kafka":
            for node in running:
                node.kill9()
            return
        for node in running:
            node._send(signal.SIGTERM)
        for node in running:
            try:
                node.stop(signal.SIGTERM, timeout_s=STOP_TIMEOUT_S)
            except HarnessError as e:
                log(f"{node.name} needed SIGKILL to stop: {str(e).splitlines()[0]}")

    def partition(self, topic: str, partition: int, node_ids) -> tuple[int, list[int], list[int]]:
        """(leader, replicas, isr) from the first of `node_ids` that answers Metadata."""
        errors = []
        for i in node_ids:
            try:
                return metadata_of(HOST, topic, partition, port=self.nodes[i].fixed_port)
            except Exception as e:  # a node may be down or electing
                errors.append(f"node {i}: {e!r}")
        raise HarnessError(f"no metadata for {topic}-{partition}: {'; '.join(errors)}")

    def live_ids(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.alive()]

    def wait_until(self, what: str, fn, timeout_s: float):
        """Polls `fn` (None or an exception: not yet) until it returns a value."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                got = fn()
                if got is not None:
                    return got
            except Exception as e:  # metadata fails while nodes die and elect
                last = e
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.kind}: no {what} within {timeout_s:.0f}s (last error {last!r})\n"
                                   f"{self.log_tail(20)}")
            time.sleep(POLL_INTERVAL_S)

    def wait_full_isr(self, topic: str, partition: int, timeout_s: float = TOPIC_READY_TIMEOUT_S) -> int:
        """Until every node reports a leader and an ISR of all three; returns the leader."""
        def ready():
            views = [self.partition(topic, partition, [i]) for i in self.nodes]
            leaders = {v[0] for v in views}
            if len(leaders) == 1 and min(leaders) >= 0 and all(len(v[2]) == CLUSTER_SIZE for v in views):
                return views[0][0]
            return None
        return self.wait_until(f"full ISR of {topic}-{partition}", ready, timeout_s)

    def create_topic(self, name: str, partitions: int, replication_factor: int, config: dict[str, str]):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "broker.address.family": "v4"})
        fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                                           config=config)], operation_timeout=30, request_timeout=30)
        fs[name].result(timeout=TOPIC_READY_TIMEOUT_S)
        for p in range(partitions):
            if replication_factor == CLUSTER_SIZE:
                self.wait_full_isr(name, p)
            else:
                self.wait_until(f"a leader of {name}-{p}",
                                lambda p=p: (m := self.partition(name, p, self.nodes))[0] >= 0 and m or None,
                                TOPIC_READY_TIMEOUT_S)


def perf(silt_bin: Path, *args: str) -> dict:
    cmd = [str(silt_bin), "perf", *args, "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILT_")}
    env["RUST_LOG"] = "warn"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PERF_TIMEOUT_S, env=env)
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_out_dirty_pages() -> float:
    """`sync`: the dirty pages of earlier runs are written before the next
    timed run starts (see the module doc). Returns how long it took."""
    started = time.monotonic()
    os.sync()
    return time.monotonic() - started


def replication_case(silt_bin: Path, cluster: LoopbackCluster, size: dict) -> dict:
    """Max-rate acks=all produce into RF=1 and RF=3 topics, then both at one offered rate."""
    topics = {"rf1": (1, {}), "rf3": (CLUSTER_SIZE, {"min.insync.replicas": str(MIN_INSYNC)})}
    for name, (rf, config) in topics.items():
        cluster.create_topic(f"bench-{name}", PARTITIONS, rf, config)
    records = size["produce_bytes"] // RECORD_BYTES
    out: dict = {"record_bytes": RECORD_BYTES, "partitions": PARTITIONS, "records": records,
                 "min_insync_replicas": MIN_INSYNC}
    if size["warm_up_bytes"]:
        # Untimed: a JVM's first load pays for its JIT compiler, every broker's for first appends.
        cluster.create_topic("bench-warm-up", PARTITIONS, CLUSTER_SIZE, {"min.insync.replicas": str(MIN_INSYNC)})
        perf(silt_bin, "produce", "--bootstrap-servers", cluster.bootstrap, "--topic", "bench-warm-up",
             "--record-size", str(RECORD_BYTES), "--records", str(size["warm_up_bytes"] // RECORD_BYTES),
             "--acks", "all")
    for name in topics:
        write_out_dirty_pages()
        report = perf(silt_bin, "produce", "--bootstrap-servers", cluster.bootstrap, "--topic", f"bench-{name}",
                      "--record-size", str(RECORD_BYTES), "--records", str(records), "--acks", "all")
        out[name] = report
        log(f"{cluster.kind} {name} acks=all: {report['mib_per_s']:.1f} MiB/s, {report['records_per_s']:.0f} rec/s, "
            f"p50 {report['latency']['p50_ms']:.1f} ms, p99 {report['latency']['p99_ms']:.1f} ms")
    out["rf3_over_rf1"] = out["rf3"]["mib_per_s"] / out["rf1"]["mib_per_s"] if out["rf1"]["mib_per_s"] else None
    rate = max(1.0, out["rf3"]["records_per_s"] * 0.5)
    out["paced_records_per_s"] = rate
    for name in topics:
        write_out_dirty_pages()
        report = perf(silt_bin, "produce", "--bootstrap-servers", cluster.bootstrap, "--topic", f"bench-{name}",
                      "--record-size", str(RECORD_BYTES), "--acks", "all", "--throughput", f"{rate:.0f}",
                      "--linger-ms", "1", "--duration-s", str(size["latency_s"]))
        out[f"{name}_paced"] = report
        log(f"{cluster.kind} {name} acks=all at {rate:.0f} rec/s: p50 {report['latency']['p50_ms']:.1f} ms, "
            f"p99 {report['latency']['p99_ms']:.1f} ms")
    return out


def failover_case(cluster: LoopbackCluster, size: dict, kills: int) -> dict:
    """`kills` leader kills under a steady idempotent acks=all writer; see the module doc."""
    topic = "bench-failover"
    cluster.create_topic(topic, 1, CLUSTER_SIZE, {"min.insync.replicas": str(MIN_INSYNC)})
    history = History()
    writer = RecordWriter(cluster.bootstrap, topic, history, name="w", rate_per_s=size["writer_rate"])
    writer.start()
    rounds = []
    out: dict = {"writer_rate_per_s": size["writer_rate"], "kill_drain_s": KILL_DRAIN_S, "rounds": rounds}
    try:
        writer.wait_acked(STEADY_ACKS, timeout_s=TOPIC_READY_TIMEOUT_S, diagnostics=cluster.log_tail)
        for k in range(kills):
            leader = cluster.wait_full_isr(topic, 0, timeout_s=REJOIN_TIMEOUT_S)
            acked_before = history.acked_count()
            writer.wait_acked(acked_before + STEADY_ACKS, timeout_s=FAILOVER_TIMEOUT_S, diagnostics=cluster.log_tail)
            acks_seen = len(writer.ack_times)
            killed_at = time.monotonic()
            cluster.nodes[leader].kill9()
            survivors = [i for i in cluster.nodes if i != leader]
            new_leader, metadata_s, ack_s = None, None, None
            deadline = killed_at + FAILOVER_TIMEOUT_S
            while new_leader is None or ack_s is None:
                now = time.monotonic()
                if ack_s is None:
                    after = [t for t in writer.ack_times[acks_seen:] if t > killed_at + KILL_DRAIN_S]
                    if after:
                        ack_s = after[0] - killed_at
                if new_leader is None:
                    try:
                        got = cluster.partition(topic, 0, survivors)[0]
                        if got >= 0 and got != leader:
                            new_leader, metadata_s = got, now - killed_at
                    except HarnessError:
                        pass
                if now > deadline:
                    raise HarnessError(f"{cluster.kind} kill {k + 1}: after {FAILOVER_TIMEOUT_S:.0f}s new leader "
                                       f"{new_leader}, first ack after {ack_s} s; writer errors {writer.errors[-3:]}"
                                       f"\n{cluster.log_tail(20)}")
                time.sleep(POLL_INTERVAL_S)
            restart_at = time.monotonic()
            cluster.nodes[leader].restart(timeout_s=CLUSTER_START_TIMEOUT_S)
            cluster.wait_full_isr(topic, 0, timeout_s=REJOIN_TIMEOUT_S)
            rejoin_s = time.monotonic() - restart_at
            rounds.append({"killed": leader, "new_leader": new_leader, "failover_ack_s": ack_s,
                           "failover_metadata_s": metadata_s, "restart_to_full_isr_s": rejoin_s})
            log(f"{cluster.kind} kill {k + 1}/{kills}: node {leader} -> {new_leader}; first ack after "
                f"{ack_s:.2f} s, metadata after {metadata_s:.2f} s; rejoined the ISR {rejoin_s:.1f} s after restart")
        writer.finish(writer.sent, timeout_s=FAILOVER_TIMEOUT_S)
    finally:
        writer.close()
    _, high = watermarks(cluster, topic, 0)
    for m in consume_partitions(cluster, topic, {0: high}, timeout_s=TOPIC_READY_TIMEOUT_S)[0]:
        key = m.key().decode() if m.key() is not None else None
        history.read(0, m.offset(), key, m.value().decode("utf-8", "replace"))
    report = check(history)
    out.update(acknowledged=report.stats.get("acknowledged", 0), attempted=report.stats.get("attempted", 0),
               lost=len(report.lost), anomalies={k: len(getattr(report, k)) for k in
                                                 ("duplicated", "reordered", "inconsistent", "phantom")},
               lost_examples=report.lost[:5], history=report.summary())
    for key, name in (("failover_ack_s", "ack"), ("failover_metadata_s", "metadata")):
        values = [r[key] for r in rounds]
        out[f"{name}_median_s"] = statistics.median(values) if values else None
        out[f"{name}_worst_s"] = max(values) if values else None
    log(f"{cluster.kind} failover over {len(rounds)} kills: first ack median {out['ack_median_s']}, worst "
        f"{out['ack_worst_s']}; {out['acknowledged']} acknowledged, {out['lost']} lost")
    return out


def node_settings(kind: str) -> str:
    if kind == "silt":
        return "defaults ([broker] heartbeat_interval_ms, session_timeout_ms)"
    return f"defaults (broker.heartbeat.interval.ms, broker.session.timeout.ms), KAFKA_HEAP_OPTS={KAFKA_NODE_HEAP}"


def run_kind(kind: str, silt_bin: Path, workdir: Path, size: dict, kills: int) -> dict:
    """Both cases against one fresh cluster of `kind`."""
    started = time.monotonic()
    if kind == "kafka":
        name = "Apache Kafka " + subprocess.run([str(KAFKA_SCRIPT), "version"], capture_output=True, text=True,
                                                timeout=30, check=True).stdout.strip()
    else:
        name = "Silt"
    log(f"{name}: starting a 3-node cluster on {HOST}")
    cluster = LoopbackCluster(kind, workdir / f"{kind}-cluster", silt_bin).start()
    out: dict = {"name": name, "settings": node_settings(kind), "start_s": time.monotonic() - started}
    try:
        out["replication"] = replication_case(silt_bin, cluster, size)
        out["failover"] = failover_case(cluster, size, kills)
    finally:
        cluster.close()
    out["elapsed_s"] = time.monotonic() - started
    return out


def install_kafka() -> str | None:
    """Installs Apache Kafka's jars (a no-op once done); returns why not, or None."""
    try:
        proc = subprocess.run([str(KAFKA_SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "installing Kafka took over 900 s"
    if proc.returncode != 0:
        return "tests/kafka/kafka install failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return None


def run(silt_bin: Path, workdir: Path, kinds: list[str], quick: bool, kills: int | None) -> dict:
    """The cluster section of the benchmark: every kind in `kinds`, in order."""
    size = QUICK if quick else FULL
    kills = size["kills"] if kills is None else kills
    res: dict = {"kills": kills, "load_average_at_start": os.getloadavg(), "kinds": {}}
    for kind in kinds:
        if kind == "kafka" and (why_not := install_kafka()) is not None:
            res["kinds"][kind] = {"name": "Apache Kafka", "skipped": why_not}
            log(f"kafka cluster: skipped: {why_not}")
            continue
        res["kinds"][kind] = run_kind(kind, silt_bin, workdir, size, kills)
        res["kinds"][kind]["load_average_after"] = os.getloadavg()
    return res


def fmt(v, digits: int = 2) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


#: A paced run that achieved less than this share of its offered rate fell behind.
PACED_BEHIND_SHARE = 0.95


def paced_cell(replication: dict, rf: str) -> str:
    """p50 / p99 of a paced run, with the achieved rate when it fell behind the offered one."""
    report = replication[rf + "_paced"]
    cell = f"{fmt(report['latency']['p50_ms'], 1)} / {fmt(report['latency']['p99_ms'], 1)}"
    if report["records_per_s"] < PACED_BEHIND_SHARE * replication["paced_records_per_s"]:
        cell += f" ({report['records_per_s']:,.0f} of {replication['paced_records_per_s']:,.0f} rec/s)"
    return cell


def table(res: dict) -> str:
    """The cluster section as markdown: one column per kind."""
    kinds = {k: r for k, r in res["kinds"].items() if not r.get("skipped")}
    rows: list[tuple[str, list[str], str]] = []

    def add(figure: str, fn, note: str = ""):
        cells = []
        for r in kinds.values():
            try:
                cells.append(fn(r))
            except (KeyError, TypeError):
                cells.append("—")
        rows.append((figure, cells, note))

    for rf in ("rf1", "rf3"):
        label = "RF=1" if rf == "rf1" else f"RF=3, min.insync.replicas={MIN_INSYNC}"
        add(f"produce acks=all, {label}: MiB/s", lambda r, rf=rf: fmt(r["replication"][rf]["mib_per_s"]),
            "1 KiB records, 6 partitions, librdkafka (silt perf produce), max rate")
        add(f"produce acks=all, {label}: rec/s", lambda r, rf=rf: fmt(r["replication"][rf]["records_per_s"], 0))
        add(f"produce acks=all, {label}: p50 / p99 ms at max rate",
            lambda r, rf=rf: f"{fmt(r['replication'][rf]['latency']['p50_ms'], 1)} / "
                             f"{fmt(r['replication'][rf]['latency']['p99_ms'], 1)}", "lower is better")
        add(f"produce acks=all, {label}: p50 / p99 ms at half the RF=3 max rate",
            lambda r, rf=rf: paced_cell(r["replication"], rf),
            "linger.ms=1; same offered rate for RF=1 and RF=3; lower is better; a rate in brackets: "
            "the broker fell behind the offered rate, so the latency is mostly queueing")
    add("RF=3 ÷ RF=1 throughput", lambda r: fmt(r["replication"]["rf3_over_rf1"]),
        f"target ≥ {TARGET_RF3_RATIO} (three brokers share the machine's cores)")
    add(f"failover, kill -9 of the leader → first acknowledged write: median s",
        lambda r: fmt(r["failover"]["ack_median_s"]), f"target ≤ {TARGET_FAILOVER_MEDIAN_S:g} s median; "
        f"idempotent acks=all writer; a failover under {KILL_DRAIN_S} s reads as {KILL_DRAIN_S} s")
    add("failover → first acknowledged write: worst s", lambda r: fmt(r["failover"]["ack_worst_s"]))
    add("failover → Metadata names a new leader: median / worst s",
        lambda r: f"{fmt(r['failover']['metadata_median_s'])} / {fmt(r['failover']['metadata_worst_s'])}",
        "asked of the surviving nodes")
    add("killed node restarted → back in the ISR: median s",
        lambda r: fmt(statistics.median(x["restart_to_full_isr_s"] for x in r["failover"]["rounds"])))
    add("leader kills", lambda r: str(len(r["failover"]["rounds"])))
    add("acknowledged records lost", lambda r: f"{r['failover']['lost']} of {r['failover']['acknowledged']:,}",
        "must be 0; every record read back and checked (tests/history.py)")
    add("other anomalies: duplicated / reordered / inconsistent / phantom",
        lambda r: " / ".join(str(r["failover"]["anomalies"][k])
                             for k in ("duplicated", "reordered", "inconsistent", "phantom")),
        "idempotent producer: 0 expected")
    head = ["figure", *(r["name"] for r in kinds.values()), "note"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(kinds) + "---|"]
    for figure, cells, note in rows:
        lines.append("| " + " | ".join([figure, *cells, note]) + " |")
    skipped = [f"{r['name']}: skipped ({r['skipped']})" for r in res["kinds"].values() if r.get("skipped")]
    settings = "; ".join(f"{r['name']}: {r['settings']}" for r in kinds.values())
    return "\n".join(lines) + f"\n\nSettings: {settings}." + (f" {'; '.join(skipped)}." if skipped else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--silt-bin", type=Path, required=True)
    ap.add_argument("--kinds", default="silt,kafka", help="comma separated: silt, kafka (default both)")
    ap.add_argument("--kills", type=int, help="leader kills (default 10; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small volumes")
    ap.add_argument("--work-dir", type=Path, help="where the data dirs go (default: a temp dir)")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="silt-cluster-bench-", dir=args.work_dir))
    try:
        res = run(args.silt_bin, workdir, kinds, args.quick, args.kills)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("### Cluster\n")
    print(table(res))
    print("\n```json")
    print(json.dumps(res, indent=1, default=str))
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
