"""Apache Kafka's own command-line tools against Silt, run from Kafka's jars
the way an operator runs them (tests/kafka/kafka installs Kafka 4.x from
Maven Central; `run-class` starts one tool): kafka-topics, kafka-configs,
kafka-console-producer/-consumer, kafka-consumer-groups (describe, reset
offsets), kafka-get-offsets, kafka-producer-perf-test, kafka-consumer-perf-test,
and the admin tools behind the APIs Kafka 4.x advertises (kafka-log-dirs,
kafka-leader-election, kafka-transactions describe-producers,
kafka-delete-records).

Each test checks a tool's output and then its effect, through the tool or a
Python client. A tool that fails against Silt is a Silt bug or a missing API.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from broker_process import KAFKA_SCRIPT
from kafka_cli import run_kafka_tool
from silt_harness import CLIENT_TIMEOUT_S, create_topic, describe_topic_configs, wait_until

#: How long one tool run may take: a JVM start on a loaded 2-core machine,
#: plus whatever the tool waits for (consumers wait for their records).
TOOL_TIMEOUT_S = 180.0
#: How long installing Kafka's jars may take on a first run (Maven Central).
INSTALL_TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
def kafka_jars() -> str:
    """Installs (or finds) Kafka's jars; a failure fails the tests, never skips them."""
    try:
        done = subprocess.run([str(KAFKA_SCRIPT), "install"], capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{KAFKA_SCRIPT} install` did not finish within {INSTALL_TIMEOUT_S:.0f}s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"`{KAFKA_SCRIPT} install` failed ({done.returncode}):\n{done.stderr[-4000:]}", pytrace=False)
    return done.stdout.strip()


class Tools:
    """Runs Kafka tool classes against one broker's bootstrap address."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap

    def run(self, main_class: str, *args: str, input: str | None = None, check: bool = True,
            timeout_s: float = TOOL_TIMEOUT_S) -> subprocess.CompletedProcess:
        # Full JIT: the perf tools among these measure throughput.
        return run_kafka_tool(main_class, *args, input=input, check=check, timeout_s=timeout_s, quick_jit=False)

    # The tools, under the names of Kafka's bin/ scripts.
    def topics(self, *args, **kw):
        return self.run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", self.bootstrap, *args, **kw)

    def configs(self, *args, **kw):
        return self.run("org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", self.bootstrap, *args, **kw)

    def console_producer(self, *args, **kw):
        return self.run("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", self.bootstrap, *args, **kw)

    def console_consumer(self, *args, **kw):
        return self.run("org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", self.bootstrap,
                        *args, **kw)

    def consumer_groups(self, *args, **kw):
        return self.run("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "--bootstrap-server",
                        self.bootstrap, *args, **kw)

    def get_offsets(self, *args, **kw):
        return self.run("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", self.bootstrap, *args, **kw)

    def producer_perf(self, *args, **kw):
        return self.run("org.apache.kafka.tools.ProducerPerformance", "--bootstrap-server", self.bootstrap, *args,
                        **kw)

    def consumer_perf(self, *args, **kw):
        return self.run("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", self.bootstrap, *args, **kw)

    def log_dirs(self, *args, **kw):
        return self.run("org.apache.kafka.tools.LogDirsCommand", "--bootstrap-server", self.bootstrap, *args, **kw)

    def leader_election(self, *args, **kw):
        return self.run("org.apache.kafka.tools.LeaderElectionCommand", "--bootstrap-server", self.bootstrap,
                        *args, **kw)

    def transactions(self, *args, **kw):
        return self.run("org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", self.bootstrap, *args, **kw)

    def delete_records(self, *args, **kw):
        return self.run("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", self.bootstrap,
                        *args, **kw)

    def metadata_quorum(self, *args, **kw):
        return self.run("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", self.bootstrap,
                        *args, **kw)

    def broker_api_versions(self, *args, **kw):
        return self.run("org.apache.kafka.tools.BrokerApiVersionsCommand", "--bootstrap-server", self.bootstrap,
                        *args, **kw)

    # Parsed answers.
    def end_offsets(self, topic: str, time: str = "-1") -> dict[int, int]:
        """kafka-get-offsets: partition -> offset (latest by default; -2 earliest)."""
        out = self.get_offsets("--topic", topic, "--time", time).stdout
        offsets = {}
        for line in out.splitlines():
            m = re.fullmatch(rf"{re.escape(topic)}:(\d+):(-?\d+)", line.strip())
            if m:
                offsets[int(m.group(1))] = int(m.group(2))
        return offsets

    def group_offsets(self, group: str) -> dict[int, tuple[int, int, int]]:
        """kafka-consumer-groups --describe: partition -> (current, log end, lag)."""
        out = self.consumer_groups("--describe", "--group", group).stdout
        rows = {}
        for line in out.splitlines():
            cols = line.split()
            if len(cols) >= 6 and cols[0] == group and cols[2].isdigit():
                current = int(cols[3]) if cols[3] != "-" else -1
                lag = int(cols[5]) if cols[5] != "-" else -1
                rows[int(cols[2])] = (current, int(cols[4]), lag)
        return rows


@pytest.fixture(scope="module")
def tools(kafka_jars, module_broker) -> Tools:
    return Tools(module_broker.bootstrap)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def produce_lines(tools: Tools, topic: str, rows: list[str], *extra: str):
    tools.console_producer("--topic", topic, *extra, input="".join(f"{r}\n" for r in rows))


# -- kafka-topics ------------------------------------------------------------

def test_kafka_topics_create_describe_alter_delete(tools, topic_name):
    out = tools.topics("--create", "--topic", topic_name, "--partitions", "3", "--replication-factor", "1",
                       "--config", "retention.ms=3600000").stdout
    assert f"Created topic {topic_name}." in out, out
    assert topic_name in lines(tools.topics("--list").stdout)

    described = tools.topics("--describe", "--topic", topic_name).stdout
    header = re.search(rf"Topic: {re.escape(topic_name)}\s+TopicId: \S+\s+PartitionCount: (\d+)\s+"
                       r"ReplicationFactor: (\d+)\s+Configs: (.*)", described)
    assert header, described
    assert (header.group(1), header.group(2)) == ("3", "1"), described
    assert "retention.ms=3600000" in header.group(3), described
    partitions = re.findall(r"Partition: (\d+)\s+Leader: (\d+)\s+Replicas: (\d+)\s+Isr: (\d+)", described)
    assert sorted(p[0] for p in partitions) == ["0", "1", "2"], described
    assert all(p[1] == p[2] == p[3] for p in partitions), f"one node leads and holds every replica: {described}"

    tools.topics("--alter", "--topic", topic_name, "--partitions", "5")
    described = tools.topics("--describe", "--topic", topic_name).stdout
    assert "PartitionCount: 5" in described, described

    refused = tools.topics("--alter", "--topic", topic_name, "--partitions", "2", check=False)
    assert refused.returncode != 0 and "InvalidPartitionsException" in refused.stdout + refused.stderr, refused

    tools.topics("--delete", "--topic", topic_name)
    wait_until(lambda: topic_name not in lines(tools.topics("--list").stdout), CLIENT_TIMEOUT_S,
               f"{topic_name} to leave kafka-topics --list")


def test_kafka_topics_refuses_what_kafka_refuses(tools, topic_name):
    tools.topics("--create", "--topic", topic_name, "--partitions", "1")
    again = tools.topics("--create", "--topic", topic_name, "--partitions", "1", check=False)
    assert again.returncode != 0 and "TopicExistsException" in again.stdout + again.stderr, again
    replicated = tools.topics("--create", "--topic", f"{topic_name}-rf3", "--replication-factor", "3", check=False)
    assert replicated.returncode != 0 and "InvalidReplicationFactorException" in replicated.stdout + replicated.stderr, \
        replicated
    unknown = tools.topics("--describe", "--topic", f"{topic_name}-missing", check=False)
    assert unknown.returncode != 0 and "does not exist" in unknown.stdout + unknown.stderr, unknown


# -- kafka-configs -----------------------------------------------------------

def test_kafka_configs_alter_and_describe_topic_configs(tools, module_broker, topic_name):
    create_topic(module_broker, topic_name, partitions=1)
    out = tools.configs("--entity-type", "topics", "--entity-name", topic_name, "--alter",
                        "--add-config", "retention.ms=1234567,segment.bytes=1048576").stdout
    assert f"Completed updating config for topic {topic_name}." in out, out
    described = tools.configs("--entity-type", "topics", "--entity-name", topic_name, "--describe").stdout
    assert "retention.ms=1234567" in described and "segment.bytes=1048576" in described, described
    configs = describe_topic_configs(module_broker, topic_name)
    assert configs["retention.ms"].value == "1234567", "the change reached the broker"

    tools.configs("--entity-type", "topics", "--entity-name", topic_name, "--alter", "--delete-config", "retention.ms")
    described = tools.configs("--entity-type", "topics", "--entity-name", topic_name, "--describe").stdout
    assert "retention.ms" not in described and "segment.bytes=1048576" in described, described

    bad = tools.configs("--entity-type", "topics", "--entity-name", topic_name, "--alter",
                        "--add-config", "retention.ms=soon", check=False)
    assert bad.returncode != 0 and "InvalidConfigurationException" in bad.stdout + bad.stderr, bad
    assert describe_topic_configs(module_broker, topic_name)["segment.bytes"].value == "1048576"


def test_kafka_configs_describes_the_broker(tools):
    out = tools.configs("--entity-type", "brokers", "--describe", "--all").stdout
    assert re.search(r"All configs for broker \d+ are:", out), out
    for key in ("log.dirs", "num.partitions", "message.max.bytes"):
        assert re.search(rf"^\s+{re.escape(key)}=", out, re.M), f"{key} missing from:\n{out}"


# -- console producer and consumer ---------------------------------------------

def test_console_producer_and_consumer_round_trip(tools, module_broker, topic_name):
    create_topic(module_broker, topic_name, partitions=1)
    rows = [f"key-{i}:value-{i}" for i in range(20)]
    produce_lines(tools, topic_name, rows, "--reader-property", "parse.key=true",
                  "--reader-property", "key.separator=:")
    out = tools.console_consumer("--topic", topic_name, "--from-beginning", "--max-messages", "20",
                                 "--timeout-ms", "60000", "--formatter-property", "print.key=true",
                                 "--formatter-property", "key.separator=:").stdout
    assert lines(out) == rows, "one partition returns every record in order, key and value"
    assert tools.end_offsets(topic_name) == {0: 20}


# -- consumer groups -----------------------------------------------------------

def test_consumer_groups_describe_and_reset_offsets(tools, module_broker, topic_name):
    create_topic(module_broker, topic_name, partitions=2)
    produce_lines(tools, topic_name, [f"row-{i}" for i in range(10)])
    ends = tools.end_offsets(topic_name)
    assert sum(ends.values()) == 10, ends
    group = f"{topic_name}-group"
    tools.console_consumer("--topic", topic_name, "--group", group, "--from-beginning", "--max-messages", "10",
                           "--timeout-ms", "60000")
    assert group in lines(tools.consumer_groups("--list").stdout)
    described = tools.group_offsets(group)
    assert described == {p: (end, end, 0) for p, end in ends.items()}, "committed at the end, no lag"
    state = tools.consumer_groups("--describe", "--group", group, "--state").stdout
    assert re.search(rf"^{re.escape(group)}\s+.*\s+Empty\s+0\s*$", state, re.M), state

    dry = tools.consumer_groups("--reset-offsets", "--group", group, "--topic", topic_name, "--to-earliest",
                                "--dry-run").stdout
    assert re.search(r"NEW-OFFSET", dry), dry
    assert tools.group_offsets(group) == described, "--dry-run changes nothing"

    tools.consumer_groups("--reset-offsets", "--group", group, "--topic", topic_name, "--to-earliest", "--execute")
    assert tools.group_offsets(group) == {p: (0, end, end) for p, end in ends.items()}

    # One partition, to an offset (the partitioner decides which partition holds records).
    busy = max(ends, key=ends.get)
    tools.consumer_groups("--reset-offsets", "--group", group, "--topic", f"{topic_name}:{busy}", "--to-offset", "1",
                          "--execute")
    assert tools.group_offsets(group) == {p: (1, end, end - 1) if p == busy else (0, end, end)
                                          for p, end in ends.items()}

    tools.consumer_groups("--reset-offsets", "--group", group, "--all-topics", "--to-latest", "--execute")
    assert tools.group_offsets(group) == {p: (end, end, 0) for p, end in ends.items()}

    # The group reads from its reset offsets: back to the start, it gets everything again.
    tools.consumer_groups("--reset-offsets", "--group", group, "--topic", topic_name, "--to-earliest", "--execute")
    again = tools.console_consumer("--topic", topic_name, "--group", group, "--max-messages", "10",
                                   "--timeout-ms", "60000").stdout
    assert sorted(lines(again)) == sorted(f"row-{i}" for i in range(10))

    deleted = tools.consumer_groups("--delete", "--group", group).stdout
    assert "Deletion of requested consumer groups" in deleted and "was successful" in deleted, deleted
    assert group not in lines(tools.consumer_groups("--list").stdout)


def test_consumer_groups_reset_by_time_and_shift_and_delete_offsets(tools, module_broker, topic_name):
    create_topic(module_broker, topic_name, partitions=1)
    produce_lines(tools, topic_name, [f"row-{i}" for i in range(10)])
    group = f"{topic_name}-group"
    tools.console_consumer("--topic", topic_name, "--group", group, "--from-beginning", "--max-messages", "10",
                           "--timeout-ms", "60000")
    assert tools.group_offsets(group) == {0: (10, 10, 0)}

    def reset(*how: str):
        tools.consumer_groups("--reset-offsets", "--group", group, "--topic", topic_name, *how, "--execute")
        return tools.group_offsets(group)[0][0]

    assert reset("--shift-by", "-3") == 7
    assert reset("--shift-by", "-100") == 0, "shifted before the log start: the earliest offset"
    assert reset("--to-datetime", "2999-01-01T00:00:00.000") == 10, "no record that late: the latest offset"
    assert reset("--by-duration", "PT1H") == 0, "every record is younger than an hour"
    assert reset("--shift-by", "4") == 4

    out = tools.consumer_groups("--delete-offsets", "--group", group, "--topic", topic_name).stdout
    assert re.search(rf"^{re.escape(topic_name)}\s+0\s+Successful", out, re.M), out
    assert tools.group_offsets(group) == {}, "the group has no committed offset left"


# -- offsets, perf tests, records ----------------------------------------------

def test_get_offsets_and_delete_records(tools, module_broker, topic_name, tmp_path):
    create_topic(module_broker, topic_name, partitions=2)
    produce_lines(tools, topic_name, [f"k{i}:v{i}" for i in range(12)], "--reader-property", "parse.key=true",
                  "--reader-property", "key.separator=:")
    latest = tools.end_offsets(topic_name)
    assert sum(latest.values()) == 12 and set(latest) == {0, 1}, latest
    assert tools.end_offsets(topic_name, "-2") == {0: 0, 1: 0}, "earliest"

    target = {"partitions": [{"topic": topic_name, "partition": p, "offset": end // 2} for p, end in latest.items()],
              "version": 1}
    plan = tmp_path / "delete.json"
    plan.write_text(json.dumps(target))
    out = tools.delete_records("--offset-json-file", str(plan)).stdout
    for p, end in latest.items():
        assert re.search(rf"partition: {re.escape(topic_name)}-{p}\s+low_watermark: {end // 2}", out), out
    assert tools.end_offsets(topic_name, "-2") == {p: end // 2 for p, end in latest.items()}
    assert tools.end_offsets(topic_name) == latest, "the log end does not move"


def test_producer_and_consumer_perf_tests(tools, module_broker, topic_name):
    create_topic(module_broker, topic_name, partitions=3)
    records = 20_000
    out = tools.producer_perf("--topic", topic_name, "--num-records", str(records), "--record-size", "512",
                              "--throughput", "-1", "--command-property", "acks=all", "compression.type=lz4").stdout
    # A slow run prints progress lines ("N records sent" every 5 s) before the final summary.
    sent = re.findall(r"^(\d+) records sent, [\d.]+ records/sec", out, re.M)
    assert sent and int(sent[-1]) == records, out
    assert sum(tools.end_offsets(topic_name).values()) == records, "every record is in the log"

    out = tools.consumer_perf("--topic", topic_name, "--num-records", str(records), "--timeout", "60000").stdout
    rows = [line.split(", ") for line in lines(out)]
    header = next(r for r in rows if "data.consumed.in.nMsg" in r)
    values = rows[rows.index(header) + 1]
    consumed = int(values[header.index("data.consumed.in.nMsg")])
    assert consumed == records, out

    # The perf producer is idempotent (Kafka's default): each partition knows it.
    described = tools.transactions("describe-producers", "--topic", topic_name, "--partition", "0").stdout
    producers = [line.split() for line in lines(described)[1:]]
    assert len(producers) == 1, described
    producer_id, epoch, coordinator_epoch, last_sequence = producers[0][:4]
    assert int(producer_id) >= 0 and int(epoch) >= 0 and coordinator_epoch == "-1", described
    assert int(last_sequence) == tools.end_offsets(topic_name)[0] - 1, \
        "one producer wrote the partition from sequence 0, so its last sequence is the last offset"


# -- log dirs, leader elections --------------------------------------------------

def test_log_dirs_reports_the_data_dir_and_partition_sizes(tools, module_broker, broker_kind, topic_name):
    create_topic(module_broker, topic_name, partitions=2)
    produce_lines(tools, topic_name, [f"row-{i}-" + "x" * 100 for i in range(30)])
    out = tools.log_dirs("--describe", "--topic-list", topic_name).stdout
    report = json.loads(next(line for line in lines(out) if line.startswith("{")))
    (broker,) = report["brokers"]
    (log_dir,) = broker["logDirs"]
    assert log_dir["error"] is None, log_dir
    # Silt's log dir is its data dir; tests/kafka/kafka gives Kafka <data dir>/logs.
    expected = Path(module_broker.data_dir) / ("logs" if broker_kind == "kafka" else "")
    assert Path(log_dir["logDir"]).resolve() == expected.resolve()
    sizes = {p["partition"]: p["size"] for p in log_dir["partitions"]}
    assert set(sizes) == {f"{topic_name}-0", f"{topic_name}-1"}, sizes
    on_disk = {f"{topic_name}-{p}": sum(f.stat().st_size for f in (expected / f"{topic_name}-{p}").glob("*.log"))
               for p in (0, 1)}
    assert sizes == on_disk, "each partition's size is its segments' bytes"
    assert sum(sizes.values()) > 30 * 100
    assert all(p["offsetLag"] == 0 and p["isFuture"] is False for p in log_dir["partitions"])


def test_leader_election_finds_nothing_to_do(tools, module_broker, topic_name):
    create_topic(module_broker, topic_name, partitions=2)
    out = tools.leader_election("--election-type", "preferred", "--topic", topic_name, "--partition", "1").stdout
    assert f"Valid replica already elected for partitions {topic_name}-1" in out, out
    out = tools.leader_election("--election-type", "unclean", "--topic", topic_name, "--partition", "0").stdout
    assert f"Valid replica already elected for partitions {topic_name}-0" in out, out
    everything = tools.leader_election("--election-type", "preferred", "--all-topic-partitions")
    assert "Error" not in everything.stdout + everything.stderr, everything
    missing = tools.leader_election("--election-type", "preferred", "--topic", topic_name, "--partition", "7",
                                    check=False)
    assert missing.returncode != 0 and "UnknownTopicOrPartitionException" in missing.stdout + missing.stderr, missing


def test_metadata_quorum_describes_the_single_voter(tools):
    status = tools.metadata_quorum("describe", "--status").stdout
    fields = dict(line.split(":", 1) for line in lines(status) if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    leader = int(fields["LeaderId"])
    assert leader >= 0 and int(fields["LeaderEpoch"]) >= 1 and int(fields["HighWatermark"]) > 0, status
    voters = json.loads(fields["CurrentVoters"])
    assert [v["id"] for v in voters] == [leader], status
    assert fields["CurrentObservers"] == "[]", status
    replication = lines(tools.metadata_quorum("describe", "--replication").stdout)
    assert replication[0].split()[:2] == ["NodeId", "DirectoryId"], replication
    leader_rows = [r.split() for r in replication[1:] if r.split()[0] == str(leader)]
    assert len(leader_rows) == 1 and "Leader" in leader_rows[0], replication


def test_broker_api_versions_lists_what_the_tools_use(tools):
    out = tools.broker_api_versions().stdout
    for api in ("AlterConfigs(33)", "DescribeLogDirs(35)", "ElectLeaders(43)", "DescribeProducers(61)",
                "OffsetForLeaderEpoch(23)", "IncrementalAlterConfigs(44)", "DescribeQuorum(55)"):
        assert re.search(rf"{re.escape(api)}: \d+( to \d+)? \[usable: \d+\]", out), f"{api} not usable:\n{out}"
