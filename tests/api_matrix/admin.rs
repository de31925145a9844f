//! Checks of the admin APIs a Kafka operator's tools use beyond topics and
//! groups: the legacy AlterConfigs, log directories, leader elections,
//! leader-epoch end offsets, idempotent producers and removing a broker.

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::alter_replica_log_dirs_request::{AlterReplicaLogDir, AlterReplicaLogDirTopic};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::*;

use super::*;

/// Kafka's error codes these checks expect.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const REPLICA_NOT_AVAILABLE: i16 = 9;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const LOG_DIR_NOT_FOUND: i16 = 57;
const BROKER_ID_NOT_REGISTERED: i16 = 102;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const ELECTION_NOT_NEEDED: i16 = 84;

fn resource(resource_type: i8, name: &str, configs: &[(&str, Option<&str>)]) -> AlterConfigsResource {
    AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(str_bytes(name))
        .with_configs(configs.iter().map(|&(k, v)| AlterableConfig::default().with_name(str_bytes(k)).with_value(v.map(str_bytes))).collect())
}

/// The topic's dynamic (topic-level) overrides, by DescribeConfigs.
fn overrides(client: &mut Client, topic: &str) -> Vec<(String, String)> {
    let request = DescribeConfigsRequest::default().with_resources(vec![describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes(topic))
        .with_configuration_keys(None)]);
    let response = client.must(&request, 4);
    assert_eq!(response.results[0].error_code, 0, "describe {topic}: error {}", code_name(response.results[0].error_code));
    let mut out: Vec<(String, String)> = response.results[0]
        .configs
        .iter()
        .filter(|c| c.config_source == 1) // DYNAMIC_TOPIC_CONFIG
        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

pub(super) fn check_alter_configs(broker: &Broker, m: &Matrix, version: i16) {
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-ac-v{version}"));
    reference.create_topic_ok(&name, 1);
    let missing = unknown_topic("legacy-alter-configs", version);
    let mut client = broker.client();
    let alter = |client: &mut Client, resources: Vec<AlterConfigsResource>, validate_only: bool| {
        let response = client.must(&AlterConfigsRequest::default().with_resources(resources.clone()).with_validate_only(validate_only), version);
        assert_eq!(response.responses.len(), resources.len(), "one result per resource");
        for (result, asked) in response.responses.iter().zip(&resources) {
            assert_eq!((result.resource_type, &result.resource_name), (asked.resource_type, &asked.resource_name), "results in request order");
        }
        response.responses.iter().map(|r| r.error_code).collect::<Vec<i16>>()
    };

    let first = [("retention.ms", Some("3600000")), ("segment.ms", Some("7200000"))];
    assert_eq!(
        alter(&mut client, vec![resource(RESOURCE_TOPIC, &name, &first), resource(RESOURCE_TOPIC, &missing, &first)], false),
        vec![0, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(overrides(&mut reference, &name), pairs(&[("retention.ms", "3600000"), ("segment.ms", "7200000")]));

    // Replace-all: what the request leaves out is removed.
    let second = [("segment.ms", Some("900000"))];
    assert_eq!(alter(&mut client, vec![resource(RESOURCE_TOPIC, &name, &second)], true), vec![0], "validate_only");
    assert_eq!(overrides(&mut reference, &name), pairs(&[("retention.ms", "3600000"), ("segment.ms", "7200000")]), "validate_only changes nothing");
    assert_eq!(alter(&mut client, vec![resource(RESOURCE_TOPIC, &name, &second)], false), vec![0]);
    assert_eq!(overrides(&mut reference, &name), pairs(&[("segment.ms", "900000")]), "replace-all keeps only what was sent");

    // Each resource stands alone; a refused one changes nothing.
    let twice = vec![resource(RESOURCE_TOPIC, &name, &[("retention.ms", Some("soon"))]), resource(RESOURCE_TOPIC, &name, &[("retention.ms", Some("1000"))])];
    assert_eq!(alter(&mut client, twice, false), vec![INVALID_REQUEST, INVALID_REQUEST], "a resource named twice");
    let null = vec![resource(RESOURCE_TOPIC, &name, &[("retention.ms", None)]), resource(RESOURCE_TOPIC, &missing, &second)];
    assert_eq!(alter(&mut client, null, false), vec![INVALID_REQUEST, UNKNOWN_TOPIC_OR_PARTITION], "a null value");
    let repeated = vec![resource(RESOURCE_TOPIC, &name, &[("retention.ms", Some("1")), ("retention.ms", Some("2"))])];
    assert_eq!(alter(&mut client, repeated, false), vec![INVALID_REQUEST], "a repeated key");
    let bad_value = alter(&mut client, vec![resource(RESOURCE_TOPIC, &name, &[("retention.ms", Some("soon"))])], false);
    assert_eq!(bad_value, vec![INVALID_CONFIG], "an unparsable value");
    let unknown_key = alter(&mut client, vec![resource(RESOURCE_TOPIC, &name, &[("no.such.config", Some("1"))])], false);
    assert_eq!(unknown_key, vec![INVALID_CONFIG], "an unknown topic config");
    assert_eq!(overrides(&mut reference, &name), pairs(&[("segment.ms", "900000")]), "refused requests change nothing");

    // The broker: no dynamic configs to replace; its settings are static.
    let node = m.node_id.to_string();
    let codes = alter(
        &mut client,
        vec![
            resource(RESOURCE_BROKER, &node, &[]),
            resource(RESOURCE_BROKER, "", &[("log.retention.ms", Some("1000"))]),
            resource(RESOURCE_BROKER, "not-a-number", &[]),
            resource(RESOURCE_BROKER, &(m.node_id + 1).to_string(), &[]),
        ],
        false,
    );
    assert_eq!(codes, vec![0, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST], "broker resources");
}

pub(super) fn check_describe_log_dirs(broker: &Broker, m: &Matrix, version: i16) {
    let dir = std::fs::canonicalize(broker.data_dir()).expect("the data dir exists");
    let mut client = broker.client();
    let asked = DescribeLogDirsRequest::default().with_topics(Some(vec![
        DescribableLogDirTopic::default().with_topic(topic_name(&m.topic)).with_partitions(vec![0, 7]),
        DescribableLogDirTopic::default().with_topic(topic_name(&unknown_topic("log-dirs", version))).with_partitions(vec![0]),
    ]));
    let response = client.must(&asked, version);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results.len(), 1, "one log dir");
    let result = &response.results[0];
    assert_eq!(result.error_code, 0, "log dir error {}", code_name(result.error_code));
    assert_eq!(std::fs::canonicalize(result.log_dir.as_str()).ok(), Some(dir), "the log dir is the data dir");
    let topics: Vec<&str> = result.topics.iter().map(|t| t.name.0.as_str()).collect();
    assert_eq!(topics, vec![m.topic.as_str()], "only hosted partitions that were asked for");
    let partitions = &result.topics[0].partitions;
    assert_eq!(partitions.iter().map(|p| p.partition_index).collect::<Vec<_>>(), vec![0]);
    assert!(partitions[0].partition_size > 0, "the seeded partition has {} bytes", partitions[0].partition_size);
    assert_eq!((partitions[0].offset_lag, partitions[0].is_future_key), (0, false));
    if version >= 4 {
        assert!(
            result.total_bytes > 0 && (0..=result.total_bytes).contains(&result.usable_bytes),
            "total {} usable {}",
            result.total_bytes,
            result.usable_bytes
        );
    }
    let all = client.must(&DescribeLogDirsRequest::default().with_topics(None), version);
    let names: Vec<&str> = all.results[0].topics.iter().map(|t| t.name.0.as_str()).collect();
    assert!(names.contains(&m.topic.as_str()) && names.contains(&"__consumer_offsets"), "all partitions: {names:?}");
}

pub(super) fn check_alter_replica_log_dirs(broker: &Broker, m: &Matrix, version: i16) {
    let dir = std::fs::canonicalize(broker.data_dir()).expect("the data dir exists");
    let missing = unknown_topic("alter-log-dirs", version);
    let move_to = |path: &str| {
        AlterReplicaLogDir::default().with_path(str_bytes(path)).with_topics(vec![
            AlterReplicaLogDirTopic::default().with_name(topic_name(&m.topic)).with_partitions(vec![0]),
            AlterReplicaLogDirTopic::default().with_name(topic_name(&missing)).with_partitions(vec![0]),
        ])
    };
    let elsewhere = dir.join("elsewhere");
    let request = AlterReplicaLogDirsRequest::default().with_dirs(vec![move_to(&dir.display().to_string()), move_to(&elsewhere.display().to_string())]);
    let response = broker.client().must(&request, version);
    let codes: Vec<(String, i16)> =
        response.results.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_name.0.to_string(), p.error_code))).collect();
    let expected =
        vec![(m.topic.clone(), 0), (missing.clone(), REPLICA_NOT_AVAILABLE), (m.topic.clone(), LOG_DIR_NOT_FOUND), (missing.clone(), LOG_DIR_NOT_FOUND)];
    assert_eq!(codes, expected, "the same dir, then another one");
}

pub(super) fn check_offset_for_leader_epoch(broker: &Broker, m: &Matrix, version: i16) {
    let mut reference = reference(broker);
    let log_end = reference.log_end_offset(&m.topic, 0);
    let ask = |current: i32, epoch: i32| OffsetForLeaderPartition::default().with_partition(0).with_current_leader_epoch(current).with_leader_epoch(epoch);
    let request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        OffsetForLeaderTopic::default().with_topic(topic_name(&m.topic)).with_partitions(vec![ask(-1, 0), ask(0, 0), ask(-1, 3), ask(1, 0), ask(-2, 0)]),
        OffsetForLeaderTopic::default().with_topic(topic_name(&unknown_topic("epochs", version))).with_partitions(vec![ask(-1, 0)]),
    ]);
    let response = broker.client().must(&request, version);
    let answers: Vec<(i16, i32, i64)> =
        response.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (p.error_code, p.leader_epoch, p.end_offset))).collect();
    let expected = vec![
        (0, 0, log_end),
        (0, 0, log_end),
        (0, -1, -1),
        (UNKNOWN_LEADER_EPOCH, -1, -1),
        (FENCED_LEADER_EPOCH, -1, -1),
        (UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
    ];
    assert_eq!(answers, expected, "epoch 0 ends at the log end offset ({log_end}); epoch 3 is unknown");
}

pub(super) fn check_elect_leaders(broker: &Broker, m: &Matrix, version: i16) {
    let missing = unknown_topic("elect", version);
    let named = ElectLeadersRequest::default().with_timeout_ms(30_000).with_topic_partitions(Some(vec![
        TopicPartitions::default().with_topic(topic_name(&m.topic)).with_partitions(vec![0, 9]),
        TopicPartitions::default().with_topic(topic_name(&missing)).with_partitions(vec![0]),
    ]));
    let mut client = broker.client();
    // v0 has no election type: it is a preferred election.
    let election_types: &[i8] = if version == 0 { &[0] } else { &[0, 1] };
    for &election_type in election_types {
        let response = client.must(&named.clone().with_election_type(election_type), version);
        assert_eq!(response.error_code, 0);
        let codes: Vec<(String, i32, i16)> = response
            .replica_election_results
            .iter()
            .flat_map(|t| t.partition_result.iter().map(move |p| (t.topic.0.to_string(), p.partition_id, p.error_code)))
            .collect();
        let expected =
            vec![(m.topic.clone(), 0, ELECTION_NOT_NEEDED), (m.topic.clone(), 9, UNKNOWN_TOPIC_OR_PARTITION), (missing.clone(), 0, UNKNOWN_TOPIC_OR_PARTITION)];
        assert_eq!(codes, expected, "election type {election_type}");
    }
    let all = client.must(&ElectLeadersRequest::default().with_timeout_ms(30_000).with_topic_partitions(None), version);
    assert!(all.replica_election_results.iter().any(|t| t.topic.0.as_str() == m.topic), "every topic is listed");
    assert!(all.replica_election_results.iter().all(|t| t.partition_result.is_empty()), "partitions that need no election are left out");
}

pub(super) fn check_describe_producers(broker: &Broker, version: i16) {
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-producers-v{version}"));
    reference.create_topic_ok(&name, 2);
    let (id, epoch) = reference.init_producer_id();
    let producer = Producer { id, epoch };
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
    let before = now_ms();
    for (base_sequence, count) in [(0, 3), (3, 2)] {
        let values = values("idempotent", count);
        let written = reference.produce(&name, 0, batch(&as_slices(&values), producer, base_sequence));
        assert_eq!(written.error_code, 0, "idempotent produce: error {}", code_name(written.error_code));
    }
    let request = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default().with_name(topic_name(&name)).with_partition_indexes(vec![0, 1, 5]),
        TopicRequest::default().with_name(topic_name(&unknown_topic("producers", version))).with_partition_indexes(vec![0]),
    ]);
    let response = broker.client().must(&request, version);
    let partitions: Vec<_> = response.topics.iter().flat_map(|t| t.partitions.iter()).collect();
    let codes: Vec<i16> = partitions.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, vec![0, 0, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_OR_PARTITION]);
    let active = &partitions[0].active_producers;
    assert_eq!(active.len(), 1, "one producer wrote to partition 0: {active:?}");
    let p = &active[0];
    assert_eq!((p.producer_id.0, p.producer_epoch, p.last_sequence), (id, i32::from(epoch), 4));
    assert_eq!((p.coordinator_epoch, p.current_txn_start_offset), (-1, -1), "not transactional");
    let after = now_ms();
    assert!((before..=after).contains(&p.last_timestamp), "last timestamp {} is the last batch's, written in {before}..={after}", p.last_timestamp);
    assert!(partitions[1].active_producers.is_empty(), "nobody wrote to partition 1");
}

/// The one-voter metadata quorum: this node leads `__cluster_metadata` at a
/// positive epoch, is its only voter with a log end at or past the high
/// watermark; another partition is refused.
pub(super) fn check_describe_quorum(broker: &Broker, m: &Matrix, version: i16) {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let ask = |topic: &str, partition: i32| {
        DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(topic_name(topic))
            .with_partitions(vec![PartitionData::default().with_partition_index(partition)])])
    };
    let response = broker.client().must(&ask("__cluster_metadata", 0), version);
    assert_eq!(response.error_code, 0, "error {}", code_name(response.error_code));
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_id.0), (0, m.node_id), "leader");
    assert!(p.leader_epoch >= 1 && p.high_watermark > 0, "epoch {} hw {}", p.leader_epoch, p.high_watermark);
    let voters: Vec<(i32, i64)> = p.current_voters.iter().map(|v| (v.replica_id.0, v.log_end_offset)).collect();
    assert!(voters.len() == 1 && voters[0].0 == m.node_id && voters[0].1 >= p.high_watermark, "voters {voters:?}");
    // v2 lists voters' node-to-node endpoints; the embedded single node has
    // none (no `[cluster] listen`), so it may list nothing but itself.
    assert!(response.nodes.iter().all(|n| n.node_id.0 == m.node_id), "nodes {:?}", response.nodes);
    let other = broker.client().must(&ask("some-topic", 0), version);
    assert_eq!(other.error_code, UNKNOWN_TOPIC_OR_PARTITION, "another partition: {}", code_name(other.error_code));
}

/// UnregisterBroker of an id nobody registered: Kafka's code and message.
/// (Unregistering the only broker would end the matrix; removing brokers
/// from a cluster is tests/test_unregister_broker.py.)
pub(super) fn check_unregister_broker(broker: &Broker, m: &Matrix, version: i16) {
    let unknown = m.node_id + 1000;
    let response = broker.client().must(&UnregisterBrokerRequest::default().with_broker_id(BrokerId(unknown)), version);
    assert_eq!(response.error_code, BROKER_ID_NOT_REGISTERED, "error {}", code_name(response.error_code));
    assert_eq!(response.error_message.as_deref(), Some(format!("Broker ID {unknown} is not currently registered").as_str()));
}
