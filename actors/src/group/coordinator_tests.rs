//! The coordinator following leadership of `__consumer_offsets`: one node
//! (broker 0) with a second broker (1) registered in its metadata, so that
//! leadership of the offsets partitions can move by `PartitionChange` records.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::group::actor::{Commit, FetchOffsets};
use crate::group::offsets::Committed;
use crate::metadata::quorum::{Endpoint, LeaderChange, MetadataBatch, MetadataRecord, MetadataResponse};
use crate::node::NodeOptions;
use crate::replication::{FollowedPartition, LeaderEndpoint, ReplicaFetchers};

/// Fetchers that copy nothing: broker 1 does not exist, only its metadata.
struct NoFetchers;

impl ReplicaFetchers for NoFetchers {
    fn follow(&self, _leader: LeaderEndpoint, _partitions: Vec<FollowedPartition>) {}
    fn unfollow(&self, _partitions: &[TopicPartition]) {}
}

fn options(dir: &std::path::Path) -> NodeOptions {
    let mut options = super::tests::options(dir);
    options.cluster.fetchers = Some(Arc::new(NoFetchers));
    options
}

/// Polls `check` until it holds or five seconds pass.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A group id whose offsets partition (of 2) is `partition`.
fn group_in(partition: i32) -> String {
    (0..).map(|i| format!("group-{i}")).find(|g| offsets_partition(g, 2) == partition).unwrap_or_default()
}

fn commit(tp: &TopicPartition, offset: i64) -> Commit {
    let committed = Committed { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: crate::now_ms() };
    Commit { member_id: String::new(), instance_id: None, generation_id: -1, offsets: vec![(tp.clone(), committed)] }
}

fn group_error(result: Result<impl std::fmt::Debug, Error>) -> GroupError {
    match result {
        Err(Error::Group(e)) => e,
        other => panic!("expected a group error, got {other:?}"),
    }
}

struct Cluster {
    node: NodeHandle,
    topic_id: Uuid,
    /// The offsets partition broker 0 leads, and the one broker 1 leads.
    led: i32,
    elsewhere: i32,
}

impl Cluster {
    /// Node 0 with broker 1 registered and `__consumer_offsets` of 2
    /// partitions on both; the partition node 0 leads has ISR [0] so that
    /// `acks=all` commits complete without broker 1.
    async fn start(dir: &std::path::Path) -> Cluster {
        let node = NodeHandle::start(options(dir)).await.unwrap();
        let store = node.metadata_store().clone();
        let endpoint = Endpoint { listener: "PLAINTEXT".into(), host: "b1".into(), port: 9 };
        let register = MetadataRecord::RegisterBroker { broker_id: 1, incarnation_id: Uuid::new_v4(), endpoints: vec![endpoint], rack: None };
        let epoch = match store.propose(MetadataBatch::one(register)).await.unwrap() {
            MetadataResponse::Applied { broker_epochs, .. } => broker_epochs[0].1,
            other => panic!("{other:?}"),
        };
        store.propose(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 1, broker_epoch: epoch })).await.unwrap();
        eventually("broker 1 is live", || node.brokers().len() == 2).await;
        let create = CreateTopic { partitions: Some(2), replication_factor: Some(2), ..create_offsets_topic(&config(), 2) };
        let view = node.create_topic(create).await.unwrap();
        let led = view.partitions.iter().position(|p| p.leader == Some(0)).expect("broker 0 leads a partition") as i32;
        let cluster = Cluster { node, topic_id: view.id, led, elsewhere: 1 - led };
        cluster.change(led, None, Some(vec![0])).await;
        cluster
    }

    async fn change(&self, partition: i32, leader: Option<LeaderChange>, isr: Option<Vec<i32>>) {
        let change = MetadataRecord::PartitionChange { topic_id: self.topic_id, partition, leader, isr, replicas: None };
        self.node.metadata_store().propose(MetadataBatch::one(change)).await.unwrap();
    }
}

fn config() -> GroupsConfig {
    GroupsConfig { initial_rebalance_delay_ms: 0, offsets_topic_partitions: 2, ..GroupsConfig::default() }
}

#[actix_rt::test]
async fn serves_only_the_groups_of_partitions_it_leads_and_follows_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).await;
    let coordinator = GroupCoordinator::start(cluster.node.clone(), config()).await.unwrap();
    let (mine, theirs) = (group_in(cluster.led), group_in(cluster.elsewhere));
    let tp = TopicPartition { topic: "t".into(), partition: 0 };

    // FindCoordinator's answer: the leader of each group's offsets partition.
    assert_eq!(coordinator.coordinator_of(&mine), Ok(0));
    assert_eq!(coordinator.coordinator_of(&theirs), Ok(1));
    assert!(
        matches!(group_error(coordinator.ask(&theirs, commit(&tp, 1)).await), GroupError::NotCoordinator { partition, .. } if partition == cluster.elsewhere)
    );
    assert!(matches!(group_error(coordinator.existing(&theirs)), GroupError::NotCoordinator { .. }));

    coordinator.ask(&mine, commit(&tp, 7)).await.unwrap().unwrap();

    // Broker 1 takes the partition over: the group is unloaded and refused here.
    cluster.change(cluster.led, Some(LeaderChange::Elect(1)), Some(vec![0, 1])).await;
    eventually("the group is unloaded", || matches!(coordinator.existing(&mine), Err(Error::Group(GroupError::NotCoordinator { .. })))).await;
    assert!(matches!(group_error(coordinator.ask(&mine, commit(&tp, 8)).await), GroupError::NotCoordinator { .. }));
    assert_eq!(coordinator.coordinator_of(&mine), Ok(1));
    assert!(coordinator.list().iter().all(|(g, _)| g != &mine), "an unloaded group is not listed");

    // The partition goes offline: no coordinator at all.
    cluster.change(cluster.led, Some(LeaderChange::Offline), None).await;
    eventually("no leader", || coordinator.coordinator_of(&mine).is_err()).await;
    assert!(matches!(coordinator.coordinator_of(&mine), Err(GroupError::CoordinatorNotAvailable(_))));

    // Broker 0 leads again: the group and its offsets are loaded from the partition.
    cluster.change(cluster.led, Some(LeaderChange::Elect(0)), Some(vec![0])).await;
    eventually("the group is loaded again", || matches!(coordinator.existing(&mine), Ok(Some(_)))).await;
    let fetched = coordinator.ask(&mine, FetchOffsets(None)).await.unwrap();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].1.as_ref().map(|c| c.offset), Some(7), "the offset committed before the move is read back");
    cluster.node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn answers_load_in_progress_until_the_partition_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).await;
    let coordinator = GroupCoordinator::start(cluster.node.clone(), config()).await.unwrap();
    let mine = group_in(cluster.led);
    let tp = TopicPartition { topic: "t".into(), partition: 0 };
    coordinator.ask(&mine, commit(&tp, 3)).await.unwrap().unwrap();

    // As `reconcile` leaves a gained partition before its load runs.
    let handle = cluster.node.partition(OFFSETS_TOPIC, cluster.led).unwrap();
    let leader_epoch = {
        let mut served = coordinator.lock();
        let epoch = served.slots.get(&cluster.led).map(Slot::leader_epoch).expect("served");
        served.slots.insert(cluster.led, Slot::Loading { leader_epoch: epoch });
        served.groups.clear();
        epoch
    };
    assert_eq!(group_error(coordinator.ask(&mine, commit(&tp, 4)).await), GroupError::CoordinatorLoading);
    assert_eq!(group_error(coordinator.existing(&mine)), GroupError::CoordinatorLoading);

    // A load for an older epoch than the slot's is dropped: leadership moved meanwhile.
    coordinator.load_partition(cluster.led, Led { leader_epoch: leader_epoch - 1, handle: handle.clone() }).await.unwrap();
    assert_eq!(group_error(coordinator.existing(&mine)), GroupError::CoordinatorLoading);

    coordinator.load_partition(cluster.led, Led { leader_epoch, handle }).await.unwrap();
    let fetched = coordinator.ask(&mine, FetchOffsets(None)).await.unwrap();
    assert_eq!(fetched[0].1.as_ref().map(|c| c.offset), Some(3), "{fetched:?}");
    cluster.node.shutdown().await.unwrap();
}
