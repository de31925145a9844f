//! The KIP-848 consumer group protocol against the real broker, with raw
//! ConsumerGroupHeartbeat members: two members split a 6-partition topic only
//! after the first revokes what moves, commit with their member epochs, and
//! the survivor of a leave gets everything; stale epochs are fenced; the
//! group survives a restart.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::*;

const NO_DELAY: (&str, &str) = ("SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS", "0");
/// How long the members may take to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);
/// Heartbeats per member before giving up on convergence (each answers at once).
const HEARTBEATS_MAX: usize = 100;

/// A raw consumer-protocol member: what it owns and its epoch.
struct Member {
    id: String,
    epoch: i32,
    owned: BTreeSet<i32>,
    topic_id: uuid::Uuid,
}

impl Member {
    fn owned_wire(&self) -> Vec<TopicPartitions> {
        if self.owned.is_empty() {
            return vec![];
        }
        vec![TopicPartitions::default().with_topic_id(self.topic_id).with_partitions(self.owned.iter().copied().collect())]
    }

    /// One heartbeat reporting what the member owns; it takes whatever assignment comes back.
    fn beat(&mut self, client: &mut Client, group: &str) -> ConsumerGroupHeartbeatResponse {
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_member_id(str_bytes(&self.id))
            .with_member_epoch(self.epoch)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(self.owned_wire()));
        let response = client.must(&request, 1);
        assert_eq!(response.error_code, 0, "heartbeat of {}: error {}", self.id, code_name(response.error_code));
        self.epoch = response.member_epoch;
        if let Some(a) = &response.assignment {
            self.owned = a.topic_partitions.iter().filter(|t| t.topic_id == self.topic_id).flat_map(|t| t.partitions.iter().copied()).collect();
        }
        response
    }
}

fn join(client: &mut Client, group: &str, topic: &str, topic_id: uuid::Uuid) -> Member {
    join_with_timeout(client, group, topic, topic_id, 30_000)
}

fn join_with_timeout(client: &mut Client, group: &str, topic: &str, topic_id: uuid::Uuid, rebalance_timeout_ms: i32) -> Member {
    let id = uuid::Uuid::new_v4().to_string();
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_member_id(str_bytes(&id))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(rebalance_timeout_ms)
        .with_subscribed_topic_names(Some(vec![topic_name(topic)]))
        .with_topic_partitions(Some(vec![]));
    let response = client.must(&request, 1);
    assert_eq!(response.error_code, 0, "join: error {}", code_name(response.error_code));
    let mut member = Member { id, epoch: response.member_epoch, owned: BTreeSet::new(), topic_id };
    if let Some(a) = &response.assignment {
        member.owned = a.topic_partitions.iter().flat_map(|t| t.partitions.iter().copied()).collect();
    }
    member
}

/// Heartbeats both members in turn until `done` holds, with a deadline.
fn converge(client: &mut Client, group: &str, members: &mut [&mut Member], what: &str, done: impl Fn(&[&mut Member]) -> bool) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    for _ in 0..HEARTBEATS_MAX {
        if done(members) {
            return;
        }
        assert!(Instant::now() < deadline, "members did not converge to {what} within {CONVERGE_WITHIN:?}");
        for m in members.iter_mut() {
            m.beat(client, group);
        }
    }
    let state: Vec<(String, i32, BTreeSet<i32>)> = members.iter().map(|m| (m.id.clone(), m.epoch, m.owned.clone())).collect();
    panic!("members did not converge to {what} in {HEARTBEATS_MAX} heartbeats each: {state:?}");
}

fn commit(client: &mut Client, group: &str, member: &Member, topic: &str, partition: i32, offset: i64) -> i16 {
    let response = client.must(&offset_commit_request(group, member.epoch, &member.id, topic, partition, offset), 9);
    response.topics[0].partitions[0].error_code
}

#[test]
fn two_members_split_revoke_commit_and_one_takes_over() {
    let broker = Broker::start_with(&[NO_DELAY]);
    let mut client = broker.client();
    let topic = unique_topic("cg-split");
    client.create_topic_ok(&topic, 6);
    let topic_id = client.topic_id(&topic);
    let group = unique_topic("cg-group");

    let mut a = join(&mut client, &group, &topic, topic_id);
    assert_eq!((a.epoch, a.owned.len()), (1, 6), "the first member gets everything");
    let mut b = join(&mut client, &group, &topic, topic_id);
    assert_eq!(b.epoch, 2, "the second member advances to the new group epoch");
    assert!(b.owned.is_empty(), "but gets nothing a still owns: {:?}", b.owned);

    // a learns it must give up three; until it reports them gone its epoch stays 1.
    let told = a.beat(&mut client, &group);
    let kept: BTreeSet<i32> = told.assignment.expect("a is told its new assignment").topic_partitions.iter().flat_map(|t| t.partitions.clone()).collect();
    assert_eq!(kept.len(), 3);
    assert_eq!(told.member_epoch, 1, "a has not revoked yet");
    // A commit at a's current epoch is fine during the revocation.
    assert_eq!(commit(&mut client, &group, &a, &topic, *kept.iter().next().unwrap(), 10), 0);

    converge(&mut client, &group, &mut [&mut a, &mut b], "a 3/3 split at epoch 2", |ms| ms.iter().all(|m| m.owned.len() == 3 && m.epoch == 2));
    assert!(a.owned.is_disjoint(&b.owned), "{:?} and {:?} overlap", a.owned, b.owned);

    // Commits with each member's epoch; a stale epoch is refused.
    for p in a.owned.clone() {
        assert_eq!(commit(&mut client, &group, &a, &topic, p, 100 + i64::from(p)), 0);
    }
    for p in b.owned.clone() {
        assert_eq!(commit(&mut client, &group, &b, &topic, p, 200 + i64::from(p)), 0);
    }
    let stale = Member { id: a.id.clone(), epoch: 1, owned: BTreeSet::new(), topic_id };
    assert_eq!(commit(&mut client, &group, &stale, &topic, 0, 1), 113, "STALE_MEMBER_EPOCH");
    for p in 0..6 {
        let expected = if a.owned.contains(&p) { 100 } else { 200 } + i64::from(p);
        assert_eq!(committed_offset(&mut client, &group, &topic, p), expected, "partition {p}");
    }

    // A heartbeat from the future, or from an epoch long gone, is fenced.
    let fenced = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(&group)))
        .with_member_id(str_bytes(&b.id))
        .with_member_epoch(7)
        .with_rebalance_timeout_ms(-1);
    assert_eq!(client.must(&fenced, 1).error_code, 110, "FENCED_MEMBER_EPOCH");
    assert_eq!(client.must(&fenced.with_member_epoch(1), 1).error_code, 110, "an old epoch without the right partitions is fenced too");

    // ListGroups reports the type; DescribeGroups describes it in classic terms.
    let listed = client.must(&ListGroupsRequest::default().with_types_filter(vec![str_bytes("consumer")]), 5);
    let entry = listed.groups.iter().find(|g| g.group_id.as_str() == group).expect("the group is listed as a consumer group");
    assert_eq!((entry.group_type.as_str(), entry.protocol_type.as_str(), entry.group_state.as_str()), ("consumer", "consumer", "Stable"));
    let classic = client.must(&ListGroupsRequest::default().with_types_filter(vec![str_bytes("classic")]), 5);
    assert!(classic.groups.iter().all(|g| g.group_id.as_str() != group));
    let described = client.must(&DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(&group))]), 5);
    assert_eq!((described.groups[0].protocol_type.as_str(), described.groups[0].members.len()), ("consumer", 2));

    // The members' subscription protects the topic's offsets from OffsetDelete.
    let delete =
        OffsetDeleteRequest::default().with_group_id(GroupId(str_bytes(&group))).with_topics(vec![offset_delete_request::OffsetDeleteRequestTopic::default()
            .with_name(topic_name(&topic))
            .with_partitions(vec![offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0)])]);
    let refused = client.must(&delete, 0);
    assert_eq!(refused.topics[0].partitions[0].error_code, 86, "GROUP_SUBSCRIBED_TO_TOPIC: error {}", code_name(refused.topics[0].partitions[0].error_code));

    // A classic JoinGroup to the non-empty consumer group is refused.
    let classic_join = client.must(&join_group_request(&group, "", "range", bytes::Bytes::from_static(b"m")), 5);
    assert_eq!(classic_join.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");

    // a leaves; b takes all six once it heartbeats.
    let leave = ConsumerGroupHeartbeatRequest::default().with_group_id(GroupId(str_bytes(&group))).with_member_id(str_bytes(&a.id)).with_member_epoch(-1);
    let left = client.must(&leave, 1);
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    converge(&mut client, &group, &mut [&mut b], "b owning all six", |ms| ms[0].owned.len() == 6);
    assert_eq!(b.epoch, 3);
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    let broker = Broker::start_with(&[NO_DELAY]);
    let mut client = broker.client();
    let topic = unique_topic("cg-slow");
    client.create_topic_ok(&topic, 6);
    let topic_id = client.topic_id(&topic);
    let group = unique_topic("cg-slow-group");
    let mut slow = join_with_timeout(&mut client, &group, &topic, topic_id, 300);
    let mut b = join(&mut client, &group, &topic, topic_id);
    // The slow member is told to give up three partitions and never reports it did.
    let told = slow.beat(&mut client, &group);
    assert_eq!(told.member_epoch, 1);
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while b.owned.len() < 6 {
        assert!(Instant::now() < deadline, "b never got the slow member's partitions: {:?}", b.owned);
        b.beat(&mut client, &group);
        std::thread::sleep(Duration::from_millis(50)); // heartbeat pacing, with a deadline
    }
    let fenced = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(&group)))
        .with_member_id(str_bytes(&slow.id))
        .with_member_epoch(1)
        .with_rebalance_timeout_ms(-1);
    assert_eq!(client.must(&fenced, 1).error_code, 25, "the slow member is gone: UNKNOWN_MEMBER_ID");
}

#[test]
fn the_group_survives_a_restart_and_silent_members_expire() {
    let mut broker =
        Broker::start_with(&[NO_DELAY, ("SILT_GROUPS__CONSUMER_SESSION_TIMEOUT_MS", "1000"), ("SILT_GROUPS__CONSUMER_HEARTBEAT_INTERVAL_MS", "200")]);
    let mut client = broker.client();
    let topic = unique_topic("cg-restart");
    client.create_topic_ok(&topic, 2);
    let topic_id = client.topic_id(&topic);
    let group = unique_topic("cg-durable");
    let a = join(&mut client, &group, &topic, topic_id);
    assert_eq!(commit(&mut client, &group, &a, &topic, 0, 42), 0);
    broker.restart();
    let mut client = broker.client();
    let describe = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(str_bytes(&group))]);
    let after = client.must(&describe, 1);
    assert_eq!(after.groups[0].error_code, 0, "error {}", code_name(after.groups[0].error_code));
    assert_eq!(after.groups[0].group_epoch, 1, "the group's epoch was kept");
    assert_eq!(committed_offset(&mut client, &group, &topic, 0), 42);
    // The member does not heartbeat: its session expires.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = client.must(&describe, 1);
        if now.groups[0].members.is_empty() {
            assert_eq!(now.groups[0].group_state.as_str(), "Empty");
            break;
        }
        assert!(Instant::now() < deadline, "the silent member was not removed: {:?}", now.groups[0].members);
        std::thread::sleep(Duration::from_millis(100)); // polling interval, with a deadline
    }
}
