//! What request handlers read without a message round trip: the topics with
//! their partitions' leadership (from the metadata image) and this node's
//! partition actors, and the live brokers. The replica manager rebuilds it
//! after every image it applies and swaps it in whole.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::metadata::quorum::{BrokerId, Endpoint};
use crate::partition::PartitionHandle;
use crate::topic_config::TopicConfigs;

/// One partition as the metadata image says, with this node's replica of it.
#[derive(Debug, Clone)]
pub struct PartitionView {
    /// `None` while the partition is offline.
    pub leader: Option<BrokerId>,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// An ongoing reassignment's replicas being added and removed (both in `replicas`).
    pub adding_replicas: Vec<BrokerId>,
    pub removing_replicas: Vec<BrokerId>,
    /// This node's partition actor, if it holds a replica.
    pub local: Option<PartitionHandle>,
}

/// A topic as request handlers see it.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: Arc<str>,
    pub id: Uuid,
    pub configs: TopicConfigs,
    /// Every partition, index = partition number.
    pub partitions: Vec<PartitionView>,
}

impl TopicView {
    /// The local partition actors, in partition order, if this node holds
    /// every partition (always so on a single node).
    pub fn local_partitions(&self) -> Option<Vec<PartitionHandle>> {
        self.partitions.iter().map(|p| p.local.clone()).collect()
    }
}

/// Partition counts from this node's view of the image, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCounts {
    /// Partitions this node leads (Kafka's `LeaderCount`).
    pub leaders: u64,
    /// Partitions this node leads whose ISR is smaller than their replica set
    /// (Kafka's `UnderReplicatedPartitions`, counted by the leader).
    pub under_replicated: u64,
    /// Partitions without a leader (Kafka's `OfflinePartitionsCount`).
    pub offline: u64,
}

impl PartitionCounts {
    /// Counts `partitions` as broker `node` sees them.
    pub fn of<'a>(node: BrokerId, partitions: impl IntoIterator<Item = &'a PartitionView>) -> PartitionCounts {
        let mut counts = PartitionCounts::default();
        for p in partitions {
            match p.leader {
                None => counts.offline += 1,
                Some(leader) if leader == node => {
                    counts.leaders += 1;
                    if p.isr.len() < p.replicas.len() {
                        counts.under_replicated += 1;
                    }
                }
                Some(_) => {}
            }
        }
        counts
    }
}

/// A registered, unfenced broker: what Metadata and DescribeCluster list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub id: BrokerId,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
}

/// The live topics and brokers.
#[derive(Debug, Default)]
pub struct Registry {
    pub(super) topics: HashMap<Arc<str>, TopicView>,
    pub(super) names_by_id: HashMap<Uuid, Arc<str>>,
    pub(super) brokers: Vec<BrokerView>,
    /// Registered brokers whose session lapsed (DescribeCluster v2 lists them on request).
    pub(super) fenced_brokers: Vec<BrokerView>,
}

impl Registry {
    pub(super) fn insert(&mut self, view: TopicView) {
        self.names_by_id.insert(view.id, view.name.clone());
        self.topics.insert(view.name.clone(), view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(leader: Option<BrokerId>, replicas: &[BrokerId], isr: &[BrokerId]) -> PartitionView {
        PartitionView {
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
            local: None,
        }
    }

    #[test]
    fn counts_leaders_under_replicated_and_offline_partitions() {
        let partitions = [
            view(Some(1), &[1, 2, 3], &[1, 2, 3]),
            view(Some(1), &[1, 2, 3], &[1, 3]),
            view(Some(2), &[1, 2, 3], &[2]),
            view(None, &[1, 2, 3], &[1]),
            view(Some(1), &[1], &[1]),
        ];
        let counts = PartitionCounts::of(1, &partitions);
        assert_eq!(counts, PartitionCounts { leaders: 3, under_replicated: 1, offline: 1 }, "node 1 counts only what it leads as under-replicated");
        assert_eq!(PartitionCounts::of(2, &partitions), PartitionCounts { leaders: 1, under_replicated: 1, offline: 1 });
        assert_eq!(PartitionCounts::of(4, &[]), PartitionCounts::default());
    }
}
