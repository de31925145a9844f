"""Topic administration through confluent-kafka's AdminClient, kafka-python's
KafkaAdminClient and kcat: create/list/describe/configs/partitions/delete and
the error codes Kafka returns for bad requests."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, ResourceType)

from kafka_wire import ApiKey, RawConnection, Reader, Writer, api_versions_v0, request_frame, require_version
from silt_harness import (CLIENT_TIMEOUT_S, admin_client, create_topic, describe_topic_configs,
                          future_result, kafka_python_kwargs, wait_for_partitions, wait_until)

DEFAULT_MAX_MESSAGE_BYTES = "1048588"


# -- helpers -----------------------------------------------------------------

def expect_kafka_error(fut, code: int, what: str):
    """The admin future must fail with exactly Kafka error `code`."""
    with pytest.raises(KafkaException) as excinfo:
        future_result(fut, what)
    err = excinfo.value.args[0]
    assert err.code() == code, f"{what}: expected {KafkaError(code).name()} ({code}), got {err}"


def source(entry) -> int:
    """ConfigEntry.source as an int (the C layer may hand back an int or the enum)."""
    return int(getattr(entry.source, "value", entry.source))


DYNAMIC_TOPIC_CONFIG = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def partition_count(broker, topic: str) -> int:
    md = admin_client(broker).list_topics(topic=topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, f"metadata error for {topic}: {t.error}"
    return len(t.partitions)


def kp_admin(broker):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(**kafka_python_kwargs(broker, client_id="silt-tests-kp-admin"))


def kp_topic_configs(kp, topic: str) -> dict[str, dict]:
    from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType
    responses = kp.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, topic)])
    out = {}
    for resp in responses:
        for res in resp.to_object()["resources"]:
            assert res["error_code"] == 0, f"DescribeConfigs({topic}) error {res}"
            for entry in res["config_entries"]:
                out[entry["config_names"]] = entry
    return out


# -- confluent-kafka AdminClient ---------------------------------------------

def test_confluent_create_list_describe_delete(module_broker, topic_name):
    admin = admin_client(module_broker)
    fs = admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=1,
                                       config={"retention.ms": "3600000",
                                               "segment.bytes": "1048576"})])
    future_result(fs[topic_name], "CreateTopics")
    wait_for_partitions(module_broker, topic_name, 3)

    md = admin.list_topics(timeout=10)
    assert topic_name in md.topics, f"{topic_name} missing from list_topics: {sorted(md.topics)}"
    assert list(md.brokers) == [0], f"expected exactly node 0, got {md.brokers}"
    b0 = md.brokers[0]
    assert (b0.host, b0.port) == module_broker.kafka_addr, \
        f"metadata advertises {b0.host}:{b0.port}, broker bound {module_broker.bootstrap}"
    parts = md.topics[topic_name].partitions
    assert sorted(parts) == [0, 1, 2]
    for p in parts.values():
        assert p.leader == 0 and list(p.replicas) == [0] and list(p.isrs) == [0], \
            f"partition {p.id}: leader {p.leader} replicas {p.replicas} isr {p.isrs}"

    fs = admin.delete_topics([topic_name], operation_timeout=30)
    future_result(fs[topic_name], "DeleteTopics")
    wait_until(lambda: topic_name not in admin.list_topics(timeout=10).topics, CLIENT_TIMEOUT_S,
               f"{topic_name} to disappear from metadata after DeleteTopics")


def test_confluent_describe_configs_shows_set_and_default_values(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1, {"retention.ms": "3600000"})
    configs = describe_topic_configs(module_broker, topic_name)

    retention = configs.get("retention.ms")
    assert retention is not None, f"retention.ms missing from {sorted(configs)}"
    assert retention.value == "3600000"
    assert not retention.is_default
    assert source(retention) == DYNAMIC_TOPIC_CONFIG, \
        f"retention.ms set at creation should be DYNAMIC_TOPIC_CONFIG, got {retention.source}"

    for name, value in (("cleanup.policy", "delete"), ("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES)):
        entry = configs.get(name)
        assert entry is not None, f"{name} missing from DescribeConfigs: {sorted(configs)}"
        assert entry.value == value, f"{name} = {entry.value!r}, expected default {value!r}"
        assert source(entry) != DYNAMIC_TOPIC_CONFIG, \
            f"{name} was not set on the topic but is reported as a topic override"
    for name in ("segment.bytes", "segment.ms", "retention.bytes", "message.timestamp.type",
                 "min.insync.replicas", "flush.messages", "flush.ms"):
        assert name in configs, f"{name} missing from DescribeConfigs: {sorted(configs)}"


def test_broker_default_segment_bytes_is_reported(broker_factory, topic_name):
    broker = broker_factory({"SILT_LOG__SEGMENT_BYTES": "67108864"})
    create_topic(broker, topic_name, 1)
    entry = describe_topic_configs(broker, topic_name)["segment.bytes"]
    assert entry.value == "67108864", f"segment.bytes = {entry.value!r}, broker default is 67108864"
    assert source(entry) != DYNAMIC_TOPIC_CONFIG


def test_confluent_incremental_alter_configs(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    admin = admin_client(module_broker)
    default_retention = describe_topic_configs(module_broker, topic_name)["retention.ms"].value

    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
    ])
    future_result(admin.incremental_alter_configs([res])[res], "IncrementalAlterConfigs SET")
    configs = describe_topic_configs(module_broker, topic_name)
    assert configs["retention.ms"].value == "7200000"
    assert source(configs["retention.ms"]) == DYNAMIC_TOPIC_CONFIG
    assert configs["max.message.bytes"].value == "2000000"

    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    future_result(admin.incremental_alter_configs([res])[res], "IncrementalAlterConfigs DELETE")
    configs = describe_topic_configs(module_broker, topic_name)
    assert configs["retention.ms"].value == default_retention, \
        "DELETE of a topic override should restore the default"
    assert source(configs["retention.ms"]) != DYNAMIC_TOPIC_CONFIG
    assert configs["max.message.bytes"].value == "2000000", "untouched override was lost"


def test_confluent_incremental_alter_invalid_value(module_broker, topic_name):
    create_topic(module_broker, topic_name, 1)
    admin = admin_client(module_broker)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    expect_kafka_error(admin.incremental_alter_configs([res])[res], KafkaError.INVALID_CONFIG,
                       "IncrementalAlterConfigs retention.ms=not-a-number")
    assert describe_topic_configs(module_broker, topic_name)["retention.ms"].value != "not-a-number"


def test_confluent_create_partitions(module_broker, topic_name):
    create_topic(module_broker, topic_name, 2)
    admin = admin_client(module_broker)
    fs = admin.create_partitions([NewPartitions(topic_name, 5)])
    future_result(fs[topic_name], "CreatePartitions 2 -> 5")
    wait_for_partitions(module_broker, topic_name, 5)

    fs = admin.create_partitions([NewPartitions(topic_name, 3)])
    expect_kafka_error(fs[topic_name], KafkaError.INVALID_PARTITIONS, "CreatePartitions 5 -> 3 (shrink)")
    assert partition_count(module_broker, topic_name) == 5

    fs = admin.create_partitions([NewPartitions(topic_name + "-missing", 3)])
    expect_kafka_error(fs[topic_name + "-missing"], KafkaError.UNKNOWN_TOPIC_OR_PART,
                       "CreatePartitions on an unknown topic")


def test_confluent_create_errors(module_broker, topic_name):
    admin = admin_client(module_broker)
    create_topic(module_broker, topic_name, 1)

    fs = admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
    expect_kafka_error(fs[topic_name], KafkaError.TOPIC_ALREADY_EXISTS, "CreateTopics of an existing topic")

    for rf in (3, 0):
        t = f"{topic_name}-rf{rf}"
        fs = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=rf)])
        expect_kafka_error(fs[t], KafkaError.INVALID_REPLICATION_FACTOR, f"CreateTopics replication_factor={rf}")

    for suffix, config in (("-badretention", {"retention.ms": "forever"}),
                           ("-unknowncfg", {"no.such.config": "1"}),
                           ("-badtstype", {"message.timestamp.type": "WallClock"})):
        t = topic_name + suffix
        fs = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1, config=config)])
        expect_kafka_error(fs[t], KafkaError.INVALID_CONFIG, f"CreateTopics with {config}")

    t = topic_name + "-zero"
    fs = admin.create_topics([NewTopic(t, num_partitions=0, replication_factor=1)])
    expect_kafka_error(fs[t], KafkaError.INVALID_PARTITIONS, "CreateTopics num_partitions=0")

    created = admin.list_topics(timeout=10).topics
    leaked = [t for t in created if t.startswith(topic_name + "-")]
    assert not leaked, f"failed CreateTopics still created {leaked}"


def test_compacted_topics_are_created(module_broker, topic_name):
    admin = admin_client(module_broker)  # must outlive the future
    fs = admin.create_topics(
        [NewTopic(topic_name, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"})])
    future_result(fs[topic_name], "CreateTopics with cleanup.policy=compact")
    assert describe_topic_configs(module_broker, topic_name)["cleanup.policy"].value == "compact"


def test_confluent_delete_unknown_topic(module_broker, topic_name):
    admin = admin_client(module_broker)
    fs = admin.delete_topics([topic_name + "-never-created"], operation_timeout=30)
    expect_kafka_error(fs[topic_name + "-never-created"], KafkaError.UNKNOWN_TOPIC_OR_PART,
                       "DeleteTopics of an unknown topic")


def test_confluent_describe_cluster(module_broker):
    admin = admin_client(module_broker)
    desc = future_result(admin.describe_cluster(request_timeout=30), "DescribeCluster")
    assert [n.id for n in desc.nodes] == [0], f"nodes {desc.nodes}"
    node = desc.nodes[0]
    assert (node.host, node.port) == module_broker.kafka_addr
    assert desc.controller is not None and desc.controller.id == 0, f"controller {desc.controller}"
    assert desc.cluster_id, "DescribeCluster returned no cluster id"


def test_metadata_reports_leaders_replicas_and_isr(module_broker, topic_name):
    """Every partition of a single broker is led by it, with it as the only
    replica and ISR member, as a one-broker Kafka answers."""
    create_topic(module_broker, topic_name, 3)
    md = admin_client(module_broker).list_topics(topic_name, timeout=CLIENT_TIMEOUT_S)
    assert list(md.brokers) == [0], f"brokers {md.brokers}"
    assert (md.brokers[0].host, md.brokers[0].port) == module_broker.kafka_addr
    assert md.controller_id == 0
    partitions = md.topics[topic_name].partitions
    assert sorted(partitions) == [0, 1, 2]
    for p in partitions.values():
        assert (p.error, p.leader, p.replicas, p.isrs) == (None, 0, [0], [0]), f"partition {p.id}: {p}"


def test_replication_factor_above_the_broker_count_names_both(module_broker, topic_name):
    """INVALID_REPLICATION_FACTOR names the factor asked for and the brokers
    available (Kafka's wording differs between ZooKeeper and KRaft; both do)."""
    admin = admin_client(module_broker)
    fs = admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=3)])
    with pytest.raises(KafkaException) as excinfo:
        future_result(fs[topic_name], "CreateTopics replication_factor=3")
    err = excinfo.value.args[0]
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err
    assert re.search(r"\b3\b", err.str()) and re.search(r"\b1\b", err.str()), f"message {err.str()!r}"


def test_topic_recreated_after_delete_is_empty(module_broker, topic_name):
    """A deleted topic's data must not resurface in a new topic of the same name."""
    from confluent_kafka import Producer
    from silt_harness import DeliveryTracker, confluent_conf, produce_all, watermarks
    create_topic(module_broker, topic_name, 1)
    tracker = DeliveryTracker()
    produce_all(Producer(confluent_conf(module_broker, acks="all")), topic_name,
                ({"id": i, "value": b"old-%d" % i, "partition": 0} for i in range(10)), tracker)
    assert not tracker.failed
    admin = admin_client(module_broker)
    future_result(admin.delete_topics([topic_name])[topic_name], "DeleteTopics")
    wait_until(lambda: topic_name not in admin.list_topics(timeout=10).topics, CLIENT_TIMEOUT_S,
               f"{topic_name} to disappear after DeleteTopics")
    create_topic(module_broker, topic_name, 1)
    assert watermarks(module_broker, topic_name, 0) == (0, 0), \
        "a re-created topic still has the old topic's records"


def test_metadata_tolerates_trailing_bytes_like_kafka(module_broker):
    """librdkafka 2.x (confluent-kafka 2.16) encodes a flexible all-topics
    Metadata request with 3 stale bytes between the null topic array and the
    rest of the body. Apache Kafka does not check for unread bytes after a
    request body, so librdkafka works against it; a broker that rejects the
    request breaks AdminClient.list_topics()."""
    with RawConnection(module_broker.kafka_addr) as conn:
        _, versions = api_versions_v0(conn)
        require_version(versions, ApiKey.METADATA, 12)
        version = min(versions[ApiKey.METADATA][1], 13)
        # null topics, 3 stale bytes, allow_auto_topic_creation, include_topic_authorized_operations, tags
        body = bytes([0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])
        corr = conn.next_correlation_id()
        conn.send(request_frame(ApiKey.METADATA, version, corr, body, header_version=2))
        try:
            r = Reader(conn.read_frame(10))
        except Exception as e:
            raise AssertionError(f"Metadata v{version} as librdkafka sends it for all topics was not "
                                 f"answered: {e!r}") from None
    assert r.int32() == corr
    r.tagged_fields()  # response header v1
    r.int32()  # throttle_time_ms
    brokers = r.uvarint() - 1
    assert brokers == 1, f"{brokers} brokers in Metadata response"
    assert r.int32() == 0, "node id"


def test_metadata_reports_authorized_operations_when_asked(module_broker, topic_name):
    """Metadata v8+ with include_*_authorized_operations=true: Kafka without an
    authorizer answers a bitfield of every operation the resource supports
    (KIP-430); INT32_MIN means "not requested". kafka-python's
    KafkaAdminClient (list_topics, describe_topics) asks for them and fails
    on INT32_MIN."""
    create_topic(module_broker, topic_name, 1)
    with RawConnection(module_broker.kafka_addr) as conn:
        _, versions = api_versions_v0(conn)
        require_version(versions, ApiKey.METADATA, 8)
        body = Writer().int32(1).string(topic_name).int8(0).int8(1).int8(1).bytes()
        r = conn.request(ApiKey.METADATA, 8, body)
    r.int32()  # throttle
    for _ in range(r.int32()):
        r.int32(), r.string(), r.int32(), r.string()
    r.string()  # cluster id
    r.int32()  # controller
    topic_ops = {}
    for _ in range(r.int32()):
        r.int16()
        name = r.string()
        r.int8()
        for _ in range(r.int32()):
            r.int16(), r.int32(), r.int32(), r.int32()
            for _ in range(3):
                for _ in range(r.int32()):
                    r.int32()
        topic_ops[name] = r.int32()
    cluster_ops = r.int32()
    int32_min = -2**31

    def bits(v):
        return {b for b in range(32) if v & (1 << b)}
    READ, WRITE, DESCRIBE = 3, 4, 8
    assert topic_ops.get(topic_name, int32_min) != int32_min, \
        f"topic_authorized_operations not filled in although requested: {topic_ops}"
    ops = bits(topic_ops[topic_name])
    assert {READ, WRITE, DESCRIBE} <= ops and not ops & {0, 1, 2, 31}, \
        f"topic_authorized_operations bits {sorted(ops)}"
    assert cluster_ops != int32_min, "cluster_authorized_operations not filled in although requested"
    assert DESCRIBE in bits(cluster_ops) and not bits(cluster_ops) & {0, 1, 2, 31}, \
        f"cluster_authorized_operations bits {sorted(bits(cluster_ops))}"


# -- topic auto-creation ------------------------------------------------------

def test_metadata_auto_creates_topics_with_default_partitions(broker_factory, topic_name):
    broker = broker_factory({"SILT_LOG__NUM_PARTITIONS": "3"})
    admin = admin_client(broker)
    # librdkafka's list_topics(topic=...) asks Metadata with auto-creation allowed.
    wait_until(lambda: len(admin.list_topics(topic=topic_name, timeout=5).topics[topic_name].partitions) == 3,
               CLIENT_TIMEOUT_S, f"Metadata to auto-create {topic_name} with 3 partitions")


def test_create_topic_with_broker_default_partitions_and_replication(broker_factory, topic_name):
    """num_partitions=-1 and replication_factor=-1 mean "broker default" (KIP-464)."""
    broker = broker_factory({"SILT_LOG__NUM_PARTITIONS": "3"})
    admin = admin_client(broker)
    fs = admin.create_topics([NewTopic(topic_name, num_partitions=-1, replication_factor=-1)])
    future_result(fs[topic_name], "CreateTopics with -1/-1")
    wait_for_partitions(broker, topic_name, 3)


def test_auto_create_disabled(broker_factory, topic_name):
    broker = broker_factory({"SILT_LOG__AUTO_CREATE_TOPICS": "false"})
    md = admin_client(broker).list_topics(topic=topic_name, timeout=10)
    t = md.topics.get(topic_name)
    assert t is not None and t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, \
        f"with auto-creation disabled, Metadata for {topic_name} should be UNKNOWN_TOPIC_OR_PARTITION: {t and t.error}"
    assert topic_name not in admin_client(broker).list_topics(timeout=10).topics


# -- kafka-python KafkaAdminClient --------------------------------------------

def test_kafka_python_admin_lifecycle(module_broker, topic_name):
    from kafka.admin import NewPartitions as KpNewPartitions, NewTopic as KpNewTopic
    kp = kp_admin(module_broker)
    try:
        kp.create_topics([KpNewTopic(topic_name, num_partitions=2, replication_factor=1,
                                     topic_configs={"retention.ms": "86400000"})])
        wait_until(lambda: topic_name in kp.list_topics(), CLIENT_TIMEOUT_S,
                   f"kafka-python list_topics to include {topic_name}")
        (desc,) = kp.describe_topics([topic_name])
        assert desc["error_code"] == 0, desc
        assert sorted(p["partition"] for p in desc["partitions"]) == [0, 1]

        configs = kp_topic_configs(kp, topic_name)
        assert configs["retention.ms"]["config_value"] == "86400000"
        assert configs["cleanup.policy"]["config_value"] == "delete"
        assert configs["max.message.bytes"]["config_value"] == DEFAULT_MAX_MESSAGE_BYTES

        kp.create_partitions({topic_name: KpNewPartitions(total_count=4)})
        wait_until(lambda: len(kp.describe_topics([topic_name])[0]["partitions"]) == 4,
                   CLIENT_TIMEOUT_S, f"{topic_name} to have 4 partitions (kafka-python)")

        kp.delete_topics([topic_name])
        wait_until(lambda: topic_name not in kp.list_topics(), CLIENT_TIMEOUT_S,
                   f"{topic_name} to disappear (kafka-python)")
    finally:
        kp.close()


def test_kafka_python_admin_errors(module_broker, topic_name):
    from kafka.admin import NewTopic as KpNewTopic
    from kafka.errors import (InvalidConfigurationError, InvalidReplicationFactorError,
                              TopicAlreadyExistsError, UnknownTopicOrPartitionError)
    kp = kp_admin(module_broker)
    try:
        kp.create_topics([KpNewTopic(topic_name, num_partitions=1, replication_factor=1)])
        with pytest.raises(TopicAlreadyExistsError):
            kp.create_topics([KpNewTopic(topic_name, num_partitions=1, replication_factor=1)])
        with pytest.raises(InvalidReplicationFactorError):
            kp.create_topics([KpNewTopic(topic_name + "-rf3", num_partitions=1, replication_factor=3)])
        with pytest.raises(InvalidConfigurationError):
            kp.create_topics([KpNewTopic(topic_name + "-bad", num_partitions=1, replication_factor=1,
                                         topic_configs={"segment.bytes": "-5"})])
        with pytest.raises(UnknownTopicOrPartitionError):
            kp.delete_topics([topic_name + "-never-created"])
    finally:
        kp.close()


# -- kcat -----------------------------------------------------------------------

def test_kcat_lists_broker_and_topics(module_broker, topic_name):
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (tests/run installs it with apt-get)"
    create_topic(module_broker, topic_name, 4)
    out = subprocess.run([kcat, "-L", "-b", module_broker.bootstrap, "-m", "30"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kcat -L failed ({out.returncode}): {out.stderr}"
    text = out.stdout
    assert re.search(r"^\s*1 brokers:", text, re.M), text
    assert re.search(rf"broker 0 at {re.escape(module_broker.bootstrap)}", text), text
    assert re.search(rf'topic "{re.escape(topic_name)}" with 4 partitions', text), text
