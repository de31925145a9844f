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

/// One partition's explicit replica list, checked as Kafka's controller
/// checks it (`validateManualPartitionAssignment`), in its order and with its
/// messages: not empty; each broker registered, and named once; as many
/// replicas as `replication_factor` when that is known.
fn check_replicas(image: &MetadataImage, replicas: &[BrokerId], replication_factor: Option<usize>) -> Result<(), Error> {
    let invalid = |m: String| Err(Error::InvalidReplicaAssignment(m));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, broker) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(broker) {
            return invalid(format!("The manual partition assignment includes broker {broker}, but no such broker is registered."));
        }
        if i > 0 && sorted[i - 1] == *broker {
            return invalid(format!("The manual partition assignment includes the broker {broker} more than once."));
        }
    }
    match replication_factor {
        Some(factor) if factor != replicas.len() => invalid(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {factor} replica(s).",
            replicas.len()
        )),
        _ => Ok(()),
    }
}

/// An explicit assignment (`kafka-topics --create --replica-assignment`),
/// checked as Kafka's controller checks one: every partition names the same
/// number of distinct, registered brokers as the first.
pub fn check_manual(image: &MetadataImage, assigned: &[Vec<BrokerId>]) -> Result<Vec<Vec<BrokerId>>, Error> {
    let Some(first) = assigned.first() else { return Err(Error::InvalidReplicaAssignment("The replica assignment lists no partition.".into())) };
    for replicas in assigned {
        check_replicas(image, replicas, (!first.is_empty()).then_some(first.len()))?;
    }
    Ok(assigned.to_vec())
}

/// The explicit assignment of the partitions CreatePartitions adds to a
/// topic whose replication factor is `replication_factor`: one replica list
/// per new partition, each checked as [`check_manual`] checks one, against
/// the topic's factor.
pub fn check_added(image: &MetadataImage, assigned: &[Vec<BrokerId>], added: i32, replication_factor: usize) -> Result<Vec<Vec<BrokerId>>, Error> {
    if usize::try_from(added).ok() != Some(assigned.len()) {
        return Err(Error::InvalidReplicaAssignment(format!(
            "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
            assigned.len()
        )));
    }
    for replicas in assigned {
        check_replicas(image, replicas, Some(replication_factor))?;
    }
    Ok(assigned.to_vec())
}

/// A new partition as the controller writes it: its replicas, its ISR and leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPartition {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
}

/// Kafka's start of new partition `partition` on `replicas`: the unfenced
/// replicas, in assignment order, form the ISR and the first of them leads.
/// A replica list of fenced brokers only is refused, as Kafka refuses it.
pub fn new_partition(image: &MetadataImage, partition: i32, replicas: Vec<BrokerId>) -> Result<NewPartition, Error> {
    let isr: Vec<BrokerId> = replicas.iter().copied().filter(|b| image.brokers.get(b).is_some_and(|r| !r.fenced)).collect();
    let Some(&leader) = isr.first() else {
        return Err(Error::InvalidReplicaAssignment(format!(
            "All brokers specified in the manual partition assignment for partition {partition} are fenced or in controlled shutdown."
        )));
    };
    Ok(NewPartition { replicas, isr, leader })
}

/// Replica lists for partitions `first..first + count` of the topic
/// `topic_id`, `replication_factor` each. Fails as Kafka does when there are
/// fewer live brokers than the factor.
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

    /// Brokers 1..=3 registered, the `unfenced` ones unfenced.
    fn image_with_brokers(unfenced: &[BrokerId]) -> MetadataImage {
        use crate::metadata::quorum::{MetadataBatch, MetadataRecord};
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            let epoch = u64::try_from(id).unwrap();
            let record = MetadataRecord::RegisterBroker { broker_id: id, incarnation_id: Uuid::from_u128(id as u128), endpoints: vec![], rack: None };
            image.apply_batch(epoch, &MetadataBatch::one(record));
            if unfenced.contains(&id) {
                image.apply_batch(epoch + 10, &MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: id, broker_epoch: epoch }));
            }
        }
        image
    }

    fn refusal(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::InvalidReplicaAssignment(message)) => message,
            other => panic!("expected INVALID_REPLICA_ASSIGNMENT, got {other:?}"),
        }
    }

    #[test]
    fn added_partitions_are_checked_with_kafkas_messages() {
        let image = image_with_brokers(&[1, 2, 3]);
        assert_eq!(check_added(&image, &[vec![3, 1], vec![2, 3]], 2, 2).unwrap(), vec![vec![3, 1], vec![2, 3]]);
        // Each message as Kafka 4.x answers it (tests/test_create_partitions.py asks both).
        let cases: [(&[Vec<BrokerId>], i32, &str); 6] = [
            (&[vec![1, 2]], 2, "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."),
            (&[vec![1]], 1, "The manual partition assignment includes a partition with 1 replica(s), but this is not consistent with previous partitions, which have 2 replica(s)."),
            (&[vec![1, 2], vec![3]], 2, "The manual partition assignment includes a partition with 1 replica(s), but this is not consistent with previous partitions, which have 2 replica(s)."),
            (&[vec![1, 9]], 1, "The manual partition assignment includes broker 9, but no such broker is registered."),
            (&[vec![1, 1, 9]], 1, "The manual partition assignment includes the broker 1 more than once."),
            (&[vec![]], 1, "The manual partition assignment includes an empty replica list."),
        ];
        for (assigned, added, message) in cases {
            assert_eq!(refusal(check_added(&image, assigned, added, 2)), message, "{assigned:?}");
        }
    }

    #[test]
    fn a_new_partition_is_led_by_its_first_live_replica() {
        let image = image_with_brokers(&[2, 3]);
        let started = new_partition(&image, 4, vec![1, 3, 2]).unwrap();
        assert_eq!(started, NewPartition { replicas: vec![1, 3, 2], isr: vec![3, 2], leader: 3 }, "fenced broker 1 is a replica, out of the ISR");
        assert_eq!(
            refusal(new_partition(&image, 4, vec![1])),
            "All brokers specified in the manual partition assignment for partition 4 are fenced or in controlled shutdown."
        );
    }

    #[test]
    fn a_manual_assignment_is_checked_as_kafka_checks_it() {
        let image = image_with_brokers(&[]);
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
