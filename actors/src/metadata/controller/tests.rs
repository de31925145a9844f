//! The session controller against an in-memory quorum, on tokio's paused
//! clock: time moves only when the test says so, so session timeouts are
//! exact and nothing sleeps for real.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use openraft::LogId;
use tokio::sync::watch;
use uuid::Uuid;

use super::*;
use crate::metadata::quorum::{AppliedState, LeaderChange, MetadataImage, MetadataRecord};

const TIMEOUT: Duration = Duration::from_millis(9_000);

/// A quorum of one that applies proposals at once and records them.
struct FakeQuorum {
    state: Mutex<(u64, MetadataImage)>,
    published: watch::Sender<Arc<AppliedState>>,
    written: Mutex<Vec<MetadataBatch>>,
    leader: Mutex<Option<u64>>,
    /// `add_learner` calls: (node id, address).
    learners: Mutex<Vec<(u64, String)>>,
}

impl FakeQuorum {
    fn new(leader: Option<u64>) -> Arc<FakeQuorum> {
        let (published, _) = watch::channel(Arc::new(AppliedState::default()));
        Arc::new(FakeQuorum {
            state: Mutex::new((0, MetadataImage::default())),
            published,
            written: Mutex::new(Vec::new()),
            leader: Mutex::new(leader),
            learners: Mutex::new(Vec::new()),
        })
    }

    /// Applies a batch as if another controller had written it.
    fn apply(&self, batch: MetadataBatch) -> MetadataResponse {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        let index = state.0;
        let response = state.1.apply_batch(index, &batch);
        self.published.send_replace(Arc::new(AppliedState {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            membership: Default::default(),
            image: state.1.clone(),
        }));
        response
    }

    fn written(&self) -> Vec<MetadataBatch> {
        std::mem::take(&mut *self.written.lock().unwrap())
    }

    fn image(&self) -> MetadataImage {
        self.state.lock().unwrap().1.clone()
    }
}

impl ControllerQuorum for Arc<FakeQuorum> {
    fn propose(&self, batch: MetadataBatch) -> BoxFuture<'static, Result<MetadataResponse, ProposeError>> {
        let leader = *self.leader.lock().unwrap();
        let result = if leader == Some(1) {
            self.written.lock().unwrap().push(batch.clone());
            Ok(self.apply(batch))
        } else {
            Err(ProposeError::NotLeader { leader })
        };
        async move { result }.boxed()
    }

    fn leader(&self) -> Option<u64> {
        *self.leader.lock().unwrap()
    }

    fn add_learner(&self, node_id: u64, address: String) -> BoxFuture<'static, Result<(), ProposeError>> {
        self.learners.lock().unwrap().push((node_id, address));
        async { Ok(()) }.boxed()
    }

    fn learners(&self) -> Vec<u64> {
        self.learners.lock().unwrap().iter().map(|(id, _)| *id).collect()
    }

    fn remove_learner(&self, node_id: u64) -> BoxFuture<'static, Result<(), ProposeError>> {
        self.learners.lock().unwrap().retain(|(id, _)| *id != node_id);
        async { Ok(()) }.boxed()
    }
}

fn start(quorum: &Arc<FakeQuorum>) -> SessionControllerHandle {
    start_with(quorum, None)
}

fn start_with(quorum: &Arc<FakeQuorum>, leader_rebalance_interval: Option<Duration>) -> SessionControllerHandle {
    let options = SessionOptions {
        node_id: 1,
        session_timeout: TIMEOUT,
        propose_timeout: Duration::from_secs(5),
        tick: Duration::from_millis(100),
        leader_rebalance_interval,
    };
    let (handle, _task) = SessionController::spawn(options, Arc::new(quorum.clone()), quorum.published.subscribe());
    handle
}

fn registration(broker_id: i32) -> BrokerRegistrationRequest {
    BrokerRegistrationRequest { broker_id, incarnation_id: Uuid::from_u128(broker_id as u128), endpoints: vec![], rack: None, learner_address: None }
}

fn beat(broker_id: i32, broker_epoch: u64) -> BrokerHeartbeatRequest {
    BrokerHeartbeatRequest { broker_id, broker_epoch, metadata_offset: u64::MAX, want_shutdown: false }
}

/// Topic `t` with one partition on `replicas`, led by the first.
/// Brokers 1 and 2 registered and unfenced; their broker epochs.
async fn two_live_brokers(controller: &SessionControllerHandle) -> (u64, u64) {
    let e1 = controller.register(registration(1)).await.unwrap().broker_epoch;
    let e2 = controller.register(registration(2)).await.unwrap().broker_epoch;
    controller.heartbeat(beat(1, e1)).await.unwrap();
    controller.heartbeat(beat(2, e2)).await.unwrap();
    (e1, e2)
}

fn create_topic(quorum: &FakeQuorum, replicas: Vec<i32>) -> Uuid {
    let topic_id = Uuid::from_u128(77);
    let leader = replicas.first().copied();
    let response = quorum.apply(MetadataBatch {
        records: vec![
            MetadataRecord::Topic { name: "t".into(), topic_id },
            MetadataRecord::Partition { topic_id, partition: 0, isr: replicas.clone(), replicas, leader },
        ],
    });
    assert!(matches!(response, MetadataResponse::Applied { .. }), "{response:?}");
    topic_id
}

async fn advance(duration: Duration) {
    tokio::time::advance(duration).await;
    // Let the task run its tick and the proposals it makes.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn register_then_caught_up_heartbeat_unfences_once() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let epoch = controller.register(registration(2)).await.unwrap().broker_epoch;
    assert_eq!(quorum.written().len(), 1, "one RegisterBroker");
    assert!(quorum.image().brokers[&2].fenced, "a registered broker starts fenced");

    let behind = BrokerHeartbeatRequest { broker_id: 2, broker_epoch: epoch, metadata_offset: epoch - 1, want_shutdown: false };
    assert_eq!(controller.heartbeat(behind).await.unwrap(), BrokerHeartbeatReply { fenced: true, should_shut_down: false }, "not caught up: stays fenced");
    assert!(quorum.written().is_empty());

    assert_eq!(controller.heartbeat(beat(2, epoch)).await.unwrap(), BrokerHeartbeatReply { fenced: false, should_shut_down: false });
    assert_eq!(quorum.written(), vec![MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 2, broker_epoch: epoch })]);
    assert_eq!(controller.heartbeat(beat(2, epoch)).await.unwrap(), BrokerHeartbeatReply { fenced: false, should_shut_down: false });
    assert!(quorum.written().is_empty(), "UnfenceBroker is written once");

    let stale = controller.heartbeat(beat(2, epoch + 5)).await.unwrap_err();
    assert!(matches!(stale, ControllerError::RegistrationRequired { broker_id: 2, .. }), "{stale:?}");
    let unknown = controller.heartbeat(beat(9, 1)).await.unwrap_err();
    assert!(matches!(unknown, ControllerError::RegistrationRequired { broker_id: 9, .. }), "{unknown:?}");
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_fences_the_broker_and_moves_its_leaderships_in_one_batch() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let (e1, e2) = two_live_brokers(&controller).await;
    let topic_id = create_topic(&quorum, vec![1, 2]);
    quorum.written();

    // Broker 2 keeps heartbeating, broker 1 goes silent.
    for _ in 0..4 {
        advance(Duration::from_millis(2_000)).await;
        controller.heartbeat(beat(2, e2)).await.unwrap();
        assert!(quorum.written().is_empty(), "nobody is fenced within the session timeout");
    }
    advance(Duration::from_millis(1_100)).await;
    let written = quorum.written();
    assert_eq!(
        written,
        vec![MetadataBatch {
            records: vec![
                MetadataRecord::FenceBroker { broker_id: 1, broker_epoch: e1 },
                MetadataRecord::PartitionChange { topic_id, partition: 0, leader: Some(LeaderChange::Elect(2)), isr: Some(vec![2]), replicas: None },
            ]
        }]
    );
    let image = quorum.image();
    assert!(image.brokers[&1].fenced);
    assert_eq!(image.topics[&topic_id].partitions[0].leader, Some(2));

    let refused = controller.heartbeat(beat(1, e1)).await.unwrap_err();
    assert!(matches!(refused, ControllerError::RegistrationRequired { broker_id: 1, .. }), "an expired registration must register again: {refused:?}");
    let again = controller.register(registration(1)).await.unwrap().broker_epoch;
    assert!(again > e1);
    assert_eq!(controller.heartbeat(beat(1, again)).await.unwrap(), BrokerHeartbeatReply { fenced: false, should_shut_down: false });
    advance(Duration::from_millis(5_000)).await;
    assert_eq!(quorum.written().len(), 2, "RegisterBroker and UnfenceBroker, no fencing of broker 2");
}

#[tokio::test(start_paused = true)]
async fn a_new_active_controller_gives_every_broker_a_fresh_session() {
    // Brokers registered and unfenced under another controller.
    let quorum = FakeQuorum::new(Some(2));
    for id in [1, 2, 3] {
        let MetadataResponse::Applied { broker_epochs, .. } =
            quorum.apply(MetadataBatch::one(MetadataRecord::RegisterBroker { broker_id: id, incarnation_id: Uuid::nil(), endpoints: vec![], rack: None }))
        else {
            panic!("registration rejected")
        };
        quorum.apply(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: id, broker_epoch: broker_epochs[0].1 }));
    }
    let controller = start(&quorum);
    let refused = controller.heartbeat(beat(1, 1)).await.unwrap_err();
    assert_eq!(refused, ControllerError::NotController { leader: Some(2) });

    // Long after the brokers' last heartbeats (which went to node 2), node 1 takes over.
    advance(Duration::from_secs(60)).await;
    *quorum.leader.lock().unwrap() = Some(1);
    advance(Duration::from_millis(100)).await;
    advance(super::sessions::ACTIVATION_GRACE - Duration::from_millis(500)).await;
    assert!(quorum.written().is_empty(), "nobody is fenced before the activation grace under the new controller");
    assert!(quorum.image().brokers.values().all(|b| !b.fenced));

    controller.heartbeat(beat(3, quorum.image().brokers[&3].broker_epoch)).await.unwrap();
    advance(Duration::from_millis(1_000)).await;
    let fenced: Vec<i32> = quorum
        .written()
        .iter()
        .flat_map(|b| b.records.iter())
        .filter_map(|r| match r {
            MetadataRecord::FenceBroker { broker_id, .. } => Some(*broker_id),
            _ => None,
        })
        .collect();
    assert_eq!(fenced, vec![1, 2], "the silent brokers are fenced, the heartbeating one is not");
}

#[tokio::test(start_paused = true)]
async fn two_brokers_expiring_together_do_not_undo_each_others_moves() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let mut epochs = Vec::new();
    for id in [1, 2, 3] {
        let epoch = controller.register(registration(id)).await.unwrap().broker_epoch;
        controller.heartbeat(beat(id, epoch)).await.unwrap();
        epochs.push(epoch);
    }
    let topic_id = create_topic(&quorum, vec![1, 2, 3]);
    quorum.written();
    advance(Duration::from_millis(5_000)).await;
    controller.heartbeat(beat(3, epochs[2])).await.unwrap();
    advance(Duration::from_millis(4_500)).await;
    let partition = quorum.image().topics[&topic_id].partitions[0].clone();
    assert_eq!(partition.leader, Some(3));
    assert_eq!(partition.isr, vec![3], "both silent brokers left the ISR");
    assert!(quorum.written().len() >= 2);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_broker_waits_until_its_old_registration_is_fenced() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let (e1, _e2) = two_live_brokers(&controller).await;
    let topic_id = create_topic(&quorum, vec![1, 2]);
    quorum.written();

    // Broker 1 restarts (a new incarnation) long before its session expires.
    let restarted = BrokerRegistrationRequest { incarnation_id: Uuid::from_u128(101), ..registration(1) };
    advance(Duration::from_millis(1_000)).await;
    let refused = controller.register(restarted.clone()).await.unwrap_err();
    assert_eq!(refused, ControllerError::DuplicateRegistration { broker_id: 1 });
    assert!(quorum.written().is_empty());
    assert_eq!(quorum.image().topics[&topic_id].partitions[0].leader, Some(1), "the old incarnation still leads");

    // The same incarnation retrying its registration is not a duplicate.
    assert!(controller.register(registration(2)).await.is_ok());
    quorum.written();

    controller.heartbeat(beat(2, quorum.image().brokers[&2].broker_epoch)).await.unwrap();
    assert_eq!(quorum.written().len(), 1, "the new registration of broker 2 is unfenced");
    advance(Duration::from_millis(8_200)).await;
    let fenced = quorum.written();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0].records[0], MetadataRecord::FenceBroker { broker_id: 1, broker_epoch: e1 });
    assert_eq!(quorum.image().topics[&topic_id].partitions[0].leader, Some(2), "the leadership moved before the new incarnation registers");
    let again = controller.register(restarted).await.unwrap().broker_epoch;
    assert!(again > e1);
}

#[tokio::test(start_paused = true)]
async fn a_returning_broker_leads_the_partitions_that_went_offline_with_it() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let (e1, _e2) = two_live_brokers(&controller).await;
    let topic_id = create_topic(&quorum, vec![2]);
    // Broker 2, the only replica, goes silent: fenced, the partition goes
    // offline, and broker 2 stays its ISR (the last member is kept).
    advance(Duration::from_millis(5_000)).await;
    controller.heartbeat(beat(1, e1)).await.unwrap();
    advance(Duration::from_millis(4_500)).await;
    let offline = quorum.image().topics[&topic_id].partitions[0].clone();
    assert_eq!((offline.leader, offline.isr.clone()), (None, vec![2]));

    let again = controller.register(BrokerRegistrationRequest { incarnation_id: Uuid::from_u128(202), ..registration(2) }).await.unwrap().broker_epoch;
    quorum.written();
    assert!(!controller.heartbeat(beat(2, again)).await.unwrap().fenced);
    let written = quorum.written();
    assert_eq!(written[0].records[0], MetadataRecord::UnfenceBroker { broker_id: 2, broker_epoch: again }, "{written:?}");
    let back = quorum.image().topics[&topic_id].partitions[0].clone();
    assert_eq!(back.leader, Some(2), "unfencing elects the returning ISR member");
    assert!(back.leader_epoch > offline.leader_epoch);
}

#[tokio::test(start_paused = true)]
async fn a_controlled_shutdown_moves_leaderships_at_once_and_ends_the_session() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let (e1, _e2) = two_live_brokers(&controller).await;
    let topic_id = create_topic(&quorum, vec![1, 2]);
    quorum.written();

    let reply = controller.heartbeat(BrokerHeartbeatRequest { want_shutdown: true, ..beat(1, e1) }).await.unwrap();
    assert!(reply.should_shut_down && reply.fenced);
    let moved = quorum.image().topics[&topic_id].partitions[0].clone();
    assert_eq!((moved.leader, moved.isr.clone()), (Some(2), vec![2]), "leadership moved and broker 1 left the ISR, without a session timeout");
    assert!(quorum.image().brokers[&1].fenced);
    // The session is over: a heartbeat of that registration must register again.
    assert!(matches!(controller.heartbeat(beat(1, e1)).await, Err(ControllerError::RegistrationRequired { .. })));
}

#[tokio::test(start_paused = true)]
async fn the_active_controller_gives_leadership_back_to_preferred_replicas_on_its_interval() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start_with(&quorum, Some(Duration::from_secs(30)));
    let (e1, e2) = two_live_brokers(&controller).await;
    let topic_id = create_topic(&quorum, vec![1, 2]);
    // Broker 1 shuts down (controlled): broker 2 leads; broker 1 returns and catches up.
    controller.heartbeat(BrokerHeartbeatRequest { want_shutdown: true, ..beat(1, e1) }).await.unwrap();
    let again = controller.register(BrokerRegistrationRequest { incarnation_id: Uuid::from_u128(101), ..registration(1) }).await.unwrap().broker_epoch;
    controller.heartbeat(beat(1, again)).await.unwrap();
    let back = quorum.image().topics[&topic_id].partitions[0].clone();
    quorum.apply(MetadataBatch::one(MetadataRecord::PartitionChange { topic_id, partition: 0, leader: None, isr: Some(vec![2, 1]), replicas: None }));
    assert_eq!(back.leader, Some(2));
    quorum.written();

    for _ in 0..25 {
        controller.heartbeat(beat(1, again)).await.unwrap();
        controller.heartbeat(beat(2, e2)).await.unwrap();
        advance(Duration::from_secs(1)).await;
    }
    assert!(quorum.written().is_empty(), "nothing before the interval");
    for _ in 0..6 {
        controller.heartbeat(beat(1, again)).await.unwrap();
        controller.heartbeat(beat(2, e2)).await.unwrap();
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(quorum.image().topics[&topic_id].partitions[0].leader, Some(1), "the preferred replica leads again");
}

#[tokio::test(start_paused = true)]
async fn a_broker_only_node_is_made_a_learner_before_it_registers() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let request = BrokerRegistrationRequest { learner_address: Some("10.0.0.4:9093".into()), ..registration(4) };
    controller.register(request).await.unwrap();
    assert_eq!(*quorum.learners.lock().unwrap(), vec![(4, "10.0.0.4:9093".to_string())]);
    assert!(quorum.image().brokers.contains_key(&4), "and then registered");
    controller.register(registration(2)).await.unwrap();
    assert_eq!(quorum.learners.lock().unwrap().len(), 1, "a voter is not added as a learner");
}

#[tokio::test(start_paused = true)]
async fn an_unregistered_incarnation_stays_out_until_it_restarts() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let (_, e2) = two_live_brokers(&controller).await;
    for batch in quorum.image().unregister_batches(2).unwrap() {
        assert!(matches!(quorum.apply(batch), MetadataResponse::Applied { .. }));
    }
    // Kafka's unregistered broker keeps running and stays out: its heartbeat
    // asks for a registration, which is refused for that incarnation.
    assert!(matches!(controller.heartbeat(beat(2, e2)).await, Err(ControllerError::RegistrationRequired { broker_id: 2, .. })));
    assert_eq!(controller.register(registration(2)).await, Err(ControllerError::Unregistered { broker_id: 2 }));
    assert!(!quorum.image().brokers.contains_key(&2));
    // Its session ends quietly: nothing is left to fence.
    quorum.written();
    advance(TIMEOUT * 2).await;
    assert!(quorum.written().iter().all(|b| !b.records.iter().any(|r| matches!(r, MetadataRecord::FenceBroker { broker_id: 2, .. }))));
    // Restarted (a new incarnation), it registers again.
    let restarted = BrokerRegistrationRequest { incarnation_id: Uuid::from_u128(99), ..registration(2) };
    controller.register(restarted).await.unwrap();
    assert!(quorum.image().brokers.contains_key(&2) && quorum.image().unregistered.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unregistered_broker_only_node_leaves_the_learners_and_rejoins_on_restart() {
    let quorum = FakeQuorum::new(Some(1));
    let controller = start(&quorum);
    let learner = |incarnation: u128| BrokerRegistrationRequest {
        incarnation_id: Uuid::from_u128(incarnation),
        learner_address: Some("10.0.0.4:9093".into()),
        ..registration(4)
    };
    controller.register(learner(4)).await.unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(quorum.learners(), vec![4], "a registered learner stays");
    for batch in quorum.image().unregister_batches(4).unwrap() {
        assert!(matches!(quorum.apply(batch), MetadataResponse::Applied { .. }));
    }
    advance(Duration::from_secs(1)).await;
    assert!(quorum.learners().is_empty(), "the unregistered node is no longer replicated to");
    controller.register(learner(40)).await.unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(quorum.learners(), vec![4], "restarted, it is a learner again");
}
