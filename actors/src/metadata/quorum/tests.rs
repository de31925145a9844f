//! Tests of the image (apply sequences, atomic batches, fencing, a property
//! test of snapshot and restore) and of the on-disk stores (openraft's storage
//! suite, snapshots across reopen, a torn log tail).

use std::collections::BTreeSet;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, StorageError};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::metadata::quorum::records::BATCH_RECORDS_MAX;

fn register(broker_id: BrokerId) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        broker_id,
        incarnation_id: Uuid::from_u128(broker_id as u128),
        endpoints: vec![Endpoint { listener: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 + broker_id as u16 }],
        rack: None,
    }
}

/// Registers brokers 1..=n at indexes 1..=n and unfences each.
fn cluster(n: i32) -> (MetadataImage, u64) {
    let mut image = MetadataImage::default();
    let mut index = 0;
    for b in 1..=n {
        index += 1;
        assert!(matches!(image.apply_batch(index, &MetadataBatch::one(register(b))), MetadataResponse::Applied { .. }));
    }
    for b in 1..=n {
        index += 1;
        let epoch = image.brokers[&b].broker_epoch;
        assert!(matches!(
            image.apply_batch(index, &MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: b, broker_epoch: epoch })),
            MetadataResponse::Applied { .. }
        ));
    }
    (image, index)
}

fn create_topic(name: &str, id: Uuid, assignments: &[&[BrokerId]]) -> MetadataBatch {
    let mut records = vec![MetadataRecord::Topic { name: name.into(), topic_id: id }];
    for (p, replicas) in assignments.iter().enumerate() {
        records.push(MetadataRecord::Partition {
            topic_id: id,
            partition: p as i32,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas.first().copied(),
        });
    }
    MetadataBatch { records }
}

fn applied(response: &MetadataResponse) -> bool {
    matches!(response, MetadataResponse::Applied { .. })
}

#[test]
fn registration_gives_the_log_index_as_broker_epoch_and_starts_fenced() {
    let mut image = MetadataImage::default();
    let response = image.apply_batch(7, &MetadataBatch::one(register(3)));
    assert_eq!(response, MetadataResponse::Applied { producer_ids: vec![], broker_epochs: vec![(3, 7)] });
    assert!(image.brokers[&3].fenced);
    // An unfence from an older registration is refused.
    image.apply_batch(9, &MetadataBatch::one(register(3)));
    let stale = image.apply_batch(10, &MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 3, broker_epoch: 7 }));
    assert!(matches!(stale, MetadataResponse::Rejected { error: ApplyError::StaleBrokerEpoch { given: 7, current: 9, .. }, .. }));
    assert!(image.brokers[&3].fenced);
    assert!(applied(&image.apply_batch(11, &MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 3, broker_epoch: 9 }))));
    assert!(!image.brokers[&3].fenced);
}

#[test]
fn topic_creation_assigns_replicas_leader_and_epochs() {
    let (mut image, index) = cluster(3);
    let id = Uuid::from_u128(1);
    assert!(applied(&image.apply_batch(index + 1, &create_topic("orders", id, &[&[1, 2, 3], &[2, 3, 1]]))));
    let topic = image.topic("orders").expect("the topic exists");
    assert_eq!(topic.partitions.len(), 2);
    assert_eq!(topic.partitions[1], PartitionImage { replicas: vec![2, 3, 1], isr: vec![2, 3, 1], leader: Some(2), ..PartitionImage::default() });
    let again = image.apply_batch(index + 2, &create_topic("orders", Uuid::from_u128(2), &[&[1]]));
    assert!(matches!(again, MetadataResponse::Rejected { record: 0, error: ApplyError::TopicExists(_) }));
}

#[test]
fn a_rejected_record_rolls_back_its_whole_batch() {
    let (mut image, index) = cluster(2);
    let before = image.clone();
    // The second partition names broker 9, which is not registered.
    let response = image.apply_batch(index + 1, &create_topic("t", Uuid::from_u128(5), &[&[1, 2], &[1, 9]]));
    assert!(matches!(response, MetadataResponse::Rejected { record: 2, error: ApplyError::UnknownBroker(9) }));
    assert_eq!(image, before);
}

#[test]
fn assignments_are_checked() {
    let (mut image, index) = cluster(3);
    let id = Uuid::from_u128(1);
    image.apply_batch(index + 1, &MetadataBatch::one(MetadataRecord::Topic { name: "t".into(), topic_id: id }));
    let bad =
        [(vec![1, 1], vec![1], Some(1)), (vec![1, 2], vec![3], Some(3)), (vec![1, 2], vec![], None), (vec![1, 2], vec![1, 2], Some(3)), (vec![], vec![], None)];
    for (replicas, isr, leader) in bad {
        let record = MetadataRecord::Partition { topic_id: id, partition: 0, replicas: replicas.clone(), isr: isr.clone(), leader };
        assert!(!applied(&image.apply_batch(index + 2, &MetadataBatch::one(record))), "{replicas:?} {isr:?} {leader:?} was accepted");
    }
    let skip = MetadataRecord::Partition { topic_id: id, partition: 1, replicas: vec![1], isr: vec![1], leader: Some(1) };
    assert!(matches!(
        image.apply_batch(index + 3, &MetadataBatch::one(skip)),
        MetadataResponse::Rejected { error: ApplyError::PartitionOutOfOrder { expected: 0, .. }, .. }
    ));
}

#[test]
fn partition_changes_bump_epochs() {
    let (mut image, index) = cluster(3);
    let id = Uuid::from_u128(1);
    image.apply_batch(index + 1, &create_topic("t", id, &[&[1, 2, 3]]));
    let shrink = MetadataRecord::PartitionChange { topic_id: id, partition: 0, leader: None, isr: Some(vec![1, 2]), replicas: None };
    assert!(applied(&image.apply_batch(index + 2, &MetadataBatch::one(shrink))));
    let p = &image.topics[&id].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch, p.isr.clone()), (Some(1), 0, 1, vec![1, 2]));
    let elect = MetadataRecord::PartitionChange { topic_id: id, partition: 0, leader: Some(LeaderChange::Elect(2)), isr: None, replicas: None };
    assert!(applied(&image.apply_batch(index + 3, &MetadataBatch::one(elect))));
    let p = &image.topics[&id].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (Some(2), 1, 2));
    // Broker 3 left the ISR: it cannot be elected.
    let unclean = MetadataRecord::PartitionChange { topic_id: id, partition: 0, leader: Some(LeaderChange::Elect(3)), isr: None, replicas: None };
    assert!(!applied(&image.apply_batch(index + 4, &MetadataBatch::one(unclean))));
}

#[test]
fn fencing_a_broker_moves_its_leaderships_through_partition_changes() {
    let (mut image, mut index) = cluster(3);
    let id = Uuid::from_u128(1);
    index += 1;
    image.apply_batch(index, &create_topic("t", id, &[&[1, 2, 3], &[2, 1], &[1]]));
    let epoch = image.brokers[&1].broker_epoch;
    let mut records = vec![MetadataRecord::FenceBroker { broker_id: 1, broker_epoch: epoch }];
    records.extend(image.fence_changes(1));
    index += 1;
    assert!(applied(&image.apply_batch(index, &MetadataBatch { records })));
    let parts = &image.topics[&id].partitions;
    assert_eq!((parts[0].leader, parts[0].isr.clone(), parts[0].leader_epoch), (Some(2), vec![2, 3], 1));
    assert_eq!((parts[1].leader, parts[1].isr.clone(), parts[1].leader_epoch), (Some(2), vec![2], 0));
    // The only replica keeps its ISR membership (for a clean election later)
    // and the partition goes offline.
    assert_eq!((parts[2].leader, parts[2].isr.clone(), parts[2].leader_epoch), (None, vec![1], 1));
    // A fenced broker cannot be elected.
    let elect = MetadataRecord::PartitionChange { topic_id: id, partition: 2, leader: Some(LeaderChange::Elect(1)), isr: None, replicas: None };
    assert!(matches!(image.apply_batch(index + 1, &MetadataBatch::one(elect)), MetadataResponse::Rejected { error: ApplyError::FencedBroker(1), .. }));
}

#[test]
fn unregistering_moves_leaderships_and_keeps_the_broker_in_replica_lists() {
    let (mut image, mut index) = cluster(3);
    let id = Uuid::from_u128(1);
    index += 1;
    image.apply_batch(index, &create_topic("t", id, &[&[1, 2], &[2, 1], &[1]]));
    let (epoch, incarnation) = (image.brokers[&1].broker_epoch, image.brokers[&1].incarnation_id);
    let bare = MetadataRecord::UnregisterBroker { broker_id: 1, broker_epoch: epoch };
    let refused = image.apply_batch(index + 1, &MetadataBatch::one(bare));
    assert!(matches!(refused, MetadataResponse::Rejected { error: ApplyError::BrokerStillLeads(1), .. }), "{refused:?}");
    index += 1;
    let batches = image.unregister_batches(1).unwrap();
    let [batch] = &batches[..] else { panic!("one batch: {batches:?}") };
    assert!(matches!(batch.records.first(), Some(MetadataRecord::FenceBroker { broker_id: 1, .. })));
    assert!(applied(&image.apply_batch(index, batch)));
    assert!(!image.brokers.contains_key(&1));
    assert_eq!(image.unregistered.get(&1), Some(&incarnation));
    let parts = &image.topics[&id].partitions;
    // Kafka's handleBrokerUnregistered: out of every ISR, leaderships moved,
    // still a replica. The last ISR member stays, as for fencing.
    assert_eq!((parts[0].leader, parts[0].replicas.clone(), parts[0].isr.clone()), (Some(2), vec![1, 2], vec![2]));
    assert_eq!((parts[1].leader, parts[1].replicas.clone(), parts[1].isr.clone()), (Some(2), vec![2, 1], vec![2]));
    assert_eq!((parts[2].leader, parts[2].isr.clone()), (None, vec![1]));
    assert_eq!(image.unregister_batches(1), Err(ApplyError::UnknownBroker(1)));
    // The partitions that name it still change; it can neither lead, rejoin an ISR nor be placed anew.
    let change = |partition, leader: Option<LeaderChange>, isr: Option<Vec<BrokerId>>| {
        MetadataBatch::one(MetadataRecord::PartitionChange { topic_id: id, partition, leader, isr, replicas: None })
    };
    index += 1;
    assert!(applied(&image.apply_batch(index, &change(0, Some(LeaderChange::Elect(2)), Some(vec![2])))));
    let rejected = |r: MetadataResponse| matches!(r, MetadataResponse::Rejected { error: ApplyError::UnknownBroker(1), .. });
    assert!(rejected(image.apply_batch(index + 1, &change(0, None, Some(vec![2, 1])))));
    assert!(rejected(image.apply_batch(index + 1, &change(2, Some(LeaderChange::Elect(1)), None))));
    let new_partition = MetadataRecord::Partition { topic_id: id, partition: 3, replicas: vec![1, 3], isr: vec![3], leader: Some(3) };
    assert!(rejected(image.apply_batch(index + 1, &MetadataBatch::one(new_partition))));
    // Registering again (a restart) lifts the ban.
    index += 1;
    image.apply_batch(index, &MetadataBatch::one(register(1)));
    assert!(image.unregistered.is_empty() && image.brokers.contains_key(&1));
}

#[test]
fn an_isr_change_applies_only_against_the_epochs_it_was_made_on() {
    let (mut image, index) = cluster(3);
    let id = Uuid::from_u128(1);
    image.apply_batch(index + 1, &create_topic("t", id, &[&[1, 2, 3]]));
    let alter =
        |leader_epoch, partition_epoch, isr: Vec<i32>| MetadataRecord::AlterPartition { topic_id: id, partition: 0, leader_epoch, partition_epoch, isr };
    assert!(applied(&image.apply_batch(index + 2, &MetadataBatch::one(alter(0, 0, vec![1, 2])))));
    let p = &image.topics[&id].partitions[0];
    assert_eq!((p.isr.clone(), p.leader_epoch, p.partition_epoch), (vec![1, 2], 0, 1));
    // The same change again is stale: the partition epoch moved.
    assert!(matches!(
        image.apply_batch(index + 3, &MetadataBatch::one(alter(0, 0, vec![1]))),
        MetadataResponse::Rejected { error: ApplyError::StalePartitionEpoch { given: 0, current: 1, .. }, .. }
    ));
    // A new leader was elected meanwhile: the old leader's change is fenced.
    let elect = MetadataRecord::PartitionChange { topic_id: id, partition: 0, leader: Some(LeaderChange::Elect(2)), isr: None, replicas: None };
    assert!(applied(&image.apply_batch(index + 4, &MetadataBatch::one(elect))));
    assert!(matches!(
        image.apply_batch(index + 5, &MetadataBatch::one(alter(0, 2, vec![1]))),
        MetadataResponse::Rejected { error: ApplyError::FencedLeaderEpoch { given: 0, current: 1, .. }, .. }
    ));
    // The ISR must hold the leader.
    assert!(!applied(&image.apply_batch(index + 6, &MetadataBatch::one(alter(1, 2, vec![1])))));
    assert!(applied(&image.apply_batch(index + 7, &MetadataBatch::one(alter(1, 2, vec![2, 3])))));
    assert_eq!(image.topics[&id].partitions[0].isr, vec![2, 3]);
}

#[test]
fn a_broker_that_leads_too_few_of_its_preferred_partitions_gets_them_back() {
    let (mut image, mut index) = cluster(3);
    let id = Uuid::from_u128(1);
    index += 1;
    // Broker 1 is preferred for partitions 0-9; broker 2 leads one of them (10% imbalance).
    let assignments: Vec<&[i32]> = vec![&[1, 2]; 10];
    image.apply_batch(index, &create_topic("t", id, &assignments));
    let elect =
        |p: i32, b: i32| MetadataRecord::PartitionChange { topic_id: id, partition: p, leader: Some(LeaderChange::Elect(b)), isr: None, replicas: None };
    index += 1;
    assert!(applied(&image.apply_batch(index, &MetadataBatch::one(elect(0, 2)))));
    assert!(image.preferred_leader_changes(0.10).is_empty(), "10% is not above the 10% threshold");
    index += 1;
    assert!(applied(&image.apply_batch(index, &MetadataBatch { records: vec![elect(1, 2), elect(2, 2)] })));
    // Partition 2's preferred replica left the ISR: it is not elected back.
    let out = MetadataRecord::PartitionChange { topic_id: id, partition: 2, leader: None, isr: Some(vec![2]), replicas: None };
    index += 1;
    assert!(applied(&image.apply_batch(index, &MetadataBatch::one(out))));
    let changes = image.preferred_leader_changes(0.10);
    assert_eq!(changes, vec![elect(0, 1), elect(1, 1)]);
    index += 1;
    assert!(applied(&image.apply_batch(index, &MetadataBatch { records: changes })));
    assert!(image.preferred_leader_changes(0.10).is_empty());
}

#[test]
fn configs_producer_ids_and_topic_removal() {
    let (mut image, index) = cluster(1);
    let id = Uuid::from_u128(1);
    image.apply_batch(index + 1, &create_topic("t", id, &[&[1]]));
    let set = |resource, value: Option<&str>| MetadataRecord::Config { resource, name: "retention.ms".into(), value: value.map(String::from) };
    assert!(applied(&image.apply_batch(index + 2, &MetadataBatch::one(set(ConfigResource::Topic("t".into()), Some("1000"))))));
    assert_eq!(image.topic("t").map(|t| t.configs["retention.ms"].clone()), Some("1000".into()));
    assert!(applied(&image.apply_batch(index + 3, &MetadataBatch::one(set(ConfigResource::Topic("t".into()), None)))));
    assert!(image.topic("t").is_some_and(|t| t.configs.is_empty()));
    assert!(!applied(&image.apply_batch(index + 4, &MetadataBatch::one(set(ConfigResource::Topic("nope".into()), Some("1"))))));
    assert!(applied(&image.apply_batch(index + 5, &MetadataBatch::one(set(ConfigResource::Broker(1), None)))));
    assert!(image.broker_configs.is_empty());

    let epoch = image.brokers[&1].broker_epoch;
    let block = |size| MetadataBatch::one(MetadataRecord::ProducerIds { broker_id: 1, broker_epoch: epoch, block_size: size });
    let first = image.apply_batch(index + 6, &block(1000));
    let second = image.apply_batch(index + 7, &block(10));
    assert_eq!(
        first,
        MetadataResponse::Applied { producer_ids: vec![ProducerIdBlock { broker_id: 1, first_producer_id: 0, size: 1000 }], broker_epochs: vec![] }
    );
    assert_eq!(
        second,
        MetadataResponse::Applied { producer_ids: vec![ProducerIdBlock { broker_id: 1, first_producer_id: 1000, size: 10 }], broker_epochs: vec![] }
    );
    assert!(!applied(&image.apply_batch(index + 8, &block(0))));
    assert_eq!(image.next_producer_id, 1010);

    assert!(applied(&image.apply_batch(index + 9, &MetadataBatch::one(MetadataRecord::RemoveTopic { topic_id: id }))));
    assert!(image.topic("t").is_none() && image.topics.is_empty());
    // The name is free again, under a new id.
    assert!(applied(&image.apply_batch(index + 10, &create_topic("t", Uuid::from_u128(2), &[&[1]]))));
}

/// Records over a small alphabet of brokers, topics and ids, so that a good
/// share of them apply and the rest exercise the rejections.
fn arb_record() -> impl Strategy<Value = MetadataRecord> {
    let broker = 1..5i32;
    let topic = 0..3u128;
    let members = proptest::collection::vec(1..5i32, 1..4);
    prop_oneof![
        broker.clone().prop_map(register),
        (broker.clone(), 0..40u64).prop_map(|(broker_id, broker_epoch)| MetadataRecord::UnfenceBroker { broker_id, broker_epoch }),
        (broker.clone(), 0..40u64).prop_map(|(broker_id, broker_epoch)| MetadataRecord::FenceBroker { broker_id, broker_epoch }),
        (broker.clone(), 0..40u64).prop_map(|(broker_id, broker_epoch)| MetadataRecord::UnregisterBroker { broker_id, broker_epoch }),
        topic.clone().prop_map(|t| MetadataRecord::Topic { name: format!("t{t}"), topic_id: Uuid::from_u128(t) }),
        (topic.clone(), 0..3i32, members.clone()).prop_map(|(t, partition, replicas)| MetadataRecord::Partition {
            topic_id: Uuid::from_u128(t),
            partition,
            isr: replicas.clone(),
            leader: replicas.first().copied(),
            replicas,
        }),
        (topic.clone(), 0..3i32, proptest::option::of(broker.clone()), proptest::option::of(members)).prop_map(|(t, partition, leader, isr)| {
            MetadataRecord::PartitionChange { topic_id: Uuid::from_u128(t), partition, leader: leader.map(LeaderChange::Elect), isr, replicas: None }
        }),
        topic.clone().prop_map(|t| MetadataRecord::RemoveTopic { topic_id: Uuid::from_u128(t) }),
        (topic, proptest::option::of("[0-9]{1,3}")).prop_map(|(t, value)| MetadataRecord::Config {
            resource: ConfigResource::Topic(format!("t{t}")),
            name: "retention.ms".into(),
            value
        }),
        (broker, 0..40u64, 1..2000i64).prop_map(|(broker_id, broker_epoch, block_size)| MetadataRecord::ProducerIds { broker_id, broker_epoch, block_size }),
    ]
}

fn arb_batches() -> impl Strategy<Value = Vec<MetadataBatch>> {
    proptest::collection::vec(proptest::collection::vec(arb_record(), 1..4).prop_map(|records| MetadataBatch { records }), 0..40)
}

proptest! {
    /// Applying a log, with a snapshot and restore (through serde) at any
    /// point, yields the same image, byte for byte, as applying it straight.
    #[test]
    fn snapshot_and_restore_anywhere_yields_the_same_image(batches in arb_batches(), cut in 0usize..40) {
        let cut = cut.min(batches.len());
        let mut straight = MetadataImage::default();
        let mut responses = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            responses.push(straight.apply_batch(i as u64 + 1, batch));
        }
        let mut first = MetadataImage::default();
        for (i, batch) in batches[..cut].iter().enumerate() {
            first.apply_batch(i as u64 + 1, batch);
        }
        let snapshot = serde_json::to_vec(&first).expect("an image serializes");
        let mut restored: MetadataImage = serde_json::from_slice(&snapshot).expect("a snapshot deserializes");
        prop_assert_eq!(&restored, &first);
        for (i, batch) in batches.iter().enumerate().skip(cut) {
            prop_assert_eq!(&restored.apply_batch(i as u64 + 1, batch), &responses[i]);
        }
        prop_assert_eq!(&restored, &straight);
        prop_assert_eq!(serde_json::to_vec(&restored).expect("serializes"), serde_json::to_vec(&straight).expect("serializes"));
    }

    /// A rejected batch leaves the image exactly as it was.
    #[test]
    fn rejected_batches_change_nothing(batches in arb_batches()) {
        let mut image = MetadataImage::default();
        for (i, batch) in batches.iter().enumerate() {
            let before = image.clone();
            if let MetadataResponse::Rejected { .. } = image.apply_batch(i as u64 + 1, batch) {
                prop_assert_eq!(&image, &before);
            }
        }
    }
}

// ---- the on-disk stores ----

type C = MetadataTypeConfig;

/// Builds fresh stores in a temporary folder, which the guard removes.
struct TempStores;

impl StoreBuilder<C, LogStore, StateMachineStore, tempfile::TempDir> for TempStores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let (log, sm) = open(dir.path().to_path_buf()).await.map_err(|e| openraft::StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_stores_pass_openrafts_storage_suite() {
    Suite::<C, LogStore, StateMachineStore, TempStores, tempfile::TempDir>::test_all(TempStores).expect("openraft's storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload<C>) -> Entry<C> {
    Entry { log_id: log_id(term, index), payload }
}

async fn append(log: &mut LogStore, entries: Vec<Entry<C>>) {
    log.blocking_append(entries).await.expect("append");
}

#[tokio::test]
async fn the_log_survives_reopen_truncation_purge_and_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let mut log = LogStore::open(path.clone()).await.expect("open");
    let entries: Vec<Entry<C>> = (1..=20).map(|i| entry(1, i, EntryPayload::Normal(MetadataBatch::one(register(i as i32))))).collect();
    append(&mut log, entries).await;
    log.truncate(log_id(1, 16)).await.expect("truncate");
    log.purge(log_id(1, 4)).await.expect("purge");
    drop(log);

    // A crash mid-append leaves half a frame at the end of the last segment.
    let segment = std::fs::read_dir(path.join("log")).expect("log dir").filter_map(Result::ok).map(|e| e.path()).max().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(&segment, bytes).expect("write");

    let mut log = LogStore::open(path.clone()).await.expect("reopen");
    let state = log.get_log_state().await.expect("state");
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 4)), Some(log_id(1, 15))));
    let read = log.try_get_log_entries(5..16).await.expect("read");
    assert_eq!(read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (5..16).collect::<Vec<_>>());
    // Appends continue after the cut tail, and persist.
    append(&mut log, vec![entry(2, 16, EntryPayload::Blank)]).await;
    drop(log);
    let mut log = LogStore::open(path).await.expect("reopen");
    assert_eq!(log.get_log_state().await.expect("state").last_log_id, Some(log_id(2, 16)));
}

#[tokio::test]
async fn the_log_rolls_segments_and_purge_deletes_the_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogStore::open(dir.path().to_path_buf()).await.expect("open");
    // Big enough entries to fill a few segments.
    let name = "x".repeat(200_000);
    for i in 1..=60u64 {
        let batch = MetadataBatch::one(MetadataRecord::Topic { name: name.clone(), topic_id: Uuid::from_u128(i as u128) });
        append(&mut log, vec![entry(1, i, EntryPayload::Normal(batch))]).await;
    }
    let segments = |dir: &std::path::Path| std::fs::read_dir(dir.join("log")).expect("log dir").count();
    let before = segments(dir.path());
    assert!(before >= 3, "60 entries of 200 kB fill {before} segments");
    log.purge(log_id(1, 50)).await.expect("purge");
    assert!(segments(dir.path()) < before);
    let read = log.try_get_log_entries(51..=60).await.expect("read");
    assert_eq!(read.len(), 10);
    drop(log);
    let mut log = LogStore::open(dir.path().to_path_buf()).await.expect("reopen");
    let state = log.get_log_state().await.expect("state");
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 50)), Some(log_id(1, 60))));
}

#[tokio::test]
async fn a_snapshot_restores_the_image_after_reopen_and_on_another_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path().to_path_buf()).await.expect("open");
    let mut updates = sm.subscribe();
    let id = Uuid::from_u128(1);
    let membership = openraft::Membership::new(vec![BTreeSet::from([1u64])], None);
    let entries = vec![
        entry(1, 1, EntryPayload::Membership(membership)),
        entry(1, 2, EntryPayload::Normal(MetadataBatch::one(register(1)))),
        entry(1, 3, EntryPayload::Normal(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 1, broker_epoch: 2 }))),
        entry(1, 4, EntryPayload::Normal(create_topic("t", id, &[&[1], &[1]]))),
    ];
    let responses = sm.apply(entries).await.expect("apply");
    assert!(responses[1..].iter().all(applied), "{responses:?}");
    assert!(updates.has_changed().expect("the sender lives"));
    assert_eq!(updates.borrow_and_update().image.topic("t").map(|t| t.partitions.len()), Some(2));

    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 4)));
    let expected = sm.subscribe().borrow().as_ref().clone();
    drop(sm);

    let mut reopened = StateMachineStore::open(dir.path().to_path_buf()).await.expect("reopen");
    assert_eq!(reopened.subscribe().borrow().as_ref(), &expected);
    assert_eq!(reopened.applied_state().await.expect("applied").0, Some(log_id(1, 4)));

    let other = tempfile::tempdir().expect("tempdir");
    let mut follower = StateMachineStore::open(other.path().to_path_buf()).await.expect("open");
    let current = reopened.get_current_snapshot().await.expect("read").expect("a snapshot");
    follower.install_snapshot(&current.meta, current.snapshot).await.expect("install");
    assert_eq!(follower.subscribe().borrow().as_ref(), &expected);
}

#[test]
fn unregistering_a_broker_that_leads_more_partitions_than_a_batch_holds_takes_several_batches() {
    let (mut image, mut index) = cluster(3);
    let partitions: Vec<&[BrokerId]> = vec![&[1, 2]; 6_000];
    for (n, name) in ["a", "b"].into_iter().enumerate() {
        index += 1;
        assert!(applied(&image.apply_batch(index, &create_topic(name, Uuid::from_u128(n as u128 + 1), &partitions))));
    }
    let batches = image.unregister_batches(1).unwrap();
    assert_eq!(batches.len(), 2, "12,002 records in batches of {BATCH_RECORDS_MAX}");
    assert!(matches!(batches[0].records.first(), Some(MetadataRecord::FenceBroker { broker_id: 1, .. })));
    assert!(matches!(batches[1].records.last(), Some(MetadataRecord::UnregisterBroker { broker_id: 1, .. })));
    for batch in &batches {
        index += 1;
        assert!(applied(&image.apply_batch(index, batch)));
    }
    assert!(!image.brokers.contains_key(&1));
    assert!(image.topics.values().flat_map(|t| &t.partitions).all(|p| p.leader == Some(2) && p.isr == vec![2]));
}
