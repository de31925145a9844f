//! The store on a one-voter quorum: it initializes itself, commits, answers
//! refusals as responses, and restarts leading at once.

use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::metadata::quorum::{MetadataRecord, MetadataResponse};

fn register(broker_id: i32) -> MetadataBatch {
    MetadataBatch::one(MetadataRecord::RegisterBroker { broker_id, incarnation_id: Uuid::from_u128(7), endpoints: vec![], rack: None })
}

#[tokio::test]
async fn a_single_voter_store_initializes_commits_and_restarts_leading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions::single_voter(dir.path().join(METADATA_DIR), 3);
    let store = MetadataStore::start(options.clone(), SingleVoterNetwork).await.expect("start");
    let (answer, index) = store.propose_at(register(3)).await.expect("commit");
    assert!(matches!(answer, MetadataResponse::Applied { .. }), "{answer:?}");
    let index = index.expect("the leader knows the index");
    store.wait_applied(index).await.expect("applied here");
    assert_eq!(store.image().borrow().last_applied.map(|id| id.index), Some(index));
    assert!(store.is_active_controller());
    let refused = store.propose(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 9, broker_epoch: 1 })).await.expect("answered");
    assert!(matches!(refused, MetadataResponse::Rejected { record: 0, .. }), "{refused:?}");
    assert!(store.image().borrow().image.brokers.contains_key(&3));
    store.shutdown().await.expect("shut down");
    drop(store);

    let store = MetadataStore::start(options, SingleVoterNetwork).await.expect("restart");
    assert_eq!(store.wait_for_leader().await.expect("a leader"), 3);
    let answer = store.propose(register(4)).await.expect("commit after restart");
    assert!(matches!(answer, MetadataResponse::Applied { .. }), "{answer:?}");
    let brokers: Vec<i32> = store.image().borrow().image.brokers.keys().copied().collect();
    assert_eq!(brokers, vec![3, 4], "the log was replayed");
    store.shutdown().await.expect("shut down");
}

/// A forwarder that records where it was asked to send.
struct Recorder(std::sync::Mutex<Vec<u64>>);

impl ProposalForwarder for Recorder {
    fn forward(&self, leader: u64, _batch: MetadataBatch) -> BoxFuture<'static, Result<MetadataResponse, Error>> {
        self.0.lock().expect("lock").push(leader);
        Box::pin(async { Ok(MetadataResponse::Empty) })
    }
}

#[tokio::test]
async fn a_voter_that_cannot_win_times_out_or_forwards_with_typed_errors() {
    // Two voters, the other one unreachable: this node never becomes leader
    // and knows no leader, so a proposal cannot be forwarded and times out.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = StoreOptions::single_voter(dir.path().to_path_buf(), 1);
    options.voters.insert(2, BasicNode::default());
    options.proposal_timeout = Duration::from_millis(300);
    options.forwarder = Some(Arc::new(Recorder(std::sync::Mutex::new(Vec::new()))));
    let store = MetadataStore::start(options, SingleVoterNetwork).await.expect("start");
    assert!(!store.is_active_controller());
    let answer = store.propose(register(1)).await;
    assert!(
        matches!(answer, Err(Error::Metadata(MetadataError::ProposalTimeout { .. }) | Error::Metadata(MetadataError::NotController { leader: None }))),
        "{answer:?}"
    );
    store.shutdown().await.expect("shut down");
}
