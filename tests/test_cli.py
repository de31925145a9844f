"""The operator CLI (`silt topic|produce|consume|group|cluster`) against a
real broker, cross-checked with confluent-kafka: what the CLI writes a
Kafka client reads, what a client commits the CLI reports, and what the CLI
changes a client sees. Error cases: an unreachable broker, unknown topics
and groups, bad arguments, each with a non-zero exit and a message."""

from __future__ import annotations

import json
import re
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource

from conftest import BrokerSet
from silt_harness import (GROUP_BROKER_ENV, admin_client, confluent_conf, create_topic, free_port,
                          future_result, produce_keyed, run_silt, wait_until, watermarks)

pytestmark = pytest.mark.silt_only(reason="Silt's own operator CLI (silt topic|produce|consume|group|cluster)")

#: An unreachable broker must be reported within --timeout plus this much.
UNREACHABLE_SLACK_S = 8.0


@pytest.fixture(scope="module")
def cli_broker(make_broker, tmp_path_factory):
    """One broker for the module; groups rebalance without the initial delay."""
    brokers = BrokerSet(make_broker, tmp_path_factory.mktemp("cli-broker"))
    b = brokers.start(env=dict(GROUP_BROKER_ENV))
    yield b
    brokers.close()


def silt(silt_bin, broker, *args, input: bytes | None = None, expect: int | None = 0):
    """Runs a CLI command against `broker`; checks the exit code unless expect is None."""
    result = run_silt(silt_bin, *args, "--bootstrap-server", broker.bootstrap, "--timeout", "20s", input=input)
    if expect is not None:
        assert result.returncode == expect, (
            f"`silt {' '.join(args)}` exited {result.returncode}, want {expect}\n"
            f"stdout: {result.stdout.decode()[-2000:]}\nstderr: {result.stderr.decode()[-2000:]}")
    return result


def table(stdout: bytes, header: str) -> list[dict[str, str]]:
    """Rows of the whitespace-aligned table whose header starts with `header`."""
    lines = stdout.decode().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    columns = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = line.split()
        if len(cells) != len(columns):
            break
        rows.append(dict(zip(columns, cells)))
    return rows


def committed(broker, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer(confluent_conf(broker, **{"group.id": group, "enable.auto.commit": False}))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def produce_at(broker, topic: str, records: list[dict]):
    """Produces records with explicit partition, timestamp and optional key and headers."""
    from confluent_kafka import Producer
    p = Producer(confluent_conf(broker, acks="all"))
    for r in records:
        p.produce(topic, **r)
    assert p.flush(30) == 0, "records were not delivered"


def commit(broker, group: str, topic: str, offsets: dict[int, int]):
    """Commits offsets for a group without joining it (as a stopped application's last commit)."""
    c = Consumer(confluent_conf(broker, **{"group.id": group, "enable.auto.commit": False}))
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


# --- help and bad arguments (no broker needed) -----------------------------------

@pytest.mark.parametrize("command", [
    [], ["topic"], ["topic", "create"], ["topic", "list"], ["topic", "describe"], ["topic", "alter"],
    ["topic", "delete"], ["produce"], ["consume"], ["group"], ["group", "list"], ["group", "describe"],
    ["group", "reset-offsets"], ["group", "delete"], ["cluster"], ["cluster", "describe"],
    ["config"], ["config", "check"], ["broker"],
])
def test_every_command_has_help(silt_bin, command):
    result = run_silt(silt_bin, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert b"Usage: silt" in result.stdout, result.stdout


@pytest.mark.parametrize("args, message", [
    (["topic", "create", "t", "--partitions", "0"], "--partitions must be at least 1"),
    (["topic", "alter", "t"], "nothing to alter"),
    (["topic", "alter", "t", "--set", "retention"], "expected key=value"),
    (["consume", "-t", "t", "--group", "g", "--offset", "3"], "cannot be used with"),
    (["consume", "-t", "t", "--max-records", "0"], "--max-records must be at least 1"),
    (["topic", "list", "--timeout", "10"], "expected a duration"),
    (["group", "reset-offsets", "g", "-t", "t", "--to-earliest", "--to-latest"], "cannot be used with"),
    (["group", "reset-offsets", "g", "-t", "t"], "say where to"),
    (["produce", "-t", "t", "--compression", "zstd"], "invalid value 'zstd'"),
    (["no-such-command"], "unrecognized subcommand"),
])
def test_bad_arguments_exit_2_and_say_why(silt_bin, args, message):
    # An unreachable address: argument errors must be found before any connection.
    result = run_silt(silt_bin, *args, "--bootstrap-server", f"127.0.0.1:{free_port()}", "--timeout", "2s")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr.decode(), result.stderr


@pytest.mark.parametrize("command", [
    ["topic", "list"], ["topic", "describe", "t"], ["produce", "-t", "t"], ["consume", "-t", "t"],
    ["group", "list"], ["group", "describe", "g"], ["cluster", "describe"],
])
def test_unreachable_broker_fails_within_the_timeout(silt_bin, command):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = run_silt(silt_bin, *command, "--bootstrap-server", address, "--timeout", "2s",
                      input=b"x\n", timeout_s=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, (result.returncode, result.stderr)
    err = result.stderr.decode()
    assert f"cannot reach a Kafka broker at {address}" in err, err
    assert elapsed < 2 + UNREACHABLE_SLACK_S, f"took {elapsed:.1f}s to report an unreachable broker"


# --- topics -----------------------------------------------------------------------

def test_topic_create_list_describe_alter_delete(silt_bin, cli_broker, topic_name):
    b = cli_broker
    out = silt(silt_bin, b, "topic", "create", topic_name, "-p", "3", "-c", "retention.ms=3600000").stdout
    assert f"created topic {topic_name}" in out.decode()
    assert topic_name in silt(silt_bin, b, "topic", "list").stdout.decode().split()
    assert "__consumer_offsets" not in silt(silt_bin, b, "topic", "list").stdout.decode()
    assert "__consumer_offsets" in silt(silt_bin, b, "topic", "list", "--internal").stdout.decode()

    described = silt(silt_bin, b, "topic", "describe", topic_name).stdout
    partitions = table(described, "PARTITION")
    assert [r["PARTITION"] for r in partitions] == ["0", "1", "2"], described
    assert all(r["LEADER"] == "0" and r["ISR"] == "0" for r in partitions), described
    configs = {r["CONFIG"]: r["VALUE"] for r in table(described, "CONFIG")}
    assert configs == {"retention.ms": "3600000"}, described

    # Cross-check with a Kafka admin client.
    admin = admin_client(b)
    md = admin.list_topics(topic_name, timeout=20)
    assert len(md.topics[topic_name].partitions) == 3

    silt(silt_bin, b, "topic", "alter", topic_name, "--set", "retention.ms=7200000", "--set", "segment.ms=600000",
         "--partitions", "5")
    wait_until(lambda: len(admin.list_topics(topic_name, timeout=20).topics[topic_name].partitions) == 5,
               20, "the topic to have 5 partitions after `silt topic alter --partitions 5`")
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = future_result(admin.describe_configs([res])[res], "describe_configs")
    assert cfg["retention.ms"].value == "7200000" and cfg["segment.ms"].value == "600000"

    # Incremental: deleting one override leaves the other.
    silt(silt_bin, b, "topic", "alter", topic_name, "--delete", "retention.ms")
    cfg = future_result(admin.describe_configs([res])[res], "describe_configs")
    assert cfg["retention.ms"].value != "7200000" and cfg["segment.ms"].value == "600000", \
        {k: v.value for k, v in cfg.items()}

    # Shrinking is refused before anything is sent.
    r = silt(silt_bin, b, "topic", "alter", topic_name, "--partitions", "2", expect=2)
    assert "more than the topic's 5 partitions" in r.stderr.decode()

    r = silt(silt_bin, b, "topic", "create", topic_name, expect=1)
    assert "TopicAlreadyExists" in r.stderr.decode() or "already exists" in r.stderr.decode(), r.stderr
    silt(silt_bin, b, "topic", "create", topic_name, "--if-not-exists")

    silt(silt_bin, b, "topic", "delete", topic_name)
    wait_until(lambda: topic_name not in silt(silt_bin, b, "topic", "list").stdout.decode().split(),
               20, f"{topic_name} to disappear from `silt topic list`")


@pytest.mark.parametrize("command", [
    ["topic", "describe"], ["topic", "delete"], ["topic", "alter", "--set", "retention.ms=1"],
    ["consume", "-e", "-t"], ["produce", "-t"],
])
def test_unknown_topic_is_named(silt_bin, cli_broker, command):
    r = silt(silt_bin, cli_broker, *command, "no-such-topic-here", input=b"x\n", expect=1)
    assert 'topic "no-such-topic-here" does not exist' in r.stderr.decode(), r.stderr
    admin = admin_client(cli_broker)
    assert "no-such-topic-here" not in admin.list_topics(timeout=20).topics, "a CLI command created the topic"


# --- produce and consume ------------------------------------------------------------

def test_produced_records_are_read_by_confluent_kafka(silt_bin, cli_broker, topic_name, tmp_path):
    b = cli_broker
    create_topic(b, topic_name, 3)
    lines = [f"key-{i}:value-{i}:with-colon" for i in range(500)] + ["no-separator-here"]
    path = tmp_path / "input.txt"
    path.write_text("\n".join(lines) + "\n")
    r = silt(silt_bin, b, "produce", "-t", topic_name, "-f", str(path), "-K", ":", "-H", "source=cli",
             "-H", "batch=1", "-z", "lz4", "--acks", "all")
    assert f"{len(lines)} records produced to {topic_name}" in r.stderr.decode(), r.stderr

    ends = {p: watermarks(b, topic_name, p)[1] for p in range(3)}
    assert sum(ends.values()) == len(lines), ends
    from silt_harness import consume_partitions
    got = consume_partitions(b, topic_name, ends)
    records = [m for msgs in got.values() for m in msgs]
    by_key = {(m.key() or b"").decode(): m for m in records}
    for i in range(500):
        m = by_key[f"key-{i}"]
        assert m.value() == f"value-{i}:with-colon".encode()
        assert m.headers() == [("source", b"cli"), ("batch", b"1")]
    assert by_key[""].value() == b"no-separator-here" and by_key[""].key() is None
    # The same key always lands on the same partition (a keyed producer's promise).
    assert len({m.partition() for m in records if m.key() == b"key-7"}) == 1


def test_produce_from_stdin_to_one_partition(silt_bin, cli_broker, topic_name):
    create_topic(cli_broker, topic_name, 2)
    silt(silt_bin, cli_broker, "produce", "-t", topic_name, "-p", "1", "--acks", "1", input=b"a\nb\r\nc\n")
    assert watermarks(cli_broker, topic_name, 1)[1] == 3
    assert watermarks(cli_broker, topic_name, 0)[1] == 0
    r = silt(silt_bin, cli_broker, "produce", "-t", topic_name, "-p", "7", input=b"a\n", expect=2)
    assert "--partition must be 0..2" in r.stderr.decode()


def test_produce_reports_progress_and_a_count(silt_bin, cli_broker, topic_name):
    create_topic(cli_broker, topic_name, 1)
    lines = b"".join(b"record-%d\n" % i for i in range(2000))
    r = silt(silt_bin, cli_broker, "produce", "-t", topic_name, "--progress-interval", "1ms", input=lines)
    err = r.stderr.decode().splitlines()
    progress = [line for line in err if "records read" in line]
    assert progress and all("records/s" in line for line in progress), err[:5]
    assert err[-1].startswith(f"silt produce: 2000 records produced to {topic_name} in "), err[-1]
    assert watermarks(cli_broker, topic_name, 0)[1] == 2000


def test_consume_prints_fields_and_json(silt_bin, cli_broker, topic_name):
    b = cli_broker
    create_topic(b, topic_name, 2)
    produce_at(b, topic_name, [dict(key=f"k{i}", value=f"v{i}", partition=i % 2, headers=[("h", f"x{i}")],
                                    timestamp=1_700_000_000_000 + i * 1000) for i in range(6)]
               + [dict(value=b"\xff\xfe", partition=0, timestamp=1_700_000_010_000)])

    r = silt(silt_bin, b, "consume", "-t", topic_name, "--from-beginning", "-e", "--json")
    records = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(records) == 7, records
    assert "7 records consumed" in r.stderr.decode()
    k3 = next(x for x in records if x["key"] == "k3")
    assert k3 == {"topic": topic_name, "partition": 1, "offset": 1, "timestamp": 1_700_000_003_000,
                  "key": "k3", "value": "v3", "headers": [{"key": "h", "value": "x3"}]}
    binary = next(x for x in records if x["key"] is None)
    assert binary["value"] == {"base64": "//4="}

    r = silt(silt_bin, b, "consume", "-t", topic_name, "-p", "1", "--from-beginning", "-e", "--print-key",
             "--print-headers", "--print-timestamp", "--print-offset", "--separator", "|")
    assert r.stdout.decode().splitlines() == [
        f"1:{o}|{1_700_000_000_000 + i * 1000}|h=x{i}|k{i}|v{i}" for o, i in enumerate([1, 3, 5])]

    r = silt(silt_bin, b, "consume", "-t", topic_name, "-p", "0", "--offset", "2", "-e")
    assert r.stdout.splitlines() == [b"v4", b"\xff\xfe"]

    r = silt(silt_bin, b, "consume", "-t", topic_name, "--from-time", str(1_700_000_004_000), "-e", "--print-key")
    assert sorted(line.split("\t")[0] for line in r.stdout.decode("utf-8", "replace").splitlines()) == ["", "k4", "k5"]

    r = silt(silt_bin, b, "consume", "-t", topic_name, "--from-beginning", "-n", "3")
    assert len(r.stdout.splitlines()) == 3


def test_consume_with_a_group_commits_what_it_printed(silt_bin, cli_broker, topic_name):
    b = cli_broker
    create_topic(b, topic_name, 2)
    produce_keyed(b, topic_name, range(40), 2)
    group = f"{topic_name}-g"
    r = silt(silt_bin, b, "consume", "-t", topic_name, "-g", group, "--from-beginning", "-e")
    assert len(r.stdout.splitlines()) == 40
    assert committed(b, group, topic_name, 2) == {0: 20, 1: 20}
    rows = table(silt(silt_bin, b, "group", "describe", group).stdout, "TOPIC")
    assert {(r["PARTITION"], r["COMMITTED"], r["LAG"]) for r in rows} == {("0", "20", "0"), ("1", "20", "0")}


# --- groups -----------------------------------------------------------------------------

def test_group_describe_reports_commits_and_lag(silt_bin, cli_broker, topic_name):
    b = cli_broker
    create_topic(b, topic_name, 3)
    produce_keyed(b, topic_name, range(90), 3)  # 30 per partition
    group = f"{topic_name}-g"
    commit(b, group, topic_name, {0: 10, 1: 30})  # partition 2: nothing committed
    out = silt(silt_bin, b, "group", "describe", group).stdout
    rows = {r["PARTITION"]: r for r in table(out, "TOPIC") if r["TOPIC"] == topic_name}
    assert set(rows) == {"0", "1"}, out
    assert (rows["0"]["COMMITTED"], rows["0"]["LOG-END"], rows["0"]["LAG"]) == ("10", "30", "20")
    assert (rows["1"]["COMMITTED"], rows["1"]["LOG-END"], rows["1"]["LAG"]) == ("30", "30", "0")
    assert "total lag 20" in out.decode()
    assert re.search(rf"^{re.escape(group)}\s+Empty\s", silt(silt_bin, b, "group", "list").stdout.decode(), re.M)

    r = silt(silt_bin, b, "group", "describe", "no-such-group", expect=1)
    assert 'consumer group "no-such-group" does not exist' in r.stderr.decode()


def test_reset_offsets_is_a_dry_run_until_execute(silt_bin, cli_broker, topic_name):
    b = cli_broker
    create_topic(b, topic_name, 2)
    produce_at(b, topic_name, [dict(value=b"v", partition=i % 2, timestamp=1_700_000_000_000 + i * 1000)
                               for i in range(20)])
    group = f"{topic_name}-g"
    commit(b, group, topic_name, {0: 5, 1: 5})

    out = silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "--to-earliest").stdout
    assert "dry run: nothing changed" in out.decode()
    assert {(r["PARTITION"], r["CURRENT"], r["NEW"]) for r in table(out, "TOPIC")} == {("0", "5", "0"), ("1", "5", "0")}
    assert committed(b, group, topic_name, 2) == {0: 5, 1: 5}, "a dry run changed the committed offsets"

    silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "--to-earliest", "--execute")
    assert committed(b, group, topic_name, 2) == {0: 0, 1: 0}
    silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "--to-latest", "--execute")
    assert committed(b, group, topic_name, 2) == {0: 10, 1: 10}
    # Offsets outside the log are clamped to it, as Kafka's tool does.
    silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "-p", "1", "--to-offset", "99", "--execute")
    silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "-p", "0", "--to-offset", "3", "--execute")
    assert committed(b, group, topic_name, 2) == {0: 3, 1: 10}
    # Record i has timestamp base + i s and sits in partition i % 2 at offset i // 2.
    silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "--to-datetime",
         str(1_700_000_000_000 + 10_000), "--execute")
    assert committed(b, group, topic_name, 2) == {0: 5, 1: 5}
    rows = table(silt(silt_bin, b, "group", "describe", group).stdout, "TOPIC")
    assert {(r["PARTITION"], r["LAG"]) for r in rows} == {("0", "5"), ("1", "5")}


def test_reset_offsets_and_delete_are_refused_while_members_are_active(silt_bin, cli_broker, topic_name):
    b = cli_broker
    create_topic(b, topic_name, 1)
    produce_keyed(b, topic_name, range(5), 1)
    group = f"{topic_name}-g"
    c = Consumer(confluent_conf(b, **{"group.id": group, "auto.offset.reset": "earliest",
                                      "client.id": "cli-test-member"}))
    try:
        c.subscribe([topic_name])
        wait_until(lambda: c.poll(0.2) is not None and c.assignment(), 60, "the consumer to join and get a record")
        c.commit(asynchronous=False)
        out = silt(silt_bin, b, "group", "describe", group).stdout.decode()
        assert "state Stable" in out and "members 1" in out and "cli-test-member" in out, out
        r = silt(silt_bin, b, "group", "reset-offsets", group, "-t", topic_name, "--to-earliest", "--execute", expect=1)
        assert "1 active members" in r.stderr.decode(), r.stderr
        r = silt(silt_bin, b, "group", "delete", group, expect=1)
        assert "active members" in r.stderr.decode(), r.stderr
    finally:
        c.close()
    wait_until(lambda: "members 0" in silt(silt_bin, b, "group", "describe", group).stdout.decode(), 30,
               "the group to be empty after its member left")
    silt(silt_bin, b, "group", "delete", group)
    assert group not in silt(silt_bin, b, "group", "list").stdout.decode().split()
    r = silt(silt_bin, b, "group", "delete", group, expect=1)
    assert f'consumer group "{group}" does not exist' in r.stderr.decode()


# --- cluster ------------------------------------------------------------------------------

def test_cluster_describe_matches_metadata(silt_bin, cli_broker):
    out = silt(silt_bin, cli_broker, "cluster", "describe").stdout.decode()
    md = admin_client(cli_broker).list_topics(timeout=20)
    assert re.search(rf"^cluster id\s+{re.escape(md.cluster_id)}$", out, re.M), out
    assert re.search(rf"^controller\s+{md.controller_id}$", out, re.M), out
    rows = table(out.encode(), "BROKER")
    assert [(r["BROKER"], r["HOST"], r["PORT"]) for r in rows] == [("0", cli_broker.kafka_host, str(cli_broker.kafka_port))]
    # A single node holds, leads and keeps in sync every partition.
    partitions = sum(len(t.partitions) for t in md.topics.values())
    assert re.search(r"^partitions\s+0 under-replicated, 0 offline \(of (\d+),", out, re.M), out
    assert (rows[0]["REPLICAS"], rows[0]["OUT-OF-ISR"]) == (rows[0]["LEADER-OF-PARTITIONS"], "0"), out
    assert int(rows[0]["REPLICAS"]) >= partitions > 0, out
