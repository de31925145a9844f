"""The legacy AlterConfigs API (key 33) through the clients that still send
it: kafka-python's KafkaAdminClient.alter_configs and confluent-kafka's
(librdkafka's) AdminClient.alter_configs. Kafka's semantics are
replace-all: the configs sent become all of the resource's overrides."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

from silt_harness import admin_client, create_topic, describe_topic_configs, future_result, kafka_python_kwargs

INVALID_CONFIG = 40
INVALID_REQUEST = 42
UNKNOWN_TOPIC_OR_PARTITION = 3


def overrides(broker, topic: str) -> dict[str, str]:
    """The topic's dynamic (topic-level) configs."""
    entries = describe_topic_configs(broker, topic)
    dynamic = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    return {name: e.value for name, e in entries.items() if int(getattr(e.source, "value", e.source)) == dynamic}


@pytest.fixture
def kp_admin(broker):
    from kafka.admin import KafkaAdminClient
    client = KafkaAdminClient(**kafka_python_kwargs(broker, client_id="silt-tests-legacy-configs"))
    yield client
    client.close()


def kp_alter(kp_admin, resources: list) -> list[tuple[str, int]]:
    """kafka-python's alter_configs: (resource name, error code) per resource."""
    response = kp_admin.alter_configs(resources)
    return [(r[3], r[0]) for r in response.resources]


def test_kafka_python_alter_configs_replaces_all_overrides(broker, kp_admin, topic_name):
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType
    create_topic(broker, topic_name, partitions=1, config={"retention.ms": "3600000", "segment.ms": "7200000"})
    assert overrides(broker, topic_name) == {"retention.ms": "3600000", "segment.ms": "7200000"}

    result = kp_alter(kp_admin, [KpResource(ConfigResourceType.TOPIC, topic_name, configs={"segment.ms": "900000"}),
                                 KpResource(ConfigResourceType.TOPIC, f"{topic_name}-missing",
                                            configs={"segment.ms": "900000"})])
    assert result == [(topic_name, 0), (f"{topic_name}-missing", UNKNOWN_TOPIC_OR_PARTITION)]
    assert overrides(broker, topic_name) == {"segment.ms": "900000"}, "retention.ms was left out, so it is gone"

    result = kp_alter(kp_admin, [KpResource(ConfigResourceType.TOPIC, topic_name, configs={"retention.ms": "soon"})])
    assert result == [(topic_name, INVALID_CONFIG)]
    assert overrides(broker, topic_name) == {"segment.ms": "900000"}, "a refused request changes nothing"

    result = kp_alter(kp_admin, [KpResource(ConfigResourceType.TOPIC, topic_name, configs={})])
    assert result == [(topic_name, 0)]
    assert overrides(broker, topic_name) == {}, "an empty set removes every override"


def test_confluent_alter_configs_replaces_all_and_honours_validate_only(broker, topic_name):
    create_topic(broker, topic_name, partitions=1, config={"retention.ms": "3600000"})
    admin = admin_client(broker)

    resource = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"max.message.bytes": "2000000"})
    futures = admin.alter_configs([resource], validate_only=True, request_timeout=30)
    future_result(futures[resource], "AlterConfigs validate_only")
    assert overrides(broker, topic_name) == {"retention.ms": "3600000"}, "validate_only changes nothing"

    resource = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"max.message.bytes": "2000000"})
    futures = admin.alter_configs([resource], request_timeout=30)
    future_result(futures[resource], "AlterConfigs")
    assert overrides(broker, topic_name) == {"max.message.bytes": "2000000"}

    bad = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"no.such.config": "1"})
    futures = admin.alter_configs([bad], request_timeout=30)
    with pytest.raises(KafkaException) as excinfo:
        future_result(futures[bad], "AlterConfigs of an unknown config")
    assert excinfo.value.args[0].code() == INVALID_CONFIG, excinfo.value
    assert overrides(broker, topic_name) == {"max.message.bytes": "2000000"}


def test_legacy_alter_configs_of_the_broker(broker, kp_admin):
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType
    # Silt's broker settings come from its configuration file: nothing is
    # dynamic, so "replace every dynamic setting with none" succeeds and
    # setting one is refused, as Kafka refuses a static broker config.
    assert kp_alter(kp_admin, [KpResource(ConfigResourceType.BROKER, "0", configs={})]) == [("0", 0)]
    refused = kp_alter(kp_admin, [KpResource(ConfigResourceType.BROKER, "0", configs={"log.dirs": "/elsewhere"})])
    assert refused == [("0", INVALID_REQUEST)]
    other = kp_alter(kp_admin, [KpResource(ConfigResourceType.BROKER, "7", configs={})])
    assert other == [("7", INVALID_REQUEST)], "another broker's id"
