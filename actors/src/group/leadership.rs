//! Which partitions of `__consumer_offsets` this node leads, read from the
//! node's registry (the applied metadata image), and how that changed since
//! the coordinator last looked: Kafka's `GroupCoordinator.onElection` and
//! `onResignation`, as a pure diff.

use std::collections::BTreeMap;

use crate::metadata::quorum::BrokerId;
use crate::node::TopicView;
use crate::PartitionHandle;

/// An offsets partition this node leads, with its local replica.
#[derive(Debug, Clone)]
pub struct Led {
    pub leader_epoch: i32,
    pub handle: PartitionHandle,
}

/// The offsets partitions `node` leads and holds a replica of.
pub fn led_partitions(view: &TopicView, node: BrokerId) -> BTreeMap<i32, Led> {
    view.partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.leader == Some(node))
        .filter_map(|(i, p)| {
            let index = i32::try_from(i).ok()?;
            let handle = p.local.clone()?;
            Some((index, Led { leader_epoch: p.leader_epoch, handle }))
        })
        .collect()
}

/// What changed between the partitions served and those led now.
#[derive(Debug, Default)]
pub struct LeadershipChanges {
    /// Newly led, or led again in a newer epoch: load their groups.
    pub gained: Vec<(i32, Led)>,
    /// No longer led: unload their groups.
    pub lost: Vec<i32>,
}

/// Compares `served` (partition → the leader epoch it was loaded in) with `led`.
pub fn changes(served: &BTreeMap<i32, i32>, led: BTreeMap<i32, Led>) -> LeadershipChanges {
    let lost = served.keys().filter(|p| !led.contains_key(p)).copied().collect();
    // A newer epoch means the partition was led elsewhere meanwhile: what this
    // node loaded may be stale, so it is loaded again.
    let gained = led.into_iter().filter(|(p, l)| served.get(p).is_none_or(|epoch| *epoch < l.leader_epoch)).collect();
    LeadershipChanges { gained, lost }
}
