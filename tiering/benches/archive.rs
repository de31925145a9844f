//! The archive's hot paths: encoding a sealed segment as Parquet (what one
//! upload costs a core) and decoding a row group back into batches (what a
//! consumer replaying history costs). `cargo bench -p silt-tiering --bench archive`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use silt_tiering::archive::format::{self, EncodeOptions};
use silt_tiering::batch;

/// A sealed segment of `batches` batches of 16 keyed 1 KiB records, as stored
/// on disk (offsets assigned).
fn segment(batches: usize) -> Bytes {
    let mut all = BytesMut::new();
    let mut offset = 0i64;
    for b in 0..batches {
        let records: Vec<(Bytes, Option<Bytes>)> = (0..16)
            .map(|i| {
                let n = b * 16 + i;
                let value = format!("{{\"n\":{n},\"user\":{},\"pad\":\"{}\"}}", n % 97, "x".repeat(990));
                (Bytes::from(format!("user-{}", n % 97)), Some(Bytes::from(value)))
            })
            .collect();
        let one = batch::encode_key_values(&records, 1_700_000_000_000 + offset).expect("encode");
        all.extend_from_slice(&batch::stamp(&one, offset, 0, None));
        offset += 16;
    }
    all.freeze()
}

fn encode(c: &mut Criterion) {
    let seg = segment(512); // about 8.5 MiB
    let mut group = c.benchmark_group("archive");
    group.throughput(Throughput::Bytes(seg.len() as u64));
    group.sample_size(10);
    group.bench_function("encode_segment_8MiB", |b| b.iter(|| format::encode_segment(black_box(&seg), "t", 0, &EncodeOptions::default()).expect("encode")));
    let parquet = format::encode_segment(&seg, "t", 0, &EncodeOptions::default()).expect("encode").parquet;
    group.bench_function("decode_and_rebuild_8MiB", |b| {
        b.iter(|| {
            let rows: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(black_box(parquet.clone()))
                .expect("reader")
                .build()
                .expect("reader")
                .collect::<Result<_, _>>()
                .expect("rows");
            format::rebuild_batches(&rows).expect("rebuild")
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
