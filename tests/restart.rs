//! Reads right after an unclean restart see every partition's data: a fetch
//! that reaches a partition whose log is still opening must wait for it, never
//! answer "empty, high watermark 0". (Whether a fetch lands in that window
//! depends on timing; the unit test `watermarks_say_when_the_log_is_not_open_yet`
//! pins down the mechanism deterministically.)

mod common;

use common::*;

/// Enough partitions that some are still opening when the first fetches arrive.
const PARTITIONS: i32 = 64;
/// Data in partition 0, which an unclean restart validates batch by batch
/// (CRC included), so that it is still opening when the first fetch arrives.
const LARGE_BATCHES: usize = 96;
const LARGE_VALUE_BYTES: usize = 512 * 1024;

#[test]
fn fetches_right_after_a_restart_see_every_partitions_data() {
    let mut broker = Broker::start();
    let mut client = broker.client();
    let topic = unique_topic("restart");
    client.create_topic_ok(&topic, PARTITIONS);
    let large = vec![b'v'; LARGE_VALUE_BYTES];
    for _ in 0..LARGE_BATCHES {
        let response = client.produce(&topic, 0, plain_batch(&[&large]));
        assert_eq!(response.error_code, 0, "produce a large batch: {}", code_name(response.error_code));
    }
    for partition in 1..PARTITIONS {
        let response = client.produce(&topic, partition, plain_batch(&[b"one", b"two"]));
        assert_eq!(response.error_code, 0, "produce to partition {partition}: {}", code_name(response.error_code));
    }
    // An unclean stop makes every partition validate its log on the way up.
    broker.kill();
    broker.start_again();
    let mut client = broker.client();
    let first = client.fetch(&topic, 0, 0, 0, 1);
    assert_eq!(first.error_code, 0, "fetch {topic}-0 after restart: {}", code_name(first.error_code));
    assert_eq!(first.high_watermark, LARGE_BATCHES as i64, "the large partition reported high watermark {} right after the restart", first.high_watermark);
    assert!(!decode_records(first.records.as_ref()).is_empty(), "the large partition returned records");
    for partition in 1..PARTITIONS {
        let data = client.fetch(&topic, partition, 0, 0, 1);
        assert_eq!(data.error_code, 0, "fetch {topic}-{partition} after restart: {}", code_name(data.error_code));
        assert_eq!(data.high_watermark, 2, "partition {partition} reported high watermark {} right after the restart", data.high_watermark);
        assert_eq!(decode_records(data.records.as_ref()).len(), 2, "partition {partition} returned its records");
    }
    broker.stop();
}
