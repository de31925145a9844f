//! Three metadata voters in one process, each on its own stores in a temporary
//! folder, talking over real loopback TCP through this module's transport:
//! election, replication, failover with forwarding, restart and catch-up, and
//! a broker's session with whichever voter is the active controller.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft};
use silt_actors::metadata::quorum::{self, AppliedState, MetadataBatch, MetadataRecord, MetadataResponse, MetadataTypeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::broker_session::{self, BrokerSessionOptions, BrokerSessionState};
use super::client::{ClientOptions, Peers};
use super::edge::{BrokerIdentity, ClusterEdge, ClusterForwarder, RunningEdge};
use super::message::{ForwardError, ForwardedCommit};
use super::service::{commit, forward_proposal, ForwardCallError};
use crate::config::{BrokerSection, ClusterConfig, Role};

type C = MetadataTypeConfig;

/// Generous: three voters and the test share two busy cores in a debug build.
const WAIT: Duration = Duration::from_secs(30);

struct Voter {
    id: u64,
    dir: PathBuf,
    address: String,
    raft: Raft<C>,
    image: watch::Receiver<Arc<AppliedState>>,
    edge: RunningEdge,
    forwarder: ClusterForwarder,
}

fn raft_config() -> Arc<Config> {
    let config = Config {
        cluster_name: "silt-test".into(),
        heartbeat_interval: 200,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        // Purge right behind each snapshot, so a voter that was away needs one.
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("a valid raft config"))
}

/// Voter `id` of `members`, controller only: the test plays the brokers.
async fn start_voter(id: u64, dir: &Path, listener: TcpListener, members: &BTreeMap<u64, BasicNode>) -> Voter {
    let address = listener.local_addr().expect("bound").to_string();
    let config = ClusterConfig {
        node_id: id as i32,
        listen: address.clone(),
        advertised: address.clone(),
        voters: members.iter().map(|(id, node)| crate::config::Voter { id: *id as i32, address: node.addr.clone() }).collect(),
        roles: BTreeSet::from([Role::Controller]),
        leader_rebalance_interval: None,
    };
    let edge = ClusterEdge::with_listener(config, listener);
    assert_eq!(&edge.voters(), members);
    let forwarder = edge.forwarder();
    let (log, state_machine) = quorum::open(dir.to_path_buf()).await.expect("open the stores");
    let image = state_machine.subscribe();
    let raft = Raft::new(id, raft_config(), edge.network(), log, state_machine).await.expect("start raft");
    let broker = BrokerSection { session_timeout_ms: 3_000, ..BrokerSection::default() };
    let edge = edge.serve(raft.clone(), image.clone(), &broker, BrokerIdentity { endpoints: vec![], rack: None });
    assert!(edge.broker_session().is_none(), "a controller-only node runs no broker session");
    Voter { id, dir: dir.to_path_buf(), address, raft, image, edge, forwarder }
}

async fn stop_voter(voter: Voter) -> (u64, PathBuf, String) {
    voter.raft.shutdown().await.expect("shut raft down");
    voter.edge.shutdown().await;
    (voter.id, voter.dir, voter.address)
}

/// Waits until every voter in `voters` sees the same leader, and returns it.
async fn agreed_leader(voters: &[&Voter], not: Option<u64>) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leaders: Vec<Option<u64>> = voters.iter().map(|v| v.raft.metrics().borrow().current_leader).collect();
        if let Some(Some(leader)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*leader)) && Some(*leader) != not && voters.iter().any(|v| v.id == *leader) {
                return *leader;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no agreed leader (other than {not:?}) within {WAIT:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn applied_at_least(voter: &Voter, index: u64) -> Arc<AppliedState> {
    let waited = wait_for(voter.image.clone(), |s| s.last_applied.is_some_and(|id| id.index >= index)).await;
    waited.unwrap_or_else(|last| panic!("voter {} did not apply index {index} within {WAIT:?}: {:?}", voter.id, last.last_applied))
}

/// The first value of `watched` that passes `done`, or the last one seen after [`WAIT`].
async fn wait_for<T: Clone>(mut watched: watch::Receiver<T>, done: impl Fn(&T) -> bool) -> Result<T, T> {
    let found = tokio::time::timeout(WAIT, async {
        let found = watched.wait_for(|v| done(v)).await.map(|v| v.clone());
        found.ok()
    })
    .await;
    match found {
        Ok(Some(value)) => Ok(value),
        _ => Err(watched.borrow().clone()),
    }
}

fn register(broker_id: i32) -> MetadataBatch {
    MetadataBatch::one(MetadataRecord::RegisterBroker { broker_id, incarnation_id: Uuid::from_u128(broker_id as u128), endpoints: vec![], rack: None })
}

fn epoch_of(commit: &ForwardedCommit) -> u64 {
    assert!(matches!(&commit.response, MetadataResponse::Applied { broker_epochs, .. } if broker_epochs[0].1 == commit.log_index));
    match &commit.response {
        MetadataResponse::Applied { broker_epochs, .. } => broker_epochs[0].1,
        other => panic!("not applied: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_replicate_fail_over_and_catch_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let members: BTreeMap<u64, BasicNode> = listeners.iter().enumerate().map(|(i, l)| (i as u64 + 1, BasicNode::new(l.local_addr().expect("bound")))).collect();
    let mut voters = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        voters.push(start_voter(i as u64 + 1, dirs[i].path(), listener, &members).await);
    }
    voters[0].raft.initialize(members.clone()).await.expect("initialize the quorum");

    let leader = agreed_leader(&voters.iter().collect::<Vec<_>>(), None).await;
    let leading = voters.iter().find(|v| v.id == leader).expect("the leader is a voter");
    let first = commit(&leading.raft, leader, register(1)).await.expect("commit on the leader");
    let index = epoch_of(&first);
    for voter in &voters {
        let state = applied_at_least(voter, index).await;
        assert!(state.image.brokers.contains_key(&1), "voter {} applied the registration", voter.id);
    }

    // A broker registers and heartbeats to whichever voter leads, through redirects.
    let peers = Arc::new(Peers::new(ClientOptions::default()));
    let watched = voters[1].image.clone();
    let offset: Arc<dyn Fn() -> u64 + Send + Sync> = Arc::new(move || watched.borrow().last_applied.map_or(0, |id| id.index));
    let (stop_broker, broker_shutdown) = watch::channel(false);
    let options = BrokerSessionOptions {
        broker_id: 7,
        incarnation_id: Uuid::from_u128(7),
        endpoints: vec![],
        rack: None,
        heartbeat_interval: Duration::from_millis(300),
        voters: members.iter().map(|(id, node)| (*id, node.addr.clone())).collect(),
        learner_address: None,
    };
    let (_leave, leaving) = watch::channel(false);
    let (broker_state, _broker) = broker_session::spawn(options, peers.clone(), offset, broker_shutdown, leaving);
    let unfenced = wait_for(broker_state.clone(), |s| matches!(s, BrokerSessionState::Registered { fenced: false, .. })).await;
    assert!(unfenced.is_ok(), "broker 7 was not registered and unfenced within {WAIT:?}: {unfenced:?}");

    // Kill the leader: the other two elect one of themselves.
    let position = voters.iter().position(|v| v.id == leader).expect("leader");
    let stopped = stop_voter(voters.remove(position)).await;
    let killed_at = tokio::time::Instant::now();
    let new_leader = agreed_leader(&voters.iter().collect::<Vec<_>>(), Some(leader)).await;
    eprintln!("a new leader ({new_leader}) was agreed {:?} after the leader stopped", killed_at.elapsed());
    assert_ne!(new_leader, leader);
    let leading = voters.iter().find(|v| v.id == new_leader).expect("the new leader is a survivor");
    let second = commit(&leading.raft, new_leader, register(2)).await.expect("commit on the new leader");

    // A follower's proposal reaches the leader as ForwardProposal.
    let follower = voters.iter().find(|v| v.id != new_leader).expect("a surviving follower");
    let refused = commit(&follower.raft, follower.id, register(3)).await.expect_err("a follower does not commit");
    assert!(matches!(refused, ForwardError::NotLeader { leader: Some(l), .. } if l == new_leader), "{refused:?}");
    let forwarded = follower.forwarder.forward_to(new_leader, register(3)).await.expect("forwarded to the leader");
    let applied = follower.image.borrow().last_applied.map_or(0, |id| id.index);
    assert!(applied >= forwarded.log_index, "the forwarder answers once its own image has applied the commit: {applied} < {}", forwarded.log_index);
    let not_leading = forward_proposal(&peers.client(&follower.address), register(4), None).await.expect_err("a follower does not commit");
    assert!(matches!(&not_leading, ForwardCallError::Refused(ForwardError::NotLeader { leader: Some(l), .. }) if *l == new_leader), "{not_leading:?}");
    let third = epoch_of(&forwarded);
    assert!(third > epoch_of(&second));
    for voter in &voters {
        applied_at_least(voter, third).await;
    }

    // The leader snapshots and purges its log: the stopped voter will need the snapshot.
    leading.raft.trigger().snapshot().await.expect("ask for a snapshot");
    let snapshotted = leading.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some_and(|s| s.index >= third), "a snapshot").await.expect("a snapshot");
    let snapshot = snapshotted.snapshot.expect("a snapshot");
    leading.raft.trigger().purge_log(snapshot.index).await.expect("ask for a purge");
    leading.raft.wait(Some(WAIT)).metrics(|m| m.purged.is_some_and(|p| p.index >= snapshot.index), "purged").await.expect("purged");

    // The broker's session survives the controller change.
    let controller =
        wait_for(broker_state, |s| matches!(s, BrokerSessionState::Registered { controller, fenced: false, .. } if *controller == new_leader)).await;
    assert!(controller.is_ok(), "broker 7 does not heartbeat to the new controller: {controller:?}");

    // The stopped voter restarts from its folder and catches up.
    let (id, dir, address) = stopped;
    let listener = TcpListener::bind(&address).await.expect("rebind the stopped voter's address");
    let restarted = start_voter(id, &dir, listener, &members).await;
    let caught_up = applied_at_least(&restarted, third).await;
    let installed = restarted.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some_and(|s| s.index >= snapshot.index), "a snapshot installed").await;
    assert!(installed.is_ok(), "the restarted voter caught up through InstallSnapshot: {installed:?}");
    assert!([1, 2, 3, 7].iter().all(|b| caught_up.image.brokers.contains_key(b)), "brokers: {:?}", caught_up.image.brokers.keys());
    let survivor = applied_at_least(&voters[0], third).await;
    assert_eq!(
        caught_up.image.brokers.keys().collect::<Vec<_>>(),
        survivor.image.brokers.keys().collect::<Vec<_>>(),
        "the restarted voter holds the same brokers"
    );

    stop_broker.send_replace(true);
    voters.push(restarted);
    for voter in voters {
        stop_voter(voter).await;
    }
}
