//! The session controller: a task on every controller node that serves broker
//! registrations and heartbeats while this node is the active controller,
//! fences brokers whose sessions expire, completes partition reassignments
//! whose new replicas are in sync, and rebalances leadership.
//!
//! One task owns the [`BrokerSessions`] and handles one request at a time from
//! a bounded mailbox, so the session rules need no locks and a request never
//! sees half of another's changes. Proposals wait for their commit inside the
//! task, each bounded by `propose_timeout`; heartbeats queued meanwhile are a
//! few milliseconds late, far inside a session timeout. The task learns about
//! leadership by asking the quorum on each request and each tick (no callback
//! from openraft is needed), and activates its sessions the first time it sees
//! itself as leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::sessions::{fence_batches, BrokerSessions, HeartbeatOutcome};
use super::{
    BrokerHeartbeatReply, BrokerHeartbeatRequest, BrokerRegistrationReply, BrokerRegistrationRequest, ControllerError, ControllerQuorum, ProposeError,
};
use crate::metadata::quorum::records::BATCH_RECORDS_MAX;
use crate::metadata::quorum::{AppliedState, BrokerId, MetadataBatch, MetadataRecord, MetadataResponse};

/// Requests waiting for the task. Brokers heartbeat every two seconds, so a
/// thousand covers far more brokers than a cluster has; beyond it callers wait.
pub const MAILBOX_CAPACITY: usize = 1024;

/// How the session controller runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// This voter's id in the metadata quorum.
    pub node_id: u64,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// The longest wait for one proposal to commit.
    pub propose_timeout: Duration,
    /// How often leadership and session deadlines are checked.
    pub tick: Duration,
    /// How often the active controller rebalances leadership
    /// (`leader.imbalance.check.interval.seconds`); `None`: never.
    pub leader_rebalance_interval: Option<Duration>,
}

/// Kafka's `leader.imbalance.per.broker.percentage` (10%).
pub const LEADER_IMBALANCE_MAX: f64 = 0.10;

impl SessionOptions {
    /// Sessions of `session_timeout`, checked every 250 ms; no automatic leader rebalance.
    pub fn new(node_id: u64, session_timeout: Duration) -> Self {
        SessionOptions { node_id, session_timeout, propose_timeout: Duration::from_secs(5), tick: Duration::from_millis(250), leader_rebalance_interval: None }
    }
}

enum Command {
    Register(BrokerRegistrationRequest, oneshot::Sender<Result<BrokerRegistrationReply, ControllerError>>),
    Heartbeat(BrokerHeartbeatRequest, oneshot::Sender<Result<BrokerHeartbeatReply, ControllerError>>),
}

/// Sends requests to a [`SessionController`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionControllerHandle {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Register(request, _) => f.debug_tuple("Register").field(request).finish(),
            Command::Heartbeat(request, _) => f.debug_tuple("Heartbeat").field(request).finish(),
        }
    }
}

fn stopped() -> ControllerError {
    ControllerError::Unavailable("the session controller has stopped".into())
}

impl SessionControllerHandle {
    /// Registers a broker; answers once its `RegisterBroker` record is committed.
    pub async fn register(&self, request: BrokerRegistrationRequest) -> Result<BrokerRegistrationReply, ControllerError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Register(request, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// A broker's heartbeat.
    pub async fn heartbeat(&self, request: BrokerHeartbeatRequest) -> Result<BrokerHeartbeatReply, ControllerError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Heartbeat(request, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The task's state. See the module docs.
pub struct SessionController {
    options: SessionOptions,
    quorum: Arc<dyn ControllerQuorum>,
    image: watch::Receiver<Arc<AppliedState>>,
    sessions: BrokerSessions,
    active: bool,
    /// Expired registrations whose fencing has not committed yet, retried each tick.
    unfenced_expired: BTreeMap<BrokerId, u64>,
    /// When the next automatic leader rebalance is due (set on activation).
    next_rebalance: Option<Instant>,
}

impl SessionController {
    /// Starts the task. It runs until every handle is dropped.
    pub fn spawn(
        options: SessionOptions,
        quorum: Arc<dyn ControllerQuorum>,
        image: watch::Receiver<Arc<AppliedState>>,
    ) -> (SessionControllerHandle, JoinHandle<()>) {
        let (commands, mailbox) = mpsc::channel(MAILBOX_CAPACITY);
        let sessions = BrokerSessions::new(options.session_timeout);
        let controller = SessionController { options, quorum, image, sessions, active: false, unfenced_expired: BTreeMap::new(), next_rebalance: None };
        (SessionControllerHandle { commands }, tokio::spawn(controller.run(mailbox)))
    }

    async fn run(mut self, mut mailbox: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(self.options.tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = mailbox.recv() => match command {
                    Some(Command::Register(request, reply)) => {
                        let _ = reply.send(self.register(request).await);
                    }
                    Some(Command::Heartbeat(request, reply)) => {
                        let _ = reply.send(self.heartbeat(request).await);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.expire().await;
                    self.complete_reassignments().await;
                    self.rebalance_if_due().await;
                    self.remove_unregistered_learners().await;
                }
            }
        }
    }

    /// Ok while this node is the active controller; activates the sessions the
    /// first time it sees itself lead.
    fn check_active(&mut self) -> Result<(), ControllerError> {
        let leader = self.quorum.leader();
        if leader == Some(self.options.node_id) {
            if !self.active {
                self.active = true;
                let state = self.image.borrow().clone();
                self.sessions.activate(&state.image, Instant::now());
                self.next_rebalance = self.options.leader_rebalance_interval.map(|every| Instant::now() + every);
                tracing::info!(node_id = self.options.node_id, brokers = state.image.brokers.len(), "active controller: every broker gets a fresh session");
            }
            return Ok(());
        }
        if self.active {
            self.active = false;
            // The next active controller gives every broker a fresh session and fences on its own.
            self.unfenced_expired.clear();
            tracing::info!(node_id = self.options.node_id, ?leader, "no longer the active controller");
        }
        Err(ControllerError::NotController { leader })
    }

    async fn propose(&mut self, batch: MetadataBatch) -> Result<MetadataResponse, ControllerError> {
        let proposed = tokio::time::timeout(self.options.propose_timeout, self.quorum.propose(batch)).await;
        match proposed {
            Ok(Ok(MetadataResponse::Rejected { error, .. })) => Err(ControllerError::Rejected(error)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(ProposeError::NotLeader { leader })) => {
                self.active = false;
                Err(ControllerError::NotController { leader })
            }
            Ok(Err(ProposeError::Failed(reason))) => Err(ControllerError::Unavailable(reason)),
            Err(_) => Err(ControllerError::Unavailable(format!("no commit within {:?}", self.options.propose_timeout))),
        }
    }

    /// Adds a broker-only node to the quorum as a learner, so that it
    /// receives the metadata log it needs before it can be unfenced.
    async fn add_learner(&mut self, broker_id: BrokerId, address: String) -> Result<(), ControllerError> {
        let node_id = u64::try_from(broker_id).map_err(|_| ControllerError::Unavailable(format!("broker id {broker_id} is negative")))?;
        let added = tokio::time::timeout(self.options.propose_timeout, self.quorum.add_learner(node_id, address.clone())).await;
        match added {
            Ok(Ok(())) => {
                tracing::info!(broker_id, %address, "broker-only node is a learner of the metadata quorum");
                Ok(())
            }
            Ok(Err(ProposeError::NotLeader { leader })) => {
                self.active = false;
                Err(ControllerError::NotController { leader })
            }
            Ok(Err(ProposeError::Failed(reason))) => Err(ControllerError::Unavailable(format!("cannot add broker {broker_id} as a learner: {reason}"))),
            Err(_) => {
                Err(ControllerError::Unavailable(format!("adding broker {broker_id} as a learner did not commit within {:?}", self.options.propose_timeout)))
            }
        }
    }

    /// Takes unregistered broker-only nodes out of the quorum's membership, so
    /// that the quorum leader stops replicating to a node an operator removed
    /// (Kafka's observers are not members, so its UnregisterBroker needs no
    /// such step). A restarted node registers again and is re-added first.
    async fn remove_unregistered_learners(&mut self) {
        let gone: Vec<u64> = {
            let state = self.image.borrow();
            let unregistered =
                |id: &u64| BrokerId::try_from(*id).is_ok_and(|b| state.image.unregistered.contains_key(&b) && !state.image.brokers.contains_key(&b));
            self.quorum.learners().into_iter().filter(unregistered).collect()
        };
        if gone.is_empty() || self.check_active().is_err() {
            return;
        }
        for node_id in gone {
            match tokio::time::timeout(self.options.propose_timeout, self.quorum.remove_learner(node_id)).await {
                Ok(Ok(())) => tracing::info!(node_id, "unregistered broker-only node removed from the metadata quorum's learners"),
                Ok(Err(ProposeError::NotLeader { .. })) => {
                    self.active = false;
                    return;
                }
                // Tried again on the next tick.
                Ok(Err(ProposeError::Failed(reason))) => tracing::warn!(node_id, cause = %reason, "cannot remove an unregistered learner yet"),
                Err(_) => tracing::warn!(node_id, "removing an unregistered learner did not commit within {:?}", self.options.propose_timeout),
            }
        }
    }

    async fn register(&mut self, request: BrokerRegistrationRequest) -> Result<BrokerRegistrationReply, ControllerError> {
        self.check_active()?;
        let broker_id = request.broker_id;
        // KRaft's rule: a new incarnation waits until the old one's session has
        // expired and it was fenced (its leaderships moved); otherwise the
        // restarted broker, fenced by its registration but still named leader
        // of its partitions, would leave them without a usable leader.
        // Kafka's unregistered broker stays out until it restarts (its
        // heartbeats fail with STALE_BROKER_EPOCH): so does this incarnation.
        if self.image.borrow().image.unregistered.get(&broker_id) == Some(&request.incarnation_id) {
            return Err(ControllerError::Unregistered { broker_id });
        }
        let existing = self.image.borrow().image.brokers.get(&broker_id).map(|b| (b.incarnation_id, b.broker_epoch));
        if let Some((incarnation_id, broker_epoch)) = existing {
            if incarnation_id != request.incarnation_id && self.sessions.has_session(broker_id, broker_epoch) {
                return Err(ControllerError::DuplicateRegistration { broker_id });
            }
        }
        if let Some(expired_epoch) = self.unfenced_expired.get(&broker_id).copied() {
            if !self.fence(broker_id, expired_epoch).await {
                return Err(ControllerError::Unavailable(format!("broker {broker_id}'s expired registration is not fenced yet")));
            }
            self.unfenced_expired.remove(&broker_id);
        }
        if let Some(address) = request.learner_address.clone() {
            self.add_learner(broker_id, address).await?;
        }
        let record = MetadataRecord::RegisterBroker { broker_id, incarnation_id: request.incarnation_id, endpoints: request.endpoints, rack: request.rack };
        let response = self.propose(MetadataBatch::one(record)).await?;
        let MetadataResponse::Applied { broker_epochs, .. } = response else {
            return Err(ControllerError::Unavailable("the registration was applied without an answer".into()));
        };
        let Some(&(_, broker_epoch)) = broker_epochs.iter().find(|(id, _)| *id == broker_id) else {
            return Err(ControllerError::Unavailable("the registration was applied without a broker epoch".into()));
        };
        self.sessions.registered(broker_id, broker_epoch, Instant::now());
        tracing::info!(broker_id, broker_epoch, "broker registered");
        Ok(BrokerRegistrationReply { broker_epoch })
    }

    async fn heartbeat(&mut self, request: BrokerHeartbeatRequest) -> Result<BrokerHeartbeatReply, ControllerError> {
        self.check_active()?;
        let state = self.image.borrow().clone();
        match self.sessions.heartbeat(&request, &state.image, Instant::now()) {
            HeartbeatOutcome::Reply { fenced } => Ok(BrokerHeartbeatReply { fenced, should_shut_down: false }),
            HeartbeatOutcome::RegistrationRequired(reason) => Err(ControllerError::RegistrationRequired { broker_id: request.broker_id, reason }),
            HeartbeatOutcome::Unfence(batches) => match self.propose_all(batches).await {
                Ok(()) => {
                    self.sessions.unfence_committed(request.broker_id, request.broker_epoch);
                    tracing::info!(broker_id = request.broker_id, broker_epoch = request.broker_epoch, "broker unfenced");
                    Ok(BrokerHeartbeatReply { fenced: false, should_shut_down: false })
                }
                // The heartbeat itself counted; the unfence is tried again on the next one.
                Err(ControllerError::Unavailable(reason)) => {
                    tracing::warn!(broker_id = request.broker_id, cause = %reason, "cannot unfence the broker yet");
                    Ok(BrokerHeartbeatReply { fenced: true, should_shut_down: false })
                }
                Err(e) => Err(e),
            },
            HeartbeatOutcome::ShutDown(batches) => {
                self.propose_all(batches).await?;
                self.sessions.shut_down(request.broker_id, request.broker_epoch);
                tracing::info!(broker_id = request.broker_id, broker_epoch = request.broker_epoch, "controlled shutdown: broker fenced, its leaderships moved");
                Ok(BrokerHeartbeatReply { fenced: true, should_shut_down: true })
            }
        }
    }

    /// Proposes `batches` in order, stopping at the first that fails.
    async fn propose_all(&mut self, batches: Vec<MetadataBatch>) -> Result<(), ControllerError> {
        for batch in batches {
            self.propose(batch).await?;
        }
        Ok(())
    }

    /// Fences every broker whose session has expired.
    async fn expire(&mut self) {
        if self.check_active().is_err() {
            return;
        }
        self.unfenced_expired.extend(self.sessions.expire(Instant::now()));
        let due: Vec<(BrokerId, u64)> = self.unfenced_expired.iter().map(|(id, epoch)| (*id, *epoch)).collect();
        for (broker_id, broker_epoch) in due {
            if self.fence(broker_id, broker_epoch).await {
                self.unfenced_expired.remove(&broker_id);
            }
        }
    }

    /// Kafka's automatic leader rebalance: every `leader_rebalance_interval`,
    /// the active controller elects preferred replicas back where a broker
    /// leads too few of its own partitions (after restarts or failovers).
    async fn rebalance_if_due(&mut self) {
        let (Some(due), Some(every)) = (self.next_rebalance, self.options.leader_rebalance_interval) else { return };
        if Instant::now() < due || self.check_active().is_err() {
            return;
        }
        self.next_rebalance = Some(Instant::now() + every);
        let changes = self.image.borrow().image.preferred_leader_changes(LEADER_IMBALANCE_MAX);
        if changes.is_empty() {
            return;
        }
        tracing::info!(elections = changes.len(), "leader imbalance: electing preferred replicas");
        for chunk in changes.chunks(BATCH_RECORDS_MAX) {
            // A refused batch (a leader changed meanwhile) waits for the next check.
            if let Err(e) = self.propose(MetadataBatch { records: chunk.to_vec() }).await {
                tracing::warn!(cause = %e, "automatic leader rebalance did not commit");
                return;
            }
        }
    }

    /// Completes every partition reassignment whose new replicas have all
    /// joined the ISR (KIP-455): the leaders grow the ISR as the new replicas
    /// catch up, and the active controller notices on its next tick.
    async fn complete_reassignments(&mut self) {
        let completions = self.image.borrow().image.reassignment_completions();
        if completions.is_empty() || self.check_active().is_err() {
            return;
        }
        for record in completions {
            let MetadataRecord::Reassignment { topic_id, partition, ref replicas, .. } = record else { continue };
            let replicas = replicas.clone();
            // A refused record (the partition changed meanwhile) is decided again next tick.
            match self.propose(MetadataBatch::one(record)).await {
                Ok(_) => tracing::info!(%topic_id, partition, ?replicas, "partition reassignment completed"),
                Err(e) => {
                    tracing::info!(cause = %e, "completing a partition reassignment did not commit; trying again");
                    return;
                }
            }
        }
    }

    /// Writes the fencing of one expired registration; false if it must be tried again.
    async fn fence(&mut self, broker_id: BrokerId, broker_epoch: u64) -> bool {
        // Built from the image after the previous fencing applied, so two
        // brokers expiring together do not undo each other's leader moves.
        let image = self.image.borrow().image.clone();
        let batches = fence_batches(&image, broker_id, broker_epoch);
        if !batches.is_empty() {
            tracing::warn!(broker_id, broker_epoch, session_timeout = ?self.options.session_timeout, "broker session expired: fencing it");
        }
        for batch in batches {
            match self.propose(batch).await {
                Ok(_) => {}
                // A newer registration or image: nothing of this one is left to fence.
                Err(ControllerError::Rejected(error)) => {
                    tracing::info!(broker_id, broker_epoch, cause = %error, "fencing an expired broker was refused");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(broker_id, broker_epoch, cause = %e, "cannot fence the broker yet");
                    return false;
                }
            }
        }
        true
    }
}
