//! A one-voter quorum in process: openraft over Silt's stores, with a network
//! that is never called (a single voter elects itself and commits alone).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft};
use uuid::Uuid;

use super::*;
use crate::metadata::store::SingleVoterNetwork as NoNetwork;

const WAIT: Duration = Duration::from_secs(10);

async fn start(dir: &std::path::Path) -> (Raft<MetadataTypeConfig>, tokio::sync::watch::Receiver<Arc<AppliedState>>) {
    let (log, sm) = open(dir.to_path_buf()).await.expect("open the stores");
    let image = sm.subscribe();
    let config = Config { cluster_name: "silt-metadata".into(), ..Default::default() };
    let config = Arc::new(config.validate().expect("a valid config"));
    let raft = Raft::new(1, config, NoNetwork, log, sm).await.expect("start raft");
    (raft, image)
}

#[tokio::test]
async fn a_single_voter_commits_proposals_into_the_image_and_recovers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (raft, mut image) = start(dir.path()).await;
    raft.initialize(BTreeMap::from([(1u64, BasicNode::default())])).await.expect("initialize");
    raft.wait(Some(WAIT)).current_leader(1, "the single voter leads").await.expect("a leader");

    let registered = raft
        .client_write(MetadataBatch::one(MetadataRecord::RegisterBroker { broker_id: 1, incarnation_id: Uuid::from_u128(1), endpoints: vec![], rack: None }))
        .await
        .expect("commit the registration");
    let MetadataResponse::Applied { broker_epochs, .. } = registered.data else { panic!("rejected: {:?}", registered.data) };
    let epoch = broker_epochs[0].1;
    assert_eq!(epoch, registered.log_id.index, "the broker epoch is the record's log index");
    raft.client_write(MetadataBatch::one(MetadataRecord::UnfenceBroker { broker_id: 1, broker_epoch: epoch })).await.expect("unfence");
    let topic = MetadataBatch {
        records: vec![
            MetadataRecord::Topic { name: "orders".into(), topic_id: Uuid::from_u128(9) },
            MetadataRecord::Partition { topic_id: Uuid::from_u128(9), partition: 0, replicas: vec![1], isr: vec![1], leader: Some(1) },
        ],
    };
    let created = raft.client_write(topic).await.expect("create the topic");
    assert!(matches!(created.data, MetadataResponse::Applied { .. }), "{:?}", created.data);

    let state = image.wait_for(|s| s.last_applied == Some(created.log_id)).await.expect("the image is published").clone();
    assert_eq!(state.image.topic("orders").map(|t| t.partitions[0].leader), Some(Some(1)));
    raft.trigger().snapshot().await.expect("ask for a snapshot");
    raft.wait(Some(WAIT)).snapshot(created.log_id, "the snapshot covers the topic").await.expect("a snapshot");
    let written = raft
        .client_write(MetadataBatch::one(MetadataRecord::Config {
            resource: ConfigResource::Topic("orders".into()),
            name: "retention.ms".into(),
            value: Some("60000".into()),
        }))
        .await
        .expect("set a config after the snapshot");
    let before = image.wait_for(|s| s.last_applied == Some(written.log_id)).await.expect("published").image.clone();
    raft.shutdown().await.expect("shut down");
    drop(raft);

    // Restart on the same folder: the snapshot plus the log after it rebuild
    // the same image once the voter has re-elected itself and committed.
    let (raft, mut image) = start(dir.path()).await;
    raft.wait(Some(WAIT)).current_leader(1, "the voter leads again").await.expect("a leader");
    let after = image.wait_for(|s| s.last_applied.is_some_and(|id| id.index >= written.log_id.index)).await.expect("replayed").image.clone();
    assert_eq!(after, before);
    raft.shutdown().await.expect("shut down");
}
