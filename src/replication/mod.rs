//! Replica fetchers: how a follower copies its leaders' logs, with Kafka's
//! replication protocol (the Fetch API with a replica id, and
//! OffsetForLeaderEpoch before the first fetch of a new epoch).
//!
//! One fetcher task per source broker, one TCP connection to that leader's
//! Kafka listener, and every partition this node follows from it batched into
//! one Fetch request, as Kafka's `ReplicaFetcherThread` does: the number of
//! connections grows with the brokers, not the partitions. The partition
//! actors stay in charge of their logs (`AppendAsFollower`,
//! `TruncateToLeader`); a fetcher only moves bytes and decides when to ask.
//!
//! | module | owns |
//! |---|---|
//! | `mod.rs` | [`ReplicaFetcherPool`]: which fetcher follows which partition ([`ReplicaFetchers`]) |
//! | `fetcher.rs` | one source broker's task: truncation, the fetch loop, backoff |
//! | `connection.rs` | the asynchronous Kafka connection it uses |

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use silt_actors::metadata::quorum::BrokerId;
use silt_actors::replication::{FollowedPartition, LeaderEndpoint, ReplicaFetchers};
use silt_actors::TopicPartition;
use tokio::runtime::Handle;
use tokio::sync::Notify;

pub mod connection;
mod fetcher;

pub use fetcher::FetcherSettings;
use fetcher::{Followed, Shared};

#[cfg(test)]
mod stats_tests {
    use super::*;

    #[test]
    fn stats_count_bytes_and_keep_the_largest_lag_of_followed_partitions() {
        let stats = FetcherStats::default();
        assert_eq!(stats.max_lag(), 0, "nothing followed");
        let (a, b) = (TopicPartition { topic: "t".into(), partition: 0 }, TopicPartition { topic: "t".into(), partition: 1 });
        stats.fetched(&a, 100, 50, 20);
        stats.fetched(&b, 40, 10, 10);
        assert_eq!((stats.bytes.load(Ordering::Relaxed), stats.max_lag()), (140, 30));
        stats.fetched(&a, 0, 50, 45);
        assert_eq!(stats.max_lag(), 5, "the newest answer replaces a partition's lag");
        stats.fetched(&b, 0, 10, 12);
        assert_eq!(stats.max_lag(), 5, "a replica ahead of the HW it was told has no lag");
        stats.forget(&[a]);
        assert_eq!(stats.max_lag(), 0, "an unfollowed partition no longer counts");
    }
}

/// What can go wrong between a follower and its leader. Each is retried with
/// a bounded backoff; none stops the fetcher.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connection to {addr} failed: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("{addr} did not answer in time")]
    Timeout { addr: String },
    #[error("{0}")]
    Codec(String),
    #[error("{0}")]
    Protocol(String),
    #[error("partition {partition}: {source}")]
    Partition { partition: TopicPartition, source: silt_actors::Error },
}

/// What the fetchers report to metrics, read without asking them.
#[derive(Debug, Default)]
pub struct FetcherStats {
    /// Record batch bytes copied from leaders (Kafka's replica `BytesPerSec`).
    pub bytes: AtomicU64,
    /// Per followed partition: the leader's high watermark in its last fetch
    /// answer minus this replica's log end offset after appending it.
    lags: Mutex<BTreeMap<TopicPartition, i64>>,
}

impl FetcherStats {
    fn lags(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, i64>> {
        self.lags.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The largest lag of a followed partition (Kafka's `MaxLag`), 0 when none is followed.
    pub fn max_lag(&self) -> i64 {
        self.lags().values().copied().max().unwrap_or(0)
    }

    /// Records a fetch answer: `bytes` copied, `leader_hw` against the new `log_end_offset`.
    pub(crate) fn fetched(&self, tp: &TopicPartition, bytes: usize, leader_hw: i64, log_end_offset: i64) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.lags().insert(tp.clone(), (leader_hw - log_end_offset).max(0));
    }

    /// Forgets partitions no longer followed.
    pub(crate) fn forget(&self, partitions: &[TopicPartition]) {
        let mut lags = self.lags();
        for tp in partitions {
            lags.remove(tp);
        }
    }
}

/// One running fetcher: its leader, the partitions it copies, and its task.
struct Fetcher {
    endpoint: LeaderEndpoint,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node's replica fetchers ([`ReplicaFetchers`]), one per source broker.
pub struct ReplicaFetcherPool {
    local_broker: BrokerId,
    runtime: Handle,
    settings: FetcherSettings,
    fetchers: Mutex<HashMap<BrokerId, Fetcher>>,
    stats: Arc<FetcherStats>,
}

impl ReplicaFetcherPool {
    /// Fetchers for broker `local_broker`, spawning their tasks on `runtime`.
    pub fn new(local_broker: BrokerId, runtime: Handle, settings: FetcherSettings) -> Self {
        ReplicaFetcherPool { local_broker, runtime, settings, fetchers: Mutex::new(HashMap::new()), stats: Arc::default() }
    }

    /// Bytes copied and lag, for metrics ([`crate::metrics::Metrics::watch_fetchers`]).
    pub fn stats(&self) -> Arc<FetcherStats> {
        Arc::clone(&self.stats)
    }

    /// The source brokers with a running fetcher, and how many partitions each copies.
    pub fn fetchers(&self) -> BTreeMap<BrokerId, usize> {
        let fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        fetchers.iter().map(|(&id, f)| (id, f.shared.len())).collect()
    }

    fn start(&self, endpoint: LeaderEndpoint) -> Fetcher {
        let shared = Arc::new(Shared { partitions: Mutex::new(BTreeMap::new()), changed: Notify::new(), stats: Arc::clone(&self.stats) });
        let task = self.runtime.spawn(fetcher::run(endpoint.clone(), self.local_broker, Arc::clone(&shared), self.settings.clone()));
        Fetcher { endpoint, shared, task }
    }
}

impl ReplicaFetchers for ReplicaFetcherPool {
    fn follow(&self, leader: LeaderEndpoint, partitions: Vec<FollowedPartition>) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        let tps: Vec<TopicPartition> = partitions.iter().map(|p| p.handle.tp.clone()).collect();
        // A partition has one source: take it from any other fetcher.
        for (id, fetcher) in fetchers.iter() {
            if *id != leader.broker_id {
                fetcher.shared.remove(&tps);
            }
        }
        self.stats.forget(&tps);
        // A leader at a new address gets a new connection (and task).
        if fetchers.get(&leader.broker_id).is_some_and(|f| f.endpoint != leader) {
            if let Some(old) = fetchers.remove(&leader.broker_id) {
                let kept = old.shared.take_all();
                let fresh = self.start(leader.clone());
                fresh.shared.insert(kept);
                fetchers.insert(leader.broker_id, fresh);
            }
        }
        let fetcher = fetchers.entry(leader.broker_id).or_insert_with(|| self.start(leader.clone()));
        fetcher.shared.insert(partitions.into_iter().map(Followed::new).collect());
        fetchers.retain(|_, f| f.shared.len() > 0);
    }

    fn unfollow(&self, partitions: &[TopicPartition]) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        for fetcher in fetchers.values() {
            fetcher.shared.remove(partitions);
        }
        self.stats.forget(partitions);
        // A fetcher with nothing to copy closes its connection (dropping aborts the task).
        fetchers.retain(|_, f| f.shared.len() > 0);
    }
}
