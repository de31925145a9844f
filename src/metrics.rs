//! Prometheus metrics of the broker, in one registry served at `/metrics`.
//!
//! Names start with `silt_`, use base units and end counters in `_total`.
//! Labels stay bounded: API names and versions, Kafka error names and topic
//! names (which an operator creates), never client ids or offsets. Series per
//! partition exist only when `metrics.per_partition` is on. The catalogue of
//! every metric is `docs/metrics.md`; a test checks the two agree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use silt_actors::group::GroupCoordinator;
use silt_actors::NodeHandle;

use crate::replication::FetcherStats;

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    requests_in_flight: IntGaugeVec,
    pub request_errors: IntCounterVec,
    pub request_duration: HistogramVec,
    pub bytes_in: IntCounterVec,
    pub records_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub records_out: IntCounterVec,
    pub connections: IntGauge,
    pub connections_accepted: IntCounter,
    pub connections_rejected: IntCounter,
    pub protocol_errors: IntCounterVec,
    /// Authentications by mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `SSL`), listener and result.
    pub authentications: IntCounterVec,
    /// TLS handshakes by listener and result.
    pub tls_handshakes: IntCounterVec,
    partitions: IntGauge,
    /// The data directory whose filesystem `silt_storage_*` reports.
    storage_dir: Option<std::path::PathBuf>,
    storage_capacity: IntGauge,
    storage_available: IntGauge,
    topic_partitions: IntGaugeVec,
    /// Per-partition offsets and sizes; `None` unless `metrics.per_partition` is on.
    per_partition: Option<PartitionSeries>,
    log_size: IntGaugeVec,
    log_segments: IntGaugeVec,
    topic_log_end_offset: IntGaugeVec,
    actor_restarts: IntCounterVec,
    restarts_seen: AtomicU64,
    mailbox_depth: IntGaugeVec,
    mailbox_depth_max: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_members: IntGaugeVec,
    groups: IntGaugeVec,
    group_rebalances: IntCounterVec,
    tiering: TieringMetrics,
    cluster: ClusterMetrics,
    cleaner: CleanerMetrics,
}

/// The log cleaner (Kafka's `kafka.log:type=LogCleaner` beans).
struct CleanerMetrics {
    read_bytes: IntCounter,
    written_bytes: IntCounter,
    segments: IntCounter,
    passes: IntCounter,
    failures: IntCounter,
    dirty_bytes: IntGauge,
}

impl CleanerMetrics {
    fn new(registry: &Registry) -> CleanerMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let dirty_bytes = IntGauge::new(
            "silt_cleaner_dirty_bytes",
            "Bytes of compacted logs not yet cleaned, as of the cleaner's last look (its lag; Kafka's max-dirty-percent in bytes).",
        )
        .expect("valid metric");
        registry.register(Box::new(dirty_bytes.clone())).expect("unique metric");
        CleanerMetrics {
            read_bytes: counter("silt_cleaner_read_bytes_total", "Bytes the log cleaner read from segments."),
            written_bytes: counter("silt_cleaner_written_bytes_total", "Bytes the log cleaner wrote to cleaned segments."),
            segments: counter("silt_cleaner_segments_cleaned_total", "Segments the log cleaner rewrote and swapped in."),
            passes: counter("silt_cleaner_passes_total", "Cleaning passes committed."),
            failures: counter("silt_cleaner_failures_total", "Cleaning passes that failed (I/O, a corrupt batch, a panic)."),
            dirty_bytes,
        }
    }

    fn refresh(&self, stats: &silt_actors::cleaner::CleanerStats) {
        mirror(&self.read_bytes, stats.bytes_read.load(Ordering::Relaxed));
        mirror(&self.written_bytes, stats.bytes_written.load(Ordering::Relaxed));
        mirror(&self.segments, stats.segments_cleaned.load(Ordering::Relaxed));
        mirror(&self.passes, stats.passes.load(Ordering::Relaxed));
        mirror(&self.failures, stats.failures.load(Ordering::Relaxed));
        self.dirty_bytes.set(i64::try_from(stats.dirty_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    }
}

/// Leadership, the metadata quorum and replication (Kafka's names where it has one).
struct ClusterMetrics {
    leader_count: IntGauge,
    under_replicated: IntGauge,
    offline: IntGauge,
    active_controller: IntGauge,
    raft_term: IntGauge,
    raft_last_log_index: IntGauge,
    raft_applied_index: IntGauge,
    isr_shrinks: IntCounter,
    isr_expands: IntCounter,
    fetch_bytes: IntCounter,
    fetcher_max_lag: IntGauge,
    /// The replica fetchers' figures, once the broker runs fetchers.
    fetchers: Option<Arc<FetcherStats>>,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> ClusterMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        ClusterMetrics {
            leader_count: gauge("silt_leader_partitions", "Partitions this node leads (Kafka's LeaderCount)."),
            under_replicated: gauge(
                "silt_under_replicated_partitions",
                "Partitions this node leads whose ISR is smaller than their replica set (Kafka's UnderReplicatedPartitions).",
            ),
            offline: gauge(
                "silt_offline_partitions",
                "Partitions without a leader, reported by the active controller, 0 elsewhere (Kafka's OfflinePartitionsCount).",
            ),
            active_controller: gauge("silt_active_controller", "1 on the node leading the metadata quorum, else 0 (Kafka's ActiveControllerCount)."),
            raft_term: gauge("silt_raft_current_term", "The metadata quorum's Raft term as this node knows it."),
            raft_last_log_index: gauge("silt_raft_last_log_index", "Index of the last entry in this node's metadata Raft log."),
            raft_applied_index: gauge("silt_raft_applied_index", "Index of the last metadata entry applied to this node's image."),
            isr_shrinks: counter("silt_isr_shrinks_total", "ISR shrinks applied to partitions this node leads (Kafka's IsrShrinksPerSec)."),
            isr_expands: counter("silt_isr_expands_total", "ISR expands applied to partitions this node leads (Kafka's IsrExpandsPerSec)."),
            fetch_bytes: counter("silt_replica_fetch_bytes_total", "Record batch bytes this node's replica fetchers copied from leaders."),
            fetcher_max_lag: gauge(
                "silt_replica_fetcher_max_lag",
                "Largest lag in records of a partition this node follows: leader HW minus own LEO at the last fetch (Kafka's MaxLag).",
            ),
            fetchers: None,
        }
    }

    fn refresh(&self, node: &NodeHandle) {
        let counts = node.partition_counts();
        let quorum = node.quorum_status();
        let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.leader_count.set(as_gauge(counts.leaders));
        self.under_replicated.set(as_gauge(counts.under_replicated));
        self.offline.set(if quorum.active_controller { as_gauge(counts.offline) } else { 0 });
        self.active_controller.set(i64::from(quorum.active_controller));
        self.raft_term.set(as_gauge(quorum.current_term));
        self.raft_last_log_index.set(as_gauge(quorum.last_log_index));
        self.raft_applied_index.set(as_gauge(quorum.applied_index));
        mirror(&self.isr_shrinks, node.isr_changes.shrinks.load(Ordering::Relaxed));
        mirror(&self.isr_expands, node.isr_changes.expands.load(Ordering::Relaxed));
        self.refresh_fetchers();
    }

    fn refresh_fetchers(&self) {
        if let Some(stats) = &self.fetchers {
            mirror(&self.fetch_bytes, stats.bytes.load(Ordering::Relaxed));
            self.fetcher_max_lag.set(stats.max_lag());
        }
    }
}

/// Raises `counter` to `total`, a count kept elsewhere that only grows.
fn mirror(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// The archive's metrics (see `silt_tiering::archive`).
struct TieringMetrics {
    uploaded_bytes: IntCounterVec,
    uploaded_segment_bytes: IntCounterVec,
    uploaded_segments: IntCounterVec,
    upload_failures: IntCounterVec,
    upload_duration: prometheus::Histogram,
    remote_fetch_bytes: IntCounterVec,
    remote_fetch_failures: IntCounterVec,
    lag_bytes: IntGaugeVec,
    lag_segments: IntGaugeVec,
    archived_size: IntGaugeVec,
    archived_segments: IntGaugeVec,
}

impl TieringMetrics {
    fn new(registry: &Registry) -> TieringMetrics {
        let upload_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new("silt_tiering_upload_duration_seconds", "Time to encode a sealed segment as Parquet, upload it and update the manifest.")
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(upload_duration.clone())).expect("unique metric");
        TieringMetrics {
            uploaded_bytes: counter(registry, "silt_tiering_uploaded_bytes_total", "Parquet bytes written to the archive, by topic.", &["topic"]),
            uploaded_segment_bytes: counter(
                registry,
                "silt_tiering_uploaded_segment_bytes_total",
                "Bytes of local log segments archived, by topic.",
                &["topic"],
            ),
            uploaded_segments: counter(registry, "silt_tiering_uploaded_segments_total", "Segments archived, by topic.", &["topic"]),
            upload_failures: counter(
                registry,
                "silt_tiering_upload_failures_total",
                "Segment uploads that failed (and will be retried), by topic.",
                &["topic"],
            ),
            upload_duration,
            remote_fetch_bytes: counter(
                registry,
                "silt_tiering_remote_fetch_bytes_total",
                "Record batch bytes served from the archive to consumers, by topic.",
                &["topic"],
            ),
            remote_fetch_failures: counter(registry, "silt_tiering_remote_fetch_failures_total", "Reads from the archive that failed, by topic.", &["topic"]),
            lag_bytes: gauge(registry, "silt_tiering_lag_bytes", "Bytes of sealed local segments not yet archived, by topic.", &["topic"]),
            lag_segments: gauge(registry, "silt_tiering_lag_segments", "Sealed local segments not yet archived, by topic.", &["topic"]),
            archived_size: gauge(registry, "silt_log_archived_size_bytes", "Bytes of Parquet files in the archive, by topic.", &["topic"]),
            archived_segments: gauge(registry, "silt_log_archived_segments", "Segments in the archive, by topic.", &["topic"]),
        }
    }

    fn refresh(&self, node: &NodeHandle) {
        let mut per_topic: HashMap<std::sync::Arc<str>, [u64; 4]> = HashMap::new();
        for (tp, status) in node.archive_statuses() {
            if status.archived_offset.load(Ordering::Relaxed) < 0 {
                continue; // not archived (or its manifest is not loaded yet)
            }
            let entry = per_topic.entry(tp.topic.clone()).or_default();
            entry[0] += status.lag_bytes.load(Ordering::Relaxed);
            entry[1] += status.lag_segments.load(Ordering::Relaxed);
            entry[2] += status.archived_bytes.load(Ordering::Relaxed);
            entry[3] += status.archived_segments.load(Ordering::Relaxed);
        }
        for g in [&self.lag_bytes, &self.lag_segments, &self.archived_size, &self.archived_segments] {
            g.reset();
        }
        for (topic, [lag_bytes, lag_segments, size, segments]) in per_topic {
            self.lag_bytes.with_label_values(&[&topic]).set(lag_bytes as i64);
            self.lag_segments.with_label_values(&[&topic]).set(lag_segments as i64);
            self.archived_size.with_label_values(&[&topic]).set(size as i64);
            self.archived_segments.with_label_values(&[&topic]).set(segments as i64);
        }
    }
}

impl silt_tiering::archive::ArchiveObserver for Metrics {
    fn uploaded(&self, topic: &str, parquet_bytes: u64, segment_bytes: u64, elapsed: std::time::Duration) {
        let t = &self.tiering;
        t.uploaded_bytes.with_label_values(&[topic]).inc_by(parquet_bytes);
        t.uploaded_segment_bytes.with_label_values(&[topic]).inc_by(segment_bytes);
        t.uploaded_segments.with_label_values(&[topic]).inc();
        t.upload_duration.observe(elapsed.as_secs_f64());
    }
    fn upload_failed(&self, topic: &str) {
        self.tiering.upload_failures.with_label_values(&[topic]).inc();
    }
    fn remote_read(&self, topic: &str, bytes: u64) {
        self.tiering.remote_fetch_bytes.with_label_values(&[topic]).inc_by(bytes);
    }
    fn remote_read_failed(&self, topic: &str) {
        self.tiering.remote_fetch_failures.with_label_values(&[topic]).inc();
    }
}

/// Series labelled by topic and partition (opt-in: their number grows with partitions).
struct PartitionSeries {
    log_start_offset: IntGaugeVec,
    high_watermark: IntGaugeVec,
    log_end_offset: IntGaugeVec,
    log_size: IntGaugeVec,
}

/// Decrements `silt_requests_in_flight` when the request is done (or dropped).
pub struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Label values for API versions, so counting a request allocates nothing.
const VERSION_LABELS: [&str; 32] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26",
    "27", "28", "29", "30", "31",
];

/// The label value of API version `v` (versions past the table are clamped to "other").
pub fn version_label(v: i16) -> &'static str {
    usize::try_from(v).ok().and_then(|i| VERSION_LABELS.get(i)).copied().unwrap_or("other")
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    /// The metrics without per-partition series.
    pub fn new() -> Metrics {
        Metrics::with_per_partition(false)
    }

    /// The metrics, with per-partition series if `per_partition` (`metrics.per_partition`).
    pub fn with_per_partition(per_partition: bool) -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::new(std::process::id() as i32, "silt"))).expect("process collector");
        let request_duration = HistogramVec::new(
            HistogramOpts::new("silt_request_duration_seconds", "Time from a request's arrival to its response, by API.")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["api", "version"],
        )
        .expect("valid metric");
        registry.register(Box::new(request_duration.clone())).expect("unique metric");
        let build_info =
            IntGaugeVec::new(Opts::new("silt_build_info", "Always 1; the version label is the broker's version."), &["version"]).expect("valid metric");
        registry.register(Box::new(build_info.clone())).expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let per_partition = per_partition.then(|| PartitionSeries {
            log_start_offset: gauge(
                &registry,
                "silt_partition_log_start_offset",
                "A partition's log start offset (metrics.per_partition).",
                &["topic", "partition"],
            ),
            high_watermark: gauge(&registry, "silt_partition_high_watermark", "A partition's high watermark (metrics.per_partition).", &["topic", "partition"]),
            log_end_offset: gauge(&registry, "silt_partition_log_end_offset", "A partition's log end offset (metrics.per_partition).", &["topic", "partition"]),
            log_size: gauge(
                &registry,
                "silt_partition_log_size_bytes",
                "Bytes of a partition's local log segments (metrics.per_partition).",
                &["topic", "partition"],
            ),
        });
        let single = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let connections = IntGauge::new("silt_connections", "Open Kafka client connections.").expect("valid metric");
        registry.register(Box::new(connections.clone())).expect("unique metric");
        let partitions = IntGauge::new("silt_partitions", "Partitions hosted by this node.").expect("valid metric");
        registry.register(Box::new(partitions.clone())).expect("unique metric");
        let storage_capacity = IntGauge::new("silt_storage_capacity_bytes", "Size of the filesystem holding storage.data_dir.").expect("valid metric");
        registry.register(Box::new(storage_capacity.clone())).expect("unique metric");
        let storage_available =
            IntGauge::new("silt_storage_available_bytes", "Bytes available to the broker on the filesystem holding storage.data_dir.").expect("valid metric");
        registry.register(Box::new(storage_available.clone())).expect("unique metric");
        Metrics {
            requests: counter(&registry, "silt_requests_total", "Kafka requests handled, by API and API version.", &["api", "version"]),
            authentications: counter(
                &registry,
                "silt_authentication_total",
                "Client authentications, by mechanism, listener and result (success, failure).",
                &["mechanism", "listener", "result"],
            ),
            tls_handshakes: counter(
                &registry,
                "silt_tls_handshakes_total",
                "TLS handshakes on SSL and SASL_SSL listeners, by listener and result.",
                &["listener", "result"],
            ),
            requests_in_flight: gauge(&registry, "silt_requests_in_flight", "Kafka requests being handled (decoded, not yet answered), by API.", &["api"]),
            topic_partitions: gauge(&registry, "silt_topic_partitions", "Partitions of a topic hosted by this node.", &["topic"]),
            per_partition,
            request_errors: counter(&registry, "silt_request_errors_total", "Error codes returned to clients, by API and Kafka error.", &["api", "error"]),
            bytes_in: counter(&registry, "silt_topic_bytes_in_total", "Record batch bytes appended, by topic.", &["topic"]),
            records_in: counter(&registry, "silt_topic_records_in_total", "Records appended, by topic.", &["topic"]),
            bytes_out: counter(&registry, "silt_topic_bytes_out_total", "Record batch bytes sent to consumers, by topic.", &["topic"]),
            records_out: counter(&registry, "silt_topic_records_out_total", "Records sent to consumers, by topic.", &["topic"]),
            connections_accepted: single("silt_connections_accepted_total", "Kafka client connections accepted."),
            connections_rejected: single("silt_connections_rejected_total", "Kafka client connections refused at kafka.max_connections."),
            protocol_errors: counter(&registry, "silt_protocol_errors_total", "Connections closed for malformed or refused requests, by reason.", &["reason"]),
            log_size: gauge(&registry, "silt_log_size_bytes", "Bytes of local log segments, by topic.", &["topic"]),
            log_segments: gauge(&registry, "silt_log_segments", "Local log segments, by topic.", &["topic"]),
            topic_log_end_offset: gauge(
                &registry,
                "silt_topic_log_end_offset",
                "Sum of the log end offsets of a topic's partitions (records ever written).",
                &["topic"],
            ),
            actor_restarts: counter(&registry, "silt_actor_restarts_total", "Actors restarted by their supervisor after a failure, by actor kind.", &["actor"]),
            restarts_seen: AtomicU64::new(0),
            mailbox_depth: gauge(
                &registry,
                "silt_actor_mailbox_depth",
                "Messages queued for or being handled by actors, summed over actors of a kind.",
                &["actor"],
            ),
            mailbox_depth_max: gauge(
                &registry,
                "silt_actor_mailbox_depth_max",
                "The deepest single actor mailbox (queued or being handled), by actor kind.",
                &["actor"],
            ),
            group_lag: gauge(
                &registry,
                "silt_consumer_group_lag",
                "High watermark minus the committed offset, by group and partition.",
                &["group", "topic", "partition"],
            ),
            group_members: gauge(&registry, "silt_consumer_group_members", "Members of a consumer group.", &["group"]),
            groups: gauge(&registry, "silt_consumer_groups", "Consumer groups, by state.", &["state"]),
            group_rebalances: counter(
                &registry,
                "silt_consumer_group_rebalances_total",
                "Rebalances completed, by group (since the group was loaded).",
                &["group"],
            ),
            tiering: TieringMetrics::new(&registry),
            cluster: ClusterMetrics::new(&registry),
            cleaner: CleanerMetrics::new(&registry),
            request_duration,
            connections,
            partitions,
            storage_dir: None,
            storage_capacity,
            storage_available,
            registry,
        }
    }

    /// Reports the size and free space of the filesystem holding `dir` (the data directory).
    pub fn watch_storage(mut self, dir: std::path::PathBuf) -> Metrics {
        self.storage_dir = Some(dir);
        self
    }

    /// Reports the replica fetchers' bytes and lag.
    pub fn watch_fetchers(mut self, stats: Arc<FetcherStats>) -> Metrics {
        self.cluster.fetchers = Some(stats);
        self
    }

    /// Counts a request as in flight until the returned guard drops.
    pub fn in_flight(&self, api: &str) -> InFlight {
        let gauge = self.requests_in_flight.with_label_values(&[api]);
        gauge.inc();
        InFlight(gauge)
    }

    /// Counts a handled request and its duration.
    pub fn observe_request(&self, api: &str, version: i16, seconds: f64) {
        let labels = [api, version_label(version)];
        self.requests.with_label_values(&labels).inc();
        self.request_duration.with_label_values(&labels).observe(seconds);
    }

    /// Counts an error code returned for `api` (no-op for "no error").
    pub fn count_error(&self, api: &str, code: i16) {
        if code != 0 {
            let name = kafka_protocol::ResponseError::try_from_code(code).map_or_else(|| code.to_string(), |e| format!("{e:?}"));
            self.request_errors.with_label_values(&[api, &name]).inc();
        }
    }

    /// Refreshes the gauges that mirror node state, then renders everything.
    pub fn render(&self, node: &NodeHandle, groups: &GroupCoordinator) -> String {
        self.refresh(node);
        self.refresh_groups(node, groups);
        self.tiering.refresh(node);
        self.cluster.refresh(node);
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    fn refresh(&self, node: &NodeHandle) {
        let watermarks = node.partition_watermarks();
        self.partitions.set(watermarks.len() as i64);
        let mut per_topic: HashMap<&str, (u64, usize, i64, i64)> = HashMap::new();
        for (tp, marks) in &watermarks {
            let entry = per_topic.entry(&tp.topic).or_default();
            entry.0 += marks.size_bytes;
            entry.1 += marks.segments;
            entry.2 += marks.log_end_offset;
            entry.3 += 1;
        }
        self.log_size.reset();
        self.log_segments.reset();
        self.topic_log_end_offset.reset();
        self.topic_partitions.reset();
        for (topic, (size, segments, leo, partitions)) in per_topic {
            self.log_size.with_label_values(&[topic]).set(size as i64);
            self.log_segments.with_label_values(&[topic]).set(segments as i64);
            self.topic_log_end_offset.with_label_values(&[topic]).set(leo);
            self.topic_partitions.with_label_values(&[topic]).set(partitions);
        }
        if let Some(series) = &self.per_partition {
            series.log_start_offset.reset();
            series.high_watermark.reset();
            series.log_end_offset.reset();
            series.log_size.reset();
            // A log still opening has no offsets yet: leave it out rather than report zeros.
            for (tp, marks) in watermarks.iter().filter(|(_, marks)| marks.open) {
                let labels = [tp.topic.as_ref(), &tp.partition.to_string()];
                series.log_start_offset.with_label_values(&labels).set(marks.log_start_offset);
                series.high_watermark.with_label_values(&labels).set(marks.high_watermark);
                series.log_end_offset.with_label_values(&labels).set(marks.log_end_offset);
                series.log_size.with_label_values(&labels).set(marks.size_bytes as i64);
            }
        }
        if let Some((capacity, available)) = self.storage_dir.as_deref().and_then(filesystem_bytes) {
            self.storage_capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
            self.storage_available.set(i64::try_from(available).unwrap_or(i64::MAX));
        }
        let depths = node.partition_mailbox_depths();
        let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.mailbox_depth.with_label_values(&["partition"]).set(as_gauge(depths.iter().sum()));
        self.mailbox_depth_max.with_label_values(&["partition"]).set(as_gauge(depths.iter().copied().max().unwrap_or(0)));
        self.cleaner.refresh(&node.cleaner_stats);
        let restarts = node.partition_restarts.load(Ordering::Relaxed);
        let seen = self.restarts_seen.swap(restarts, Ordering::Relaxed);
        self.actor_restarts.with_label_values(&["partition"]).inc_by(restarts.saturating_sub(seen));
    }
}

impl Metrics {
    fn refresh_groups(&self, node: &NodeHandle, coordinator: &GroupCoordinator) {
        let high_watermarks: HashMap<_, i64> = node.partition_watermarks().into_iter().map(|(tp, marks)| (tp, marks.high_watermark)).collect();
        let listing = coordinator.list();
        self.group_lag.reset();
        self.group_members.reset();
        self.groups.reset();
        for state in ["Empty", "PreparingRebalance", "CompletingRebalance", "Stable"] {
            self.groups.with_label_values(&[state]).set(0);
        }
        for (group, summary) in &listing {
            if let Some(phase) = summary.phase {
                self.groups.with_label_values(&[phase.as_str()]).inc();
            }
            self.group_members.with_label_values(&[group]).set(summary.members as i64);
            // A counter mirrors the group's count; a group loaded anew starts again from 0.
            let counter = self.group_rebalances.with_label_values(&[group]);
            counter.inc_by(summary.rebalances.saturating_sub(counter.get()));
            for (tp, committed) in &summary.offsets {
                if let Some(hw) = high_watermarks.get(tp) {
                    self.group_lag.with_label_values(&[group.as_str(), tp.topic.as_ref(), tp.partition.to_string().as_str()]).set((hw - committed).max(0));
                }
            }
        }
    }
}

/// The size of the filesystem holding `dir` and the bytes an unprivileged
/// process may still write there, from statvfs(3); `None` if it fails.
#[allow(unsafe_code, reason = "statvfs(2) has no safe wrapper in std")]
pub(crate) fn filesystem_bytes(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `stat` outlives the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((stat.f_blocks as u64 * block, stat.f_bavail as u64 * block))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_labels_are_the_number_or_other() {
        assert_eq!(version_label(0), "0");
        assert_eq!(version_label(13), "13");
        assert_eq!(version_label(31), "31");
        assert_eq!(version_label(32), "other");
        assert_eq!(version_label(-1), "other");
    }

    #[test]
    fn per_partition_series_exist_only_when_switched_on() {
        let names = |m: &Metrics| m.registry.gather().iter().map(|f| f.name().to_owned()).collect::<Vec<_>>();
        let off = Metrics::new();
        assert!(off.per_partition.is_none(), "per-partition series without the switch");
        assert!(!names(&off).iter().any(|n| n.starts_with("silt_partition_")));
        let on = Metrics::with_per_partition(true);
        on.per_partition.as_ref().expect("series").high_watermark.with_label_values(&["t", "0"]).set(5);
        assert!(names(&on).iter().any(|n| n == "silt_partition_high_watermark"));
    }

    #[test]
    fn storage_bytes_come_from_the_data_dir_filesystem() {
        let (capacity, available) = filesystem_bytes(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("statvfs");
        assert!(capacity > 0 && available <= capacity, "{capacity} {available}");
        assert!(filesystem_bytes(std::path::Path::new("/no/such/dir")).is_none());
    }

    #[test]
    fn a_mirrored_counter_follows_its_total_and_never_goes_back() {
        let m = Metrics::new();
        let c = &m.cluster.isr_shrinks;
        mirror(c, 3);
        mirror(c, 5);
        assert_eq!(c.get(), 5);
        mirror(c, 2);
        assert_eq!(c.get(), 5, "a counter never decreases");
    }

    #[test]
    fn fetcher_figures_are_reported_once_watched() {
        let stats = Arc::new(FetcherStats::default());
        let m = Metrics::new().watch_fetchers(Arc::clone(&stats));
        let tp = silt_actors::TopicPartition { topic: "t".into(), partition: 0 };
        stats.fetched(&tp, 1234, 100, 60);
        m.cluster.refresh_fetchers();
        assert_eq!((m.cluster.fetch_bytes.get(), m.cluster.fetcher_max_lag.get()), (1234, 40));
        assert!(Metrics::new().cluster.fetchers.is_none());
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let m = Metrics::new();
        let guard = m.in_flight("Produce");
        assert_eq!(m.requests_in_flight.with_label_values(&["Produce"]).get(), 1);
        drop(guard);
        assert_eq!(m.requests_in_flight.with_label_values(&["Produce"]).get(), 0);
    }
}
