//! Tiering in a cluster: only the leader archives. A follower with sealed
//! segments and an archive uploads nothing; promoted, it uploads at its new
//! leader epoch, which the manifest records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use silt_tiering::archive::format::EncodeOptions;
use silt_tiering::archive::{Archive, ArchiveObserver, ArchiveSettings, StoreSettings};
use silt_tiering::LogConfig;
use tokio::sync::watch;

use super::replication_tests::{follower_role, leader_role, replicate, FakeController, FOLLOWER, LEADER};
use super::*;
use crate::replication::{AlterPartition, SetRole};

/// Counts the uploads of one node's archive.
#[derive(Default)]
struct Uploads(AtomicU64);

impl ArchiveObserver for Uploads {
    fn uploaded(&self, _: &str, _: u64, _: u64, _: Duration) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn upload_failed(&self, _: &str) {}
    fn remote_read(&self, _: &str, _: u64) {}
    fn remote_read_failed(&self, _: &str) {}
}

/// A valid magic v2 batch of `n` (< 64) records, each with a null key and a
/// one-byte value, stamped now: the archive decodes every record.
fn records(n: u8) -> bytes::Bytes {
    let mut b = vec![0u8; 61];
    b[16] = 2;
    b[23..27].copy_from_slice(&(i32::from(n) - 1).to_be_bytes());
    let now = crate::now_ms();
    b[27..35].copy_from_slice(&now.to_be_bytes());
    b[35..43].copy_from_slice(&now.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&i32::from(n).to_be_bytes());
    for i in 0..n {
        // length 7 | attributes | timestamp delta 0 | offset delta i | key -1 | value length 1 | value | 0 headers (zigzag varints)
        b.extend_from_slice(&[14, 0, 0, 2 * i, 1, 2, b'x', 0]);
    }
    let len = i32::try_from(b.len() - 12).expect("small batch");
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = silt_tiering::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes::Bytes::from(b)
}

fn start(dir: &std::path::Path, broker: i32, role: PartitionRole, archive: Option<ArchiveOptions>, controller: &Arc<FakeController>) -> PartitionHandle {
    let tp = TopicPartition { topic: "t".into(), partition: 0 };
    let (tx, rx) = watch::channel(Watermarks::default());
    let alter: Arc<dyn AlterPartition> = controller.clone();
    let log = LogConfig { segment_bytes: 1024, archived: archive.is_some(), ..LogConfig::default() };
    let options = PartitionOptions {
        cleaner: None,
        dir: dir.join(format!("broker-{broker}")),
        log,
        min_insync_replicas: 1,
        clean_start: true,
        maintenance_interval: Duration::from_secs(60),
        archive,
        role,
        replication: ReplicationOptions {
            local_broker: broker,
            topic_id: uuid::Uuid::nil(),
            alter_partition: Some(alter),
            replica_lag_time_max: Duration::from_secs(30),
            isr_changes: Arc::default(),
        },
    };
    let status = Arc::new(ArchiveStatus::default());
    let (tp2, status2) = (tp.clone(), status.clone());
    let addr = Supervisor::start(move |_| PartitionActor::new(tp2, options, tx, Arc::new(AtomicU64::new(0)), status2));
    PartitionHandle::new(tp, addr, rx, status)
}

#[actix_rt::test]
async fn a_follower_never_uploads_and_a_promoted_one_archives_at_its_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Arc::new(FakeController::default());
    let uploads = Arc::new(Uploads::default());
    let url = format!("file://{}/", dir.path().join("archive").display());
    let settings = ArchiveSettings {
        store: StoreSettings { url, ..StoreSettings::default() },
        encode: EncodeOptions::default(),
        upload_concurrency: 1,
        cache_bytes: 1 << 20,
    };
    let archive = Archive::open(settings, tokio::runtime::Handle::current(), uploads.clone()).expect("archive");
    let options = ArchiveOptions {
        archive: Arc::clone(&archive),
        topic_id: "id".into(),
        check_interval: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
    };
    let leader = start(dir.path(), LEADER, leader_role(1, &[LEADER, FOLLOWER]), None, &controller);
    let follower = start(dir.path(), FOLLOWER, follower_role(1, LEADER), Some(options), &controller);
    for _ in 0..20 {
        leader.ask(Append { records: records(5), acks: RequiredAcks::Leader }).await.expect("append");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while follower.watermarks().log_end_offset < 100 {
        assert!(Instant::now() < deadline, "the follower never caught up: {:?}", follower.watermarks());
        replicate(&leader, &follower, FOLLOWER, 1).await.expect("fetch");
    }
    assert!(follower.watermarks().sealed_end_offset > 0, "the follower has sealed segments: {:?}", follower.watermarks());

    // Fifty archive checks: a follower that archived would have uploaded by now.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(uploads.0.load(Ordering::Relaxed), 0, "a follower uploaded");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(archive.read_partition("t", 0).await.expect("read").is_none(), "a follower wrote a manifest");

    let promoted = PartitionRole::Leader { leader_epoch: 2, partition_epoch: 2, replicas: vec![LEADER, FOLLOWER], isr: vec![FOLLOWER] };
    follower.ask(SetRole(promoted)).await.expect("role");
    let deadline = Instant::now() + Duration::from_secs(10);
    while uploads.0.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the new leader never uploaded: {:?} {:?}", follower.watermarks(), follower.archive_status);
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let manifest = archive.read_partition("t", 0).await.expect("read").expect("a manifest").manifest();
    assert_eq!(manifest.leader_epoch, 2, "the manifest names the epoch that wrote it");
    assert!(!manifest.segments.is_empty());
}
