//! The group's timers on tokio's paused clock: session expiry, the rebalance
//! timeout, the initial rebalance delay and the revocation deadline, each
//! checked just before and just after it is due. The clock only moves when
//! every task on the runtime waits, so these take milliseconds of real time
//! and cannot flake on a busy machine.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::*;
use crate::group::assignors::Assignment;
use crate::node::{CreateTopic, NodeHandle, NodeOptions};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 5_000;
const INITIAL_DELAY_MS: u64 = 3_000;
/// How far before and after a deadline the tests look.
const MARGIN: Duration = Duration::from_millis(1);

/// Runs `test` on an actix system whose tokio clock starts paused.
fn paused(test: impl std::future::Future<Output = ()>) {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a paused current-thread runtime")
    });
    system.block_on(test);
}

fn ms(n: impl Into<i64>) -> Duration {
    Duration::from_millis(u64::try_from(n.into()).expect("a positive duration"))
}

/// A group actor on this runtime, its summary, and the node holding its log.
struct Fixture {
    _dir: tempfile::TempDir,
    _node: NodeHandle,
    group: Addr<GroupActor>,
    summary: watch::Receiver<GroupSummary>,
}

async fn fixture(initial_rebalance_delay_ms: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = NodeHandle::start(NodeOptions::for_tests(dir.path())).await.expect("the node starts");
    let offsets =
        CreateTopic { name: "offsets".into(), partitions: Some(1), replication_factor: None, configs: vec![], validate_only: false, assignments: None };
    let view = node.create_topic(offsets).await.expect("the offsets topic is created");
    let timers = GroupTimers {
        initial_rebalance_delay_ms,
        offsets_retention_ms: 7 * 24 * 3600 * 1000,
        limits: Limits { min_session_timeout_ms: 1_000, max_session_timeout_ms: 60_000, max_size: usize::MAX },
        consumer_heartbeat_interval_ms: 1_000,
        consumer_session_timeout_ms: SESSION_MS,
    };
    let (tx, summary) = watch::channel(GroupSummary::default());
    let log = view.partitions[0].local.clone().expect("a local partition");
    let group = GroupActor::new("g".into(), None, Offsets::new(), timers, log, tx).start();
    Fixture { _dir: dir, _node: node, group, summary }
}

fn join_request(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        require_known_member_id: false,
    }
}

async fn join(group: &Addr<GroupActor>, member_id: &str) -> JoinResult {
    group.send(Join(join_request(member_id))).await.expect("the group answers").expect("the join succeeds")
}

async fn sync(group: &Addr<GroupActor>, joined: &JoinResult) {
    let assignments = if joined.leader == joined.member_id { vec![(joined.member_id.clone(), Bytes::from_static(b"a"))] } else { vec![] };
    let sync = Sync {
        member_id: joined.member_id.clone(),
        instance_id: None,
        generation_id: joined.generation_id,
        protocol_type: None,
        protocol_name: None,
        assignments,
    };
    group.send(sync).await.expect("the group answers").expect("the sync succeeds");
}

fn members(f: &Fixture) -> usize {
    f.summary.borrow().members
}

/// A stable group of one member, synced.
async fn stable_member(f: &Fixture) -> JoinResult {
    let joined = join(&f.group, "").await;
    sync(&f.group, &joined).await;
    assert_eq!(f.summary.borrow().phase, Some(Phase::Stable));
    joined
}

#[test]
fn a_member_that_stops_heartbeating_expires_after_its_session_timeout() {
    paused(async {
        let f = fixture(0).await;
        let joined = stable_member(&f).await;
        sleep(ms(SESSION_MS) - MARGIN).await;
        assert_eq!(members(&f), 1, "alive until the session timeout");
        let heartbeat = Heartbeat { member_id: joined.member_id.clone(), instance_id: None, generation_id: joined.generation_id };
        f.group.send(heartbeat).await.expect("the group answers").expect("the heartbeat is accepted");
        let beat = Instant::now();
        sleep(ms(SESSION_MS) - MARGIN).await;
        assert_eq!(members(&f), 1, "a heartbeat restarts the session");
        sleep(MARGIN * 2).await;
        assert_eq!(members(&f), 0, "expired {:?} after the last heartbeat", beat.elapsed());
        assert_eq!(f.summary.borrow().phase, Some(Phase::Empty));
    });
}

#[test]
fn a_rebalance_completes_without_a_member_that_does_not_rejoin_by_the_rebalance_timeout() {
    paused(async {
        let f = fixture(0).await;
        let first = stable_member(&f).await;
        let started = Instant::now();
        // A second member joins; the first never rejoins (nor heartbeats).
        let second = join(&f.group, "").await;
        let waited = started.elapsed();
        assert!(waited >= ms(REBALANCE_MS) && waited < ms(REBALANCE_MS) + MARGIN * 10, "the join waited {waited:?}");
        assert_eq!(second.generation_id, first.generation_id + 1);
        assert_eq!(second.members.len(), 1, "the member that did not rejoin is gone: {:?}", second.members);
        assert_eq!(members(&f), 1);
    });
}

#[test]
fn the_first_rebalance_of_an_empty_group_waits_the_initial_delay() {
    paused(async {
        let f = fixture(INITIAL_DELAY_MS).await;
        let started = Instant::now();
        let group = f.group.clone();
        let first = actix_rt::spawn(async move { join(&group, "").await });
        sleep(ms(1_000)).await;
        assert!(!first.is_finished(), "the first join waits for others");
        let second = join(&f.group, "").await;
        let waited = started.elapsed();
        assert!(waited >= ms(INITIAL_DELAY_MS as i64) && waited < ms(INITIAL_DELAY_MS as i64) + MARGIN * 10, "completed after {waited:?}");
        let first = first.await.expect("the first join completes");
        assert_eq!(first.generation_id, 1, "one rebalance for both");
        assert_eq!(second.generation_id, 1);
    });
}

const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(7);

fn consumer_heartbeat(member_id: &str, member_epoch: i32, owned: Option<Assignment>) -> ConsumerHeartbeat {
    let heartbeat = consumer::Heartbeat {
        member_id: member_id.into(),
        member_epoch,
        subscribed_topic_names: Some(vec!["t".into()]),
        rebalance_timeout_ms: REBALANCE_MS,
        owned,
        client_id: "c".into(),
        ..consumer::Heartbeat::default()
    };
    ConsumerHeartbeat { heartbeat, topics: Box::new(|name| (name == "t").then_some((TOPIC_ID, 4))), topic_names: Box::new(|| vec!["t".to_owned()]) }
}

async fn beat(group: &Addr<GroupActor>, member_id: &str, member_epoch: i32, owned: Option<Assignment>) -> HeartbeatAnswer {
    group.send(consumer_heartbeat(member_id, member_epoch, owned)).await.expect("the group answers").expect("the heartbeat is accepted").0
}

#[test]
fn a_consumer_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    paused(async {
        let f = fixture(0).await;
        let a = beat(&f.group, "", 0, None).await;
        let owned = a.assignment.clone().expect("the first member is assigned every partition");
        let a = beat(&f.group, &a.member_id, a.member_epoch, Some(owned.clone())).await;
        // A second member joins: the first must give up some partitions.
        let b = beat(&f.group, "", 0, None).await;
        assert_eq!(members(&f), 2);
        // The first keeps claiming everything.
        beat(&f.group, &a.member_id, a.member_epoch, Some(owned.clone())).await;
        sleep(ms(REBALANCE_MS) - MARGIN).await;
        assert_eq!(members(&f), 2, "the first member may revoke until its rebalance timeout");
        sleep(MARGIN * 2).await;
        assert_eq!(members(&f), 1, "the member that did not revoke is removed");
        let b = beat(&f.group, &b.member_id, b.member_epoch, Some(Assignment::new())).await;
        assert!(b.member_epoch > 0, "the second member stays: {b:?}");
    });
}
