//! Fetch long-polling: a fetch parked on an empty partition is woken by a
//! produce from another connection, well before its max wait; with no data
//! it returns empty once the max wait has passed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::FetchResponse;

/// The long poll's max_wait_ms.
const MAX_WAIT_MS: i32 = 20_000;
/// A woken fetch must return well before its max wait (generous for slow CI).
const WAKE_UP_BOUND: Duration = Duration::from_secs(15);

#[test]
fn a_produce_wakes_a_parked_fetch() {
    let mut broker = Broker::start();
    let topic = unique_topic("long-poll");
    let mut admin = broker.client();
    admin.create_topic_ok(&topic, 1);

    let mut fetcher = broker.client();
    // The fetch may legitimately wait its whole max_wait; allow for that and more.
    fetcher.timeout = Duration::from_millis(MAX_WAIT_MS as u64) + IO_TIMEOUT;
    let fetcher_addr = fetcher.local_addr();
    let started = Instant::now();
    // Sent here, so the request is on the broker's socket before we look at it.
    let pending = fetcher.send_request(&fetch_request_by_name(&topic, 0, 0, MAX_WAIT_MS, 1), 12).expect("send the fetch");
    let parked = std::thread::spawn(move || {
        let response: FetchResponse = fetcher.receive(pending).unwrap_or_else(|e| panic!("the long-poll fetch: {e}"));
        (single_fetch_partition(response), started.elapsed())
    });

    // Wait until the broker has read the fetch off its socket (so the
    // produce below happens while the fetch waits), and the fetch has not
    // returned early on an empty partition.
    wait_until(IO_TIMEOUT, "the broker to read the fetch request from its socket", || {
        assert!(!parked.is_finished(), "the fetch returned before any record was produced");
        broker_receive_queue(broker.kafka, fetcher_addr) == Some(0)
    });
    assert!(!parked.is_finished(), "the fetch returned before any record was produced");

    let mut producer = broker.client();
    let produced = producer.produce(&topic, 0, plain_batch(&[b"wake up"]));
    assert_eq!(produced.error_code, 0, "produce: error {}", code_name(produced.error_code));
    let produced_at = started.elapsed();

    let (data, elapsed) = parked.join().expect("the fetch thread panicked");
    assert_eq!(data.error_code, 0, "long-poll fetch: error {}", code_name(data.error_code));
    let records = decode_records(data.records.as_ref());
    assert_eq!(records.len(), 1, "the woken fetch returned {} records (elapsed {elapsed:?})", records.len());
    assert_eq!(records[0].value.as_deref(), Some(&b"wake up"[..]));
    assert_eq!(data.high_watermark, 1);
    assert!(
        elapsed < WAKE_UP_BOUND,
        "the fetch returned after {elapsed:?} (produce after {produced_at:?}); max_wait_ms {MAX_WAIT_MS} — it was not woken by the produce"
    );
    broker.assert_alive("a long poll");
}

#[test]
fn a_long_poll_without_data_waits_for_max_wait_then_returns_empty() {
    /// Short enough to keep the suite fast, long enough to measure.
    const SHORT_WAIT_MS: i32 = 1_000;
    let broker = Broker::start();
    let topic = unique_topic("long-poll-empty");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);
    let started = Instant::now();
    let data = client.fetch(&topic, 0, 0, SHORT_WAIT_MS, 1);
    let elapsed = started.elapsed();
    assert_eq!(data.error_code, 0, "empty long poll: error {}", code_name(data.error_code));
    assert!(decode_records(data.records.as_ref()).is_empty(), "records from an empty partition");
    // Kafka answers a fetch that cannot reach min_bytes at max_wait_ms, not before.
    assert!(elapsed >= Duration::from_millis(SHORT_WAIT_MS as u64 * 9 / 10), "an empty fetch with max_wait_ms {SHORT_WAIT_MS} returned after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(SHORT_WAIT_MS as u64) + IO_TIMEOUT, "an empty fetch with max_wait_ms {SHORT_WAIT_MS} took {elapsed:?}");
}

#[test]
fn a_parked_fetch_is_woken_by_a_produce_to_any_of_its_partitions() {
    let broker = Broker::start();
    let topic = unique_topic("long-poll-multi");
    let mut admin = broker.client();
    admin.create_topic_ok(&topic, 3);

    // One fetch of partitions 0, 1 and 2 (by name, Fetch v12).
    let request = {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{BrokerId, FetchRequest};
        FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(MAX_WAIT_MS).with_min_bytes(1).with_max_bytes(1024 * 1024).with_topics(vec![
            FetchTopic::default().with_topic(topic_name(&topic)).with_partitions(
                (0..3).map(|p| FetchPartition::default().with_partition(p).with_fetch_offset(0).with_partition_max_bytes(1024 * 1024)).collect(),
            ),
        ])
    };
    let mut fetcher = broker.client();
    fetcher.timeout = Duration::from_millis(MAX_WAIT_MS as u64) + IO_TIMEOUT;
    let fetcher_addr = fetcher.local_addr();
    let started = Instant::now();
    let pending = fetcher.send_request(&request, 12).expect("send the fetch");
    let parked = std::thread::spawn(move || {
        let response: FetchResponse = fetcher.receive(pending).unwrap_or_else(|e| panic!("the long-poll fetch: {e}"));
        (response, started.elapsed())
    });
    wait_until(IO_TIMEOUT, "the broker to read the fetch request from its socket", || {
        assert!(!parked.is_finished(), "the fetch returned before any record was produced");
        broker_receive_queue(broker.kafka, fetcher_addr) == Some(0)
    });

    let produced = broker.client().produce(&topic, 2, plain_batch(&[b"to partition 2"]));
    assert_eq!(produced.error_code, 0);
    let (response, elapsed) = parked.join().expect("the fetch thread panicked");
    assert!(elapsed < WAKE_UP_BOUND, "the fetch returned after {elapsed:?}: not woken by a produce to partition 2");
    let partitions = &response.responses[0].partitions;
    let p2 = partitions.iter().find(|p| p.partition_index == 2).expect("partition 2 in the response");
    let records = decode_records(p2.records.as_ref());
    assert_eq!(records.len(), 1, "records of partition 2 in the woken fetch");
    for p in partitions.iter().filter(|p| p.partition_index != 2) {
        assert_eq!(p.error_code, 0);
        assert!(decode_records(p.records.as_ref()).is_empty(), "partition {} had no data", p.partition_index);
    }
}
