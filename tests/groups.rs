//! Consumer groups against the real broker with raw protocol members: two
//! members join and sync, heartbeat, commit, and the committed offsets
//! survive a restart; the refusals Kafka answers are answered the same way.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::*;

const NO_DELAY: (&str, &str) = ("SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS", "0");

/// The broker's `/metrics` page.
fn metrics(http: SocketAddr) -> String {
    let mut stream = TcpStream::connect(http).expect("connect to the HTTP listener");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: silt\r\n\r\n").expect("send GET /metrics");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("read /metrics");
    page
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn group_id(name: &str) -> GroupId {
    GroupId(str_bytes(name))
}

/// Sends a JoinGroup v5 without waiting for the (delayed) answer.
fn send_join(client: &mut Client, group: &str, member_id: &str, protocol_type: &str, metadata: Bytes) -> Pending {
    let mut request = join_group_request(group, member_id, "range", metadata);
    request.protocol_type = str_bytes(protocol_type);
    client.send_request(&request, 5).expect("send JoinGroup")
}

/// A new member's id (JoinGroup v5 answers MEMBER_ID_REQUIRED first).
fn member_id_for(client: &mut Client, group: &str) -> String {
    let first = client.must(&join_group_request(group, "", "range", Bytes::from_static(b"m")), 5);
    assert_eq!(first.error_code, 79, "expected MEMBER_ID_REQUIRED, got {}", code_name(first.error_code));
    first.member_id.to_string()
}

fn sync_request(group: &str, generation: i32, member_id: &str, assignments: &[(&str, &[u8])]) -> SyncGroupRequest {
    SyncGroupRequest::default().with_group_id(group_id(group)).with_generation_id(generation).with_member_id(str_bytes(member_id)).with_assignments(
        assignments
            .iter()
            .map(|(m, a)| sync_group_request::SyncGroupRequestAssignment::default().with_member_id(str_bytes(m)).with_assignment(Bytes::copy_from_slice(a)))
            .collect(),
    )
}

#[test]
fn two_members_rebalance_commit_and_offsets_survive_a_restart() {
    // Both members must land in the first rebalance: the initial delay (Kafka's
    // group.initial.rebalance.delay.ms) holds it open for the second join, sent
    // right after the first.
    let mut broker = Broker::start_with(&[("SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS", "2000")]);
    let topic = unique_topic("groups");
    let group = unique_topic("group");
    let mut admin = broker.client();
    admin.create_topic_ok(&topic, 2);

    let mut a = broker.client();
    let mut b = broker.client();
    let a_id = member_id_for(&mut a, &group);
    let b_id = member_id_for(&mut b, &group);
    // Both join; the rebalance completes when both have (re)joined.
    let a_join = send_join(&mut a, &group, &a_id, "consumer", Bytes::from_static(b"meta-a"));
    let b_join = send_join(&mut b, &group, &b_id, "consumer", Bytes::from_static(b"meta-b"));
    let a_joined: JoinGroupResponse = a.receive(a_join).expect("a's JoinGroup answer");
    let b_joined: JoinGroupResponse = b.receive(b_join).expect("b's JoinGroup answer");
    assert_eq!((a_joined.error_code, b_joined.error_code), (0, 0), "join errors {} {}", code_name(a_joined.error_code), code_name(b_joined.error_code));
    assert_eq!(a_joined.generation_id, b_joined.generation_id);
    assert_eq!(a_joined.leader, b_joined.leader, "one leader");
    let generation = a_joined.generation_id;
    let (leader, follower, leader_id, follower_id, leader_joined) = if a_joined.leader.as_str() == a_id {
        (&mut a, &mut b, a_id.clone(), b_id.clone(), &a_joined)
    } else {
        (&mut b, &mut a, b_id.clone(), a_id.clone(), &b_joined)
    };
    assert_eq!(leader_joined.members.len(), 2, "the leader sees both members");

    // The follower's sync waits for the leader's assignment.
    let follower_sync = follower.send_request(&sync_request(&group, generation, &follower_id, &[]), 3).expect("send SyncGroup");
    let assignments: [(&str, &[u8]); 2] = [(&leader_id, b"p0"), (&follower_id, b"p1")];
    let leader_synced = leader.must(&sync_request(&group, generation, &leader_id, &assignments), 3);
    let follower_synced: SyncGroupResponse = follower.receive(follower_sync).expect("the follower's SyncGroup answer");
    assert_eq!((leader_synced.error_code, follower_synced.error_code), (0, 0));
    assert_eq!(leader_synced.assignment.as_ref(), b"p0");
    assert_eq!(follower_synced.assignment.as_ref(), b"p1");

    // A stale generation is refused.
    let stale = follower.must(&sync_request(&group, generation - 1, &follower_id, &[]), 3);
    assert_eq!(stale.error_code, 22, "ILLEGAL_GENERATION expected, got {}", code_name(stale.error_code));

    for (client, id) in [(&mut *leader, &leader_id), (&mut *follower, &follower_id)] {
        let beat = HeartbeatRequest::default().with_group_id(group_id(&group)).with_generation_id(generation).with_member_id(str_bytes(id));
        assert_eq!(client.must(&beat, 4).error_code, 0, "heartbeat of {id}");
    }

    // Another protocol type than the members' is refused and leaves the group alone.
    let mut intruder = broker.client();
    let refused: JoinGroupResponse = {
        let pending = send_join(&mut intruder, &group, "", "connect", Bytes::new());
        intruder.receive(pending).expect("JoinGroup answer")
    };
    assert_eq!(refused.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL expected, got {}", code_name(refused.error_code));

    // Oversized member metadata is refused with INVALID_REQUEST, the group intact.
    let big = Bytes::from(vec![7u8; 1024 * 1024 + 1]);
    let pending = send_join(&mut intruder, &group, "", "consumer", big);
    let too_big: JoinGroupResponse = intruder.receive(pending).expect("JoinGroup answer");
    assert_eq!(too_big.error_code, 42, "INVALID_REQUEST expected, got {}", code_name(too_big.error_code));
    let beat = HeartbeatRequest::default().with_group_id(group_id(&group)).with_generation_id(generation).with_member_id(str_bytes(&leader_id));
    assert_eq!(leader.must(&beat, 4).error_code, 0, "the group is still stable");

    // Commit with the current generation; an unknown partition is refused.
    for (partition, offset) in [(0, 5), (1, 7)] {
        let commit = leader.must(&offset_commit_request(&group, generation, &leader_id, &topic, partition, offset), 8);
        assert_eq!(commit.topics[0].partitions[0].error_code, 0, "commit: {}", code_name(commit.topics[0].partitions[0].error_code));
    }
    let missing = leader.must(&offset_commit_request(&group, generation, &leader_id, &topic, 9, 1), 8);
    assert_eq!(missing.topics[0].partitions[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION expected");
    let stale_commit = leader.must(&offset_commit_request(&group, generation + 5, &leader_id, &topic, 0, 9), 8);
    assert_eq!(stale_commit.topics[0].partitions[0].error_code, 22);
    assert_eq!(committed_offset(&mut admin, &group, &topic, 0), 5);
    assert_eq!(committed_offset(&mut admin, &group, &topic, 1), 7);

    // Lag = high watermark - committed offset.
    let values = values("lag", 8);
    assert_eq!(admin.produce(&topic, 0, plain_batch(&as_slices(&values))).error_code, 0);
    let page = metrics(broker.http);
    let group_label = format!("group=\"{group}\"");
    let topic_label = format!("topic=\"{topic}\"");
    assert_eq!(sample(&page, "silt_consumer_group_lag", &[&group_label, &topic_label, "partition=\"0\""]), Some(3.0), "lag of partition 0 (8 - 5)");
    assert_eq!(sample(&page, "silt_consumer_group_members", &[&group_label]), Some(2.0));
    assert_eq!(sample(&page, "silt_consumer_groups", &["state=\"Stable\""]), Some(1.0));
    assert!(sample(&page, "silt_consumer_group_rebalances_total", &[&group_label]).is_some_and(|n| n >= 1.0));

    broker.restart();
    let mut after = broker.client();
    assert_eq!(committed_offset(&mut after, &group, &topic, 0), 5, "partition 0 after the restart");
    assert_eq!(committed_offset(&mut after, &group, &topic, 1), 7, "partition 1 after the restart");
    broker.assert_alive("the group test");
}

#[test]
fn an_expired_session_triggers_a_rebalance_without_the_member() {
    let broker = Broker::start_with(&[NO_DELAY, ("SILT_GROUPS__MIN_SESSION_TIMEOUT_MS", "100")]);
    let group = unique_topic("expiry");
    let mut client = broker.client();
    let member_id = member_id_for(&mut client, &group);
    let mut join = join_group_request(&group, &member_id, "range", Bytes::from_static(b"m"));
    join.session_timeout_ms = 300;
    let joined = client.must(&join, 5);
    assert_eq!(joined.error_code, 0);
    // No heartbeats: the member expires and the group empties.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let described = client.must(&DescribeGroupsRequest::default().with_groups(vec![group_id(&group)]), 5);
        if described.groups[0].group_state.as_str() == "Empty" {
            assert!(described.groups[0].members.is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "the group did not become Empty after the session timeout: {}", described.groups[0].group_state);
        std::thread::sleep(POLL_INTERVAL);
    }
    let beat = HeartbeatRequest::default().with_group_id(group_id(&group)).with_generation_id(joined.generation_id).with_member_id(str_bytes(&member_id));
    assert_eq!(client.must(&beat, 4).error_code, 25, "the expired member is unknown");
}

#[test]
fn the_offsets_topic_is_internal_and_protected() {
    let broker = Broker::start_with(&[NO_DELAY, ("SILT_GROUPS__OFFSETS_TOPIC_PARTITIONS", "3")]);
    let mut client = broker.client();
    let metadata = client.metadata(&["__consumer_offsets"], false);
    assert_eq!(metadata.topics[0].error_code, 0);
    assert!(metadata.topics[0].is_internal, "__consumer_offsets is marked internal");
    assert_eq!(metadata.topics[0].partitions.len(), 3, "groups.offsets_topic_partitions");
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![topic_name("__consumer_offsets")]);
    let deleted = client.must(&delete, 4);
    assert_ne!(deleted.responses[0].error_code, 0, "clients cannot delete the offsets topic");
    let grow = CreatePartitionsRequest::default()
        .with_topics(vec![create_partitions_request::CreatePartitionsTopic::default().with_name(topic_name("__consumer_offsets")).with_count(4)]);
    let grown = client.must(&grow, 3);
    assert_ne!(grown.results[0].error_code, 0, "clients cannot change its partition count");
    assert_eq!(client.metadata(&["__consumer_offsets"], false).topics[0].partitions.len(), 3);
}
