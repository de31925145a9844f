//! Idempotent producers: a retried batch is acknowledged with its original
//! offsets and written once; sequence gaps and stale epochs are refused with
//! Kafka's error codes; and the deduplication state survives both a clean
//! restart (SIGTERM) and a crash (SIGKILL).

mod common;

use bytes::Bytes;
use common::*;

/// OUT_OF_ORDER_SEQUENCE_NUMBER
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// INVALID_PRODUCER_EPOCH
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// A batch of `count` records `{label}-{i}` from `producer` starting at `base_sequence`.
fn idempotent_batch(label: &str, count: usize, producer: Producer, base_sequence: i32) -> Bytes {
    let vals = values(label, count);
    batch(&as_slices(&vals), producer, base_sequence)
}

/// Appends `batch` and returns its base offset, requiring success.
fn append(client: &mut Client, topic: &str, batch: &Bytes, what: &str) -> i64 {
    let response = client.produce(topic, 0, batch.clone());
    assert_eq!(response.error_code, 0, "{what}: error {} ({:?})", code_name(response.error_code), response.error_message);
    response.base_offset
}

/// The values of every record in the partition, in offset order, with offsets checked contiguous.
fn log_values(client: &mut Client, topic: &str) -> Vec<String> {
    let records = client.read_all(topic, 0, 0);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as i64, "record {i} has offset {}", r.offset);
    }
    records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()).collect()
}

fn expected_values(batches: &[(&str, usize)]) -> Vec<String> {
    batches.iter().flat_map(|(label, n)| (0..*n).map(move |i| format!("{label}-{i}"))).collect()
}

#[test]
fn retries_are_deduplicated_and_bad_sequences_refused_across_restarts() {
    let mut broker = Broker::start();
    let topic = unique_topic("idem");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);

    let (id, epoch) = client.init_producer_id();
    assert!(id >= 0, "producer id {id}");
    assert!(epoch >= 0, "producer epoch {epoch}");
    let producer = Producer { id, epoch };

    // First batch, then its retry (same bytes, as a client resends them).
    let first = idempotent_batch("a", 5, producer, 0);
    let offset = append(&mut client, &topic, &first, "batch a (seq 0..4)");
    assert_eq!(offset, 0, "the first batch of a new topic");
    let retry = append(&mut client, &topic, &first, "retry of batch a");
    assert_eq!(retry, offset, "a retried batch is acknowledged with its original base offset");
    assert_eq!(client.log_end_offset(&topic, 0), 5, "log end after batch a and its retry");
    assert_eq!(log_values(&mut client, &topic), expected_values(&[("a", 5)]), "the log after a retry");

    // The next batch continues the sequence and lands right after.
    let second = idempotent_batch("b", 5, producer, 5);
    assert_eq!(append(&mut client, &topic, &second, "batch b (seq 5..9)"), 5);
    // An older batch retried after a newer one is still recognised (Kafka remembers 5).
    assert_eq!(append(&mut client, &topic, &first, "late retry of batch a"), 0, "a late retry of batch a");
    assert_eq!(client.log_end_offset(&topic, 0), 10);

    // A gap in the sequence is refused and writes nothing.
    let gap = idempotent_batch("gap", 2, producer, 12);
    let refused = client.produce(&topic, 0, gap);
    assert_eq!(refused.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence 12 after 9: error {}", code_name(refused.error_code));
    assert_eq!(client.log_end_offset(&topic, 0), 10, "log end after a refused gap");

    // The producer bumps its epoch (as the Java client does locally after an
    // error, KIP-360) and restarts its sequence at 0; the old epoch is fenced.
    let bumped = Producer { id, epoch: epoch + 1 };
    let third = idempotent_batch("c", 3, bumped, 0);
    assert_eq!(append(&mut client, &topic, &third, "batch c (new epoch, seq 0..2)"), 10);
    let stale = idempotent_batch("stale", 2, producer, 10);
    let refused = client.produce(&topic, 0, stale);
    assert_eq!(refused.error_code, INVALID_PRODUCER_EPOCH, "a batch of epoch {epoch} after epoch {}: error {}", epoch + 1, code_name(refused.error_code));
    let stale_retry = client.produce(&topic, 0, second.clone());
    assert_eq!(stale_retry.error_code, INVALID_PRODUCER_EPOCH, "a retry of an old-epoch batch after the bump: error {}", code_name(stale_retry.error_code));
    assert_eq!(client.log_end_offset(&topic, 0), 13);
    let expected = expected_values(&[("a", 5), ("b", 5), ("c", 3)]);
    assert_eq!(log_values(&mut client, &topic), expected);

    // Clean restart: the retry of the last batch is still recognised.
    drop(client);
    broker.restart();
    let mut client = broker.client();
    assert_eq!(client.log_end_offset(&topic, 0), 13, "log end after a clean restart");
    assert_eq!(append(&mut client, &topic, &third, "retry of batch c after a clean restart"), 10, "retry of batch c after SIGTERM + restart");
    assert_eq!(client.log_end_offset(&topic, 0), 13, "log end after the retry (no duplicate)");
    let gap = idempotent_batch("gap", 1, bumped, 7);
    let refused = client.produce(&topic, 0, gap);
    assert_eq!(refused.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap after a clean restart: error {}", code_name(refused.error_code));
    let stale = idempotent_batch("stale", 1, producer, 10);
    assert_eq!(client.produce(&topic, 0, stale).error_code, INVALID_PRODUCER_EPOCH, "the old epoch after a clean restart");

    // A new batch, then a crash (SIGKILL) and a retry of it.
    let fourth = idempotent_batch("d", 4, bumped, 3);
    assert_eq!(append(&mut client, &topic, &fourth, "batch d (seq 3..6)"), 13);
    drop(client);
    broker.kill();
    broker.start_again();
    let mut client = broker.client();
    assert_eq!(client.log_end_offset(&topic, 0), 17, "log end after SIGKILL + restart (acknowledged data survives a process crash)");
    assert_eq!(append(&mut client, &topic, &fourth, "retry of batch d after SIGKILL"), 13, "retry of batch d after SIGKILL + restart");
    assert_eq!(append(&mut client, &topic, &third, "retry of batch c after SIGKILL"), 10, "retry of the batch before it after SIGKILL + restart");
    assert_eq!(client.log_end_offset(&topic, 0), 17, "log end after the retries (no duplicate)");
    let stale = idempotent_batch("stale", 1, producer, 10);
    assert_eq!(client.produce(&topic, 0, stale).error_code, INVALID_PRODUCER_EPOCH, "the old epoch after a crash");
    let fifth = idempotent_batch("e", 2, bumped, 7);
    assert_eq!(append(&mut client, &topic, &fifth, "batch e (seq 7..8) after the crash"), 17);
    let expected = expected_values(&[("a", 5), ("b", 5), ("c", 3), ("d", 4), ("e", 2)]);
    assert_eq!(log_values(&mut client, &topic), expected, "the log after restarts and retries");
    broker.stop();
}

/// Deduplication is per partition and per producer: two producers with
/// overlapping sequences both get written, and a plain (non-idempotent)
/// batch sent twice is written twice.
#[test]
fn sequences_are_tracked_per_producer_and_plain_batches_are_not_deduplicated() {
    let broker = Broker::start();
    let topic = unique_topic("idem-multi");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 2);
    let (id1, epoch1) = client.init_producer_id();
    let (id2, epoch2) = client.init_producer_id();
    assert_ne!(id1, id2, "two InitProducerId calls returned the same id");
    let p1 = Producer { id: id1, epoch: epoch1 };
    let p2 = Producer { id: id2, epoch: epoch2 };

    let b1 = idempotent_batch("p1", 2, p1, 0);
    let b2 = idempotent_batch("p2", 2, p2, 0);
    assert_eq!(append(&mut client, &topic, &b1, "producer 1 seq 0"), 0);
    assert_eq!(append(&mut client, &topic, &b2, "producer 2 seq 0"), 2);
    assert_eq!(append(&mut client, &topic, &b1, "retry producer 1 seq 0"), 0);
    assert_eq!(append(&mut client, &topic, &b2, "retry producer 2 seq 0"), 2);
    assert_eq!(client.log_end_offset(&topic, 0), 4);

    // Partition 1 has its own sequence space: producer 1 starts at 0 there too.
    let other_partition = client.produce(&topic, 1, b1.clone());
    assert_eq!(other_partition.error_code, 0, "producer 1 seq 0 on partition 1: error {}", code_name(other_partition.error_code));
    assert_eq!(other_partition.base_offset, 0);

    // Plain batches carry no producer id: a resend is a new write.
    let plain = plain_batch(&[b"plain"]);
    assert_eq!(append(&mut client, &topic, &plain, "plain batch"), 4);
    assert_eq!(append(&mut client, &topic, &plain, "plain batch again"), 5);
    assert_eq!(client.log_end_offset(&topic, 0), 6);

    // Kafka remembers a producer's last 5 batches: a retry of the sixth-newest
    // is out of order, not a duplicate, and is not written again.
    const REMEMBERED: i32 = 5;
    let mut sent = Vec::new();
    for i in 0..=REMEMBERED {
        let b = idempotent_batch(&format!("w{i}"), 1, p2, 2 + i);
        append(&mut client, &topic, &b, &format!("producer 2 seq {}", 2 + i));
        sent.push(b);
    }
    let end = client.log_end_offset(&topic, 0);
    assert_eq!(append(&mut client, &topic, &sent[1], "retry of the 5th-newest batch"), end - i64::from(REMEMBERED), "retry of the 5th-newest batch");
    let forgotten = client.produce(&topic, 0, sent[0].clone());
    assert_eq!(forgotten.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "retry of the 6th-newest batch: error {}", code_name(forgotten.error_code));
    assert_eq!(client.log_end_offset(&topic, 0), end, "log end after retries outside and inside the window");
}

#[test]
fn a_producer_unknown_to_the_partition_is_accepted_at_any_sequence() {
    let broker = Broker::start();
    let topic = unique_topic("idem-unknown");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);
    let plain = plain_batch(&[b"before"]);
    assert_eq!(append(&mut client, &topic, &plain, "a plain batch"), 0);

    // A producer the partition has no state for is accepted at any
    // sequence, as Kafka does (ProducerAppendInfo.checkSequence: "If there
    // is no current producer epoch (possibly because all producer records
    // have been deleted due to retention or the DeleteRecords API) accept
    // writes with any sequence number"); the sequence then continues from it.
    let (id3, epoch3) = client.init_producer_id();
    let p3 = Producer { id: id3, epoch: epoch3 };
    let late_start = idempotent_batch("p3", 1, p3, 5);
    let accepted = client.produce(&topic, 0, late_start);
    assert_eq!(accepted.error_code, 0, "a producer unknown to the partition starting at sequence 5: error {}", code_name(accepted.error_code));
    assert_eq!(accepted.base_offset, 1);
    let next = idempotent_batch("p3-next", 1, p3, 6);
    assert_eq!(append(&mut client, &topic, &next, "that producer's sequence 6"), 2);
    assert_eq!(append(&mut client, &topic, &next, "a retry of sequence 6"), 2, "a retry of sequence 6");
    let gap = idempotent_batch("p3-gap", 1, p3, 8);
    assert_eq!(client.produce(&topic, 0, gap).error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "that producer's sequence 8 after 6");
}

/// Deduplication state spans segments: with tiny segments, the last five
/// batches of a producer live in different segment files, and after a crash
/// every one of them is still recognised when retried.
#[test]
fn retries_across_segment_rolls_are_deduplicated_after_a_crash() {
    /// Batches written; each is a few hundred bytes, so segments of 1 KiB roll often.
    const BATCHES: i32 = 12;
    /// Batches Kafka remembers per producer.
    const REMEMBERED: i32 = 5;
    let mut broker = Broker::start_with(&[("SILT_LOG__SEGMENT_BYTES", "1024")]);
    let topic = unique_topic("idem-segments");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);
    let (id, epoch) = client.init_producer_id();
    let producer = Producer { id, epoch };
    let padding = "p".repeat(300);
    let mut sent = Vec::new();
    for i in 0..BATCHES {
        let vals = vec![format!("s{i}-0-{padding}").into_bytes(), format!("s{i}-1-{padding}").into_bytes()];
        let b = batch(&as_slices(&vals), producer, 2 * i);
        let offset = append(&mut client, &topic, &b, &format!("batch {i}"));
        assert_eq!(offset, i64::from(2 * i), "batch {i} base offset");
        sent.push(b);
    }
    let end = i64::from(2 * BATCHES);
    assert_eq!(client.log_end_offset(&topic, 0), end);
    let segments = count_files_named(broker.data_dir(), ".log");
    assert!(segments >= 3, "expected several segment files with segment_bytes 1024, found {segments}");

    for crash in [false, true] {
        drop(client);
        if crash {
            broker.kill();
            broker.start_again();
        } else {
            broker.restart();
        }
        let how = if crash { "SIGKILL" } else { "SIGTERM" };
        client = broker.client();
        assert_eq!(client.log_end_offset(&topic, 0), end, "log end after {how} + restart");
        for i in (BATCHES - REMEMBERED)..BATCHES {
            let offset = append(&mut client, &topic, &sent[i as usize], &format!("retry of batch {i} after {how}"));
            assert_eq!(offset, i64::from(2 * i), "retry of batch {i} after {how} + restart");
        }
        let forgotten = client.produce(&topic, 0, sent[(BATCHES - REMEMBERED - 1) as usize].clone());
        assert_eq!(forgotten.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "retry of the 6th-newest batch after {how}: error {}", code_name(forgotten.error_code));
        assert_eq!(client.log_end_offset(&topic, 0), end, "log end after retries following {how}");
    }
    broker.stop();
}

/// Files under `dir` (recursively, bounded depth) whose name ends with `suffix`.
fn count_files_named(dir: &std::path::Path, suffix: &str) -> usize {
    /// The data directory is topic/partition/segment deep; leave some slack.
    const DEPTH_MAX: usize = 6;
    fn walk(dir: &std::path::Path, suffix: &str, depth: usize) -> usize {
        if depth > DEPTH_MAX {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, suffix, depth + 1)
                } else {
                    usize::from(path.to_string_lossy().ends_with(suffix))
                }
            })
            .sum()
    }
    walk(dir, suffix, 0)
}
