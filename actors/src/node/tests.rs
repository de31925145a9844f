//! The node on a one-voter quorum: admin changes, restarts, the upgrade of a catalog.json directory.
use std::path::Path;

use super::*;
use crate::catalog::{CatalogState, TopicRecord};
use crate::meta_properties;
use crate::metadata::quorum::Endpoint;
use crate::partition::{Append, Read, RequiredAcks};
use crate::topic_config::TopicConfigs;

fn options(dir: &Path) -> NodeOptions {
    NodeOptions { default_partitions: 2, partition_threads: 2, ..NodeOptions::for_tests(dir) }
}

fn batch() -> bytes::Bytes {
    let mut b = vec![0u8; 61];
    b[8..12].copy_from_slice(&49i32.to_be_bytes());
    b[16] = 2;
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = silt_tiering::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes::Bytes::from(b)
}

fn create(name: &str) -> CreateTopic {
    CreateTopic { name: name.into(), partitions: None, replication_factor: None, configs: vec![], validate_only: false, assignments: None }
}

/// Starts a node once the previous one on the directory has let go of its
/// lock (when its actor is gone), polling until a deadline.
async fn start_when_unlocked(options: NodeOptions) -> Result<NodeHandle, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match NodeHandle::start(options.clone()).await {
            Err(Error::Metadata(MetadataError::Locked { .. })) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
}

/// A data directory as today's code before the metadata log left it: a
/// catalog.json with topics, configs and a producer-id high mark, partition
/// directories with records, no meta.properties and no metadata log.
#[actix_rt::test]
async fn a_catalog_json_directory_is_migrated_into_the_metadata_log_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::from_u128(0xfeed);
    let mut catalog = CatalogState::new(Some("legacy-cluster".into()));
    catalog.producer_id_high_mark = 5000;
    let configs = TopicConfigs::from_pairs([("retention.ms", "1000")]).unwrap();
    catalog.topics.push(TopicRecord { name: "orders".into(), id, partitions: 3, configs });
    crate::catalog::save(dir.path(), &catalog).unwrap();
    {
        // Records in orders-1, written by a partition log as before.
        let (mut log, _) = silt_tiering::PartitionLog::open(&dir.path().join("orders-1"), Default::default(), false).unwrap();
        log.append(&batch(), 0, crate::now_ms()).unwrap();
        log.close(crate::now_ms()).unwrap();
    }

    let node = NodeHandle::start(options(dir.path())).await.unwrap();
    assert_eq!(node.cluster_id, "legacy-cluster", "the catalog's cluster id is kept");
    let topic = node.topic("orders").expect("migrated");
    assert_eq!((topic.id, topic.partitions.len(), topic.configs.get("retention.ms")), (id, 3, Some("1000")));
    assert_eq!(topic.partitions[2].replicas, vec![0]);
    let read = node.partition("orders", 1).unwrap().ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    assert_eq!(read.high_watermark, 1, "the partition's records are kept");
    assert!(node.allocate_producer_id().await.unwrap() >= 5000, "producer ids continue above the old high mark");
    assert!(!crate::catalog::path(dir.path()).exists(), "catalog.json is renamed");
    let mut migrated = crate::catalog::path(dir.path()).into_os_string();
    migrated.push(migration::MIGRATED_SUFFIX);
    assert!(Path::new(&migrated).exists());
    let stored = meta_properties::load(dir.path()).unwrap().expect("meta.properties written");
    assert_eq!((stored.node_id, stored.cluster_id.as_str()), (0, "legacy-cluster"));
    node.shutdown().await.unwrap();
    drop(node);

    // The second start reads the metadata log only.
    let node = start_when_unlocked(options(dir.path())).await.unwrap();
    assert_eq!(node.topic("orders").map(|t| t.id), Some(id));
    assert_eq!(node.topics().len(), 1);
    node.shutdown().await.unwrap();
    drop(node);

    let other_id = start_when_unlocked(NodeOptions { node_id: 5, ..options(dir.path()) }).await;
    assert!(matches!(&other_id, Err(Error::Metadata(MetadataError::OtherNode { stored: 0, configured: 5, .. }))), "{:?}", other_id.err());
}

#[actix_rt::test]
async fn topics_carry_their_leadership_and_more_replicas_than_brokers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(options(dir.path())).await.unwrap();
    let view = node.create_topic(create("t")).await.unwrap();
    let p = &view.partitions[0];
    assert_eq!((p.leader, p.replicas.clone(), p.isr.clone(), p.leader_epoch), (Some(0), vec![0], vec![0], 0));
    assert_eq!(node.brokers().iter().map(|b| b.id).collect::<Vec<_>>(), vec![0]);
    assert_eq!(node.controller_id(), Some(0));
    let refused = node.create_topic(CreateTopic { replication_factor: Some(3), ..create("u") }).await;
    assert!(matches!(&refused, Err(Error::InvalidReplicationFactor(m)) if m == "Replication factor: 3 larger than available brokers: 1."), "{refused:?}");
    assert!(node.topic("u").is_none());
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn replacing_configs_keeps_only_the_given_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(options(dir.path())).await.unwrap();
    node.create_topic(create("t")).await.unwrap();
    let set = |k: &str, v: &str| ConfigChange::Set(k.into(), v.into());
    let alter = |changes: Vec<ConfigChange>, replace_all: bool| AlterTopicConfigs { name: "t".into(), changes, replace_all, validate_only: false };
    node.alter_configs(alter(vec![set("retention.ms", "1000")], false)).await.unwrap();
    node.alter_configs(alter(vec![set("segment.ms", "5000")], true)).await.unwrap();
    let configs = node.topic("t").unwrap().configs;
    assert_eq!((configs.get("retention.ms"), configs.get("segment.ms")), (None, Some("5000")));
    let refused = node.alter_configs(alter(vec![set("retention.ms", "1"), set("no.such.config", "1")], true)).await;
    assert!(matches!(refused, Err(Error::InvalidConfig { .. })), "{refused:?}");
    let configs = node.topic("t").unwrap().configs;
    assert_eq!((configs.get("retention.ms"), configs.get("segment.ms")), (None, Some("5000")), "a refused change changes nothing");
    node.alter_configs(alter(vec![], true)).await.unwrap();
    assert_eq!(node.topic("t").unwrap().configs.get("segment.ms"), None, "an empty set removes every override");
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn topics_survive_a_restart_and_deletion_frees_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(options(dir.path())).await.unwrap();
    assert!(NodeHandle::start(options(dir.path())).await.is_err(), "the data dir is locked");
    let view = node.create_topic(create("orders")).await.unwrap();
    assert_eq!(view.partitions.len(), 2);
    assert!(matches!(node.create_topic(create("orders")).await, Err(Error::TopicAlreadyExists(_))));
    let p = node.partition("orders", 1).unwrap();
    p.ask(Append { records: batch(), acks: RequiredAcks::All }).await.unwrap();
    node.create_partitions(CreatePartitions { name: "orders".into(), count: 3, validate_only: false, assignments: None }).await.unwrap();
    node.alter_configs(AlterTopicConfigs {
        name: "orders".into(),
        changes: vec![ConfigChange::Set("retention.ms".into(), "1000".into())],
        replace_all: false,
        validate_only: false,
    })
    .await
    .unwrap();
    let first_pid = node.allocate_producer_id().await.unwrap();
    node.shutdown().await.unwrap();
    let cluster_id = node.cluster_id.clone();
    drop(node);

    let node = start_when_unlocked(options(dir.path())).await.expect("node restarts on the same data dir");
    assert_eq!(node.cluster_id, cluster_id);
    let topic = node.topic("orders").unwrap();
    assert_eq!(topic.partitions.len(), 3);
    assert_eq!(topic.configs.get("retention.ms"), Some("1000"));
    let read = node.partition("orders", 1).unwrap().ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    assert_eq!(read.high_watermark, 1);
    assert!(node.allocate_producer_id().await.unwrap() > first_pid, "producer ids never repeat");
    node.delete_topic("orders".into()).await.unwrap();
    assert!(node.topic("orders").is_none());
    // A directory a crash left behind after the deletion was committed.
    let stray = dir.path().join("orders-0");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("partition.metadata"), format!("version: 0\ntopic_id: {}\n", topic.id)).unwrap();
    node.shutdown().await.unwrap();
    drop(node);
    let node = start_when_unlocked(options(dir.path())).await.unwrap();
    assert!(!stray.exists(), "the stray directory of a deleted topic is removed at start");
    let again = node.create_topic(create("orders")).await.unwrap();
    let read = again.partitions[1].local.as_ref().expect("local").ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    assert_eq!(read.high_watermark, 0, "a recreated topic starts empty");
}

#[actix_rt::test]
async fn an_isr_change_checks_the_epochs_it_was_based_on() {
    use crate::replication::{AlterPartition, IsrChange};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeHandle::start(options(dir.path())).await.unwrap();
    let view = node.create_topic(create("t")).await.unwrap();
    let change = |leader_epoch, partition_epoch, new_isr: Vec<i32>| IsrChange { topic_id: view.id, partition: 1, leader_epoch, partition_epoch, new_isr };
    node.alter_partition(change(0, 0, vec![0])).await.expect("the same ISR, a new partition epoch");
    let p = node.topic("t").unwrap().partitions[1].clone();
    assert_eq!((p.partition_epoch, p.leader_epoch), (1, 0));
    let stale = node.alter_partition(change(0, 0, vec![0])).await;
    assert!(matches!(stale, Err(Error::StalePartitionEpoch { epoch: 0, current: 1, .. })), "{stale:?}");
    let fenced = node.alter_partition(change(-1, 1, vec![0])).await;
    assert!(matches!(fenced, Err(Error::FencedLeaderEpoch { .. })), "{fenced:?}");
    let leaderless = node.alter_partition(change(0, 1, vec![])).await;
    assert!(leaderless.is_err(), "the ISR must hold the leader");
    node.shutdown().await.unwrap();
}

/// One `follow` call: leader id, host, port and the partitions.
type Followed = (i32, String, u16, Vec<TopicPartition>);

/// Records what the replica manager asks of the fetchers.
#[derive(Default)]
struct RecordingFetchers {
    followed: std::sync::Mutex<Vec<Followed>>,
    unfollowed: std::sync::Mutex<Vec<TopicPartition>>,
}

impl ReplicaFetchers for RecordingFetchers {
    fn follow(&self, leader: crate::replication::LeaderEndpoint, partitions: Vec<crate::replication::FollowedPartition>) {
        let tps = partitions.iter().map(|p| p.handle.tp.clone()).collect();
        self.followed.lock().expect("lock").push((leader.broker_id, leader.host, leader.port, tps));
    }
    fn unfollow(&self, partitions: &[TopicPartition]) {
        self.unfollowed.lock().expect("lock").extend_from_slice(partitions);
    }
}

/// Polls `check` until it holds or five seconds pass.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn the_replica_manager_follows_re_roles_and_retires_as_the_image_changes() {
    use crate::metadata::quorum::{LeaderChange, MetadataBatch, MetadataRecord};
    let dir = tempfile::tempdir().unwrap();
    let fetchers = Arc::new(RecordingFetchers::default());
    let mut opts = options(dir.path());
    opts.cluster.fetchers = Some(fetchers.clone());
    let node = NodeHandle::start(opts).await.unwrap();
    let store = node.metadata_store().clone();
    let endpoint = Endpoint { listener: "PLAINTEXT".into(), host: "b1".into(), port: 9 };
    let epoch = match store
        .propose(MetadataBatch::one(MetadataRecord::RegisterBroker { broker_id: 1, incarnation_id: Uuid::new_v4(), endpoints: vec![endpoint], rack: None }))
        .await
        .unwrap()
    {
        MetadataResponse::Applied { broker_epochs, .. } => broker_epochs[0].1,
        other => panic!("{other:?}"),
    };
    store.propose(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 1, broker_epoch: epoch })).await.unwrap();
    eventually("broker 1 is live", || node.brokers().len() == 2).await;

    let view = node.create_topic(CreateTopic { partitions: Some(2), replication_factor: Some(2), ..create("t") }).await.unwrap();
    let followed = view.partitions.iter().position(|p| p.leader == Some(1)).expect("broker 1 leads one partition") as i32;
    let led = 1 - followed;
    assert!(view.partitions.iter().all(|p| p.local.is_some() && p.replicas.len() == 2), "both partitions are local replicas");
    let tp = |p: i32| TopicPartition { topic: "t".into(), partition: p };
    assert_eq!(fetchers.followed.lock().unwrap().clone(), vec![(1, "b1".to_owned(), 9, vec![tp(followed)])]);

    // Broker 0 takes over the followed partition: it leads, the fetcher lets go.
    let elect = MetadataRecord::PartitionChange { topic_id: view.id, partition: followed, leader: Some(LeaderChange::Elect(0)), isr: None, replicas: None };
    store.propose(MetadataBatch::one(elect)).await.unwrap();
    eventually("the new leader", || node.topic("t").is_some_and(|t| t.partitions[followed as usize].leader == Some(0))).await;
    eventually("the unfollow", || fetchers.unfollowed.lock().unwrap().contains(&tp(followed))).await;

    // The other partition moves to broker 1 alone: this node retires its replica.
    let moved = MetadataRecord::PartitionChange {
        topic_id: view.id,
        partition: led,
        leader: Some(LeaderChange::Elect(1)),
        isr: Some(vec![1]),
        replicas: Some(vec![1]),
    };
    store.propose(MetadataBatch::one(moved)).await.unwrap();
    eventually("the retirement", || matches!(node.partition("t", led), Err(Error::NotLeaderOrFollower { leader: Some(1), .. }))).await;
    eventually("the directory is removed", || !dir.path().join(format!("t-{led}")).exists()).await;
    assert!(node.partition("t", followed).is_ok());
    node.shutdown().await.unwrap();
}
