//! The broker side of a broker session: register with the active controller,
//! then heartbeat to it every `broker.heartbeat.interval.ms`.
//!
//! The broker does not need to know the active controller in advance: it asks
//! the voter it last heard from, or the next voter in turn, and follows the
//! `NotController { leader }` hint it gets back. A controller that answers
//! "register again" (the session expired and the broker was fenced, or the
//! registration is stale) gets a new registration, and with it a new broker
//! epoch. A controller change needs nothing: the new active controller gives
//! every registered broker a fresh session, and the heartbeats simply go there.
//! Each round makes at most one attempt per voter plus two, and a round that
//! reached no controller is followed by a pause of at most 250 ms, so a
//! cluster with no controller costs a few failed calls per pause, not a spin.
//!
//! Controlled shutdown (Kafka's `WantShutDown`): once asked to leave, the task
//! heartbeats with `want_shutdown` until the controller answers that it has
//! fenced the broker and moved its leaderships, then reports
//! [`BrokerSessionState::ShutDown`] and stops. The caller bounds the wait.

use std::sync::Arc;
use std::time::Duration;

use silt_actors::metadata::controller::{BrokerHeartbeatReply, BrokerHeartbeatRequest, BrokerRegistrationRequest, ControllerError};
use silt_actors::metadata::quorum::{BrokerId, Endpoint};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::client::{CallError, Peers};
use super::message::{Request, Response};

/// How the broker registers and heartbeats.
#[derive(Debug, Clone)]
pub struct BrokerSessionOptions {
    pub broker_id: BrokerId,
    /// Random per process start.
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// The metadata quorum's voters: node id and node-to-node address.
    pub voters: Vec<(u64, String)>,
    /// This node's node-to-node address when it is not a voter: the
    /// controller makes it a learner there, so it receives the metadata log.
    pub learner_address: Option<String>,
}

/// The longest wait before trying again when there was no answer from a
/// controller (none elected yet, or a redirect that led nowhere).
const RETRY_INTERVAL_MAX: Duration = Duration::from_millis(250);

/// The longest wait for one controlled-shutdown heartbeat's answer.
const CONTROLLED_SHUTDOWN_CALL: Duration = Duration::from_secs(3);

/// Where the broker stands with the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerSessionState {
    /// Not registered (yet, or again).
    Registering,
    /// Registered with `broker_epoch`; `fenced` as the last heartbeat said.
    Registered { broker_epoch: u64, fenced: bool, controller: u64 },
    /// Controlled shutdown done: the controller fenced the broker and moved
    /// its leaderships (or it was never registered). The task has stopped.
    ShutDown,
}

/// Why one attempt failed; the next attempt goes elsewhere or registers again.
enum Attempt {
    /// Try this voter next (the hint of a voter that does not lead).
    Redirect(Option<u64>),
    /// The registration is no longer valid.
    Reregister,
    /// The voter could not be reached or failed: try the next one.
    Failed,
    /// The controller asks the broker to try again later (a duplicate registration).
    Later,
    /// An operator unregistered this incarnation: it stays out of the cluster
    /// until restarted, asking again only every heartbeat interval.
    Unregistered,
}

/// Starts the broker's session task; it runs until `shutdown` turns true, or
/// until a controlled shutdown asked for by `leave` turning true is done.
/// `metadata_offset` reads the last metadata log index this node has applied.
pub fn spawn(
    options: BrokerSessionOptions,
    peers: Arc<Peers>,
    metadata_offset: Arc<dyn Fn() -> u64 + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
    mut leave: watch::Receiver<bool>,
) -> (watch::Receiver<BrokerSessionState>, JoinHandle<()>) {
    let (state, watcher) = watch::channel(BrokerSessionState::Registering);
    let task = tokio::spawn(async move {
        let mut session = Session { options, peers, metadata_offset, state, controller: None, next_voter: 0, unregistered: false };
        let retry = session.options.heartbeat_interval.min(RETRY_INTERVAL_MAX);
        loop {
            let leaving = *leave.borrow();
            if leaving && session.leave_round().await {
                session.state.send_replace(BrokerSessionState::ShutDown);
                break;
            }
            // A broker that is not registered, or lost its controller, tries
            // again soon rather than a whole heartbeat interval later.
            let answered = if leaving {
                false
            } else {
                tokio::select! {
                    answered = session.round() => answered,
                    _ = super::server::stopped(&mut shutdown) => break,
                    _ = asked_to_leave(&mut leave) => continue,
                }
            };
            let wait = if answered { session.options.heartbeat_interval } else { retry };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = super::server::stopped(&mut shutdown) => break,
                _ = asked_to_leave(&mut leave), if !leaving => {}
            }
        }
    });
    (watcher, task)
}

/// Resolves once `leave` is true; never, if its sender is gone.
async fn asked_to_leave(leave: &mut watch::Receiver<bool>) {
    if leave.wait_for(|l| *l).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Session {
    options: BrokerSessionOptions,
    peers: Arc<Peers>,
    metadata_offset: Arc<dyn Fn() -> u64 + Send + Sync>,
    state: watch::Sender<BrokerSessionState>,
    /// The voter believed to be the active controller.
    controller: Option<u64>,
    next_voter: usize,
    /// The controller refused this incarnation as unregistered (warned once).
    unregistered: bool,
}

impl Session {
    /// One heartbeat (a registration and its first heartbeat when not
    /// registered), following redirects a bounded number of times. True when
    /// the controller answered the heartbeat and the broker is unfenced, or
    /// refused it as unregistered; false asks for a quick retry.
    async fn round(&mut self) -> bool {
        for _ in 0..=self.options.voters.len() + 1 {
            let Some((target, address)) = self.target() else { return false };
            let client = self.peers.client(&address);
            let state = *self.state.borrow();
            let attempt = match state {
                // Registered: the first heartbeat goes out at once, as KRaft's broker does.
                BrokerSessionState::Registering => self.register(target, &client).await.map(|()| false),
                // A fenced broker beats again soon: it is unfenced as soon as it has caught up.
                BrokerSessionState::Registered { broker_epoch, .. } => self.heartbeat(target, broker_epoch, false, &client).await.map(|reply| !reply.fenced),
                BrokerSessionState::ShutDown => return false,
            };
            match attempt {
                Ok(true) => return true,
                Ok(false) if matches!(state, BrokerSessionState::Registered { .. }) => return false,
                Ok(false) => {}
                Err(Attempt::Redirect(leader)) => self.controller = leader.filter(|l| *l != target),
                Err(Attempt::Reregister) => {
                    self.state.send_replace(BrokerSessionState::Registering);
                }
                Err(Attempt::Failed) => self.controller = None,
                Err(Attempt::Later) => return false,
                Err(Attempt::Unregistered) => return true,
            }
        }
        false
    }

    /// One attempt at a controlled shutdown, following redirects like
    /// [`Session::round`]; true once the controller agreed (or there is no
    /// registration whose leaderships could need moving).
    async fn leave_round(&mut self) -> bool {
        for _ in 0..=self.options.voters.len() + 1 {
            let BrokerSessionState::Registered { broker_epoch, .. } = *self.state.borrow() else { return true };
            let Some((target, address)) = self.target() else { return false };
            let client = self.peers.client(&address);
            match self.heartbeat(target, broker_epoch, true, &client).await {
                Ok(reply) if reply.should_shut_down => {
                    tracing::info!(
                        broker_id = self.options.broker_id,
                        controller = target,
                        "controlled shutdown: the controller moved this broker's leaderships"
                    );
                    return true;
                }
                Ok(_) => return false,
                Err(Attempt::Redirect(leader)) => self.controller = leader.filter(|l| *l != target),
                // Fenced and expired already: nothing is left to move.
                Err(Attempt::Reregister) => return true,
                Err(Attempt::Failed) => self.controller = None,
                Err(Attempt::Later) => return false,
                // Out of the cluster: nothing of it is left to move.
                Err(Attempt::Unregistered) => return true,
            }
        }
        false
    }

    /// The voter to call: the believed controller, else the next in turn.
    fn target(&mut self) -> Option<(u64, String)> {
        if let Some(found) = self.controller.and_then(|id| self.options.voters.iter().find(|(v, _)| *v == id)) {
            return Some(found.clone());
        }
        let voters = &self.options.voters;
        let voter = voters.get(self.next_voter % voters.len().max(1))?.clone();
        self.next_voter = self.next_voter.wrapping_add(1);
        Some(voter)
    }

    async fn register(&mut self, target: u64, client: &super::client::PeerClient) -> Result<(), Attempt> {
        let o = &self.options;
        let request = Request::RegisterBroker(BrokerRegistrationRequest {
            broker_id: o.broker_id,
            incarnation_id: o.incarnation_id,
            endpoints: o.endpoints.clone(),
            rack: o.rack.clone(),
            learner_address: o.learner_address.clone(),
        });
        match client.call(&request, None).await {
            Ok(Response::RegisterBroker(Ok(reply))) => {
                tracing::info!(broker_id = o.broker_id, broker_epoch = reply.broker_epoch, controller = target, "registered with the active controller");
                self.unregistered = false;
                self.controller = Some(target);
                self.state.send_replace(BrokerSessionState::Registered { broker_epoch: reply.broker_epoch, fenced: true, controller: target });
                Ok(())
            }
            Ok(Response::RegisterBroker(Err(e))) => Err(self.refused(target, e)),
            other => Err(self.failed(target, "RegisterBroker", other)),
        }
    }

    /// The controller's reply, when it answered.
    async fn heartbeat(
        &mut self,
        target: u64,
        broker_epoch: u64,
        want_shutdown: bool,
        client: &super::client::PeerClient,
    ) -> Result<BrokerHeartbeatReply, Attempt> {
        let request = Request::BrokerHeartbeat(BrokerHeartbeatRequest {
            broker_id: self.options.broker_id,
            broker_epoch,
            metadata_offset: (self.metadata_offset)(),
            want_shutdown,
        });
        // A controlled shutdown's fencing commits through the quorum: give it
        // longer than a heartbeat interval.
        let timeout = if want_shutdown { CONTROLLED_SHUTDOWN_CALL } else { self.options.heartbeat_interval };
        match client.call(&request, Some(timeout)).await {
            Ok(Response::BrokerHeartbeat(Ok(reply))) => {
                self.controller = Some(target);
                let now = BrokerSessionState::Registered { broker_epoch, fenced: reply.fenced, controller: target };
                self.state.send_if_modified(|state| std::mem::replace(state, now) != now);
                Ok(reply)
            }
            Ok(Response::BrokerHeartbeat(Err(e))) => Err(self.refused(target, e)),
            other => Err(self.failed(target, "BrokerHeartbeat", other)),
        }
    }

    fn refused(&mut self, target: u64, error: ControllerError) -> Attempt {
        match error {
            ControllerError::NotController { leader } => Attempt::Redirect(leader),
            ControllerError::RegistrationRequired { reason, .. } => {
                tracing::warn!(broker_id = self.options.broker_id, controller = target, %reason, "registering again");
                Attempt::Reregister
            }
            ControllerError::Unregistered { .. } => {
                // As Kafka's broker after UnregisterBroker: it keeps running,
                // out of the cluster, until it is restarted.
                if !std::mem::replace(&mut self.unregistered, true) {
                    tracing::warn!(broker_id = self.options.broker_id, controller = target, "this broker was unregistered: restart it to register again");
                }
                Attempt::Unregistered
            }
            ControllerError::DuplicateRegistration { .. } => {
                tracing::info!(
                    broker_id = self.options.broker_id,
                    controller = target,
                    "the previous incarnation's session is still live: registering again shortly"
                );
                Attempt::Later
            }
            e => {
                tracing::warn!(broker_id = self.options.broker_id, controller = target, cause = %e, "the controller refused the broker session request");
                Attempt::Failed
            }
        }
    }

    fn failed(&self, target: u64, sent: &'static str, outcome: Result<Response, CallError>) -> Attempt {
        match outcome {
            Ok(other) => tracing::warn!(controller = target, sent, got = other.kind(), "unexpected answer to a broker session request"),
            Err(e) => tracing::debug!(controller = target, cause = %e, "broker session request failed"),
        }
        Attempt::Failed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use futures::FutureExt;
    use silt_actors::metadata::controller::BrokerRegistrationReply;
    use tokio::net::TcpListener;

    use super::*;
    use crate::cluster::client::ClientOptions;
    use crate::cluster::server::{serve, Dispatch, ServerOptions};

    /// A scripted controller: voter 1 redirects to voter 2; voter 2 answers
    /// registrations with growing epochs and refuses the first heartbeat of
    /// epoch 1 as expired, so the broker must register again.
    /// (voter, call, broker epoch) of every registration and heartbeat served.
    type Calls = Arc<Mutex<Vec<(u64, &'static str, u64)>>>;

    struct Scripted {
        id: u64,
        calls: Calls,
    }

    impl Dispatch for Scripted {
        fn dispatch(&self, request: Request) -> BoxFuture<'static, Response> {
            let mut calls = self.calls.lock().unwrap();
            let response = match (self.id, request) {
                (1, Request::RegisterBroker(_)) => Response::RegisterBroker(Err(ControllerError::NotController { leader: Some(2) })),
                (1, Request::BrokerHeartbeat(_)) => Response::BrokerHeartbeat(Err(ControllerError::NotController { leader: Some(2) })),
                (_, Request::RegisterBroker(_)) => {
                    let epoch = calls.iter().filter(|c| c.1 == "register" && c.0 == 2).count() as u64 + 1;
                    calls.push((self.id, "register", epoch));
                    Response::RegisterBroker(Ok(BrokerRegistrationReply { broker_epoch: epoch }))
                }
                (_, Request::BrokerHeartbeat(beat)) => {
                    calls.push((self.id, "heartbeat", beat.broker_epoch));
                    if beat.broker_epoch == 1 {
                        Response::BrokerHeartbeat(Err(ControllerError::RegistrationRequired { broker_id: beat.broker_id, reason: "expired".into() }))
                    } else {
                        Response::BrokerHeartbeat(Ok(BrokerHeartbeatReply { fenced: false, should_shut_down: beat.want_shutdown }))
                    }
                }
                (_, other) => Response::Unsupported(other.kind().into()),
            };
            async move { response }.boxed()
        }
    }

    #[tokio::test]
    async fn the_broker_follows_redirects_and_registers_again_when_told() {
        let calls: Calls = Arc::new(Mutex::new(Vec::new()));
        let (stop, shutdown) = watch::channel(false);
        let mut voters = Vec::new();
        for id in [1u64, 2] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            voters.push((id, listener.local_addr().unwrap().to_string()));
            tokio::spawn(serve(listener, Arc::new(Scripted { id, calls: calls.clone() }), ServerOptions::default(), shutdown.clone()));
        }
        let options = BrokerSessionOptions {
            broker_id: 5,
            incarnation_id: Uuid::from_u128(5),
            endpoints: vec![],
            rack: Some("r1".into()),
            heartbeat_interval: Duration::from_millis(20),
            voters,
            learner_address: None,
        };
        let (leave, leaving) = watch::channel(false);
        let (mut state, task) = spawn(options, Arc::new(Peers::new(ClientOptions::default())), Arc::new(|| 100), shutdown, leaving);
        let settled = tokio::time::timeout(
            Duration::from_secs(20),
            state.wait_for(|s| *s == BrokerSessionState::Registered { broker_epoch: 2, fenced: false, controller: 2 }),
        )
        .await
        .map(|seen| seen.is_ok());
        assert!(settled.is_ok(), "calls: {:?}", calls.lock().unwrap());
        let calls = calls.lock().unwrap().clone();
        assert_eq!(&calls[..3], &[(2, "register", 1), (2, "heartbeat", 1), (2, "register", 2)], "{calls:?}");
        // Controlled shutdown: the task asks, the controller agrees, the task stops.
        leave.send_replace(true);
        tokio::time::timeout(Duration::from_secs(20), task).await.expect("the session task stops after a controlled shutdown").unwrap();
        assert_eq!(*state.borrow(), BrokerSessionState::ShutDown);
        drop(stop);
    }
}
