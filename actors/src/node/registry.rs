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
}

impl Registry {
    pub(super) fn insert(&mut self, view: TopicView) {
        self.names_by_id.insert(view.id, view.name.clone());
        self.topics.insert(view.name.clone(), view);
    }
}
