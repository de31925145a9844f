//! Checks of partition reassignment (KIP-455) on one node: the only broker
//! is the only possible replica, so what can be checked here is Kafka's
//! answers: a target equal to the current replicas is accepted and changes
//! nothing, an unregistered broker or a repeated one is an invalid
//! assignment, cancelling with nothing under way is
//! NO_REASSIGNMENT_IN_PROGRESS, and nothing is listed as ongoing. Moving
//! replicas between brokers is tested on a real cluster
//! (tests/test_reassign.py).

use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::*;

use super::*;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

fn partition(index: i32, replicas: Option<&[i32]>) -> ReassignablePartition {
    ReassignablePartition::default().with_partition_index(index).with_replicas(replicas.map(|r| r.iter().map(|&b| BrokerId(b)).collect()))
}

pub(super) fn check_alter_partition_reassignments(broker: &Broker, m: &Matrix, version: i16) {
    let missing = unknown_topic("reassign", version);
    let me = m.node_id;
    let request = AlterPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_allow_replication_factor_change(true).with_topics(vec![
        ReassignableTopic::default().with_name(topic_name(&m.topic)).with_partitions(vec![
            partition(0, Some(&[me])),
            partition(0, Some(&[me, me + 1000])),
            partition(0, Some(&[me, me])),
            partition(0, None),
            partition(9, Some(&[me])),
        ]),
        ReassignableTopic::default().with_name(topic_name(&missing)).with_partitions(vec![partition(0, Some(&[me]))]),
    ]);
    let response = broker.client().must(&request, version);
    assert_eq!(response.error_code, 0);
    let codes: Vec<(String, i32, i16)> =
        response.responses.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index, p.error_code))).collect();
    let expected = vec![
        (m.topic.clone(), 0, 0),
        (m.topic.clone(), 0, INVALID_REPLICA_ASSIGNMENT),
        (m.topic.clone(), 0, INVALID_REPLICA_ASSIGNMENT),
        (m.topic.clone(), 0, NO_REASSIGNMENT_IN_PROGRESS),
        (m.topic.clone(), 9, UNKNOWN_TOPIC_OR_PARTITION),
        (missing, 0, UNKNOWN_TOPIC_OR_PARTITION),
    ];
    assert_eq!(codes, expected);
    let refused = response.responses.iter().flat_map(|t| &t.partitions).filter(|p| p.error_code != 0);
    assert!(refused.clone().all(|p| p.error_message.as_ref().is_some_and(|s| !s.is_empty())), "every refusal says why");
}

pub(super) fn check_list_partition_reassignments(broker: &Broker, m: &Matrix, version: i16) {
    let mut client = broker.client();
    let all = client.must(&ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(None), version);
    assert_eq!((all.error_code, all.topics.len()), (0, 0), "nothing is being reassigned");
    let named = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(Some(vec![
        ListPartitionReassignmentsTopics::default().with_name(topic_name(&m.topic)).with_partition_indexes(vec![0, 9]),
        ListPartitionReassignmentsTopics::default().with_name(topic_name(&unknown_topic("list-reassign", version))).with_partition_indexes(vec![0]),
    ]));
    let response = client.must(&named, version);
    assert_eq!((response.error_code, response.topics.len()), (0, 0), "named partitions not being reassigned are left out");
}
