//! The replica fetcher against a real listener: a leader node served by
//! Silt's Kafka listener on 127.0.0.1 port 0, and a follower partition actor
//! in this test whose data comes only through `src/replication/` (Fetch with
//! a replica id, OffsetForLeaderEpoch) over TCP. The follower's log must end
//! up identical to the leader's, byte for byte, and follow new writes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Supervisor;
use kafka_protocol::error::ResponseError;
use silt::broker::Broker;
use silt::config::Config;
use silt::metrics::Metrics;
use silt::replication::{FetcherSettings, ReplicaFetcherPool};
use silt::security::listener::{AdvertisedListener, Listener};
use silt_actors::group::GroupCoordinator;
use silt_actors::node::CreateTopic;
use silt_actors::partition::{Append, ArchiveStatus, PartitionOptions, ReplicationOptions, RequiredAcks};
use silt_actors::replication::{FollowedPartition, LeaderEndpoint, PartitionRole, ReplicaFetchers, SetRole};
use silt_actors::{NodeHandle, PartitionActor, PartitionHandle, TopicPartition, Watermarks};
use silt_tiering::LogConfig;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

const FOLLOWER: i32 = 7;
const TOPIC: &str = "replicated";
/// Long enough for a debug build on a loaded machine; the poll ends as soon as it holds.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A leader node and its Kafka listener, in this process.
struct Leader {
    node: NodeHandle,
    port: u16,
    shutdown: broadcast::Sender<()>,
}

async fn start_leader(data_dir: PathBuf) -> Leader {
    let mut config = Config::default();
    config.storage.data_dir = data_dir;
    let node = NodeHandle::start(config.node_options(None)).await.expect("the leader node starts");
    let groups = GroupCoordinator::start(node.clone(), config.groups_config()).await.expect("groups load");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a listener");
    let port = listener.local_addr().expect("bound address").port();
    let advertised = AdvertisedListener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: i32::from(port) };
    let broker = Arc::new(Broker::new(node.clone(), groups, Arc::new(Metrics::with_per_partition(false)), config, vec![advertised]));
    let (shutdown, _) = broadcast::channel(1);
    let plaintext = Arc::new(Listener::plaintext(0, "PLAINTEXT"));
    tokio::spawn(silt::server::serve(listener, plaintext, broker, shutdown.clone(), shutdown.subscribe()));
    Leader { node, port, shutdown }
}

/// A leader node with the topic, its partition led with [`FOLLOWER`] as the
/// other replica, in the ISR or not.
async fn leader_of_topic(dir: &Path, follower_in_sync: bool) -> (Leader, silt_actors::node::TopicView, PartitionHandle) {
    let leader = start_leader(dir.join("leader")).await;
    let create =
        CreateTopic { name: TOPIC.into(), partitions: Some(1), replication_factor: None, configs: Vec::new(), validate_only: false, assignments: None };
    let topic = leader.node.create_topic(create).await.expect("create the topic");
    let id = leader.node.node_id;
    let on_leader = leader.node.partition(TOPIC, 0).expect("the leader's partition");
    let isr = if follower_in_sync { vec![id, FOLLOWER] } else { vec![id] };
    on_leader.ask(SetRole(PartitionRole::Leader { leader_epoch: 0, partition_epoch: 1, replicas: vec![id, FOLLOWER], isr })).await.expect("leader role");
    (leader, topic, on_leader)
}

fn start_follower(dir: PathBuf, leader: i32, topic_id: uuid::Uuid) -> PartitionHandle {
    start_replica(dir, PartitionRole::Follower { leader_epoch: 0, partition_epoch: 1, leader: Some(leader), replicas: vec![leader, FOLLOWER] }, topic_id)
}

/// The test's own replica of the topic's partition, as broker [`FOLLOWER`].
fn start_replica(dir: PathBuf, role: PartitionRole, topic_id: uuid::Uuid) -> PartitionHandle {
    let tp = TopicPartition { topic: TOPIC.into(), partition: 0 };
    let (tx, rx) = watch::channel(Watermarks::default());
    let options = PartitionOptions {
        cleaner: None,
        dir,
        log: LogConfig::default(),
        min_insync_replicas: 1,
        clean_start: true,
        maintenance_interval: Duration::from_secs(60),
        archive: None,
        role,
        replication: ReplicationOptions::single_node(FOLLOWER, topic_id),
    };
    let status = Arc::new(ArchiveStatus::default());
    let (tp2, status2) = (tp.clone(), status.clone());
    let addr = Supervisor::start(move |_| PartitionActor::new(tp2, options, tx, Arc::new(AtomicU64::new(0)), status2));
    PartitionHandle::new(tp, addr, rx, status)
}

/// Polls until the follower's log end and high watermark are the leader's.
async fn wait_caught_up(leader: &PartitionHandle, follower: &PartitionHandle) {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let (l, f) = (leader.watermarks(), follower.watermarks());
        if f.open && (f.log_end_offset, f.high_watermark) == (l.log_end_offset, l.high_watermark) {
            return;
        }
        assert!(Instant::now() < deadline, "the follower did not catch up: leader {l:?}, follower {f:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every segment file of a partition directory, by name.
fn segments(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("partition directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), std::fs::read(&p).expect("segment")))
        .collect();
    files.sort();
    files
}

#[actix_rt::test]
async fn a_follower_copies_a_real_leader_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The metadata image would say this: the follower is assigned but not yet in sync.
    let (leader, topic, on_leader) = leader_of_topic(dir.path(), false).await;
    let leader_id = leader.node.node_id;
    for i in 0..10u32 {
        let value = format!("before the follower {i}");
        on_leader.ask(Append { records: common::plain_batch(&[value.as_bytes()]), acks: RequiredAcks::Leader }).await.expect("append");
    }

    let follower_dir = dir.path().join("follower").join(format!("{TOPIC}-0"));
    let follower = start_follower(follower_dir.clone(), leader_id, topic.id);
    let settings = FetcherSettings { max_wait: Duration::from_millis(200), ..FetcherSettings::default() };
    let pool = ReplicaFetcherPool::new(FOLLOWER, tokio::runtime::Handle::current(), settings);
    let endpoint = LeaderEndpoint { broker_id: leader_id, host: "127.0.0.1".into(), port: leader.port };
    pool.follow(endpoint, vec![FollowedPartition { handle: follower.clone(), topic_id: topic.id, leader_epoch: 0 }]);
    assert_eq!(pool.fetchers().into_iter().collect::<Vec<_>>(), vec![(leader_id, 1)], "one fetcher for the one source broker");

    wait_caught_up(&on_leader, &follower).await;
    // New writes reach the follower through its parked (long-poll) fetches.
    for i in 0..10u32 {
        let value = format!("while following {i}");
        on_leader.ask(Append { records: common::plain_batch(&[value.as_bytes(), b"second record"]), acks: RequiredAcks::Leader }).await.expect("append");
    }
    wait_caught_up(&on_leader, &follower).await;
    assert_eq!(follower.watermarks().log_end_offset, 30);

    let leader_segments = segments(&dir.path().join("leader").join(format!("{TOPIC}-0")));
    let follower_segments = segments(&follower_dir);
    assert!(!leader_segments.is_empty());
    assert_eq!(leader_segments, follower_segments, "the follower's log is the leader's, byte for byte");

    pool.unfollow(std::slice::from_ref(&follower.tp));
    assert!(pool.fetchers().is_empty(), "a fetcher with nothing to copy stops");
    let _ = leader.shutdown.send(());
    leader.node.shutdown().await.expect("leader shutdown");
}

/// Runs a blocking wire client off the actix runtime that serves the broker.
async fn on_wire<T: Send + 'static>(addr: std::net::SocketAddr, call: impl FnOnce(&mut common::Client) -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || call(&mut common::Client::connect(addr))).await.expect("the wire client panicked")
}

#[actix_rt::test]
async fn acks_all_over_the_wire_waits_for_the_follower_and_times_out_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, topic, on_leader) = leader_of_topic(dir.path(), true).await;
    let leader_id = leader.node.node_id;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", leader.port).parse().expect("address");

    // No follower fetches: the batch is written but never committed.
    let timed_out = on_wire(addr, |c| {
        let request = common::produce_request(TOPIC, 0, common::plain_batch(&[b"unreplicated"])).with_timeout_ms(300);
        common::single_produce_partition(c.must(&request, 9), TOPIC)
    })
    .await;
    assert_eq!(timed_out.error_code, ResponseError::RequestTimedOut.code(), "REQUEST_TIMED_OUT, got {}", common::code_name(timed_out.error_code));
    let (hw, leo) = (on_leader.watermarks().high_watermark, on_leader.watermarks().log_end_offset);
    assert_eq!((hw, leo), (0, 1), "written, not committed");
    let (latest, unknown_epoch) = on_wire(addr, |c| {
        let latest = c.list_offset(TOPIC, 0, -1);
        let mut ahead = common::fetch_request_by_name(TOPIC, 0, 0, 0, 1);
        ahead.topics[0].partitions[0].current_leader_epoch = 5;
        (latest, common::single_fetch_partition(c.must(&ahead, 12)).error_code)
    })
    .await;
    assert_eq!(latest, (0, 0), "consumers see nothing above the HW");
    assert_eq!(unknown_epoch, ResponseError::UnknownLeaderEpoch.code(), "UNKNOWN_LEADER_EPOCH, got {}", common::code_name(unknown_epoch));

    // The follower starts fetching: the next acks=all produce is answered once it has both batches.
    let follower = start_follower(dir.path().join("follower").join(format!("{TOPIC}-0")), leader_id, topic.id);
    let pool = ReplicaFetcherPool::new(FOLLOWER, tokio::runtime::Handle::current(), FetcherSettings::default());
    let endpoint = LeaderEndpoint { broker_id: leader_id, host: "127.0.0.1".into(), port: leader.port };
    pool.follow(endpoint, vec![FollowedPartition { handle: follower.clone(), topic_id: topic.id, leader_epoch: 0 }]);
    let committed = on_wire(addr, |c| c.produce(TOPIC, 0, common::plain_batch(&[b"replicated"]))).await;
    assert_eq!(committed.error_code, 0, "acks=all: {}", common::code_name(committed.error_code));
    assert_eq!(committed.base_offset, 1);
    assert!(follower.watermarks().log_end_offset >= 2, "the follower has the batch it acknowledged: {:?}", follower.watermarks());
    assert_eq!(on_leader.watermarks().high_watermark, 2);
    let _ = leader.shutdown.send(());
    leader.node.shutdown().await.expect("leader shutdown");
}

#[actix_rt::test]
async fn a_returning_replica_truncates_its_divergent_tail_over_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, topic, on_leader) = leader_of_topic(dir.path(), false).await;
    let leader_id = leader.node.node_id;
    // This replica led alone in epoch 0 and wrote a tail nobody else has.
    let replica_dir = dir.path().join("follower").join(format!("{TOPIC}-0"));
    let sole = PartitionRole::Leader { leader_epoch: 0, partition_epoch: 1, replicas: vec![leader_id, FOLLOWER], isr: vec![FOLLOWER] };
    let replica = start_replica(replica_dir.clone(), sole, topic.id);
    for i in 0..3u32 {
        let value = format!("divergent {i}");
        replica.ask(Append { records: common::plain_batch(&[value.as_bytes()]), acks: RequiredAcks::All }).await.expect("divergent write");
    }
    // The leader took over in epoch 1 with its own log.
    let epoch_1 = PartitionRole::Leader { leader_epoch: 1, partition_epoch: 2, replicas: vec![leader_id, FOLLOWER], isr: vec![leader_id] };
    on_leader.ask(SetRole(epoch_1)).await.expect("leader role");
    for i in 0..5u32 {
        let value = format!("epoch 1 record {i}");
        on_leader.ask(Append { records: common::plain_batch(&[value.as_bytes()]), acks: RequiredAcks::All }).await.expect("leader write");
    }
    let follower = PartitionRole::Follower { leader_epoch: 1, partition_epoch: 2, leader: Some(leader_id), replicas: vec![leader_id, FOLLOWER] };
    replica.ask(SetRole(follower)).await.expect("follower role");

    let pool = ReplicaFetcherPool::new(FOLLOWER, tokio::runtime::Handle::current(), FetcherSettings::default());
    let endpoint = LeaderEndpoint { broker_id: leader_id, host: "127.0.0.1".into(), port: leader.port };
    pool.follow(endpoint, vec![FollowedPartition { handle: replica.clone(), topic_id: topic.id, leader_epoch: 1 }]);
    wait_caught_up(&on_leader, &replica).await;
    let leader_segments = segments(&dir.path().join("leader").join(format!("{TOPIC}-0")));
    assert_eq!(leader_segments, segments(&replica_dir), "the divergent tail is gone; the leader's log replaced it byte for byte");
    let _ = leader.shutdown.send(());
    leader.node.shutdown().await.expect("leader shutdown");
}
