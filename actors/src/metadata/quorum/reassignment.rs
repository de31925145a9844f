//! Partition reassignment (KIP-455) as the controller decides it, as pure
//! functions of the image. Kafka's rules (`PartitionReassignmentReplicas`):
//!
//! - reassigning to a target: `adding` = target − current replicas,
//!   `removing` = current − target, and the replicas become target ++ removing.
//!   The added replicas copy the leader like any follower and join the ISR
//!   once caught up; the ISR and the leader do not change yet;
//! - a reassignment completes once every target replica is in the ISR: the
//!   replicas become the target, the ISR keeps only target replicas, and a
//!   leader that is being removed hands over to the first target replica in
//!   the ISR. The removed replicas then stop and drop their copies;
//! - cancelling reverts to the replicas before the reassignment (current −
//!   adding) and takes the added ones out of the ISR;
//! - a new target replaces an ongoing reassignment, computed against the
//!   current replicas (including the ones being added).
//!
//! Each decision is one [`MetadataRecord::Reassignment`] made at the
//! partition epoch it saw, so one decided on a stale image is refused.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::image::{MetadataImage, PartitionImage};
use super::records::{BrokerId, MetadataRecord};

/// Why a partition's reassignment was refused (Kafka's error codes in brackets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignmentError {
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("the topic or partition does not exist")]
    UnknownTopicOrPartition,
    /// INVALID_REPLICA_ASSIGNMENT.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_REPLICATION_FACTOR: the request did not allow the change.
    #[error("the replication factor would change from {from} to {to}, which the request does not allow")]
    ReplicationFactorChange { from: usize, to: usize },
    /// NO_REASSIGNMENT_IN_PROGRESS.
    #[error("no reassignment of this partition is in progress")]
    NoReassignmentInProgress,
}

/// One partition's place in the image.
fn find(image: &MetadataImage, topic_id: Uuid, partition: i32) -> Result<&PartitionImage, ReassignmentError> {
    let topic = image.topics.get(&topic_id).ok_or(ReassignmentError::UnknownTopicOrPartition)?;
    usize::try_from(partition).ok().and_then(|i| topic.partitions.get(i)).ok_or(ReassignmentError::UnknownTopicOrPartition)
}

impl MetadataImage {
    /// The record that reassigns a partition to `target`, or `None` when it
    /// already has exactly those replicas and nothing is under way. When the
    /// target replicas are already in sync, the record completes it at once.
    pub fn reassign(&self, topic_id: Uuid, partition: i32, target: &[BrokerId], allow_rf_change: bool) -> Result<Option<MetadataRecord>, ReassignmentError> {
        let p = find(self, topic_id, partition)?;
        let distinct: BTreeSet<BrokerId> = target.iter().copied().collect();
        if target.is_empty() {
            return Err(ReassignmentError::InvalidReplicaAssignment("the target replica list is empty".into()));
        }
        if distinct.len() != target.len() {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!("the target replicas {target:?} repeat a broker")));
        }
        if let Some(unknown) = target.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!("the target includes broker {unknown}, but no such broker is registered")));
        }
        let from = p.target_replicas().len();
        if !allow_rf_change && from != target.len() {
            return Err(ReassignmentError::ReplicationFactorChange { from, to: target.len() });
        }
        let removing: Vec<BrokerId> = p.replicas.iter().copied().filter(|b| !distinct.contains(b)).collect();
        let adding: Vec<BrokerId> = target.iter().copied().filter(|b| !p.replicas.contains(b)).collect();
        let replicas: Vec<BrokerId> = target.iter().chain(&removing).copied().collect();
        if replicas == p.replicas && adding.is_empty() && removing.is_empty() && !p.is_reassigning() {
            return Ok(None);
        }
        let started = Assignment { replicas, adding, removing, isr: p.isr.clone(), leader: p.leader };
        let decided = started.completed(self).unwrap_or(started);
        Ok(Some(decided.record(topic_id, partition, p.partition_epoch)))
    }

    /// The record that cancels a partition's ongoing reassignment.
    pub fn cancel_reassignment(&self, topic_id: Uuid, partition: i32) -> Result<MetadataRecord, ReassignmentError> {
        let p = find(self, topic_id, partition)?;
        if !p.is_reassigning() {
            return Err(ReassignmentError::NoReassignmentInProgress);
        }
        let replicas: Vec<BrokerId> = p.replicas.iter().copied().filter(|b| !p.adding_replicas.contains(b)).collect();
        let isr: Vec<BrokerId> = p.isr.iter().copied().filter(|b| replicas.contains(b)).collect();
        if isr.is_empty() {
            return Err(ReassignmentError::InvalidReplicaAssignment("cannot cancel: none of the original replicas is in sync".into()));
        }
        let leader = match p.leader {
            Some(l) if isr.contains(&l) => Some(l),
            Some(_) => Some(
                self.first_live(&isr)
                    .ok_or_else(|| ReassignmentError::InvalidReplicaAssignment("cannot cancel: no original replica in sync can lead".into()))?,
            ),
            None => None,
        };
        let reverted = Assignment { replicas, adding: Vec::new(), removing: Vec::new(), isr, leader };
        Ok(reverted.record(topic_id, partition, p.partition_epoch))
    }

    /// The records that complete every reassignment whose target replicas
    /// are all in the ISR: the active controller writes them as ISRs grow.
    pub fn reassignment_completions(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for topic in self.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if !p.is_reassigning() {
                    continue;
                }
                let current = Assignment {
                    replicas: p.replicas.clone(),
                    adding: p.adding_replicas.clone(),
                    removing: p.removing_replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                };
                if let (Some(done), Ok(partition)) = (current.completed(self), i32::try_from(index)) {
                    records.push(done.record(topic.topic_id, partition, p.partition_epoch));
                }
            }
        }
        records
    }

    /// The first of `candidates` that is registered and unfenced.
    fn first_live(&self, candidates: &[BrokerId]) -> Option<BrokerId> {
        candidates.iter().copied().find(|b| self.brokers.get(b).is_some_and(|r| !r.fenced))
    }
}

/// A partition's assignment while a reassignment is decided.
struct Assignment {
    replicas: Vec<BrokerId>,
    adding: Vec<BrokerId>,
    removing: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    leader: Option<BrokerId>,
}

impl Assignment {
    /// The completed assignment, if every target replica is in sync and a
    /// leader being removed has an in-sync, live target replica to hand over to.
    fn completed(&self, image: &MetadataImage) -> Option<Assignment> {
        let target: Vec<BrokerId> = self.replicas.iter().copied().filter(|b| !self.removing.contains(b)).collect();
        if !target.iter().all(|b| self.isr.contains(b)) {
            return None;
        }
        let isr: Vec<BrokerId> = self.isr.iter().copied().filter(|b| target.contains(b)).collect();
        let leader = match self.leader {
            Some(l) if target.contains(&l) => Some(l),
            Some(_) => Some(image.first_live(&target.iter().copied().filter(|b| isr.contains(b)).collect::<Vec<_>>())?),
            None => None,
        };
        Some(Assignment { replicas: target, adding: Vec::new(), removing: Vec::new(), isr, leader })
    }

    fn record(self, topic_id: Uuid, partition: i32, partition_epoch: i32) -> MetadataRecord {
        MetadataRecord::Reassignment {
            topic_id,
            partition,
            partition_epoch,
            replicas: self.replicas,
            adding: self.adding,
            removing: self.removing,
            isr: self.isr,
            leader: self.leader,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::quorum::{MetadataBatch, MetadataResponse, TopicImage};

    const TOPIC: Uuid = Uuid::from_u128(7);

    /// Brokers 1..=5 (5 fenced), topic `t` with one partition on `replicas`.
    fn image(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=5 {
            let record = MetadataRecord::RegisterBroker { broker_id: id, incarnation_id: Uuid::from_u128(id as u128), endpoints: vec![], rack: None };
            let MetadataResponse::Applied { broker_epochs, .. } = image.apply_batch(u64::try_from(id).unwrap(), &MetadataBatch::one(record)) else { panic!() };
            if id != 5 {
                image.apply_batch(10, &MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: id, broker_epoch: broker_epochs[0].1 }));
            }
        }
        let partition = PartitionImage {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader: Some(leader),
            leader_epoch: 3,
            partition_epoch: 4,
            ..PartitionImage::default()
        };
        image.topics.insert(TOPIC, TopicImage { name: "t".into(), topic_id: TOPIC, partitions: vec![partition], configs: BTreeMap::new() });
        image.topic_ids.insert("t".into(), TOPIC);
        image
    }

    fn apply(image: &mut MetadataImage, record: MetadataRecord) -> &PartitionImage {
        let response = image.apply_batch(100, &MetadataBatch::one(record));
        assert!(matches!(response, MetadataResponse::Applied { .. }), "{response:?}");
        &image.topics[&TOPIC].partitions[0]
    }

    /// The ISR the leader would write once `joined` caught up.
    fn joins(image: &mut MetadataImage, joined: BrokerId) {
        let mut isr = image.topics[&TOPIC].partitions[0].isr.clone();
        isr.push(joined);
        alter_isr(image, isr);
    }

    /// The leader's AlterPartition to `isr`.
    fn alter_isr(image: &mut MetadataImage, isr: Vec<BrokerId>) {
        let p = &image.topics[&TOPIC].partitions[0];
        let record = MetadataRecord::AlterPartition { topic_id: TOPIC, partition: 0, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, isr };
        apply(image, record);
    }

    #[test]
    fn a_reassignment_adds_first_and_removes_once_the_new_replicas_are_in_sync() {
        let mut image = image(&[1, 2, 3], &[1, 2, 3], 1);
        let start = image.reassign(TOPIC, 0, &[2, 3, 4], true).unwrap().unwrap();
        let p = apply(&mut image, start);
        assert_eq!((p.replicas.clone(), p.adding_replicas.clone(), p.removing_replicas.clone()), (vec![2, 3, 4, 1], vec![4], vec![1]));
        assert_eq!((p.isr.clone(), p.leader, p.leader_epoch), (vec![1, 2, 3], Some(1), 3), "ISR and leader wait for the new replica");
        assert!(image.reassignment_completions().is_empty(), "4 is not in sync yet");
        joins(&mut image, 4);
        let done = image.reassignment_completions();
        assert_eq!(done.len(), 1);
        let p = apply(&mut image, done.into_iter().next().unwrap());
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![2, 3, 4], vec![2, 3, 4], Some(2)), "the removed leader handed over");
        assert!(!p.is_reassigning());
        assert_eq!(p.leader_epoch, 4, "a new leader is a new leader epoch");
        assert!(image.reassignment_completions().is_empty());
    }

    #[test]
    fn removing_replicas_or_reordering_completes_at_once() {
        let mut image = image(&[1, 2, 3], &[1, 2, 3], 2);
        let p = {
            let record = image.reassign(TOPIC, 0, &[3, 2], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.is_reassigning()), (vec![3, 2], vec![2, 3], Some(2), false));
        assert_eq!(image.reassign(TOPIC, 0, &[3, 2], true), Ok(None), "nothing to do");
        let p = {
            let record = image.reassign(TOPIC, 0, &[2, 3], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        assert_eq!(p.replicas, vec![2, 3], "a new order is a new preferred leader");
    }

    #[test]
    fn cancelling_reverts_to_the_original_replicas() {
        let mut image = image(&[1, 2], &[1, 2], 1);
        {
            let record = image.reassign(TOPIC, 0, &[3, 4], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        joins(&mut image, 3);
        let p = {
            let record = image.cancel_reassignment(TOPIC, 0).unwrap();
            apply(&mut image, record)
        };
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.is_reassigning()), (vec![1, 2], vec![1, 2], Some(1), false));
        assert_eq!(image.cancel_reassignment(TOPIC, 0), Err(ReassignmentError::NoReassignmentInProgress));
    }

    #[test]
    fn a_new_target_replaces_an_ongoing_reassignment() {
        let mut image = image(&[1, 2], &[1, 2], 1);
        {
            let record = image.reassign(TOPIC, 0, &[3, 4], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        let p = {
            let record = image.reassign(TOPIC, 0, &[1, 3], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        assert_eq!((p.replicas.clone(), p.adding_replicas.clone(), p.removing_replicas.clone()), (vec![1, 3, 4, 2], vec![], vec![4, 2]));
        assert!(image.reassignment_completions().is_empty(), "3 is not in sync");
        joins(&mut image, 3);
        let p = {
            let record = image.reassignment_completions().remove(0);
            apply(&mut image, record)
        };
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![1, 3], vec![1, 3], Some(1)));
    }

    #[test]
    fn invalid_targets_are_refused() {
        let image = image(&[1, 2], &[1, 2], 1);
        let invalid = |target: &[BrokerId]| matches!(image.reassign(TOPIC, 0, target, true), Err(ReassignmentError::InvalidReplicaAssignment(_)));
        assert!(invalid(&[]));
        assert!(invalid(&[1, 1]));
        assert!(invalid(&[1, 9]), "broker 9 is not registered");
        assert_eq!(image.reassign(TOPIC, 0, &[1, 2, 3], false), Err(ReassignmentError::ReplicationFactorChange { from: 2, to: 3 }));
        assert_eq!(image.reassign(TOPIC, 1, &[1], true), Err(ReassignmentError::UnknownTopicOrPartition));
        assert_eq!(image.reassign(Uuid::from_u128(8), 0, &[1], true), Err(ReassignmentError::UnknownTopicOrPartition));
    }

    #[test]
    fn a_leader_being_removed_waits_for_a_live_in_sync_target_replica() {
        // 5 is fenced: once it is in the ISR the target is in sync, but it cannot lead.
        let mut image = image(&[1, 5], &[1, 5], 1);
        {
            let record = image.reassign(TOPIC, 0, &[5], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        assert!(image.reassignment_completions().is_empty());
    }

    #[test]
    fn a_decision_on_a_stale_image_is_refused() {
        let mut image = image(&[1, 2], &[1, 2], 1);
        let stale = image.reassign(TOPIC, 0, &[2, 3], true).unwrap().unwrap();
        alter_isr(&mut image, vec![1]); // the ISR shrinks meanwhile: a new partition epoch
        let response = image.apply_batch(200, &MetadataBatch::one(stale));
        assert!(matches!(response, MetadataResponse::Rejected { error: super::super::ApplyError::StalePartitionEpoch { .. }, .. }), "{response:?}");
    }

    #[test]
    fn a_partition_change_cannot_drop_a_replica_under_reassignment() {
        let mut image = image(&[1, 2], &[1, 2], 1);
        {
            let record = image.reassign(TOPIC, 0, &[1, 3], true).unwrap().unwrap();
            apply(&mut image, record)
        };
        let change = MetadataRecord::PartitionChange { topic_id: TOPIC, partition: 0, leader: None, isr: None, replicas: Some(vec![1, 2]) };
        assert!(matches!(image.apply_batch(300, &MetadataBatch::one(change)), MetadataResponse::Rejected { .. }));
    }
}
