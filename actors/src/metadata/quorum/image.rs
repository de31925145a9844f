//! The metadata image: the cluster's metadata as a plain value, and the rules
//! that apply [`MetadataRecord`]s to it.
//!
//! Invariants kept by [`MetadataImage::apply_batch`] (a record that would break
//! one is rejected, with its whole batch):
//! - topic names and ids are unique, and `topic_ids` indexes exactly `topics`;
//! - a partition's replicas are distinct registered brokers, its ISR is a
//!   non-empty subset of them, and its leader (if any) is in the ISR;
//! - leader epochs and partition epochs only grow;
//! - producer-id blocks never overlap: `next_producer_id` only grows.
//!
//! Every map is a `BTreeMap`, so two voters that applied the same log hold
//! images that serialize to the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{
    BrokerId, ConfigResource, Endpoint, LeaderChange, MetadataBatch, MetadataRecord, MetadataResponse, ProducerIdBlock, BATCH_RECORDS_MAX,
    PRODUCER_ID_BLOCK_MAX,
};
use super::scram::{self, ScramCredentialError, ScramCredentials};

/// Why a record was not applied. Part of the replicated response, so it is
/// serializable and carries plain values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker_id} has epoch {current}, not {given}: the record is from an older registration")]
    StaleBrokerEpoch { broker_id: BrokerId, given: u64, current: u64 },
    #[error("broker {0} is fenced and cannot lead")]
    FencedBroker(BrokerId),
    #[error("broker {0} still leads partitions and cannot be unregistered")]
    BrokerStillLeads(BrokerId),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic id {0} already exists")]
    TopicIdExists(Uuid),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(Uuid),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of topic id {topic_id} does not exist")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    #[error("partition {given} of topic id {topic_id} is out of order: the next partition is {expected}")]
    PartitionOutOfOrder { topic_id: Uuid, given: i32, expected: i32 },
    #[error("invalid assignment: {0}")]
    InvalidAssignment(String),
    #[error("invalid producer id block size {0}")]
    InvalidBlockSize(i64),
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
    #[error("a batch holds {0} records, more than the limit")]
    BatchTooLarge(usize),
    #[error("leader epoch {given} of partition {partition} of topic id {topic_id} is not its current {current}")]
    FencedLeaderEpoch { topic_id: Uuid, partition: i32, given: i32, current: i32 },
    #[error("partition epoch {given} of partition {partition} of topic id {topic_id} is not its current {current}")]
    StalePartitionEpoch { topic_id: Uuid, partition: i32, given: i32, current: i32 },
    #[error("SCRAM credential refused: {0}")]
    ScramCredential(#[from] ScramCredentialError),
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// The log index of the broker's latest `RegisterBroker` record.
    pub broker_epoch: u64,
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is not offered to clients.
    pub fenced: bool,
}

/// One partition's assignment and leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// `None` while the partition is offline.
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas an ongoing reassignment adds (KIP-455); they are in `replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<BrokerId>,
    /// Replicas an ongoing reassignment removes once the added ones are in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionImage {
    /// Whether a reassignment is under way.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition has once its reassignment completes (all of
    /// them when none is under way).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas.iter().copied().filter(|b| !self.removing_replicas.contains(b)).collect()
    }
}

/// A topic: its name, id, partitions (index = position) and config overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

/// The cluster's metadata at one point of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    pub topics: BTreeMap<Uuid, TopicImage>,
    /// Topic name → id, an index over `topics`.
    pub topic_ids: BTreeMap<String, Uuid>,
    pub cluster_configs: BTreeMap<String, String>,
    pub broker_configs: BTreeMap<BrokerId, BTreeMap<String, String>>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// Brokers unregistered by an operator, with the incarnation that was
    /// registered then: that incarnation may not register again (it is
    /// dropped once the broker registers anew). Absent from images written
    /// before UnregisterBroker existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unregistered: BTreeMap<BrokerId, Uuid>,
    /// SCRAM credentials by user and mechanism. Absent from images written
    /// before SASL/SCRAM existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_credentials: ScramCredentials,
}

impl MetadataImage {
    /// Applies the batch stored at log index `index`, all or nothing.
    pub fn apply_batch(&mut self, index: u64, batch: &MetadataBatch) -> MetadataResponse {
        if batch.records.len() > BATCH_RECORDS_MAX {
            return MetadataResponse::Rejected { record: 0, error: ApplyError::BatchTooLarge(batch.records.len()) };
        }
        // A batch of one record is checked before it changes anything, so only a
        // longer batch needs a copy to fall back to.
        let before = (batch.records.len() > 1).then(|| self.clone());
        let mut producer_ids = Vec::new();
        let mut broker_epochs = Vec::new();
        for (i, record) in batch.records.iter().enumerate() {
            match self.apply(index, record) {
                Ok(Applied::Nothing) => {}
                Ok(Applied::ProducerIds(block)) => producer_ids.push(block),
                Ok(Applied::BrokerEpoch(id, epoch)) => broker_epochs.push((id, epoch)),
                Err(error) => {
                    if let Some(before) = before {
                        *self = before;
                    }
                    return MetadataResponse::Rejected { record: i, error };
                }
            }
        }
        MetadataResponse::Applied { producer_ids, broker_epochs }
    }

    /// Applies one record, or rejects it without changing the image.
    fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<Applied, ApplyError> {
        match record {
            MetadataRecord::RegisterBroker { broker_id, incarnation_id, endpoints, rack } => {
                let registration = BrokerRegistration {
                    broker_id: *broker_id,
                    broker_epoch: index,
                    incarnation_id: *incarnation_id,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                    fenced: true,
                };
                self.brokers.insert(*broker_id, registration);
                self.unregistered.remove(broker_id);
                Ok(Applied::BrokerEpoch(*broker_id, index))
            }
            MetadataRecord::FenceBroker { broker_id, broker_epoch } => {
                self.broker_mut(*broker_id, *broker_epoch)?.fenced = true;
                Ok(Applied::Nothing)
            }
            MetadataRecord::UnfenceBroker { broker_id, broker_epoch } => {
                self.broker_mut(*broker_id, *broker_epoch)?.fenced = false;
                Ok(Applied::Nothing)
            }
            MetadataRecord::UnregisterBroker { broker_id, broker_epoch } => {
                let incarnation_id = self.broker_mut(*broker_id, *broker_epoch)?.incarnation_id;
                if self.topics.values().flat_map(|t| &t.partitions).any(|p| p.leader == Some(*broker_id)) {
                    return Err(ApplyError::BrokerStillLeads(*broker_id));
                }
                self.brokers.remove(broker_id);
                self.unregistered.insert(*broker_id, incarnation_id);
                Ok(Applied::Nothing)
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topic_ids.contains_key(name) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if self.topics.contains_key(topic_id) {
                    return Err(ApplyError::TopicIdExists(*topic_id));
                }
                let topic = TopicImage { name: name.clone(), topic_id: *topic_id, partitions: Vec::new(), configs: BTreeMap::new() };
                self.topics.insert(*topic_id, topic);
                self.topic_ids.insert(name.clone(), *topic_id);
                Ok(Applied::Nothing)
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader } => {
                let topic = self.topics.get(topic_id).ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                let expected = i32::try_from(topic.partitions.len()).map_err(|_| ApplyError::InvalidAssignment("too many partitions".into()))?;
                if *partition != expected {
                    return Err(ApplyError::PartitionOutOfOrder { topic_id: *topic_id, given: *partition, expected });
                }
                self.check_assignment(replicas, &[], isr, *leader)?;
                let image = PartitionImage {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                };
                if let Some(topic) = self.topics.get_mut(topic_id) {
                    topic.partitions.push(image);
                }
                Ok(Applied::Nothing)
            }
            MetadataRecord::PartitionChange { topic_id, partition, leader, isr, replicas } => {
                let current = self.partition(*topic_id, *partition)?;
                let new_replicas = replicas.as_ref().unwrap_or(&current.replicas);
                let new_isr = isr.as_ref().unwrap_or(&current.isr);
                let new_leader = match leader {
                    None => current.leader,
                    Some(LeaderChange::Elect(id)) => Some(*id),
                    Some(LeaderChange::Offline) => None,
                };
                self.check_assignment(new_replicas, &current.replicas, new_isr, new_leader)?;
                self.check_isr_additions(&current.isr, new_isr)?;
                if let Some(gone) = current.adding_replicas.iter().chain(&current.removing_replicas).find(|b| !new_replicas.contains(b)) {
                    return Err(ApplyError::InvalidAssignment(format!("replica {gone} is being reassigned and must stay in the replicas")));
                }
                let (new_replicas, new_isr) = (new_replicas.clone(), new_isr.clone());
                let p = self.partition_mut(*topic_id, *partition)?;
                if leader.is_some() {
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                }
                p.partition_epoch = p.partition_epoch.saturating_add(1);
                p.leader = new_leader;
                p.isr = new_isr;
                p.replicas = new_replicas;
                Ok(Applied::Nothing)
            }
            MetadataRecord::AlterPartition { topic_id, partition, leader_epoch, partition_epoch, isr } => {
                let current = self.partition(*topic_id, *partition)?;
                if *leader_epoch != current.leader_epoch {
                    return Err(ApplyError::FencedLeaderEpoch {
                        topic_id: *topic_id,
                        partition: *partition,
                        given: *leader_epoch,
                        current: current.leader_epoch,
                    });
                }
                check_partition_epoch(*topic_id, *partition, *partition_epoch, current)?;
                self.check_assignment(&current.replicas, &current.replicas, isr, current.leader)?;
                self.check_isr_additions(&current.isr, isr)?;
                let p = self.partition_mut(*topic_id, *partition)?;
                p.partition_epoch = p.partition_epoch.saturating_add(1);
                p.isr = isr.clone();
                Ok(Applied::Nothing)
            }
            MetadataRecord::Reassignment { topic_id, partition, partition_epoch, replicas, adding, removing, isr, leader } => {
                let current = self.partition(*topic_id, *partition)?;
                check_partition_epoch(*topic_id, *partition, *partition_epoch, current)?;
                self.check_assignment(replicas, &current.replicas, isr, *leader)?;
                self.check_isr_additions(&current.isr, isr)?;
                check_reassignment(replicas, adding, removing)?;
                let leader_changed = current.leader != *leader;
                let p = self.partition_mut(*topic_id, *partition)?;
                if leader_changed {
                    p.leader_epoch = p.leader_epoch.saturating_add(1);
                }
                p.partition_epoch = p.partition_epoch.saturating_add(1);
                p.replicas = replicas.clone();
                p.adding_replicas = adding.clone();
                p.removing_replicas = removing.clone();
                p.isr = isr.clone();
                p.leader = *leader;
                Ok(Applied::Nothing)
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                self.topic_ids.remove(&topic.name);
                Ok(Applied::Nothing)
            }
            MetadataRecord::Config { resource, name, value } => {
                let configs = match resource {
                    ConfigResource::Cluster => &mut self.cluster_configs,
                    ConfigResource::Broker(id) => {
                        if !self.brokers.contains_key(id) {
                            return Err(ApplyError::UnknownBroker(*id));
                        }
                        self.broker_configs.entry(*id).or_default()
                    }
                    ConfigResource::Topic(topic) => {
                        let id = self.topic_ids.get(topic).ok_or_else(|| ApplyError::UnknownTopic(topic.clone()))?;
                        match self.topics.get_mut(id) {
                            Some(t) => &mut t.configs,
                            None => return Err(ApplyError::UnknownTopic(topic.clone())),
                        }
                    }
                };
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
                if let ConfigResource::Broker(id) = resource {
                    if self.broker_configs.get(id).is_some_and(BTreeMap::is_empty) {
                        self.broker_configs.remove(id);
                    }
                }
                Ok(Applied::Nothing)
            }
            MetadataRecord::ProducerIds { broker_id, broker_epoch, block_size } => {
                self.broker_mut(*broker_id, *broker_epoch)?;
                if !(1..=PRODUCER_ID_BLOCK_MAX).contains(block_size) {
                    return Err(ApplyError::InvalidBlockSize(*block_size));
                }
                let first = self.next_producer_id;
                self.next_producer_id = first.checked_add(*block_size).ok_or(ApplyError::ProducerIdsExhausted)?;
                Ok(Applied::ProducerIds(ProducerIdBlock { broker_id: *broker_id, first_producer_id: first, size: *block_size }))
            }
            MetadataRecord::ScramCredential { user, mechanism, credential } => {
                scram::apply(&mut self.scram_credentials, user, *mechanism, credential.as_ref())?;
                Ok(Applied::Nothing)
            }
        }
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// The `PartitionChange` records that fencing `broker_id` calls for: it
    /// leaves every ISR it is in (unless it is the last member, as Kafka keeps
    /// the last ISR member for a clean election later), and each partition it
    /// led gets the first other unfenced ISR member as leader, or goes offline.
    pub fn fence_changes(&self, broker_id: BrokerId) -> Vec<MetadataRecord> {
        let mut changes = Vec::new();
        for topic in self.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if !p.isr.contains(&broker_id) && p.leader != Some(broker_id) {
                    continue;
                }
                let remaining: Vec<BrokerId> = p.isr.iter().copied().filter(|b| *b != broker_id).collect();
                let isr = if remaining.is_empty() { p.isr.clone() } else { remaining };
                let leader = if p.leader == Some(broker_id) || p.leader.is_some_and(|l| !isr.contains(&l)) {
                    let next = isr.iter().copied().find(|b| *b != broker_id && self.brokers.get(b).is_some_and(|r| !r.fenced));
                    Some(next.map_or(LeaderChange::Offline, LeaderChange::Elect))
                } else {
                    None
                };
                let Ok(partition) = i32::try_from(index) else { continue };
                changes.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition,
                    leader,
                    isr: (isr != p.isr).then_some(isr),
                    replicas: None,
                });
            }
        }
        changes
    }

    /// The batches that unregister `broker_id` (Kafka's UnregisterBroker):
    /// `FenceBroker` if it is unfenced, the leader and ISR moves of
    /// [`fence_changes`](Self::fence_changes) (as Kafka's
    /// `handleBrokerUnregistered`; a last ISR member stays, for a clean
    /// election if the broker comes back), then `UnregisterBroker`. One batch
    /// unless they exceed [`BATCH_RECORDS_MAX`]; then they are proposed in
    /// order, and `UnregisterBroker`, last, applies only once every
    /// leadership has moved (it is refused while the broker still leads).
    pub fn unregister_batches(&self, broker_id: BrokerId) -> Result<Vec<MetadataBatch>, ApplyError> {
        let registration = self.brokers.get(&broker_id).ok_or(ApplyError::UnknownBroker(broker_id))?;
        let broker_epoch = registration.broker_epoch;
        let mut records = Vec::new();
        if !registration.fenced {
            records.push(MetadataRecord::FenceBroker { broker_id, broker_epoch });
        }
        records.extend(self.fence_changes(broker_id));
        records.push(MetadataRecord::UnregisterBroker { broker_id, broker_epoch });
        Ok(records.chunks(BATCH_RECORDS_MAX).map(|chunk| MetadataBatch { records: chunk.to_vec() }).collect())
    }

    /// The `PartitionChange` records that unfencing `broker_id` calls for:
    /// every offline partition whose ISR holds it gets it as leader. Fencing
    /// keeps the last ISR member in the ISR for exactly this clean election,
    /// so a partition whose replicas all went down comes back with the first
    /// of them to return, with nothing acknowledged lost.
    pub fn unfence_changes(&self, broker_id: BrokerId) -> Vec<MetadataRecord> {
        let mut changes = Vec::new();
        for topic in self.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.leader.is_some() || !p.isr.contains(&broker_id) {
                    continue;
                }
                let Ok(partition) = i32::try_from(index) else { continue };
                changes.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition,
                    leader: Some(LeaderChange::Elect(broker_id)),
                    isr: None,
                    replicas: None,
                });
            }
        }
        changes
    }

    /// The preferred-replica elections of an automatic leader rebalance, as
    /// Kafka's controller decides them: a broker that leads fewer than
    /// `1 - imbalance_max` of the partitions it is the preferred (first)
    /// replica of gets those back where it is unfenced and in the ISR.
    pub fn preferred_leader_changes(&self, imbalance_max: f64) -> Vec<MetadataRecord> {
        let mut preferred: BTreeMap<BrokerId, (usize, usize)> = BTreeMap::new();
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            if let Some(&first) = p.replicas.first() {
                let counts = preferred.entry(first).or_default();
                counts.0 += 1;
                counts.1 += usize::from(p.leader != Some(first));
            }
        }
        let imbalanced = |b: BrokerId| preferred.get(&b).is_some_and(|&(all, not_led)| all > 0 && not_led as f64 / all as f64 > imbalance_max);
        let mut changes = Vec::new();
        for topic in self.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                let Some(&first) = p.replicas.first() else { continue };
                let eligible = p.leader != Some(first) && p.isr.contains(&first) && self.brokers.get(&first).is_some_and(|b| !b.fenced);
                let Ok(partition) = i32::try_from(index) else { continue };
                if eligible && imbalanced(first) {
                    changes.push(MetadataRecord::PartitionChange {
                        topic_id: topic.topic_id,
                        partition,
                        leader: Some(LeaderChange::Elect(first)),
                        isr: None,
                        replicas: None,
                    });
                }
            }
        }
        changes
    }

    fn broker_mut(&mut self, broker_id: BrokerId, broker_epoch: u64) -> Result<&mut BrokerRegistration, ApplyError> {
        let broker = self.brokers.get_mut(&broker_id).ok_or(ApplyError::UnknownBroker(broker_id))?;
        if broker.broker_epoch != broker_epoch {
            return Err(ApplyError::StaleBrokerEpoch { broker_id, given: broker_epoch, current: broker.broker_epoch });
        }
        Ok(broker)
    }

    fn partition(&self, topic_id: Uuid, partition: i32) -> Result<&PartitionImage, ApplyError> {
        let topic = self.topics.get(&topic_id).ok_or(ApplyError::UnknownTopicId(topic_id))?;
        usize::try_from(partition).ok().and_then(|i| topic.partitions.get(i)).ok_or(ApplyError::UnknownPartition { topic_id, partition })
    }

    fn partition_mut(&mut self, topic_id: Uuid, partition: i32) -> Result<&mut PartitionImage, ApplyError> {
        let topic = self.topics.get_mut(&topic_id).ok_or(ApplyError::UnknownTopicId(topic_id))?;
        usize::try_from(partition).ok().and_then(|i| topic.partitions.get_mut(i)).ok_or(ApplyError::UnknownPartition { topic_id, partition })
    }

    /// Replicas distinct and registered (those in `held`, the partition's
    /// current replicas, may have been unregistered since), ISR a non-empty
    /// subset, leader in the ISR, registered and unfenced.
    fn check_assignment(&self, replicas: &[BrokerId], held: &[BrokerId], isr: &[BrokerId], leader: Option<BrokerId>) -> Result<(), ApplyError> {
        let set: BTreeSet<BrokerId> = replicas.iter().copied().collect();
        if replicas.is_empty() || set.len() != replicas.len() {
            return Err(ApplyError::InvalidAssignment(format!("replicas {replicas:?} must be distinct and non-empty")));
        }
        if let Some(unknown) = replicas.iter().find(|b| !held.contains(b) && !self.brokers.contains_key(b)) {
            return Err(ApplyError::UnknownBroker(*unknown));
        }
        let isr_set: BTreeSet<BrokerId> = isr.iter().copied().collect();
        if isr.is_empty() || isr_set.len() != isr.len() || !isr_set.is_subset(&set) {
            return Err(ApplyError::InvalidAssignment(format!("ISR {isr:?} must be a distinct non-empty subset of replicas {replicas:?}")));
        }
        if let Some(leader) = leader {
            if !isr_set.contains(&leader) {
                return Err(ApplyError::InvalidAssignment(format!("leader {leader} is not in the ISR {isr:?}")));
            }
            match self.brokers.get(&leader) {
                None => return Err(ApplyError::UnknownBroker(leader)),
                Some(b) if b.fenced => return Err(ApplyError::FencedBroker(leader)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A broker joining an ISR must be registered: an unregistered replica
    /// that still fetches is not let back in (Kafka's INELIGIBLE_REPLICA).
    fn check_isr_additions(&self, current: &[BrokerId], isr: &[BrokerId]) -> Result<(), ApplyError> {
        match isr.iter().find(|b| !current.contains(b) && !self.brokers.contains_key(b)) {
            Some(unknown) => Err(ApplyError::UnknownBroker(*unknown)),
            None => Ok(()),
        }
    }
}

/// A record made at `given` partition epoch applies only at that epoch.
fn check_partition_epoch(topic_id: Uuid, partition: i32, given: i32, current: &PartitionImage) -> Result<(), ApplyError> {
    if given == current.partition_epoch {
        Ok(())
    } else {
        Err(ApplyError::StalePartitionEpoch { topic_id, partition, given, current: current.partition_epoch })
    }
}

/// An ongoing reassignment's sets: distinct, disjoint, inside `replicas`,
/// and leaving at least one replica once the removed ones go.
fn check_reassignment(replicas: &[BrokerId], adding: &[BrokerId], removing: &[BrokerId]) -> Result<(), ApplyError> {
    let adding_set: BTreeSet<BrokerId> = adding.iter().copied().collect();
    let removing_set: BTreeSet<BrokerId> = removing.iter().copied().collect();
    let valid = adding_set.len() == adding.len()
        && removing_set.len() == removing.len()
        && adding_set.is_disjoint(&removing_set)
        && adding.iter().chain(removing).all(|b| replicas.contains(b))
        && replicas.len() > removing.len();
    if valid {
        Ok(())
    } else {
        Err(ApplyError::InvalidAssignment(format!("reassignment adding {adding:?} and removing {removing:?} does not fit replicas {replicas:?}")))
    }
}

/// What one applied record hands back.
enum Applied {
    Nothing,
    ProducerIds(ProducerIdBlock),
    BrokerEpoch(BrokerId, u64),
}
