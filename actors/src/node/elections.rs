//! Leader elections asked for by an admin (Kafka's ElectLeaders):
//!
//! - **preferred**: the first replica of the assignment leads again, once it is
//!   in the ISR and unfenced (after a restart or a failover moved leadership
//!   away, as `kafka-leader-election --election-type PREFERRED` does);
//! - **unclean**: an offline partition gets a live replica as leader even if it
//!   is not in the ISR (its ISR becomes that replica alone). Records the old
//!   ISR had and the new leader lacks are lost; that is what "unclean" means,
//!   and why only an admin asks for it.
//!
//! [`plan`] is the controller's decision as a pure function of the image;
//! the node proposes its records in one batch and answers per partition.
//! The rules are those of Kafka's `ReplicationControlManager.electLeaders`:
//! a partition whose preferred replica already leads (or, unclean, that has a
//! leader) needs no election; when all partitions are asked for (`None`),
//! those are left out of the answer.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::Node;
use crate::error::Error;
use crate::metadata::quorum::records::BATCH_RECORDS_MAX;
use crate::metadata::quorum::{BrokerId, LeaderChange, MetadataBatch, MetadataImage, MetadataRecord, PartitionImage};

/// Kafka's ElectionType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

/// Why one partition's election did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("leader election not needed for topic partition")]
    NotNeeded,
    #[error("the preferred leader {0} is not available (not in the ISR, or fenced)")]
    PreferredNotAvailable(BrokerId),
    #[error("no live replica can lead this partition")]
    EligibleLeadersNotAvailable,
    #[error("this server does not host this topic-partition")]
    UnknownTopicOrPartition,
    /// The election was decided but its proposal did not commit.
    #[error("the election was not committed: {0}")]
    NotCommitted(String),
}

/// One partition's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub outcome: Result<(), ElectionError>,
}

/// Elect leaders for `partitions` (`None`: every partition of every topic).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<ElectionResult>, Error>")]
pub struct ElectLeaders {
    pub election: ElectionType,
    pub partitions: Option<Vec<(String, i32)>>,
}

/// The controller's decision: the `PartitionChange` records to write and the
/// answer for each partition (those asked for by name, or, when all are asked
/// for, only those where an election was tried).
pub fn plan(image: &MetadataImage, election: ElectionType, partitions: Option<&[(String, i32)]>) -> (Vec<MetadataRecord>, Vec<ElectionResult>) {
    let asked: Vec<(String, i32)> = match partitions {
        Some(named) => named.to_vec(),
        None => image.topics.values().flat_map(|t| (0..t.partitions.len()).filter_map(move |i| Some((t.name.clone(), i32::try_from(i).ok()?)))).collect(),
    };
    let mut records = Vec::new();
    let mut results = Vec::new();
    for (topic, partition) in asked {
        let found = image.topic(&topic).and_then(|t| Some((t.topic_id, t.partitions.get(usize::try_from(partition).ok()?)?)));
        let outcome = match found {
            None => Err(ElectionError::UnknownTopicOrPartition),
            Some((topic_id, p)) => decide(image, election, p).map(|(leader, isr)| {
                records.push(MetadataRecord::PartitionChange { topic_id, partition, leader: Some(LeaderChange::Elect(leader)), isr, replicas: None });
            }),
        };
        if partitions.is_none() && outcome == Err(ElectionError::NotNeeded) {
            continue;
        }
        results.push(ElectionResult { topic, partition, outcome });
    }
    (records, results)
}

/// The leader (and, unclean, the new ISR) one partition's election picks.
fn decide(image: &MetadataImage, election: ElectionType, p: &PartitionImage) -> Result<(BrokerId, Option<Vec<BrokerId>>), ElectionError> {
    let live = |b: &BrokerId| image.brokers.get(b).is_some_and(|r| !r.fenced);
    match election {
        ElectionType::Preferred => {
            let preferred = *p.replicas.first().ok_or(ElectionError::EligibleLeadersNotAvailable)?;
            if p.leader == Some(preferred) {
                Err(ElectionError::NotNeeded)
            } else if p.isr.contains(&preferred) && live(&preferred) {
                Ok((preferred, None))
            } else {
                Err(ElectionError::PreferredNotAvailable(preferred))
            }
        }
        ElectionType::Unclean => {
            if p.leader.is_some() {
                return Err(ElectionError::NotNeeded);
            }
            // A live ISR member first: that election is clean after all.
            if let Some(clean) = p.isr.iter().copied().find(|b| live(b)) {
                return Ok((clean, None));
            }
            let unclean = p.replicas.iter().copied().find(|b| live(b)).ok_or(ElectionError::EligibleLeadersNotAvailable)?;
            Ok((unclean, Some(vec![unclean])))
        }
    }
}

impl Handler<ElectLeaders> for Node {
    type Result = ResponseFuture<Result<Vec<ElectionResult>, Error>>;

    fn handle(&mut self, msg: ElectLeaders, _ctx: &mut Context<Self>) -> Self::Result {
        let (records, mut results) = plan(&self.store.image().borrow().image, msg.election, msg.partitions.as_deref());
        let store = self.store.clone();
        Box::pin(async move {
            // Each election commits (or fails) with its batch; a batch the
            // image refuses (a leader changed meanwhile) fails its partitions.
            let mut failed: BTreeMap<(uuid::Uuid, i32), String> = BTreeMap::new();
            for chunk in records.chunks(BATCH_RECORDS_MAX) {
                let reason = match store.propose(MetadataBatch { records: chunk.to_vec() }).await {
                    Ok(crate::metadata::quorum::MetadataResponse::Rejected { error, .. }) => Some(error.to_string()),
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                if let Some(reason) = reason {
                    for record in chunk {
                        if let MetadataRecord::PartitionChange { topic_id, partition, .. } = record {
                            failed.insert((*topic_id, *partition), reason.clone());
                        }
                    }
                }
            }
            if !failed.is_empty() {
                let image = store.image().borrow().image.clone();
                for result in results.iter_mut().filter(|r| r.outcome.is_ok()) {
                    let id = image.topic(&result.topic).map(|t| t.topic_id);
                    if let Some(reason) = id.and_then(|id| failed.get(&(id, result.partition))) {
                        result.outcome = Err(ElectionError::NotCommitted(reason.clone()));
                    }
                }
            }
            Ok(results)
        })
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::metadata::quorum::{MetadataResponse, TopicImage};

    /// Brokers 1..=3 (3 fenced), topic `t` with the given partitions.
    fn image(partitions: Vec<PartitionImage>) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            let record = MetadataRecord::RegisterBroker { broker_id: id, incarnation_id: Uuid::from_u128(id as u128), endpoints: vec![], rack: None };
            let MetadataResponse::Applied { broker_epochs, .. } = image.apply_batch(u64::try_from(id).unwrap(), &MetadataBatch::one(record)) else { panic!() };
            if id != 3 {
                image.apply_batch(10, &MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: id, broker_epoch: broker_epochs[0].1 }));
            }
        }
        let topic_id = Uuid::from_u128(7);
        image.topics.insert(topic_id, TopicImage { name: "t".into(), topic_id, partitions, configs: BTreeMap::new() });
        image.topic_ids.insert("t".into(), topic_id);
        image
    }

    fn partition(replicas: &[BrokerId], isr: &[BrokerId], leader: Option<BrokerId>) -> PartitionImage {
        PartitionImage { replicas: replicas.to_vec(), isr: isr.to_vec(), leader, leader_epoch: 1, partition_epoch: 1, ..PartitionImage::default() }
    }

    fn outcome(results: &[ElectionResult], p: i32) -> Option<Result<(), ElectionError>> {
        results.iter().find(|r| r.partition == p).map(|r| r.outcome.clone())
    }

    #[test]
    fn preferred_election_moves_leadership_back_to_the_first_replica() {
        let image = image(vec![
            partition(&[1, 2], &[1, 2], Some(2)), // elected: 1 is in sync and live
            partition(&[1, 2], &[1, 2], Some(1)), // already preferred
            partition(&[3, 1], &[3, 1], Some(1)), // 3 is fenced
            partition(&[2, 1], &[1], Some(1)),    // 2 is not in sync
        ]);
        let named: Vec<(String, i32)> = (0..5).map(|p| ("t".to_string(), p)).collect();
        let (records, results) = plan(&image, ElectionType::Preferred, Some(&named));
        assert_eq!(outcome(&results, 0), Some(Ok(())));
        assert_eq!(outcome(&results, 1), Some(Err(ElectionError::NotNeeded)));
        assert_eq!(outcome(&results, 2), Some(Err(ElectionError::PreferredNotAvailable(3))));
        assert_eq!(outcome(&results, 3), Some(Err(ElectionError::PreferredNotAvailable(2))));
        assert_eq!(outcome(&results, 4), Some(Err(ElectionError::UnknownTopicOrPartition)));
        let [MetadataRecord::PartitionChange { partition: 0, leader: Some(LeaderChange::Elect(1)), isr: None, .. }] = &records[..] else {
            panic!("{records:?}")
        };
        // The record applies: the image agrees the election is valid.
        let mut applied = image.clone();
        assert!(matches!(applied.apply_batch(20, &MetadataBatch { records }), MetadataResponse::Applied { .. }));
        assert_eq!(applied.topic("t").unwrap().partitions[0].leader, Some(1));
    }

    #[test]
    fn asked_for_everything_the_answer_leaves_out_partitions_that_need_nothing() {
        let image = image(vec![partition(&[1, 2], &[1, 2], Some(2)), partition(&[1, 2], &[1, 2], Some(1))]);
        let (records, results) = plan(&image, ElectionType::Preferred, None);
        assert_eq!(records.len(), 1);
        assert_eq!(results, vec![ElectionResult { topic: "t".into(), partition: 0, outcome: Ok(()) }]);
    }

    #[test]
    fn unclean_election_prefers_a_live_isr_member_and_else_takes_any_live_replica() {
        let image = image(vec![
            partition(&[1, 3], &[3], None),       // only 1 is live: unclean, ISR becomes [1]
            partition(&[3, 2], &[3, 2], None),    // 2 is a live ISR member: clean
            partition(&[1, 2], &[1, 2], Some(1)), // has a leader
            partition(&[3], &[3], None),          // nobody live
        ]);
        let (records, results) = plan(&image, ElectionType::Unclean, Some(&[("t".into(), 0), ("t".into(), 1), ("t".into(), 2), ("t".into(), 3)]));
        assert_eq!(outcome(&results, 0), Some(Ok(())));
        assert_eq!(outcome(&results, 1), Some(Ok(())));
        assert_eq!(outcome(&results, 2), Some(Err(ElectionError::NotNeeded)));
        assert_eq!(outcome(&results, 3), Some(Err(ElectionError::EligibleLeadersNotAvailable)));
        let mut applied = image.clone();
        assert!(matches!(applied.apply_batch(20, &MetadataBatch { records }), MetadataResponse::Applied { .. }));
        let t = applied.topic("t").unwrap();
        assert_eq!((t.partitions[0].leader, t.partitions[0].isr.clone()), (Some(1), vec![1]));
        assert_eq!((t.partitions[1].leader, t.partitions[1].isr.clone()), (Some(2), vec![3, 2]));
    }
}
