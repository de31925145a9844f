//! Hot paths of the Kafka protocol edge: parsing and decoding a Produce
//! request, encoding a Fetch response. `cargo bench -p silt --bench protocol`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use silt_tiering::batch;

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const PARTITIONS: i32 = 6;
/// Records per partition batch and bytes per value.
const RECORDS_PER_BATCH: usize = 64;
const VALUE_BYTES: usize = 1024;

fn batch() -> Bytes {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let records: Vec<(Bytes, Option<Bytes>)> = (0..RECORDS_PER_BATCH).map(|_| (Bytes::new(), Some(value.clone()))).collect();
    batch::encode_key_values(&records, 1_700_000_000_000).expect("encode")
}

/// A Produce request frame (header and body, no length prefix) with one batch per partition.
fn produce_frame(records: &Bytes) -> Bytes {
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("bench")))
        .with_partition_data((0..PARTITIONS).map(|p| PartitionProduceData::default().with_index(p).with_records(Some(records.clone()))).collect());
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![topic]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")))
        .encode(&mut buf, ApiKey::Produce.request_header_version(PRODUCE_VERSION))
        .expect("header");
    request.encode(&mut buf, PRODUCE_VERSION).expect("body");
    buf.freeze()
}

fn produce_decode(c: &mut Criterion) {
    let records = batch();
    let frame = produce_frame(&records);
    let mut group = c.benchmark_group("produce_request");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("parse_and_decode_6x64KiB", |b| {
        b.iter(|| {
            let parsed = silt::protocol::parse_frame(black_box(frame.clone())).expect("parses");
            let mut body = parsed.body.clone();
            black_box(ProduceRequest::decode(&mut body, parsed.version).expect("decodes"))
        })
    });
    group.finish();
}

fn fetch_encode(c: &mut Criterion) {
    let records = batch();
    let mut response = FetchResponse::default();
    response.responses = vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions((0..PARTITIONS).map(|p| PartitionData::default().with_partition_index(p).with_records(Some(records.clone()))).collect())];
    let mut group = c.benchmark_group("fetch_response");
    group.throughput(Throughput::Bytes(records.len() as u64 * PARTITIONS as u64));
    group.bench_function("encode_6x64KiB", |b| {
        b.iter(|| silt::protocol::encode_response(ApiKey::Fetch, FETCH_VERSION, 1, black_box(&response)).expect("encodes"))
    });
    group.finish();
}

criterion_group!(benches, produce_decode, fetch_encode);
criterion_main!(benches);
