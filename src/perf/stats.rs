//! Measurements of a perf run: latency histograms, throughput counters and
//! the reports printed periodically (stderr) and at the end (stdout).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records, in microseconds (60 s); larger values are clamped.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Significant figures kept by the latency histograms.
const LATENCY_SIGFIGS: u8 = 3;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// A latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIGS).expect("constant histogram bounds are valid")
}

/// Records one latency, clamped to the histogram's range.
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US);
    histogram.record(us).expect("value clamped into the histogram's range");
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Option<LatencySummary> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        })
    }

    fn describe(&self) -> String {
        format!(
            "latency ms: mean {:.2}, p50 {:.2}, p95 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
            self.mean_ms, self.p50_ms, self.p95_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// Counters and histograms shared by the threads of one run (clients'
/// callbacks record into them; the reporter reads them).
pub struct Meter {
    started: Instant,
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// Every latency of the run.
    total: Mutex<Histogram<u64>>,
    /// Latencies since the last periodic report.
    interval: Mutex<Histogram<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A histogram stays usable if a recording thread panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Meter {
    pub fn new() -> Arc<Meter> {
        Arc::new(Meter {
            started: Instant::now(),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            total: Mutex::new(latency_histogram()),
            interval: Mutex::new(latency_histogram()),
        })
    }

    /// Counts records and bytes done.
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Merges a thread's local histogram of latencies.
    pub fn add_latencies(&self, local: &Histogram<u64>) {
        lock(&self.total).add(local).expect("histograms share bounds");
        lock(&self.interval).add(local).expect("histograms share bounds");
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    fn snapshot(&self, mode: &'static str, elapsed: Duration, records: u64, bytes: u64, latency: &Histogram<u64>) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            mode,
            records,
            bytes,
            errors: self.errors.load(Ordering::Relaxed),
            elapsed_s: secs,
            records_per_s: records as f64 / secs,
            mib_per_s: bytes as f64 / BYTES_PER_MIB / secs,
            latency: LatencySummary::of(latency),
        }
    }

    /// The report of the whole run, measured up to `end`.
    pub fn report(&self, mode: &'static str, end: Instant) -> Report {
        let total = lock(&self.total).clone();
        self.snapshot(mode, end - self.started, self.records(), self.bytes.load(Ordering::Relaxed), &total)
    }
}

/// What a run (or one interval of it) achieved.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mib_per_s: f64,
    /// Absent when nothing was timed (acks=0, or a consume run).
    pub latency: Option<LatencySummary>,
}

impl Report {
    /// One line for people, in the spirit of Kafka's perf tools.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}: {} records, {} bytes in {:.2} s: {:.1} records/s, {:.2} MiB/s",
            self.mode, self.records, self.bytes, self.elapsed_s, self.records_per_s, self.mib_per_s
        );
        if self.errors > 0 {
            line.push_str(&format!(", {} errors", self.errors));
        }
        if let Some(latency) = &self.latency {
            line.push_str("; ");
            line.push_str(&latency.describe());
        }
        line
    }

    /// Prints the final report on stdout, as JSON or as a line.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("a report serialises"));
        } else {
            println!("{}", self.describe());
        }
    }
}

/// Waits for a run's worker threads, stops its periodic reports and returns
/// the report of the whole run, measured up to the last worker's end.
pub fn finish(meter: &Meter, reporter: Reporter, mode: &'static str, workers: Vec<std::thread::JoinHandle<anyhow::Result<()>>>) -> anyhow::Result<Report> {
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("a {mode} thread panicked"))??;
    }
    let end = Instant::now();
    drop(reporter);
    Ok(meter.report(mode, end))
}

/// Prints a report of the last interval to stderr every `every` until dropped.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(meter: Arc<Meter>, mode: &'static str, every: Duration, json: bool) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Check the stop flag often so that the run's end is not delayed by a long interval.
        let tick = Duration::from_millis(50).min(every);
        let thread = std::thread::Builder::new()
            .name("perf-reporter".into())
            .spawn(move || {
                let mut last = (Instant::now(), 0u64, 0u64);
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    if last.0.elapsed() < every {
                        continue;
                    }
                    let now = Instant::now();
                    let records = meter.records();
                    let bytes = meter.bytes.load(Ordering::Relaxed);
                    let interval = std::mem::replace(&mut *lock(&meter.interval), latency_histogram());
                    let report = meter.snapshot(mode, now - last.0, records - last.1, bytes - last.2, &interval);
                    if json {
                        eprintln!("{}", serde_json::to_string(&report).expect("a report serialises"));
                    } else {
                        eprintln!("interval {}", report.describe());
                    }
                    last = (now, records, bytes);
                }
            })
            .expect("spawning the reporter thread");
        Reporter { stop, thread: Some(thread) }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_report_percentiles_in_milliseconds() {
        let mut h = latency_histogram();
        for ms in 1..=100u64 {
            record_latency(&mut h, Duration::from_millis(ms));
        }
        record_latency(&mut h, Duration::from_secs(3600)); // clamped, not an error
        let s = LatencySummary::of(&h).unwrap();
        assert_eq!(s.count, 101);
        assert!((s.p50_ms - 51.0).abs() < 0.5, "{s:?}");
        assert!((s.max_ms - 60_000.0).abs() < 100.0, "{s:?}");
        assert!(LatencySummary::of(&latency_histogram()).is_none());
    }

    #[test]
    fn reports_compute_rates() {
        let meter = Meter::new();
        meter.add(1000, 1024 * 1024);
        let report = meter.snapshot("produce", Duration::from_secs(2), 1000, 1024 * 1024, &latency_histogram());
        assert_eq!(report.records_per_s, 500.0);
        assert_eq!(report.mib_per_s, 0.5);
        assert!(report.describe().contains("500.0 records/s"));
    }
}
