//! Broker sessions as pure logic: every call takes the clock value and the
//! image it should judge by, and says which record (if any) to write. The task
//! in [`super::task`] supplies both and proposes the records.
//!
//! Rules (KRaft's `BrokerHeartbeatManager` and `ClusterControlManager`):
//! - a session is `(broker epoch, deadline)`; every heartbeat of the current
//!   registration moves the deadline to now + `broker.session.timeout.ms`;
//! - a fenced broker whose heartbeat shows it has applied the metadata log up
//!   to its own registration record is unfenced, and `UnfenceBroker` is written
//!   once per registration;
//! - a session past its deadline is fenced: `FenceBroker` and the image's
//!   `fence_changes` in one batch, built from the image at the moment of
//!   writing so that two brokers expiring together do not undo each other's
//!   leader moves. That registration is then dead: its heartbeats are answered
//!   "register again", so a returning broker comes back with a new epoch;
//! - a new incarnation of a broker is refused while the old one's session is
//!   live (Kafka's DUPLICATE_BROKER_REGISTRATION), so a quick restart waits for
//!   the old registration to be fenced and its leaderships to move (the task
//!   enforces it at registration);
//! - a controller that has just become active gives every registered broker a
//!   fresh session: it has no heartbeat history, and fencing on its first tick
//!   would fence the whole cluster after every controller change. That session
//!   is [`ACTIVATION_GRACE`] long (or the session timeout, if shorter): live
//!   brokers find the new controller within a heartbeat or two, and a broker
//!   that died with the old controller should not wait a whole timeout more;
//! - unfencing elects the broker leader of every offline partition whose ISR
//!   holds it (the last ISR member, kept there by fencing);
//! - a heartbeat that asks to shut down (controlled shutdown) is answered by
//!   fencing the broker at once, with the same leader and ISR moves as an
//!   expiry, so clients move to the new leaders before the process stops and
//!   nobody waits for its session to run out.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::BrokerHeartbeatRequest;
use crate::metadata::quorum::records::BATCH_RECORDS_MAX;
use crate::metadata::quorum::{BrokerId, MetadataBatch, MetadataImage, MetadataRecord};

/// The session a newly active controller gives every registered broker.
pub const ACTIVATION_GRACE: Duration = Duration::from_millis(1_500);

/// One broker's session with this controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    broker_epoch: u64,
    deadline: Instant,
    /// `UnfenceBroker` for this epoch was committed (or the image already showed
    /// the broker unfenced): it is not written again.
    unfenced: bool,
}

/// What a heartbeat calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Answer with the broker's fenced state; nothing to write.
    Reply { fenced: bool },
    /// Write these batches (`UnfenceBroker` and the elections it allows), then answer unfenced.
    Unfence(Vec<MetadataBatch>),
    /// Controlled shutdown: write these batches (empty when there is nothing
    /// to move), call [`BrokerSessions::shut_down`], then answer "shut down".
    ShutDown(Vec<MetadataBatch>),
    /// The broker's registration is unknown, stale or expired: it must register again.
    RegistrationRequired(String),
}

/// The sessions of every broker, as the active controller keeps them.
#[derive(Debug)]
pub struct BrokerSessions {
    timeout: Duration,
    sessions: BTreeMap<BrokerId, Session>,
    /// Registrations whose session this controller expired, by broker: their
    /// heartbeats are refused until the broker registers again.
    expired: BTreeMap<BrokerId, u64>,
}

impl BrokerSessions {
    /// No sessions yet; `timeout` is `broker.session.timeout.ms`.
    pub fn new(timeout: Duration) -> Self {
        BrokerSessions { timeout, sessions: BTreeMap::new(), expired: BTreeMap::new() }
    }

    /// This controller has just become active: every registered broker of
    /// `image` gets a fresh session, and nothing earlier counts.
    pub fn activate(&mut self, image: &MetadataImage, now: Instant) {
        self.sessions.clear();
        self.expired.clear();
        for (id, registration) in &image.brokers {
            let deadline = now + self.timeout.min(ACTIVATION_GRACE);
            self.sessions.insert(*id, Session { broker_epoch: registration.broker_epoch, deadline, unfenced: !registration.fenced });
        }
    }

    /// A `RegisterBroker` record was committed with `broker_epoch`.
    pub fn registered(&mut self, broker_id: BrokerId, broker_epoch: u64, now: Instant) {
        self.expired.remove(&broker_id);
        self.sessions.insert(broker_id, Session { broker_epoch, deadline: now + self.timeout, unfenced: false });
    }

    /// A heartbeat arrived; `image` is the controller's current image.
    pub fn heartbeat(&mut self, request: &BrokerHeartbeatRequest, image: &MetadataImage, now: Instant) -> HeartbeatOutcome {
        let id = request.broker_id;
        let Some(registration) = image.brokers.get(&id) else {
            return HeartbeatOutcome::RegistrationRequired(format!("broker {id} is not registered"));
        };
        if registration.broker_epoch != request.broker_epoch {
            return HeartbeatOutcome::RegistrationRequired(format!(
                "broker epoch {} is not the current registration's {}",
                request.broker_epoch, registration.broker_epoch
            ));
        }
        if self.expired.get(&id) == Some(&request.broker_epoch) {
            return HeartbeatOutcome::RegistrationRequired(format!("the session of broker epoch {} expired", request.broker_epoch));
        }
        // A registration this controller has no session for was committed before
        // its image showed it (the image lags the log a little): start one now.
        let session = self.sessions.entry(id).or_insert(Session { broker_epoch: request.broker_epoch, deadline: now, unfenced: !registration.fenced });
        if session.broker_epoch != request.broker_epoch {
            *session = Session { broker_epoch: request.broker_epoch, deadline: now, unfenced: !registration.fenced };
        }
        session.deadline = now + self.timeout;
        if request.want_shutdown {
            return HeartbeatOutcome::ShutDown(fence_batches(image, id, request.broker_epoch));
        }
        if registration.fenced && !session.unfenced && request.metadata_offset >= request.broker_epoch {
            return HeartbeatOutcome::Unfence(unfence_batches(image, id, request.broker_epoch));
        }
        HeartbeatOutcome::Reply { fenced: registration.fenced && !session.unfenced }
    }

    /// The `UnfenceBroker` record for `broker_epoch` was committed.
    pub fn unfence_committed(&mut self, broker_id: BrokerId, broker_epoch: u64) {
        if let Some(session) = self.sessions.get_mut(&broker_id).filter(|s| s.broker_epoch == broker_epoch) {
            session.unfenced = true;
        }
    }

    /// A controlled shutdown of `(broker_id, broker_epoch)` was committed: its
    /// session ends, and a later heartbeat of it must register again.
    pub fn shut_down(&mut self, broker_id: BrokerId, broker_epoch: u64) {
        if self.sessions.get(&broker_id).is_some_and(|s| s.broker_epoch == broker_epoch) {
            self.sessions.remove(&broker_id);
            self.expired.insert(broker_id, broker_epoch);
        }
    }

    /// Removes the sessions past their deadline and returns them as
    /// `(broker, epoch)`, to be fenced with [`fence_batches`].
    pub fn expire(&mut self, now: Instant) -> Vec<(BrokerId, u64)> {
        let due: Vec<(BrokerId, u64)> = self.sessions.iter().filter(|(_, s)| s.deadline <= now).map(|(id, s)| (*id, s.broker_epoch)).collect();
        for (id, epoch) in &due {
            self.sessions.remove(id);
            self.expired.insert(*id, *epoch);
        }
        due
    }

    /// The earliest deadline, for the task's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions.values().map(|s| s.deadline).min()
    }

    /// Is there a live session for this registration?
    pub fn has_session(&self, broker_id: BrokerId, broker_epoch: u64) -> bool {
        self.sessions.get(&broker_id).is_some_and(|s| s.broker_epoch == broker_epoch)
    }
}

/// The batches that unfence registration `(broker_id, broker_epoch)` in
/// `image`: `UnfenceBroker` first, then the elections of
/// [`MetadataImage::unfence_changes`] (offline partitions whose ISR holds the
/// broker), chunked like [`fence_batches`].
pub fn unfence_batches(image: &MetadataImage, broker_id: BrokerId, broker_epoch: u64) -> Vec<MetadataBatch> {
    let mut records = vec![MetadataRecord::UnfenceBroker { broker_id, broker_epoch }];
    records.extend(image.unfence_changes(broker_id));
    records.chunks(BATCH_RECORDS_MAX).map(|chunk| MetadataBatch { records: chunk.to_vec() }).collect()
}

/// The batches that fence registration `(broker_id, broker_epoch)` in
/// `image`: `FenceBroker` and the leader and ISR moves of `fence_changes`, in
/// one batch unless they exceed [`BATCH_RECORDS_MAX`] (then `FenceBroker` goes
/// first, so the broker can be elected nowhere while the rest follows). Empty
/// when there is nothing to write: the broker re-registered since, or it is
/// fenced already and is in no ISR.
pub fn fence_batches(image: &MetadataImage, broker_id: BrokerId, broker_epoch: u64) -> Vec<MetadataBatch> {
    let Some(registration) = image.brokers.get(&broker_id).filter(|r| r.broker_epoch == broker_epoch) else { return Vec::new() };
    let changes = image.fence_changes(broker_id);
    if registration.fenced && changes.is_empty() {
        return Vec::new();
    }
    let mut records = Vec::with_capacity(changes.len() + 1);
    records.push(MetadataRecord::FenceBroker { broker_id, broker_epoch });
    records.extend(changes);
    records.chunks(BATCH_RECORDS_MAX).map(|chunk| MetadataBatch { records: chunk.to_vec() }).collect()
}
