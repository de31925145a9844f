//! Hot paths of the partition log: batch validation (CRC), segment append,
//! index lookup and reads. `cargo bench -p silt-tiering`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use silt_tiering::batch;
use silt_tiering::index::OffsetIndex;
use silt_tiering::segment::Segment;
use silt_tiering::{LogConfig, PartitionLog};

/// Records per batch and bytes per record value: a producer batching 1 KiB records.
const RECORDS_PER_BATCH: usize = 16;
const VALUE_BYTES: usize = 1024;
/// Appending benchmarks delete what they wrote past this, so a long run does not fill the disk.
const SCRATCH_BYTES_MAX: u64 = 256 << 20;

/// One uncompressed batch as a client would send it.
fn client_batch() -> Bytes {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let records: Vec<(Bytes, Option<Bytes>)> = (0..RECORDS_PER_BATCH).map(|_| (Bytes::new(), Some(value.clone()))).collect();
    batch::encode_key_values(&records, 1_700_000_000_000).expect("encode")
}

/// A produce payload of `batches` batches.
fn payload(batches: usize) -> Bytes {
    let one = client_batch();
    let mut all = BytesMut::with_capacity(one.len() * batches);
    for _ in 0..batches {
        all.extend_from_slice(&one);
    }
    all.freeze()
}

fn validation(c: &mut Criterion) {
    let records = payload(64);
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Bytes(records.len() as u64));
    group.bench_function("split_validated_64x16KiB", |b| b.iter(|| batch::split_validated(black_box(&records), 1 << 20).expect("valid")));
    let one = client_batch();
    group.throughput(Throughput::Bytes(one.len() as u64));
    group.bench_function("stamp", |b| b.iter(|| batch::stamp(black_box(&one), 42, 0, None)));
    group.finish();
}

fn segment_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = client_batch();
    let mut group = c.benchmark_group("segment");
    group.throughput(Throughput::Bytes(one.len() as u64));
    let mut base = 0i64;
    let mut segment = Segment::create(dir.path(), base, 4096).expect("segment");
    let mut appended = 0u64;
    group.bench_function("append_16KiB", |b| {
        b.iter(|| {
            // Start a fresh segment now and then so the file stays small (page cache).
            if appended >= SCRATCH_BYTES_MAX {
                base = segment.next_offset();
                let old = std::mem::replace(&mut segment, Segment::create(dir.path(), base, 4096).expect("segment"));
                old.delete().expect("delete");
                appended = 0;
            }
            let stamped = batch::stamp(&one, segment.next_offset(), 0, None);
            let header = batch::BatchHeader::parse(&stamped).expect("header");
            segment.append(&header, &stamped).expect("append");
            appended += stamped.len() as u64;
        })
    });
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut index = OffsetIndex::default();
    for i in 0..250_000u32 {
        index.append(i * 16, i * 4096 + 1);
    }
    c.bench_function("offset_index/lookup_250k_entries", |b| {
        let mut probe = 0u32;
        b.iter(|| {
            probe = probe.wrapping_add(7919) % (250_000 * 16);
            black_box(index.lookup(black_box(probe)))
        })
    });
}

fn log_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { segment_bytes: 64 << 20, retention_bytes: Some(SCRATCH_BYTES_MAX), ..LogConfig::default() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, true).expect("log");
    let records = payload(16);
    for _ in 0..256 {
        log.append(&records, 0, 0).expect("append");
    }
    let leo = log.log_end_offset();
    log.set_high_watermark(leo);
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("read_1MiB", |b| {
        let mut offset = 0i64;
        b.iter(|| {
            let read = log.read(offset, 1 << 20).expect("read");
            offset = (offset + 4096) % (leo - 1024);
            black_box(read)
        })
    });
    group.throughput(Throughput::Bytes(records.len() as u64));
    group.bench_function("append_256KiB", |b| {
        let mut appends = 0u64;
        b.iter(|| {
            appends += 1;
            if appends.is_multiple_of(1024) {
                let leo = log.log_end_offset();
                log.set_high_watermark(leo);
                log.enforce_retention(0).expect("retention");
            }
            log.append(black_box(&records), 0, 0).expect("append")
        })
    });
    group.finish();
}

criterion_group!(benches, validation, segment_append, index_lookup, log_read);
criterion_main!(benches);
