//! Admin requests as proposals. Each handler makes the controller's decisions
//! from the current image (topic id, replica placement over the live brokers,
//! config diffs, a producer-id block), proposes them as one atomic batch to the
//! [`MetadataStore`](crate::metadata::MetadataStore), and answers once the batch
//! is committed and this node's replica manager has applied it, so a topic
//! returned by `CreateTopic` already has its partition actors.
//!
//! [`AlterIsr`] is the leader's ISR change (the node's [`AlterPartition`]):
//! an `AlterPartition` record that carries the leader and partition epochs it
//! was based on, checked when it is applied (every voter alike), so a change
//! committed meanwhile by another leader or controller makes it refused. The
//! proposing node checks the same against its image first, to spare the
//! quorum a proposal it would refuse.
//!
//! The handlers answer `AtomicResponse`s: the node handles one admin change at
//! a time, as before, so two creations of one name cannot both pass the check.

use actix::prelude::*;
use futures::future::BoxFuture;
use uuid::Uuid;

use super::placement::{self, live_brokers, new_partition, place, NewPartition};
use super::registry::{PartitionView, TopicView};
use super::{AllocateProducerId, AlterTopicConfigs, ConfigChange, CreatePartitions, CreateTopic, DeleteTopic, Node, UnregisterBroker, PARTITIONS_MAX};
use crate::catalog::{self, PRODUCER_ID_BLOCK};
use crate::error::{Error, MetadataError};
use crate::metadata::quorum::{ApplyError, BrokerId, ConfigResource, MetadataBatch, MetadataImage, MetadataRecord, MetadataResponse, TopicImage};
use crate::metadata::store::MetadataStore;
use crate::replication::{AlterPartition, IsrChange};
use crate::topic_config::TopicConfigs;

type AdminFuture<T> = ResponseActFuture<Node, Result<T, Error>>;

pub(super) fn ready<T: 'static>(result: Result<T, Error>) -> AdminFuture<T> {
    Box::pin(actix::fut::ready(result))
}

/// The domain error for a batch the image refused.
fn refused(error: ApplyError) -> Error {
    match error {
        ApplyError::TopicExists(name) => Error::TopicAlreadyExists(name),
        ApplyError::UnknownTopic(name) => Error::UnknownTopicOrPartition(name),
        ApplyError::UnknownTopicId(id) => Error::UnknownTopicId(id),
        ApplyError::FencedLeaderEpoch { topic_id, partition, given, current } => {
            Error::FencedLeaderEpoch { partition: format!("{partition} of topic id {topic_id}"), epoch: given, current }
        }
        ApplyError::StalePartitionEpoch { topic_id, partition, given, current } => {
            Error::StalePartitionEpoch { partition: format!("{partition} of topic id {topic_id}"), epoch: given, current }
        }
        other => MetadataError::Rejected(other).into(),
    }
}

/// `Ok` with the response of an applied batch, the domain error of a refused one.
pub(super) fn expect_applied(response: MetadataResponse) -> Result<MetadataResponse, Error> {
    match response {
        MetadataResponse::Rejected { error, .. } => Err(refused(error)),
        other => Ok(other),
    }
}

/// The records that create a topic: the topic, its partitions and its config overrides.
pub(super) fn topic_batch(name: &str, topic_id: Uuid, replicas: &[NewPartition], configs: &TopicConfigs) -> MetadataBatch {
    let mut records = vec![MetadataRecord::Topic { name: name.to_owned(), topic_id }];
    records.extend(partition_records(topic_id, 0, replicas));
    records.extend(configs.pairs().iter().map(|(k, v)| MetadataRecord::Config {
        resource: ConfigResource::Topic(name.to_owned()),
        name: k.clone(),
        value: Some(v.clone()),
    }));
    MetadataBatch { records }
}

fn partition_records(topic_id: Uuid, first: i32, partitions: &[NewPartition]) -> impl Iterator<Item = MetadataRecord> + '_ {
    partitions.iter().zip(first..).map(move |(p, partition)| MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: Some(p.leader),
    })
}

/// Each new partition's ISR and leader (the live replicas, the first of them
/// leading), partitions numbered from `first`.
fn start_partitions(image: &MetadataImage, first: i32, replicas: Vec<Vec<BrokerId>>) -> Result<Vec<NewPartition>, Error> {
    replicas.into_iter().zip(first..).map(|(r, partition)| new_partition(image, partition, r)).collect()
}

fn image_topic<'a>(image: &'a MetadataImage, name: &str) -> Result<&'a TopicImage, Error> {
    image.topic(name).ok_or_else(|| Error::UnknownTopicOrPartition(name.to_owned()))
}

fn topic_configs(topic: &TopicImage) -> Result<TopicConfigs, Error> {
    TopicConfigs::from_pairs(topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Proposes `batch` and waits until it is committed and applied to this
/// node's store; its response, or the refusal as an error.
async fn commit(store: MetadataStore, batch: MetadataBatch) -> Result<MetadataResponse, Error> {
    let (response, index) = store.propose_at(batch).await?;
    if let Some(index) = index {
        store.wait_applied(index).await?;
    }
    expect_applied(response)
}

impl Node {
    pub(super) fn image(&self) -> std::sync::Arc<crate::metadata::quorum::AppliedState> {
        self.store.image().borrow().clone()
    }

    /// Proposes `batch`; once it is committed and applied here, runs `then`
    /// with the response.
    pub(super) fn propose_then<T: 'static>(
        &mut self,
        batch: MetadataBatch,
        then: impl FnOnce(&mut Node, MetadataResponse) -> Result<T, Error> + 'static,
    ) -> AdminFuture<T> {
        let proposed = commit(self.store.clone(), batch);
        Box::pin(proposed.into_actor(self).then(move |answer: Result<MetadataResponse, Error>, node, _| match answer {
            Err(e) => ready(Err(e)),
            Ok(response) => Box::pin(node.apply_image().map(move |(), node, _| then(node, response))) as AdminFuture<T>,
        }))
    }

    /// Proposes `batches` in order, each once the one before is committed and
    /// applied here, stopping at the first refused; then runs `then`.
    fn propose_all_then<T: 'static>(&mut self, batches: Vec<MetadataBatch>, then: impl FnOnce(&mut Node) -> Result<T, Error> + 'static) -> AdminFuture<T> {
        let store = self.store.clone();
        let proposed = async move {
            for batch in batches {
                commit(store.clone(), batch).await?;
            }
            Ok(())
        };
        Box::pin(proposed.into_actor(self).then(move |answer: Result<(), Error>, node, _| match answer {
            Err(e) => ready(Err(e)),
            Ok(()) => Box::pin(node.apply_image().map(move |(), node, _| then(node))) as AdminFuture<T>,
        }))
    }

    pub(super) fn refuse_if_shutting_down(&self) -> Result<(), Error> {
        if self.shutting_down {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn view(&self, name: &str) -> Result<TopicView, Error> {
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        registry.topics.get(name).cloned().ok_or_else(|| Error::Unavailable(name.to_owned(), "created, not yet in this node's metadata".into()))
    }
}

impl Handler<CreateTopic> for Node {
    type Result = AtomicResponse<Self, Result<TopicView, Error>>;

    fn handle(&mut self, msg: CreateTopic, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.image();
        let prepared = (|| {
            self.refuse_if_shutting_down()?;
            catalog::validate_topic_name(&msg.name)?;
            if state.image.topic(&msg.name).is_some() {
                return Err(Error::TopicAlreadyExists(msg.name.clone()));
            }
            let partitions = match msg.partitions {
                None | Some(-1) => self.options.default_partitions,
                Some(n) if (1..=PARTITIONS_MAX).contains(&n) => n,
                Some(n) => return Err(Error::InvalidPartitions(format!("The partition count must be 1..={PARTITIONS_MAX}, not {n}."))),
            };
            let replication_factor = match msg.replication_factor {
                None | Some(-1) => 1,
                Some(n) => n,
            };
            let configs = TopicConfigs::from_pairs(msg.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let id = Uuid::new_v4();
            let replicas = match &msg.assignments {
                Some(assigned) => placement::check_manual(&state.image, assigned)?,
                None => place(&live_brokers(&state.image), id, 0, partitions, replication_factor)?,
            };
            Ok((id, start_partitions(&state.image, 0, replicas)?, configs))
        })();
        let (id, replicas, configs) = match prepared {
            Ok(p) => p,
            Err(e) => return AtomicResponse::new(ready(Err(e))),
        };
        if msg.validate_only {
            let partitions = replicas
                .into_iter()
                .map(|p| PartitionView {
                    leader: Some(p.leader),
                    isr: p.isr,
                    replicas: p.replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: vec![],
                    removing_replicas: vec![],
                    local: None,
                })
                .collect();
            return AtomicResponse::new(ready(Ok(TopicView { name: msg.name.as_str().into(), id, configs, partitions })));
        }
        let batch = topic_batch(&msg.name, id, &replicas, &configs);
        let name = msg.name;
        AtomicResponse::new(self.propose_then(batch, move |node, _| {
            tracing::info!(topic = %name, partitions = replicas.len(), "topic created");
            node.view(&name)
        }))
    }
}

impl Handler<DeleteTopic> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: DeleteTopic, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.image();
        let topic_id = match self.refuse_if_shutting_down().and_then(|()| image_topic(&state.image, &msg.name).map(|t| t.topic_id)) {
            Ok(id) => id,
            Err(e) => return AtomicResponse::new(ready(Err(e))),
        };
        AtomicResponse::new(self.propose_then(MetadataBatch::one(MetadataRecord::RemoveTopic { topic_id }), |_, _| Ok(())))
    }
}

impl Handler<CreatePartitions> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: CreatePartitions, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.image();
        let checked = (|| {
            self.refuse_if_shutting_down()?;
            let topic = image_topic(&state.image, &msg.name)?;
            let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
            // Kafka's messages, word for word.
            if msg.count == current {
                return Err(Error::InvalidPartitions(format!("Topic already has {current} partition(s).")));
            }
            if msg.count < current {
                return Err(Error::InvalidPartitions(format!(
                    "The topic {} currently has {current} partition(s); {} would not be an increase.",
                    msg.name, msg.count
                )));
            }
            if msg.count > PARTITIONS_MAX {
                return Err(Error::InvalidPartitions(format!("The partition count must be at most {PARTITIONS_MAX}, not {}.", msg.count)));
            }
            // Kafka takes the factor from the first partition (a reassignment's target where one is under way).
            let factor = topic.partitions.first().map_or(1, |p| p.target_replicas().len());
            let added = msg.count - current;
            let replicas = match &msg.assignments {
                Some(assigned) => placement::check_added(&state.image, assigned, added, factor)?,
                None => place(&live_brokers(&state.image), topic.topic_id, current, added, i32::try_from(factor).unwrap_or(i32::MAX))?,
            };
            let partitions = start_partitions(&state.image, current, replicas)?;
            Ok(MetadataBatch { records: partition_records(topic.topic_id, current, &partitions).collect() })
        })();
        match checked {
            Err(e) => AtomicResponse::new(ready(Err(e))),
            Ok(_) if msg.validate_only => AtomicResponse::new(ready(Ok(()))),
            Ok(batch) => AtomicResponse::new(self.propose_then(batch, |_, _| Ok(()))),
        }
    }
}

impl Handler<UnregisterBroker> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: UnregisterBroker, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.image();
        let batches = self.refuse_if_shutting_down().and_then(|()| match state.image.unregister_batches(msg.broker_id) {
            Ok(batches) => Ok(batches),
            Err(ApplyError::UnknownBroker(id)) => Err(Error::BrokerIdNotRegistered(id)),
            Err(other) => Err(refused(other)),
        });
        match batches {
            Err(e) => AtomicResponse::new(ready(Err(e))),
            Ok(batches) => AtomicResponse::new(self.propose_all_then(batches, move |_| {
                tracing::info!(broker_id = msg.broker_id, "broker unregistered");
                Ok(())
            })),
        }
    }
}

impl Handler<AlterTopicConfigs> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: AlterTopicConfigs, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.image();
        let changed = (|| {
            self.refuse_if_shutting_down()?;
            let topic = image_topic(&state.image, &msg.name)?;
            let current = topic_configs(topic)?;
            let mut configs = if msg.replace_all { TopicConfigs::default() } else { current.clone() };
            for change in &msg.changes {
                match change {
                    ConfigChange::Set(k, v) => configs.set(k, v)?,
                    ConfigChange::Delete(k) => configs.remove(k)?,
                }
            }
            let resource = || ConfigResource::Topic(msg.name.clone());
            let set = configs.pairs().iter().filter(|(k, v)| current.get(k) != Some(v.as_str())).map(|(k, v)| MetadataRecord::Config {
                resource: resource(),
                name: k.clone(),
                value: Some(v.clone()),
            });
            let deleted = current.pairs().keys().filter(|k| configs.get(k).is_none()).map(|k| MetadataRecord::Config {
                resource: resource(),
                name: k.clone(),
                value: None,
            });
            Ok(MetadataBatch { records: set.chain(deleted).collect() })
        })();
        match changed {
            Err(e) => AtomicResponse::new(ready(Err(e))),
            Ok(batch) if msg.validate_only || batch.records.is_empty() => AtomicResponse::new(ready(Ok(()))),
            Ok(batch) => AtomicResponse::new(self.propose_then(batch, |_, _| Ok(()))),
        }
    }
}

impl Handler<AllocateProducerId> for Node {
    type Result = AtomicResponse<Self, Result<i64, Error>>;

    fn handle(&mut self, _msg: AllocateProducerId, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(id) = self.producer_ids.take() {
            return AtomicResponse::new(ready(Ok(id)));
        }
        let state = self.image();
        let Some(broker) = state.image.brokers.get(&self.options.node_id) else {
            return AtomicResponse::new(ready(Err(Error::Unavailable("producer ids".into(), "this broker is not registered yet".into()))));
        };
        let record = MetadataRecord::ProducerIds { broker_id: broker.broker_id, broker_epoch: broker.broker_epoch, block_size: PRODUCER_ID_BLOCK };
        AtomicResponse::new(self.propose_then(MetadataBatch::one(record), |node, response| {
            let block = match response {
                MetadataResponse::Applied { producer_ids, .. } => producer_ids.first().copied(),
                _ => None,
            };
            let block = block.ok_or_else(|| Error::from(MetadataError::Raft { action: "allocate producer ids", reason: "no block in the answer".into() }))?;
            node.producer_ids = ProducerIds { next: block.first_producer_id, end: block.first_producer_id.saturating_add(block.size) };
            node.producer_ids.take().ok_or_else(|| Error::from(MetadataError::Raft { action: "allocate producer ids", reason: "an empty block".into() }))
        }))
    }
}

/// The producer-id block this broker hands out from: `[next, end)`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ProducerIds {
    next: i64,
    end: i64,
}

impl ProducerIds {
    fn take(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// A leader's ISR change (Kafka's AlterPartition), proposed as a
/// `PartitionChange` once the epochs it was based on are still current.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct AlterIsr(pub IsrChange);

impl Handler<AlterIsr> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, AlterIsr(change): AlterIsr, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.image();
        let checked = self.refuse_if_shutting_down().and_then(|()| isr_change_record(&state.image, &change));
        match checked {
            Err(e) => AtomicResponse::new(ready(Err(e))),
            Ok(None) => AtomicResponse::new(ready(Ok(()))),
            Ok(Some(record)) => AtomicResponse::new(self.propose_then(MetadataBatch::one(record), |_, _| Ok(()))),
        }
    }
}

/// The `AlterPartition` record for a leader's ISR change, if the epochs it
/// was based on are still the image's and the new ISR holds the leader (the
/// record is checked again when applied). Brokers the change would add that
/// are not registered (unregistered, yet still fetching) or are fenced are
/// left out, as Kafka's leader asks only for eligible replicas; `None` when that leaves
/// nothing to change, so the leader, answered, waits before asking again
/// instead of writing a refused record on every high-watermark move.
fn isr_change_record(image: &MetadataImage, change: &IsrChange) -> Result<Option<MetadataRecord>, Error> {
    let topic = image.topics.get(&change.topic_id).ok_or(Error::UnknownTopicId(change.topic_id))?;
    let name = format!("{}-{}", topic.name, change.partition);
    let p = usize::try_from(change.partition).ok().and_then(|i| topic.partitions.get(i)).ok_or_else(|| Error::UnknownTopicOrPartition(name.clone()))?;
    if change.leader_epoch != p.leader_epoch {
        return Err(Error::FencedLeaderEpoch { partition: name, epoch: change.leader_epoch, current: p.leader_epoch });
    }
    if change.partition_epoch != p.partition_epoch {
        return Err(Error::StalePartitionEpoch { partition: name, epoch: change.partition_epoch, current: p.partition_epoch });
    }
    if p.leader.is_none_or(|l| !change.new_isr.contains(&l)) {
        return Err(MetadataError::Rejected(ApplyError::InvalidAssignment(format!("the ISR {:?} must hold the leader {:?}", change.new_isr, p.leader))).into());
    }
    // A replica joins the ISR only while registered and unfenced (Kafka's
    // INELIGIBLE_REPLICA, KIP-841): a fenced broker that still fetches may be
    // cut off from the controller, which then could not elect it.
    let eligible = |b: &BrokerId| image.brokers.get(b).is_some_and(|r| !r.fenced);
    let isr: Vec<BrokerId> = change.new_isr.iter().copied().filter(|b| p.isr.contains(b) || eligible(b)).collect();
    if isr.len() != change.new_isr.len() && isr == p.isr {
        return Ok(None);
    }
    Ok(Some(MetadataRecord::AlterPartition {
        topic_id: change.topic_id,
        partition: change.partition,
        leader_epoch: change.leader_epoch,
        partition_epoch: change.partition_epoch,
        isr,
    }))
}

impl AlterPartition for super::NodeHandle {
    fn alter_partition(&self, change: IsrChange) -> BoxFuture<'static, Result<(), Error>> {
        let node = self.clone();
        Box::pin(async move { node.ask(AlterIsr(change)).await? })
    }
}

/// The partitions' way to the controller: an ISR change checked against the
/// local image and proposed straight to the metadata store. Partition actors
/// start before the node actor exists, so they hold this rather than a
/// [`NodeHandle`](super::NodeHandle); the change reaches them back as a new
/// role once the record is applied.
pub(super) struct StoreAlterPartition(pub MetadataStore);

impl AlterPartition for StoreAlterPartition {
    fn alter_partition(&self, change: IsrChange) -> BoxFuture<'static, Result<(), Error>> {
        let store = self.0.clone();
        Box::pin(async move {
            let Some(record) = isr_change_record(&store.image().borrow().image, &change)? else { return Ok(()) };
            expect_applied(store.propose(MetadataBatch::one(record)).await?).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with brokers 1-3 registered and unfenced, and topic `t`
    /// (one partition on all three, led by 1); its id and an applier.
    fn three_brokers_and_a_topic() -> (MetadataImage, Uuid, impl FnMut(&mut MetadataImage, Vec<MetadataRecord>)) {
        let mut image = MetadataImage::default();
        let mut index = 0;
        let mut apply = move |image: &mut MetadataImage, records: Vec<MetadataRecord>| {
            index += 1;
            assert!(matches!(image.apply_batch(index, &MetadataBatch { records }), MetadataResponse::Applied { .. }));
        };
        for id in 1..=3 {
            apply(
                &mut image,
                vec![MetadataRecord::RegisterBroker { broker_id: id, incarnation_id: Uuid::from_u128(id as u128), endpoints: vec![], rack: None }],
            );
            let broker_epoch = image.brokers[&id].broker_epoch;
            apply(&mut image, vec![MetadataRecord::UnfenceBroker { broker_id: id, broker_epoch }]);
        }
        let topic_id = Uuid::from_u128(7);
        let partition = NewPartition { replicas: vec![1, 2, 3], isr: vec![1, 2, 3], leader: 1 };
        apply(&mut image, topic_batch("t", topic_id, &[partition], &TopicConfigs::default()).records);
        (image, topic_id, apply)
    }

    /// What the controller would write for a leader asking for `new_isr` of
    /// `topic_id`'s partition 0 at its current epochs (None: nothing).
    fn asked(image: &MetadataImage, topic_id: Uuid, new_isr: Vec<BrokerId>) -> Option<Vec<BrokerId>> {
        let p = &image.topics[&topic_id].partitions[0];
        let change = IsrChange { topic_id, partition: 0, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, new_isr };
        isr_change_record(image, &change).unwrap().map(|r| match r {
            MetadataRecord::AlterPartition { isr, .. } => isr,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn an_unregistered_follower_is_not_asked_back_into_the_isr() {
        let (mut image, topic_id, mut apply) = three_brokers_and_a_topic();
        for batch in image.unregister_batches(3).unwrap() {
            apply(&mut image, batch.records);
        }
        assert_eq!(image.topics[&topic_id].partitions[0].isr, vec![1, 2]);
        assert_eq!(asked(&image, topic_id, vec![1, 2, 3]), None, "nothing to write: 3 is not registered");
        assert_eq!(asked(&image, topic_id, vec![1]), Some(vec![1]), "a shrink goes through");
        assert_eq!(asked(&image, topic_id, vec![1, 2]), Some(vec![1, 2]), "the same ISR is written (a new partition epoch)");
    }

    #[test]
    fn a_fenced_follower_is_not_let_back_into_the_isr_until_unfenced() {
        let (mut image, topic_id, mut apply) = three_brokers_and_a_topic();
        let broker_epoch = image.brokers[&3].broker_epoch;
        // As the controller fences a broker that stopped heartbeating: out of every ISR it is not the last of.
        let mut fence = vec![MetadataRecord::FenceBroker { broker_id: 3, broker_epoch }];
        fence.extend(image.fence_changes(3));
        apply(&mut image, fence);
        assert_eq!(image.topics[&topic_id].partitions[0].isr, vec![1, 2]);
        assert_eq!(asked(&image, topic_id, vec![1, 2, 3]), None, "a fenced broker that still fetches stays out (KIP-841)");
        apply(&mut image, vec![MetadataRecord::UnfenceBroker { broker_id: 3, broker_epoch }]);
        assert_eq!(asked(&image, topic_id, vec![1, 2, 3]), Some(vec![1, 2, 3]), "unfenced, it may rejoin");
    }
}
