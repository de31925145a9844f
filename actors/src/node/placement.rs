//! Where a new partition's replicas go: a controller decision, written into
//! the `Partition` record, so it is made once here and replayed everywhere.
//!
//! Kafka's rack-aware round robin, simplified: the live brokers are listed
//! alternating racks (a broker of rack A, one of rack B, one of C, the next of
//! A, ...), partition `p` starts at position `start + p`, and its followers are
//! the next brokers of that list. Consecutive brokers of the list are on
//! different racks while racks remain, so a partition's replicas spread over
//! racks, and leaderships (the first replica) spread over brokers. `start`
//! comes from the topic id, so topics do not all start on the same broker and
//! new partitions of a topic continue its sequence.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::error::Error;
use crate::metadata::quorum::{BrokerId, MetadataImage};

/// A broker that may hold new replicas: registered and unfenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBroker {
    pub id: BrokerId,
    pub rack: Option<String>,
}

/// The image's unfenced brokers, by id.
pub fn live_brokers(image: &MetadataImage) -> Vec<LiveBroker> {
    image.brokers.values().filter(|b| !b.fenced).map(|b| LiveBroker { id: b.broker_id, rack: b.rack.clone() }).collect()
}

/// Brokers ordered so that neighbours are on different racks where possible
/// (brokers without a rack form one rack of their own).
fn rack_alternating(brokers: &[LiveBroker]) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    let racks: Vec<Vec<BrokerId>> = by_rack.into_values().collect();
    let longest = racks.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest).flat_map(|i| racks.iter().filter_map(move |r| r.get(i).copied())).collect()
}

/// Replica lists for partitions `first..first + count` of the topic
/// `topic_id`, `replication_factor` each. Fails as Kafka does when there are
/// fewer live brokers than the factor.
/// An explicit assignment (`kafka-topics --replica-assignment`), checked as
/// Kafka's controller checks one: every partition names the same number of
/// distinct, registered brokers.
pub fn check_manual(image: &MetadataImage, assigned: &[Vec<BrokerId>]) -> Result<Vec<Vec<BrokerId>>, Error> {
    let invalid = |m: String| Err(Error::InvalidReplicaAssignment(m));
    let Some(first) = assigned.first() else { return invalid("the replica assignment lists no partition".into()) };
    for (partition, replicas) in assigned.iter().enumerate() {
        if replicas.is_empty() {
            return invalid(format!("partition {partition} has an empty replica list"));
        }
        if replicas.len() != first.len() {
            return invalid(format!(
                "partition {partition} has {} replicas, partition 0 has {}: all must have the same replication factor",
                replicas.len(),
                first.len()
            ));
        }
        if replicas.iter().enumerate().any(|(i, b)| replicas[..i].contains(b)) {
            return invalid(format!("partition {partition} lists a broker twice: {replicas:?}"));
        }
        if let Some(unknown) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
            return invalid(format!("the manual partition assignment includes broker {unknown}, but no such broker is registered"));
        }
    }
    Ok(assigned.to_vec())
}

pub fn place(brokers: &[LiveBroker], topic_id: Uuid, first: i32, count: i32, replication_factor: i32) -> Result<Vec<Vec<BrokerId>>, Error> {
    if replication_factor < 1 {
        return Err(Error::InvalidReplicationFactor("Replication factor must be larger than 0, or -1 to use the default value.".into()));
    }
    let order = rack_alternating(brokers);
    let n = order.len();
    let rf = usize::try_from(replication_factor).unwrap_or(usize::MAX);
    if rf > n {
        return Err(Error::InvalidReplicationFactor(format!("Replication factor: {replication_factor} larger than available brokers: {n}.")));
    }
    let start = (topic_id.as_u128() % n as u128) as usize;
    let first = usize::try_from(first).unwrap_or(0);
    let count = usize::try_from(count).unwrap_or(0);
    Ok((first..first + count).map(|p| (0..rf).map(|j| order[(start + p + j) % n]).collect()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: BrokerId, rack: Option<&str>) -> LiveBroker {
        LiveBroker { id, rack: rack.map(str::to_owned) }
    }

    #[test]
    fn a_manual_assignment_is_checked_as_kafka_checks_it() {
        use crate::metadata::quorum::{MetadataBatch, MetadataRecord};
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            let record = MetadataRecord::RegisterBroker { broker_id: id, incarnation_id: Uuid::from_u128(id as u128), endpoints: vec![], rack: None };
            image.apply_batch(u64::try_from(id).unwrap(), &MetadataBatch::one(record));
        }
        assert_eq!(check_manual(&image, &[vec![3, 1], vec![1, 2]]).unwrap(), vec![vec![3, 1], vec![1, 2]]);
        let invalid = |assigned: &[Vec<BrokerId>]| matches!(check_manual(&image, assigned), Err(Error::InvalidReplicaAssignment(_)));
        assert!(invalid(&[]), "no partition");
        assert!(invalid(&[vec![]]), "no replica");
        assert!(invalid(&[vec![1, 2], vec![3]]), "replication factors differ");
        assert!(invalid(&[vec![1, 1]]), "a broker twice");
        assert!(invalid(&[vec![1, 4]]), "broker 4 is not registered");
    }

    #[test]
    fn replicas_are_distinct_spread_over_racks_and_leaders_rotate() {
        let brokers = [broker(1, Some("a")), broker(2, Some("a")), broker(3, Some("b")), broker(4, Some("b")), broker(5, Some("c")), broker(6, Some("c"))];
        let rack = |id: BrokerId| brokers.iter().find(|b| b.id == id).and_then(|b| b.rack.clone());
        let placed = place(&brokers, Uuid::from_u128(0), 0, 12, 3).expect("placed");
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            let racks: std::collections::BTreeSet<_> = replicas.iter().map(|&b| rack(b)).collect();
            assert_eq!(racks.len(), 3, "one replica per rack: {replicas:?}");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2; 6], "every broker leads as often");
    }

    #[test]
    fn new_partitions_continue_the_topics_sequence() {
        let brokers = [broker(1, None), broker(2, None), broker(3, None)];
        let id = Uuid::from_u128(7);
        let all = place(&brokers, id, 0, 5, 2).expect("placed");
        assert_eq!(place(&brokers, id, 3, 2, 2).expect("placed"), all[3..].to_vec());
    }

    #[test]
    fn more_replicas_than_live_brokers_is_refused_with_kafkas_message() {
        let refused = place(&[broker(1, None)], Uuid::nil(), 0, 1, 3);
        assert!(matches!(&refused, Err(Error::InvalidReplicationFactor(m)) if m == "Replication factor: 3 larger than available brokers: 1."), "{refused:?}");
        assert!(matches!(place(&[broker(1, None)], Uuid::nil(), 0, 1, 0), Err(Error::InvalidReplicationFactor(_))));
    }
}
