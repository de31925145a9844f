//! "Advertise exactly what you implement": every API and every version the
//! broker lists in its ApiVersions response gets a realistic request (an
//! existing topic with data, an unknown topic, a create-then-delete...)
//! encoded with kafka-protocol, and must get back a response that
//! kafka-protocol decodes at that version, byte for byte, with the request's
//! correlation id and the error codes Apache Kafka would return.
//!
//! A version the broker advertises but cannot decode a request of, or
//! encode a response for, shows up here as a closed connection.

#[path = "api_matrix/admin.rs"]
mod admin;
mod common;
#[path = "api_matrix/reassign.rs"]
mod reassign;
#[path = "api_matrix/security.rs"]
mod security;

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

/// The APIs Silt implements and the versions it advertises for each: the
/// contract this suite holds the broker to (see the project brief).
const IMPLEMENTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigType of a LONG config (DescribeConfigs v3+).
const CONFIG_TYPE_LONG: i8 = 5;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// Error codes of refused config changes.
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
/// The value every record of the seed batch starts with.
const SEED: &str = "matrix-seed";
/// Records in the seed batch.
const SEED_RECORDS: usize = 3;

fn advertised_ranges(response: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    let mut out: Vec<_> = response.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
    out.sort();
    out
}

fn implemented_ranges() -> Vec<(i16, i16, i16)> {
    let mut out: Vec<_> = IMPLEMENTED.iter().map(|&(api, min, max)| (api as i16, min, max)).collect();
    out.sort();
    out
}

fn describe_ranges(ranges: &[(i16, i16, i16)]) -> String {
    ranges
        .iter()
        .map(|&(key, min, max)| match ApiKey::try_from(key) {
            Ok(api) => format!("{api:?} {min}-{max}"),
            Err(_) => format!("key {key} {min}-{max}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn advertised_apis_are_exactly_the_implemented_set() {
    let broker = Broker::start();
    let mut client = broker.client();
    let expected = implemented_ranges();
    for version in [0, 3] {
        let response = client.api_versions(version);
        assert_eq!(response.error_code, 0, "ApiVersions v{version}: error {}", code_name(response.error_code));
        let advertised = advertised_ranges(&response);
        assert_eq!(advertised, expected, "ApiVersions v{version} advertises [{}]\nexpected [{}]", describe_ranges(&advertised), describe_ranges(&expected));
    }
}

/// Fixtures shared by the per-version checks.
struct Matrix {
    kafka_port: i32,
    node_id: i32,
    cluster_id: String,
    /// A topic with one partition holding the seed batch (and whatever the
    /// Produce checks append).
    topic: String,
    topic_id: uuid::Uuid,
    /// The advertised ranges, as ApiVersions v3 reported them.
    advertised: Vec<(i16, i16, i16)>,
}

/// Connection used to set up and verify state, at versions other checks rely on.
fn reference(broker: &Broker) -> Client {
    broker.client()
}

#[test]
fn every_advertised_version_of_every_api_answers_well_formed() {
    // Groups complete their first rebalance at once (the default waits 3 s for more members).
    let mut broker = Broker::start_with(&[("SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS", "0")]);
    let mut admin = reference(&broker);
    let api_versions = admin.api_versions(3);
    assert_eq!(api_versions.error_code, 0, "ApiVersions v3: error {}", code_name(api_versions.error_code));
    let advertised = advertised_ranges(&api_versions);
    assert!(!advertised.is_empty(), "ApiVersions advertises no API at all");

    let topic = unique_topic("matrix");
    admin.create_topic_ok(&topic, 1);
    let seed: Vec<Vec<u8>> = values(SEED, SEED_RECORDS);
    let seeded = admin.produce(&topic, 0, plain_batch(&as_slices(&seed)));
    assert_eq!(seeded.error_code, 0, "seed produce: error {}", code_name(seeded.error_code));
    assert_eq!(seeded.base_offset, 0, "the seed batch of a new topic lands at offset 0");
    let metadata = admin.metadata(&[&topic], false);
    let matrix = Matrix {
        kafka_port: i32::from(broker.kafka.port()),
        node_id: metadata.brokers[0].node_id.0,
        cluster_id: metadata.cluster_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        topic_id: metadata.topics[0].topic_id,
        topic,
        advertised: advertised.clone(),
    };

    let mut failures = Vec::new();
    let mut checked = 0;
    for &(key, min, max) in &advertised {
        let Ok(api) = ApiKey::try_from(key) else {
            failures.push(format!("the broker advertises API key {key}, which kafka-protocol does not know"));
            continue;
        };
        for version in min..=max {
            checked += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| check(&broker, &matrix, api, version)));
            if let Err(panic) = outcome {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(non-string panic)".to_owned());
                failures.push(format!("{api:?} v{version}: {message}"));
            }
            if !broker.is_alive() {
                failures.push(format!("the broker died during {api:?} v{version}"));
                break;
            }
        }
    }
    broker.assert_alive("the API matrix");
    assert!(failures.is_empty(), "{} of {checked} advertised (API, version) pairs failed:\n  {}\n{}", failures.len(), failures.join("\n  "), broker.log_tail());
}

/// Sends the realistic requests of `api` at `version` on a fresh connection.
fn check(broker: &Broker, m: &Matrix, api: ApiKey, version: i16) {
    match api {
        ApiKey::Produce => check_produce(broker, m, version),
        ApiKey::Fetch => check_fetch(broker, m, version),
        ApiKey::ListOffsets => check_list_offsets(broker, m, version),
        ApiKey::Metadata => check_metadata(broker, m, version),
        ApiKey::ApiVersions => check_api_versions(broker, m, version),
        ApiKey::CreateTopics => check_create_topics(broker, version),
        ApiKey::DeleteTopics => check_delete_topics(broker, version),
        ApiKey::DeleteRecords => check_delete_records(broker, version),
        ApiKey::InitProducerId => check_init_producer_id(broker, version),
        ApiKey::OffsetForLeaderEpoch => admin::check_offset_for_leader_epoch(broker, m, version),
        ApiKey::DescribeConfigs => check_describe_configs(broker, m, version),
        ApiKey::AlterConfigs => admin::check_alter_configs(broker, m, version),
        ApiKey::AlterReplicaLogDirs => admin::check_alter_replica_log_dirs(broker, m, version),
        ApiKey::DescribeLogDirs => admin::check_describe_log_dirs(broker, m, version),
        ApiKey::ElectLeaders => admin::check_elect_leaders(broker, m, version),
        ApiKey::AlterPartitionReassignments => reassign::check_alter_partition_reassignments(broker, m, version),
        ApiKey::ListPartitionReassignments => reassign::check_list_partition_reassignments(broker, m, version),
        ApiKey::DescribeProducers => admin::check_describe_producers(broker, version),
        ApiKey::DescribeQuorum => admin::check_describe_quorum(broker, m, version),
        ApiKey::UnregisterBroker => admin::check_unregister_broker(broker, m, version),
        ApiKey::CreatePartitions => check_create_partitions(broker, version),
        ApiKey::IncrementalAlterConfigs => check_incremental_alter_configs(broker, m, version),
        ApiKey::DescribeCluster => check_describe_cluster(broker, m, version),
        ApiKey::FindCoordinator => check_find_coordinator(broker, m, version),
        ApiKey::JoinGroup => check_join_group(broker, version),
        ApiKey::SyncGroup => check_sync_group(broker, version),
        ApiKey::Heartbeat => check_heartbeat(broker, version),
        ApiKey::LeaveGroup => check_leave_group(broker, version),
        ApiKey::OffsetCommit => check_offset_commit(broker, m, version),
        ApiKey::OffsetFetch => check_offset_fetch(broker, m, version),
        ApiKey::OffsetDelete => check_offset_delete(broker, m, version),
        ApiKey::ListGroups => check_list_groups(broker, m, version),
        ApiKey::DescribeGroups => check_describe_groups(broker, version),
        ApiKey::DeleteGroups => check_delete_groups(broker, m, version),
        ApiKey::ConsumerGroupHeartbeat => check_consumer_group_heartbeat(broker, m, version),
        ApiKey::ConsumerGroupDescribe => check_consumer_group_describe(broker, m, version),
        ApiKey::SaslHandshake => security::check_sasl_handshake(broker, version),
        ApiKey::SaslAuthenticate => security::check_sasl_authenticate(broker, version),
        ApiKey::AlterUserScramCredentials => security::check_alter_user_scram_credentials(broker, version),
        ApiKey::DescribeUserScramCredentials => security::check_describe_user_scram_credentials(broker, version),
        other => panic!("the broker advertises {other:?}, which this suite has no check for (is it really implemented?)"),
    }
}

fn unknown_topic(label: &str, version: i16) -> String {
    unique_topic(&format!("matrix-missing-{label}-v{version}"))
}

// ---------------------------------------------------------------------------

fn check_produce(broker: &Broker, m: &Matrix, version: i16) {
    let mut reference = reference(broker);
    let before = reference.log_end_offset(&m.topic, 0);
    let by_id = version >= 13;
    let missing = unknown_topic("produce", version);
    let missing_id = uuid::Uuid::new_v4();
    let vals = values(&format!("produce-v{version}"), 2);
    let topic_data = |name: &str, id: uuid::Uuid, records: Bytes| {
        let data = TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]);
        if by_id {
            data.with_topic_id(id)
        } else {
            data.with_name(topic_name(name))
        }
    };
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic_data(&m.topic, m.topic_id, plain_batch(&as_slices(&vals))), topic_data(&missing, missing_id, plain_batch(&[b"nowhere"]))]);
    let response = broker.client().must(&request, version);
    assert_eq!(response.responses.len(), 2, "{} topic responses for 2 topics", response.responses.len());
    let find = |name: &str, id: uuid::Uuid| {
        response
            .responses
            .iter()
            .find(|t| if by_id { t.topic_id == id } else { t.name.0.as_str() == name })
            .unwrap_or_else(|| panic!("no response for topic {}", if by_id { id.to_string() } else { name.to_owned() }))
    };
    let known = find(&m.topic, m.topic_id);
    assert_eq!(known.partition_responses.len(), 1);
    let p = &known.partition_responses[0];
    assert_eq!(p.index, 0);
    assert_eq!(p.error_code, 0, "produce to an existing topic: error {}", code_name(p.error_code));
    assert_eq!(p.base_offset, before, "base offset of a batch appended at log end {before}");
    if version >= 5 {
        assert_eq!(p.log_start_offset, 0, "log start offset");
    }
    let unknown = find(&missing, missing_id);
    let expected = if by_id { 100 } else { 3 };
    assert_eq!(
        unknown.partition_responses[0].error_code,
        expected,
        "produce to an unknown topic: got {}, expected {}",
        code_name(unknown.partition_responses[0].error_code),
        code_name(expected)
    );
    assert_eq!(reference.log_end_offset(&m.topic, 0), before + 2, "log end after appending 2 records at {before}");
    // Produce must not create topics (only Metadata does).
    let after = reference.metadata(&[&missing], false);
    assert_eq!(after.topics[0].error_code, 3, "a produce to {missing} created it: metadata error {}", code_name(after.topics[0].error_code));
}

fn check_fetch(broker: &Broker, m: &Matrix, version: i16) {
    let mut reference = reference(broker);
    let log_end = reference.log_end_offset(&m.topic, 0);
    let by_id = version >= 13;
    let missing = unknown_topic("fetch", version);
    let missing_id = uuid::Uuid::new_v4();
    let fetch_topic = |name: &str, id: uuid::Uuid| {
        let t =
            FetchTopic::default().with_partitions(vec![FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1024 * 1024)]);
        if by_id {
            t.with_topic_id(id)
        } else {
            t.with_topic(topic_name(name))
        }
    };
    let mut request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(8 * 1024 * 1024)
        .with_topics(vec![fetch_topic(&m.topic, m.topic_id), fetch_topic(&missing, missing_id)]);
    if version <= 14 {
        request.replica_id = BrokerId(-1);
    }
    if version >= 7 {
        request.session_id = 0;
        request.session_epoch = -1;
    }
    let response = broker.client().must(&request, version);
    if version >= 7 {
        assert_eq!(response.error_code, 0, "top-level error {}", code_name(response.error_code));
        assert_eq!(response.session_id, 0, "a sessionless fetch got session {}", response.session_id);
    }
    assert_eq!(response.responses.len(), 2, "{} topic responses for 2 topics", response.responses.len());
    let find = |name: &str, id: uuid::Uuid| {
        response
            .responses
            .iter()
            .find(|t| if by_id { t.topic_id == id } else { t.topic.0.as_str() == name })
            .unwrap_or_else(|| panic!("no response for topic {}", if by_id { id.to_string() } else { name.to_owned() }))
    };
    let known = &find(&m.topic, m.topic_id).partitions;
    assert_eq!(known.len(), 1);
    let p = &known[0];
    assert_eq!(p.partition_index, 0);
    assert_eq!(p.error_code, 0, "fetch of an existing partition: error {}", code_name(p.error_code));
    assert_eq!(p.high_watermark, log_end, "high watermark");
    assert_eq!(p.last_stable_offset, log_end, "last stable offset (no transactions)");
    if version >= 5 {
        assert_eq!(p.log_start_offset, 0, "log start offset");
    }
    let records = decode_records(p.records.as_ref());
    assert!(!records.is_empty(), "fetch from offset 0 of a partition holding {log_end} records returned no records");
    assert_eq!(records[0].offset, 0, "first fetched offset");
    assert_eq!(records[0].value.as_deref(), Some(format!("{SEED}-0").as_bytes()), "first fetched record is the seed");
    assert!(records.iter().all(|r| r.offset < log_end), "a record at or past the high watermark {log_end}");
    let unknown = &find(&missing, missing_id).partitions;
    let expected = if by_id { 100 } else { 3 };
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].error_code, expected, "fetch of an unknown topic: got {}, expected {}", code_name(unknown[0].error_code), code_name(expected));

    // At the log end: nothing yet, no error. Past it: OFFSET_OUT_OF_RANGE.
    for (offset, expected, what) in [(log_end, 0i16, "at the log end"), (log_end + 100, 1, "past the log end")] {
        let mut request = request.clone();
        request.topics.truncate(1);
        request.topics[0].partitions[0].fetch_offset = offset;
        let response = broker.client().must(&request, version);
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, expected, "fetch {what} ({offset}): got {}, expected {}", code_name(p.error_code), code_name(expected));
        assert!(decode_records(p.records.as_ref()).is_empty(), "fetch {what} returned records");
    }
}

fn check_list_offsets(broker: &Broker, m: &Matrix, version: i16) {
    let mut reference = reference(broker);
    let log_end = reference.log_end_offset(&m.topic, 0);
    let missing = unknown_topic("list-offsets", version);
    let mut client = broker.client();
    for (timestamp, expected, what) in [(-1i64, log_end, "latest"), (-2, 0, "earliest")] {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(&m.topic))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp)]),
            ListOffsetsTopic::default()
                .with_name(topic_name(&missing))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp)]),
        ]);
        let response = client.must(&request, version);
        assert_eq!(response.topics.len(), 2, "{what}: {} topic responses for 2 topics", response.topics.len());
        let known = response.topics.iter().find(|t| t.name.0.as_str() == m.topic).expect("a response for the existing topic");
        let p = &known.partitions[0];
        assert_eq!(p.partition_index, 0);
        assert_eq!(p.error_code, 0, "{what}: error {}", code_name(p.error_code));
        assert_eq!(p.offset, expected, "{what} offset");
        let unknown = response.topics.iter().find(|t| t.name.0.as_str() == missing).expect("a response for the unknown topic");
        assert_eq!(unknown.partitions[0].error_code, 3, "{what} of an unknown topic: error {}", code_name(unknown.partitions[0].error_code));
    }
    // By timestamp (a consumer's offsetsForTimes): 0 finds the first record;
    // a time after every record finds none (offset -1, timestamp -1, no error).
    let an_hour_from_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as i64 + 3_600_000;
    for (timestamp, expected, what) in [(0i64, 0i64, "timestamp 0"), (an_hour_from_now, -1, "a timestamp after every record")] {
        let response = client.must(&list_offsets_request(&m.topic, 0, timestamp), version);
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "{what}: error {}", code_name(p.error_code));
        assert_eq!(p.offset, expected, "{what}: offset");
        if expected == -1 {
            assert_eq!(p.timestamp, -1, "{what}: timestamp");
        } else {
            assert!(p.timestamp > 0, "{what}: timestamp {} of the first record", p.timestamp);
        }
    }
}

fn check_metadata(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    // Before v4 a client cannot refuse auto-creation, so its unknown topic gets created.
    let refuses_creation = version >= 4;
    let other = unknown_topic("metadata", version);
    let mut request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(&m.topic))),
        MetadataRequestTopic::default().with_name(Some(topic_name(&other))),
    ]));
    if version >= 4 {
        request.allow_auto_topic_creation = false;
    }
    let response = client.must(&request, version);
    assert_eq!(response.brokers.len(), 1, "{} brokers", response.brokers.len());
    let b = &response.brokers[0];
    assert_eq!(b.node_id.0, m.node_id, "broker node id");
    assert_eq!(b.host.as_str(), "127.0.0.1", "advertised host");
    assert_eq!(b.port, m.kafka_port, "advertised port");
    if version >= 1 {
        assert_eq!(response.controller_id.0, m.node_id, "controller id");
    }
    if version >= 2 {
        assert_eq!(response.cluster_id.as_deref(), Some(m.cluster_id.as_str()), "cluster id");
    }
    if version >= 13 {
        assert_eq!(response.error_code, 0, "top-level error {}", code_name(response.error_code));
    }
    assert_eq!(response.topics.len(), 2, "{} topics for 2 requested", response.topics.len());
    let find =
        |name: &str| response.topics.iter().find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name)).unwrap_or_else(|| panic!("no metadata for {name}"));
    let known = find(&m.topic);
    assert_eq!(known.error_code, 0, "metadata of an existing topic: error {}", code_name(known.error_code));
    assert!(!known.is_internal, "a user topic is internal");
    if version >= 10 {
        assert_eq!(known.topic_id, m.topic_id, "topic id");
    }
    assert_eq!(known.partitions.len(), 1, "{} partitions", known.partitions.len());
    let p = &known.partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.partition_index, 0);
    assert_eq!(p.leader_id.0, m.node_id, "leader");
    assert_eq!(p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(), vec![m.node_id], "replicas");
    assert_eq!(p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(), vec![m.node_id], "in-sync replicas");
    let unknown = find(&other);
    if refuses_creation {
        assert_eq!(unknown.error_code, 3, "metadata of an unknown topic without auto-creation: error {}", code_name(unknown.error_code));
    } else {
        // Kafka answers LEADER_NOT_AVAILABLE while a new topic's leader is elected.
        assert!(
            unknown.error_code == 0 || unknown.error_code == 5,
            "metadata v{version} of an unknown topic (auto-created): error {}",
            code_name(unknown.error_code)
        );
    }

    // By topic id (v10+), with a null name or, as the Java client sends it, an empty one.
    if version >= 10 {
        for name in [None, Some(topic_name(""))] {
            let mut by_id =
                MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_topic_id(m.topic_id).with_name(name.clone())]));
            by_id.allow_auto_topic_creation = false;
            let response = client.must(&by_id, version);
            assert_eq!(response.topics.len(), 1, "{} topics for 1 asked for by id", response.topics.len());
            let t = &response.topics[0];
            assert_eq!(t.error_code, 0, "metadata by id (name {name:?}): error {}", code_name(t.error_code));
            assert_eq!(t.name.as_ref().map(|n| n.0.as_str()), Some(m.topic.as_str()), "name of the topic asked for by id");
            assert_eq!(t.topic_id, m.topic_id, "topic id");
        }
    }

    // Every topic: `null` (v1+) or an empty list (v0).
    let all = MetadataRequest::default().with_topics(if version == 0 { Some(Vec::new()) } else { None });
    let mut all = all;
    if version >= 4 {
        all.allow_auto_topic_creation = false;
    }
    let response = client.must(&all, version);
    assert!(
        response.topics.iter().any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(m.topic.as_str())),
        "metadata of all topics does not list {}",
        m.topic
    );
}

fn check_api_versions(broker: &Broker, m: &Matrix, version: i16) {
    let response = broker.client().must(&api_versions_request(), version);
    assert_eq!(response.error_code, 0, "error {}", code_name(response.error_code));
    let advertised = advertised_ranges(&response);
    assert_eq!(advertised, m.advertised, "ApiVersions v{version} advertises other versions than v3 does");
}

fn check_create_topics(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-ct-v{version}"));
    let request = |name: &str, validate_only: bool| {
        CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(2)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default().with_name(str_bytes("retention.ms")).with_value(Some(str_bytes("86400000")))])])
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only)
    };
    let response = client.must(&request(&name, false), version);
    assert_eq!(response.topics.len(), 1);
    let t = &response.topics[0];
    assert_eq!(t.name.0.as_str(), name, "topic name echoed");
    assert_eq!(t.error_code, 0, "create: error {} ({:?})", code_name(t.error_code), t.error_message);
    if version >= 5 {
        assert_eq!(t.num_partitions, 2, "partitions");
        assert_eq!(t.replication_factor, 1, "replication factor");
        let configs = t.configs.as_ref().expect("v5+ returns the topic's configs");
        let retention = configs.iter().find(|c| c.name.as_str() == "retention.ms").expect("retention.ms among the returned configs");
        assert_eq!(retention.value.as_deref(), Some("86400000"), "retention.ms as created");
    }
    if version >= 7 {
        assert!(!t.topic_id.is_nil(), "v7 returns the topic id");
        assert_eq!(reference.topic_id(&name), t.topic_id, "the returned topic id is the one Metadata reports");
    }
    let metadata = reference.metadata(&[&name], false);
    assert_eq!(metadata.topics[0].partitions.len(), 2, "partitions of the created topic");

    let again = client.must(&request(&name, false), version);
    assert_eq!(again.topics[0].error_code, 36, "creating an existing topic: error {}", code_name(again.topics[0].error_code));

    // Refusals a single-node Kafka gives: an illegal name, more replicas than brokers.
    let invalid_name = format!("bad/name-v{version}");
    let refused = client.must(&request(&invalid_name, false), version);
    assert_eq!(refused.topics[0].error_code, 17, "create a topic named {invalid_name:?}: error {}", code_name(refused.topics[0].error_code));
    let mut three_replicas = request(&unique_topic(&format!("matrix-ct-rf3-v{version}")), false);
    three_replicas.topics[0].replication_factor = 3;
    let refused = client.must(&three_replicas, version);
    assert_eq!(refused.topics[0].error_code, 38, "replication factor 3 on one broker: error {}", code_name(refused.topics[0].error_code));

    let dry = unique_topic(&format!("matrix-ct-dry-v{version}"));
    let validated = client.must(&request(&dry, true), version);
    assert_eq!(validated.topics[0].error_code, 0, "validate-only create: error {}", code_name(validated.topics[0].error_code));
    let metadata = reference.metadata(&[&dry], false);
    assert_eq!(metadata.topics[0].error_code, 3, "a validate-only create made the topic: metadata error {}", code_name(metadata.topics[0].error_code));
}

fn check_delete_topics(broker: &Broker, version: i16) {
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-dt-v{version}"));
    reference.create_topic_ok(&name, 1);
    let id = reference.topic_id(&name);
    let missing = unknown_topic("delete", version);
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if version >= 6 {
        request.topics = vec![DeleteTopicState::default().with_name(None).with_topic_id(id), DeleteTopicState::default().with_name(Some(topic_name(&missing)))];
    } else {
        request.topic_names = vec![topic_name(&name), topic_name(&missing)];
    }
    let response = broker.client().must(&request, version);
    assert_eq!(response.responses.len(), 2, "{} results for 2 topics", response.responses.len());
    let deleted = response
        .responses
        .iter()
        .find(|r| r.name.as_ref().map(|n| n.0.as_str()) == Some(name.as_str()) || (version >= 6 && r.topic_id == id))
        .expect("a result for the existing topic");
    assert_eq!(deleted.error_code, 0, "delete an existing topic: error {}", code_name(deleted.error_code));
    if version >= 6 {
        assert_eq!(deleted.topic_id, id, "topic id of the deleted topic");
    }
    let unknown = response.responses.iter().find(|r| r.name.as_ref().map(|n| n.0.as_str()) == Some(missing.as_str())).expect("a result for the unknown topic");
    assert_eq!(unknown.error_code, 3, "delete an unknown topic: error {}", code_name(unknown.error_code));
    let metadata = reference.metadata(&[&name], false);
    assert_eq!(metadata.topics[0].error_code, 3, "the deleted topic still exists: metadata error {}", code_name(metadata.topics[0].error_code));
}

fn check_delete_records(broker: &Broker, version: i16) {
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-dr-v{version}"));
    reference.create_topic_ok(&name, 1);
    let vals = values("dr", 3);
    let produced = reference.produce(&name, 0, plain_batch(&as_slices(&vals)));
    assert_eq!(produced.error_code, 0);
    let missing = unknown_topic("delete-records", version);
    let request = DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        DeleteRecordsTopic::default()
            .with_name(topic_name(&name))
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(2)]),
        DeleteRecordsTopic::default()
            .with_name(topic_name(&missing))
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(0)]),
    ]);
    let response = broker.client().must(&request, version);
    assert_eq!(response.topics.len(), 2);
    let known = response.topics.iter().find(|t| t.name.0.as_str() == name).expect("a result for the existing topic");
    assert_eq!(known.partitions[0].error_code, 0, "delete records: error {}", code_name(known.partitions[0].error_code));
    assert_eq!(known.partitions[0].low_watermark, 2, "low watermark after deleting before offset 2");
    let unknown = response.topics.iter().find(|t| t.name.0.as_str() == missing).expect("a result for the unknown topic");
    assert_eq!(unknown.partitions[0].error_code, 3, "delete records of an unknown topic: error {}", code_name(unknown.partitions[0].error_code));
    let (code, earliest) = reference.list_offset(&name, 0, -2);
    assert_eq!((code, earliest), (0, 2), "earliest offset after DeleteRecords before 2");
    let below = reference.fetch(&name, 0, 0, 0, 1);
    assert_eq!(below.error_code, 1, "fetch below the log start offset: error {}", code_name(below.error_code));
}

/// The InitProducerId request body at `version`. kafka-protocol 0.18 encodes
/// InitProducerId requests only up to v5; v6 (KIP-939) appends two booleans,
/// Enable2Pc and KeepPreparedTxn, before the tagged fields.
fn init_producer_id_body(request: &InitProducerIdRequest, version: i16) -> Bytes {
    let (_, codec_max) = codec_versions::<InitProducerIdRequest>();
    if version <= codec_max {
        return encode_body(request, version);
    }
    assert_eq!(version, 6, "no hand encoding for InitProducerId v{version}");
    let v5 = encode_body(request, 5);
    assert_eq!(v5.last(), Some(&0), "a v5 body without tagged fields ends in a zero tag count");
    let mut body = BytesMut::from(&v5[..v5.len() - 1]);
    body.put_u8(0); // Enable2Pc = false
    body.put_u8(0); // KeepPreparedTxn = false
    body.put_u8(0); // no tagged fields
    body.freeze()
}

fn init_producer_id(client: &mut Client, request: &InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let body = init_producer_id_body(request, version);
    let (_, codec_max) = codec_versions::<InitProducerIdRequest>();
    let response = client.call_raw(ApiKey::InitProducerId, version, &body).unwrap_or_else(|e| {
        let hint = if version > codec_max {
            format!(" (kafka-protocol 0.18's InitProducerIdRequest decodes only v0-{codec_max}, so a broker built on it cannot read v{version})")
        } else {
            String::new()
        };
        panic!("{e}{hint}")
    });
    decode_exact(ApiKey::InitProducerId, version, response).unwrap_or_else(|e| panic!("{e}"))
}

fn check_init_producer_id(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let request = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
    let first = init_producer_id(&mut client, &request, version);
    assert_eq!(first.error_code, 0, "error {}", code_name(first.error_code));
    assert!(first.producer_id.0 >= 0, "producer id {}", first.producer_id.0);
    assert!(first.producer_epoch >= 0, "producer epoch {}", first.producer_epoch);
    let second = init_producer_id(&mut client, &request, version);
    assert_eq!(second.error_code, 0);
    assert_ne!(second.producer_id.0, first.producer_id.0, "two new idempotent producers got the same id");
    if version >= 3 {
        // KIP-360: a producer that has an id asks again after a fatal error.
        // Kafka answers a non-transactional one with a fresh id; an epoch
        // bump of the same id is equally safe. Either way the new
        // (id, epoch) must fence the old one.
        let again = request.clone().with_producer_id(first.producer_id).with_producer_epoch(first.producer_epoch);
        let bumped = init_producer_id(&mut client, &again, version);
        assert_eq!(bumped.error_code, 0, "re-init with the current id/epoch: error {}", code_name(bumped.error_code));
        assert!(
            bumped.producer_id.0 != first.producer_id.0 || bumped.producer_epoch > first.producer_epoch,
            "re-init of ({}, {}) returned ({}, {}), which does not fence the old epoch",
            first.producer_id.0,
            first.producer_epoch,
            bumped.producer_id.0,
            bumped.producer_epoch
        );
    }
}

fn check_describe_configs(broker: &Broker, m: &Matrix, version: i16) {
    let missing = unknown_topic("describe-configs", version);
    let mut request = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
        DescribeConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(str_bytes(&m.topic)).with_configuration_keys(None),
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(&m.topic))
            .with_configuration_keys(Some(vec![str_bytes("retention.ms")])),
        DescribeConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(str_bytes(&missing)).with_configuration_keys(None),
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(str_bytes(&m.node_id.to_string()))
            .with_configuration_keys(None),
    ]);
    if version >= 3 {
        request.include_documentation = true;
    }
    let response = broker.client().must(&request, version);
    assert_eq!(response.results.len(), 4, "{} results for 4 resources", response.results.len());
    let all = &response.results[0];
    assert_eq!(all.error_code, 0, "describe a topic: error {} ({:?})", code_name(all.error_code), all.error_message);
    assert_eq!(all.resource_type, RESOURCE_TOPIC);
    assert_eq!(all.resource_name.as_str(), m.topic);
    let retention = all.configs.iter().find(|c| c.name.as_str() == "retention.ms").expect("retention.ms among a topic's configs");
    let value = retention.value.as_deref().expect("retention.ms has a value");
    assert!(value.parse::<i64>().is_ok_and(|v| v >= -1), "retention.ms = {value:?}");
    assert!(!retention.is_sensitive);
    if version >= 3 {
        assert_eq!(retention.config_type, CONFIG_TYPE_LONG, "retention.ms config type");
    }
    assert!(all.configs.len() > 1, "a topic describes only {} configs", all.configs.len());
    let one = &response.results[1];
    assert_eq!(one.error_code, 0);
    let names: Vec<&str> = one.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["retention.ms"], "configs returned for keys [retention.ms]");
    let unknown = &response.results[2];
    assert_eq!(unknown.error_code, 3, "describe an unknown topic: error {}", code_name(unknown.error_code));
    let broker_result = &response.results[3];
    assert_eq!(broker_result.error_code, 0, "describe this broker: error {} ({:?})", code_name(broker_result.error_code), broker_result.error_message);
    assert!(!broker_result.configs.is_empty(), "the broker describes no configs");
}

fn check_create_partitions(broker: &Broker, version: i16) {
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-cp-v{version}"));
    reference.create_topic_ok(&name, 1);
    let missing = unknown_topic("create-partitions", version);
    let request = |count: i32| {
        CreatePartitionsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatePartitionsTopic::default().with_name(topic_name(&name)).with_count(count).with_assignments(None),
            CreatePartitionsTopic::default().with_name(topic_name(&missing)).with_count(count).with_assignments(None),
        ])
    };
    let mut client = broker.client();
    let response = client.must(&request(3), version);
    assert_eq!(response.results.len(), 2);
    let known = response.results.iter().find(|r| r.name.0.as_str() == name).expect("a result for the existing topic");
    assert_eq!(known.error_code, 0, "grow to 3 partitions: error {} ({:?})", code_name(known.error_code), known.error_message);
    let unknown = response.results.iter().find(|r| r.name.0.as_str() == missing).expect("a result for the unknown topic");
    assert_eq!(unknown.error_code, 3, "grow an unknown topic: error {}", code_name(unknown.error_code));
    let metadata = reference.metadata(&[&name], false);
    assert_eq!(metadata.topics[0].partitions.len(), 3, "partitions after growing to 3");
    let shrink = client.must(&request(2), version);
    let known = shrink.results.iter().find(|r| r.name.0.as_str() == name).expect("a result for the existing topic");
    assert_eq!(known.error_code, 37, "shrink from 3 to 2 partitions: error {}", code_name(known.error_code));
}

fn check_incremental_alter_configs(broker: &Broker, m: &Matrix, version: i16) {
    let mut reference = reference(broker);
    let name = unique_topic(&format!("matrix-iac-v{version}"));
    reference.create_topic_ok(&name, 1);
    let missing = unknown_topic("alter-configs", version);
    let wanted = (3_600_000 + i64::from(version)).to_string();
    let alter =
        |op: i8, value: Option<&str>| {
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(str_bytes(&name)).with_configs(vec![
                    AlterableConfig::default().with_name(str_bytes("retention.ms")).with_config_operation(op).with_value(value.map(str_bytes)),
                ]),
                AlterConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(str_bytes(&missing)).with_configs(vec![
                    AlterableConfig::default().with_name(str_bytes("retention.ms")).with_config_operation(op).with_value(value.map(str_bytes)),
                ]),
            ])
        };
    let retention = |reference: &mut Client| {
        let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(&name))
            .with_configuration_keys(Some(vec![str_bytes("retention.ms")]))]);
        let response = reference.must(&request, 4);
        response.results[0].configs.first().and_then(|c| c.value.as_ref().map(|v| v.to_string()))
    };
    let mut client = broker.client();
    let response = client.must(&alter(OP_SET, Some(&wanted)), version);
    assert_eq!(response.responses.len(), 2);
    let known = response.responses.iter().find(|r| r.resource_name.as_str() == name).expect("a result for the existing topic");
    assert_eq!(known.error_code, 0, "set retention.ms: error {} ({:?})", code_name(known.error_code), known.error_message);
    let unknown = response.responses.iter().find(|r| r.resource_name.as_str() == missing).expect("a result for the unknown topic");
    assert_eq!(unknown.error_code, 3, "alter an unknown topic: error {}", code_name(unknown.error_code));
    assert_eq!(retention(&mut reference).as_deref(), Some(wanted.as_str()), "retention.ms after setting it");

    let response = client.must(&alter(OP_DELETE, None), version);
    let known = response.responses.iter().find(|r| r.resource_name.as_str() == name).expect("a result for the existing topic");
    assert_eq!(known.error_code, 0, "delete retention.ms: error {} ({:?})", code_name(known.error_code), known.error_message);
    let after = retention(&mut reference);
    assert!(after.is_some() && after.as_deref() != Some(wanted.as_str()), "retention.ms after deleting the override: {after:?}");

    // What `kafka-reassign-partitions --verify` sends: it deletes the
    // replication throttles, set or not. Silt cannot throttle, so deleting
    // them succeeds and changes nothing, and setting them is refused.
    let throttles = |op: i8, value: Option<&str>| {
        let config = |key: &str| AlterableConfig::default().with_name(str_bytes(key)).with_config_operation(op).with_value(value.map(str_bytes));
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(str_bytes(&m.node_id.to_string()))
                .with_configs(vec![config("leader.replication.throttled.rate"), config("follower.replication.throttled.rate")]),
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(&name))
                .with_configs(vec![config("leader.replication.throttled.replicas"), config("follower.replication.throttled.replicas")]),
        ])
    };
    let codes = |response: IncrementalAlterConfigsResponse| response.responses.iter().map(|r| r.error_code).collect::<Vec<_>>();
    assert_eq!(codes(client.must(&throttles(OP_DELETE, None), version)), vec![0, 0], "clearing unset throttles");
    assert_eq!(codes(client.must(&throttles(OP_SET, Some("1000")), version)), vec![INVALID_REQUEST, INVALID_CONFIG], "setting throttles");
}

fn check_describe_cluster(broker: &Broker, m: &Matrix, version: i16) {
    let mut request = DescribeClusterRequest::default();
    if version >= 1 {
        request.endpoint_type = 1;
    }
    let response = broker.client().must(&request, version);
    assert_eq!(response.error_code, 0, "error {} ({:?})", code_name(response.error_code), response.error_message);
    if version >= 1 {
        assert_eq!(response.endpoint_type, 1, "endpoint type");
    }
    assert_eq!(response.cluster_id.as_str(), m.cluster_id, "cluster id (as Metadata reports it)");
    assert_eq!(response.controller_id.0, m.node_id, "controller id");
    assert_eq!(response.brokers.len(), 1, "{} brokers", response.brokers.len());
    let b = &response.brokers[0];
    assert_eq!(b.broker_id.0, m.node_id);
    assert_eq!(b.host.as_str(), "127.0.0.1");
    assert_eq!(b.port, m.kafka_port);
    assert!(!b.is_fenced, "the only broker is fenced");
}

// ---------------------------------------------------------------------------
// Consumer groups

fn group_for(api: &str, version: i16) -> String {
    unique_topic(&format!("matrix-{api}-v{version}"))
}

fn check_find_coordinator(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    if version >= 4 {
        let request = FindCoordinatorRequest::default().with_coordinator_keys(vec![str_bytes("g1"), str_bytes("g2")]);
        let response = client.must(&request, version);
        assert_eq!(response.coordinators.len(), 2, "one coordinator per key");
        for c in &response.coordinators {
            assert_eq!(c.error_code, 0, "key {}: error {}", c.key, code_name(c.error_code));
            assert_eq!((c.node_id.0, c.port), (m.node_id, m.kafka_port), "key {}", c.key);
        }
        let txn = client.must(&FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![str_bytes("t")]), version);
        assert_eq!(txn.coordinators[0].error_code, 15, "a transaction coordinator: error {}", code_name(txn.coordinators[0].error_code));
        return;
    }
    let response = client.must(&FindCoordinatorRequest::default().with_key(str_bytes("g1")), version);
    assert_eq!(response.error_code, 0, "error {}", code_name(response.error_code));
    assert_eq!((response.node_id.0, response.host.as_str(), response.port), (m.node_id, "127.0.0.1", m.kafka_port));
    if version >= 1 {
        let txn = client.must(&FindCoordinatorRequest::default().with_key(str_bytes("t")).with_key_type(1), version);
        assert_eq!(txn.error_code, 15, "a transaction coordinator: error {}", code_name(txn.error_code));
    }
}

fn check_join_group(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let group = group_for("join", version);
    let mut member_id = String::new();
    if version >= 4 {
        let first = client.must(&join_group_request(&group, "", "range", Bytes::from_static(b"m")), version);
        assert_eq!(first.error_code, 79, "a new member first gets MEMBER_ID_REQUIRED, got {}", code_name(first.error_code));
        member_id = first.member_id.to_string();
        assert!(!member_id.is_empty(), "MEMBER_ID_REQUIRED carries the id");
    }
    let joined = client.must(&join_group_request(&group, &member_id, "range", Bytes::from_static(b"m")), version);
    assert_eq!(joined.error_code, 0, "error {}", code_name(joined.error_code));
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.members[0].metadata.as_ref(), b"m");
    assert_eq!(joined.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    let mut other = join_group_request(&group, "", "range", Bytes::new());
    other.protocol_type = str_bytes("connect");
    let refused = client.must(&other, version);
    assert_eq!(refused.error_code, 23, "another protocol type: error {}", code_name(refused.error_code));
}

fn check_sync_group(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let group = group_for("sync", version);
    let first = client.must(&join_group_request(&group, "", "range", Bytes::from_static(b"m")), 5);
    let member_id = first.member_id.to_string();
    let joined = client.must(&join_group_request(&group, &member_id, "range", Bytes::from_static(b"m")), 5);
    assert_eq!(joined.error_code, 0, "join: error {}", code_name(joined.error_code));
    let mut sync = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(&group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(str_bytes(&member_id))
        .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
            .with_member_id(str_bytes(&member_id))
            .with_assignment(Bytes::from_static(b"assigned"))]);
    if version >= 5 {
        sync.protocol_type = Some(str_bytes("consumer"));
        sync.protocol_name = Some(str_bytes("range"));
    }
    let synced = client.must(&sync, version);
    assert_eq!(synced.error_code, 0, "error {}", code_name(synced.error_code));
    assert_eq!(synced.assignment.as_ref(), b"assigned");
    if version >= 5 {
        assert_eq!(synced.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    }
    let stale = client.must(&sync.clone().with_generation_id(joined.generation_id - 1), version);
    assert_eq!(stale.error_code, 22, "a stale generation: error {}", code_name(stale.error_code));
}

fn check_heartbeat(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let group = group_for("heartbeat", version);
    let (member_id, generation) = join_and_sync(&mut client, &group, b"a");
    let beat = HeartbeatRequest::default().with_group_id(GroupId(str_bytes(&group))).with_generation_id(generation).with_member_id(str_bytes(&member_id));
    let ok = client.must(&beat, version);
    assert_eq!(ok.error_code, 0, "error {}", code_name(ok.error_code));
    let stale = client.must(&beat.clone().with_generation_id(generation + 1), version);
    assert_eq!(stale.error_code, 22, "another generation: error {}", code_name(stale.error_code));
    let unknown = client.must(&beat.with_member_id(str_bytes("nobody")), version);
    assert_eq!(unknown.error_code, 25, "an unknown member: error {}", code_name(unknown.error_code));
}

fn check_leave_group(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let group = group_for("leave", version);
    let (member_id, generation) = join_and_sync(&mut client, &group, b"a");
    let mut leave = LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(&group)));
    if version >= 3 {
        leave.members = vec![leave_group_request::MemberIdentity::default().with_member_id(str_bytes(&member_id))];
    } else {
        leave.member_id = str_bytes(&member_id);
    }
    let left = client.must(&leave, version);
    assert_eq!(left.error_code, 0, "error {}", code_name(left.error_code));
    if version >= 3 {
        assert_eq!(left.members.len(), 1);
        assert_eq!(left.members[0].error_code, 0, "member error {}", code_name(left.members[0].error_code));
    }
    let beat = HeartbeatRequest::default().with_group_id(GroupId(str_bytes(&group))).with_generation_id(generation).with_member_id(str_bytes(&member_id));
    assert_eq!(client.must(&beat, 0).error_code, 25, "the member is gone");
}

fn check_offset_commit(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("commit", version);
    let simple = offset_commit_request(&group, -1, "", &m.topic, 0, 2);
    let response = client.must(&simple, version);
    assert_eq!(response.topics[0].partitions[0].error_code, 0, "simple commit: error {}", code_name(response.topics[0].partitions[0].error_code));
    assert_eq!(committed_offset(&mut client, &group, &m.topic, 0), 2);
    let missing = client.must(&offset_commit_request(&group, -1, "", &m.topic, 99, 1), version);
    assert_eq!(missing.topics[0].partitions[0].error_code, 3, "an unknown partition: error {}", code_name(missing.topics[0].partitions[0].error_code));
}

fn check_offset_fetch(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("fetch", version);
    let committed = client.must(&offset_commit_request(&group, -1, "", &m.topic, 0, 3), 8);
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let wanted = |parts: Vec<i32>| offset_fetch_request::OffsetFetchRequestTopic::default().with_name(topic_name(&m.topic)).with_partition_indexes(parts);
    if version >= 8 {
        let request = OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(str_bytes(&group))).with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopics::default().with_name(topic_name(&m.topic)).with_partition_indexes(vec![0, 1]),
            ])),
            offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(str_bytes("matrix-no-such-group"))).with_topics(None),
        ]);
        let response = client.must(&request, version);
        assert_eq!(response.groups.len(), 2);
        let parts = &response.groups[0].topics[0].partitions;
        assert_eq!((parts[0].committed_offset, parts[1].committed_offset), (3, -1));
        assert!(response.groups[1].topics.is_empty(), "an unknown group has no offsets");
        return;
    }
    let request = OffsetFetchRequest::default().with_group_id(GroupId(str_bytes(&group))).with_topics(Some(vec![wanted(vec![0, 1])]));
    let response = client.must(&request, version);
    let parts = &response.topics[0].partitions;
    assert_eq!((parts[0].committed_offset, parts[1].committed_offset), (3, -1));
    assert_eq!(parts[0].metadata.as_ref().map(|s| s.as_str()), Some("meta"));
    if version >= 2 {
        let all = client.must(&OffsetFetchRequest::default().with_group_id(GroupId(str_bytes(&group))).with_topics(None), version);
        assert_eq!(all.topics.len(), 1, "null topics: every committed offset");
        assert_eq!(all.topics[0].partitions.len(), 1);
    }
}

fn check_offset_delete(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("offset-delete", version);
    client.must(&offset_commit_request(&group, -1, "", &m.topic, 0, 1), 8);
    let request =
        OffsetDeleteRequest::default().with_group_id(GroupId(str_bytes(&group))).with_topics(vec![offset_delete_request::OffsetDeleteRequestTopic::default()
            .with_name(topic_name(&m.topic))
            .with_partitions(vec![offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0)])]);
    let response = client.must(&request, version);
    assert_eq!(response.error_code, 0, "error {}", code_name(response.error_code));
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    assert_eq!(committed_offset(&mut client, &group, &m.topic, 0), -1, "the offset is gone");
    let unknown = client.must(&request.with_group_id(GroupId(str_bytes("matrix-no-such-group"))), version);
    assert_eq!(unknown.error_code, 69, "an unknown group: error {}", code_name(unknown.error_code));
}

fn check_list_groups(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("list", version);
    client.must(&offset_commit_request(&group, -1, "", &m.topic, 0, 1), 8);
    let mut request = ListGroupsRequest::default();
    if version >= 4 {
        request.states_filter = vec![str_bytes("Empty")];
    }
    if version >= 5 {
        request.types_filter = vec![str_bytes("classic")];
    }
    let response = client.must(&request, version);
    assert_eq!(response.error_code, 0);
    let listed = response.groups.iter().find(|g| g.group_id.as_str() == group).unwrap_or_else(|| panic!("{group} is not listed"));
    if version >= 4 {
        assert_eq!(listed.group_state.as_str(), "Empty");
    }
    if version >= 4 {
        let stable = client.must(&ListGroupsRequest::default().with_states_filter(vec![str_bytes("Stable")]), version);
        assert!(stable.groups.iter().all(|g| g.group_id.as_str() != group), "the states filter applies");
    }
}

fn check_describe_groups(broker: &Broker, version: i16) {
    let mut client = broker.client();
    let group = group_for("describe", version);
    let (member_id, _) = join_and_sync(&mut client, &group, b"the-assignment");
    let mut request = DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(&group)), GroupId(str_bytes("matrix-no-such-group"))]);
    if version >= 3 {
        request.include_authorized_operations = true;
    }
    let response = client.must(&request, version);
    let described = &response.groups[0];
    assert_eq!(described.error_code, 0, "error {}", code_name(described.error_code));
    assert_eq!((described.group_state.as_str(), described.protocol_type.as_str(), described.protocol_data.as_str()), ("Stable", "consumer", "range"));
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id.as_str(), member_id);
    assert_eq!(described.members[0].member_assignment.as_ref(), b"the-assignment");
    assert_eq!(described.members[0].member_metadata.as_ref(), b"meta");
    if version >= 3 {
        assert!(described.authorized_operations > 0, "authorized operations {}", described.authorized_operations);
    }
    assert_eq!(response.groups[1].group_state.as_str(), "Dead", "an unknown group");
}

fn check_delete_groups(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("delete", version);
    client.must(&offset_commit_request(&group, -1, "", &m.topic, 0, 1), 8);
    let busy = group_for("delete-busy", version);
    join_and_sync(&mut client, &busy, b"a");
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(&group)), GroupId(str_bytes(&busy))]);
    let response = client.must(&request, version);
    let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![0, 68], "deleted, then NON_EMPTY_GROUP");
    assert_eq!(committed_offset(&mut client, &group, &m.topic, 0), -1, "the offsets went with the group");
    let again = client.must(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(&group))]), version);
    assert_eq!(again.results[0].error_code, 69, "GROUP_ID_NOT_FOUND: got {}", code_name(again.results[0].error_code));
}

// ---------------------------------------------------------------------------

/// The other half of "exactly": a version just past (or before) an advertised
/// range is refused the way Kafka refuses it: ApiVersions answers
/// UNSUPPORTED_VERSION in the v0 format (KIP-511), anything else closes.
#[test]
fn versions_outside_the_advertised_ranges_are_refused() {
    let mut broker = Broker::start();
    let advertised = advertised_ranges(&broker.client().api_versions(3));
    for &(key, min, max) in &advertised {
        let api = ApiKey::try_from(key).expect("a known API key");
        let mut outside = vec![max + 1];
        if min > 0 {
            outside.push(min - 1);
        }
        for version in outside {
            let mut client = broker.client();
            let correlation_id = client.next_correlation_id();
            // The body does not matter: the version is refused before it is read.
            let frame = request_frame(api, version, correlation_id, &[0u8; 16]);
            client.send_raw(&frame).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
            if api == ApiKey::ApiVersions {
                let mut response = client.read_frame(std::time::Instant::now() + IO_TIMEOUT).unwrap_or_else(|e| panic!("ApiVersions v{version}: {e}"));
                let header = ResponseHeader::decode(&mut response, 0).unwrap_or_else(|e| panic!("ApiVersions v{version}: v0 response header: {e}"));
                assert_eq!(header.correlation_id, correlation_id, "ApiVersions v{version}: correlation id");
                let body: ApiVersionsResponse = decode_exact(api, 0, response).unwrap_or_else(|e| panic!("ApiVersions v{version} in the v0 format: {e}"));
                assert_eq!(body.error_code, 35, "ApiVersions v{version}: error {}", code_name(body.error_code));
                assert_eq!(advertised_ranges(&body), advertised, "ApiVersions v{version}: the supported list");
            } else {
                client.expect_closed(CLOSE_TIMEOUT).unwrap_or_else(|e| panic!("{api:?} v{version} (advertised {min}-{max}): {e}"));
            }
            broker.assert_alive(&format!("{api:?} v{version}"));
        }
    }
}

/// A produce with acks=0 gets no response at all, and the connection goes
/// on: the next request's response is the next frame on the wire.
#[test]
fn produce_with_acks_0_is_not_answered() {
    let broker = Broker::start();
    let topic = unique_topic("acks0");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);
    for version in [3i16, 9, 12] {
        let request = produce_request(&topic, 0, plain_batch(&[format!("acks0-v{version}").as_bytes()])).with_acks(0);
        client.send_request(&request, version).unwrap_or_else(|e| panic!("Produce v{version} acks=0: {e}"));
        // If the produce were answered, this would read its response and fail on the correlation id.
        let response = client.call(&api_versions_request(), 3).unwrap_or_else(|e| panic!("ApiVersions after Produce v{version} acks=0: {e}"));
        assert_eq!(response.error_code, 0);
    }
    assert_eq!(client.log_end_offset(&topic, 0), 3, "the acks=0 batches were written");
}

/// Requests sent back to back on one connection (as librdkafka pipelines
/// them) are answered in order, produce requests land in order, and a
/// request that is not a produce sees the effect of every produce before it.
#[test]
fn pipelined_requests_are_answered_and_applied_in_order() {
    let broker = Broker::start_with(&[("SILT_LOG__FLUSH_MESSAGES", "1")]);
    let topic = unique_topic("pipelined");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 2);
    const ROUNDS: usize = 4;
    const PRODUCES_PER_ROUND: usize = 6;
    let mut pending = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..PRODUCES_PER_ROUND {
            let value = format!("round {round} batch {i}");
            let request = produce_request(&topic, (i % 2) as i32, plain_batch(&[value.as_bytes(), b"second record"]));
            pending.push((Some(client.send_request(&request, 9).expect("send a produce")), None));
        }
        // Not a produce: it must see all the produces sent before it.
        pending.push((None, Some(client.send_request(&list_offsets_request(&topic, 1, -1), 7).expect("send ListOffsets"))));
    }
    let mut next_offset = [0i64; 2];
    for (n, (produce, list)) in pending.into_iter().enumerate() {
        if let Some(sent) = produce {
            let partition = ((n % (PRODUCES_PER_ROUND + 1)) % 2) as i32;
            let answer = single_produce_partition(client.receive::<ProduceResponse>(sent).expect("a produce response, in order"), &topic);
            assert_eq!(answer.error_code, 0, "produce {n}: error {}", code_name(answer.error_code));
            assert_eq!(answer.index, partition);
            assert_eq!(answer.base_offset, next_offset[partition as usize], "produce {n} landed in request order");
            next_offset[partition as usize] += 2;
        }
        if let Some(sent) = list {
            let answer = client.receive::<ListOffsetsResponse>(sent).expect("a ListOffsets response, in order");
            let p = &answer.topics[0].partitions[0];
            assert_eq!((p.error_code, p.offset), (0, next_offset[1]), "ListOffsets after {n} requests sees every earlier produce");
        }
    }
    assert_eq!(client.read_all(&topic, 0, 0).len(), ROUNDS * PRODUCES_PER_ROUND);
}

/// A KIP-848 member joining `group` subscribed to `topic` (v1 members name themselves).
fn consumer_join(group: &str, topic: &str, version: i16) -> ConsumerGroupHeartbeatRequest {
    let member_id = if version >= 1 { uuid::Uuid::new_v4().to_string() } else { String::new() };
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_member_id(str_bytes(&member_id))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic_name(topic)]))
        .with_topic_partitions(Some(vec![]))
}

fn check_consumer_group_heartbeat(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("cg-heartbeat", version);
    let joined = client.must(&consumer_join(&group, &m.topic, version), version);
    assert_eq!(joined.error_code, 0, "error {}", code_name(joined.error_code));
    let member_id = joined.member_id.clone().expect("a member id").to_string();
    assert!(!member_id.is_empty());
    assert_eq!(joined.member_epoch, 1);
    assert!(joined.heartbeat_interval_ms > 0);
    let assignment = joined.assignment.expect("a joining member gets its assignment");
    assert_eq!(assignment.topic_partitions.len(), 1);
    assert_eq!((assignment.topic_partitions[0].topic_id, assignment.topic_partitions[0].partitions.clone()), (m.topic_id, vec![0]));
    let beat = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(&group)))
        .with_member_id(str_bytes(&member_id))
        .with_member_epoch(1)
        .with_rebalance_timeout_ms(-1);
    let ok = client.must(&beat, version);
    assert_eq!((ok.error_code, ok.member_epoch), (0, 1), "error {}", code_name(ok.error_code));
    assert!(ok.assignment.is_none(), "an unchanged assignment is not repeated");
    let fenced = client.must(&beat.clone().with_member_epoch(5), version);
    assert_eq!(fenced.error_code, 110, "a future epoch: error {}", code_name(fenced.error_code));
    let unknown = client.must(&beat.clone().with_member_id(str_bytes("nobody")), version);
    assert_eq!(unknown.error_code, 25, "an unknown member: error {}", code_name(unknown.error_code));
    let assignor = client.must(&consumer_join(&group, &m.topic, version).with_server_assignor(Some(str_bytes("sticky"))), version);
    assert_eq!(assignor.error_code, 112, "an unknown assignor: error {}", code_name(assignor.error_code));
    let left = client.must(&beat.with_member_epoch(-1), version);
    assert_eq!((left.error_code, left.member_epoch), (0, -1), "error {}", code_name(left.error_code));
    // A classic group with members refuses the consumer protocol.
    let classic = group_for("cg-classic", version);
    join_and_sync(&mut client, &classic, b"a");
    let refused = client.must(&consumer_join(&classic, &m.topic, version), version);
    assert_eq!(refused.error_code, 69, "a classic group: error {}", code_name(refused.error_code));
}

fn check_consumer_group_describe(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let group = group_for("cg-describe", version);
    let joined = client.must(&consumer_join(&group, &m.topic, 1).with_server_assignor(Some(str_bytes("range"))), 1);
    assert_eq!(joined.error_code, 0, "error {}", code_name(joined.error_code));
    let classic = group_for("cg-describe-classic", version);
    join_and_sync(&mut client, &classic, b"a");
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(str_bytes(&group)), GroupId(str_bytes("matrix-no-such-group")), GroupId(str_bytes(&classic))])
        .with_include_authorized_operations(true);
    let response = client.must(&request, version);
    let described = &response.groups[0];
    assert_eq!(described.error_code, 0, "error {}", code_name(described.error_code));
    assert_eq!(
        (described.group_state.as_str(), described.group_epoch, described.assignment_epoch, described.assignor_name.as_str()),
        ("Stable", 1, 1, "range")
    );
    assert!(described.authorized_operations > 0);
    assert_eq!(described.members.len(), 1);
    let member = &described.members[0];
    assert_eq!(Some(&member.member_id), joined.member_id.as_ref());
    assert_eq!(member.member_epoch, 1);
    assert_eq!(member.subscribed_topic_names, vec![topic_name(&m.topic)]);
    assert_eq!(member.assignment.topic_partitions.len(), 1);
    assert_eq!(member.assignment.topic_partitions[0].topic_name.as_str(), m.topic);
    assert_eq!(member.assignment.topic_partitions[0].partitions, vec![0]);
    assert_eq!(member.target_assignment, member.assignment);
    if version >= 1 {
        assert_eq!(member.member_type, 1);
    }
    assert_eq!(response.groups[1].error_code, 69, "an unknown group: error {}", code_name(response.groups[1].error_code));
    assert_eq!(response.groups[2].error_code, 69, "a classic group: error {}", code_name(response.groups[2].error_code));
}
