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
