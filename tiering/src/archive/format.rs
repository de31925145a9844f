//! The archive's file format: one Parquet file per sealed segment, one row
//! per record, with the batch-level fields needed to rebuild the batches.
//!
//! Rows keep the log's offset order. A row group holds whole batches only
//! (never half a batch), so one row group is enough to rebuild any batch in
//! it; row groups close after about `row_group_bytes` of record data. Offset
//! and timestamp columns carry min/max statistics so readers can prune by
//! offset and time. The key column carries a bloom filter per row group (an
//! exact key prunes) and chunk-level min/max (a key prefix prunes, truncated
//! to 64 bytes); value and headers carry none, since min/max of opaque
//! bytes prunes nothing and costs space. See `select` for the readers.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StringDictionaryBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::types::Int8Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, DictionaryArray, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::batch::{self, BatchFields, BatchHeader, Header, Record};
use crate::error::ArchiveError;

/// The version of this layout, written into every file's metadata.
pub const FORMAT_VERSION: &str = "1";

/// Column names, in schema order. Analysts query these names.
pub mod column {
    pub const OFFSET: &str = "offset";
    pub const TIMESTAMP: &str = "timestamp";
    pub const KEY: &str = "key";
    pub const VALUE: &str = "value";
    pub const HEADERS: &str = "headers";
    pub const TIMESTAMP_TYPE: &str = "timestamp_type";
    pub const BATCH_BASE_OFFSET: &str = "batch_base_offset";
    pub const BATCH_LAST_OFFSET: &str = "batch_last_offset";
    pub const BATCH_BASE_TIMESTAMP: &str = "batch_base_timestamp";
    pub const BATCH_MAX_TIMESTAMP: &str = "batch_max_timestamp";
    pub const BATCH_ATTRIBUTES: &str = "batch_attributes";
    pub const PARTITION_LEADER_EPOCH: &str = "partition_leader_epoch";
    pub const PRODUCER_ID: &str = "producer_id";
    pub const PRODUCER_EPOCH: &str = "producer_epoch";
    pub const BASE_SEQUENCE: &str = "base_sequence";
}

fn header_fields() -> Fields {
    Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Binary, true)])
}

fn headers_item() -> Field {
    Field::new("item", DataType::Struct(header_fields()), false)
}

/// The Arrow schema of every archive file.
pub fn schema() -> SchemaRef {
    use column::*;
    Arc::new(Schema::new(vec![
        Field::new(OFFSET, DataType::Int64, false),
        Field::new(TIMESTAMP, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new(KEY, DataType::Binary, true),
        Field::new(VALUE, DataType::Binary, true),
        Field::new(HEADERS, DataType::List(Arc::new(headers_item())), false),
        Field::new(TIMESTAMP_TYPE, DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)), false),
        Field::new(BATCH_BASE_OFFSET, DataType::Int64, false),
        Field::new(BATCH_LAST_OFFSET, DataType::Int64, false),
        Field::new(BATCH_BASE_TIMESTAMP, DataType::Int64, false),
        Field::new(BATCH_MAX_TIMESTAMP, DataType::Int64, false),
        Field::new(BATCH_ATTRIBUTES, DataType::Int16, false),
        Field::new(PARTITION_LEADER_EPOCH, DataType::Int32, false),
        Field::new(PRODUCER_ID, DataType::Int64, false),
        Field::new(PRODUCER_EPOCH, DataType::Int16, false),
        Field::new(BASE_SEQUENCE, DataType::Int32, false),
    ]))
}

/// What one encoded segment holds, for its manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub rows: u64,
    /// Bytes of record batches the segment held on local disk.
    pub segment_bytes: u64,
}

/// An encoded Parquet file and what it holds.
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    pub parquet: Bytes,
    pub summary: SegmentSummary,
}

/// How files are written.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Close a row group after about this many bytes of record batches.
    pub row_group_bytes: u64,
    /// zstd level of the Parquet pages.
    pub zstd_level: i32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { row_group_bytes: 8 << 20, zstd_level: 1 }
    }
}

/// Column builders for one row group.
struct Builders {
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    timestamp_type: StringDictionaryBuilder<Int8Type>,
    batch_base_offset: Int64Builder,
    batch_last_offset: Int64Builder,
    batch_base_timestamp: Int64Builder,
    batch_max_timestamp: Int64Builder,
    batch_attributes: Int16Builder,
    partition_leader_epoch: Int32Builder,
    producer_id: Int64Builder,
    producer_epoch: Int16Builder,
    base_sequence: Int32Builder,
    rows: usize,
}

impl Builders {
    fn new() -> Builders {
        let header = StructBuilder::new(header_fields(), vec![Box::new(StringBuilder::new()), Box::new(BinaryBuilder::new())]);
        Builders {
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(header).with_field(Arc::new(headers_item())),
            timestamp_type: StringDictionaryBuilder::new(),
            batch_base_offset: Int64Builder::new(),
            batch_last_offset: Int64Builder::new(),
            batch_base_timestamp: Int64Builder::new(),
            batch_max_timestamp: Int64Builder::new(),
            batch_attributes: Int16Builder::new(),
            partition_leader_epoch: Int32Builder::new(),
            producer_id: Int64Builder::new(),
            producer_epoch: Int16Builder::new(),
            base_sequence: Int32Builder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, h: &BatchHeader, r: &Record) {
        self.offset.append_value(r.offset);
        self.timestamp.append_value(r.timestamp);
        self.key.append_option(r.key.as_deref());
        self.value.append_option(r.value.as_deref());
        let headers = self.headers.values();
        for header in &r.headers {
            headers.field_builder::<StringBuilder>(0).expect("key column").append_value(String::from_utf8_lossy(&header.key));
            headers.field_builder::<BinaryBuilder>(1).expect("value column").append_option(header.value.as_deref());
            headers.append(true);
        }
        self.headers.append(true);
        self.timestamp_type.append_value(if h.is_log_append_time() { "LogAppendTime" } else { "CreateTime" });
        self.batch_base_offset.append_value(h.base_offset);
        self.batch_last_offset.append_value(h.last_offset());
        self.batch_base_timestamp.append_value(h.base_timestamp);
        self.batch_max_timestamp.append_value(h.max_timestamp);
        self.batch_attributes.append_value(h.attributes);
        self.partition_leader_epoch.append_value(h.partition_leader_epoch);
        self.producer_id.append_value(h.producer_id);
        self.producer_epoch.append_value(h.producer_epoch);
        self.base_sequence.append_value(h.base_sequence);
        self.rows += 1;
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArchiveError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.timestamp_type.finish()),
            Arc::new(self.batch_base_offset.finish()),
            Arc::new(self.batch_last_offset.finish()),
            Arc::new(self.batch_base_timestamp.finish()),
            Arc::new(self.batch_max_timestamp.finish()),
            Arc::new(self.batch_attributes.finish()),
            Arc::new(self.partition_leader_epoch.finish()),
            Arc::new(self.producer_id.finish()),
            Arc::new(self.producer_epoch.finish()),
            Arc::new(self.base_sequence.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| ArchiveError::Encode { reason: e.to_string() })
    }
}

/// False-positive rate of the key column's bloom filters.
pub const KEY_BLOOM_FPP: f64 = 0.01;
/// The most distinct keys a row group's bloom filter is first sized for
/// (before it is folded down to what it holds): 1 MiB of bitset at most.
const KEY_BLOOM_MAX_NDV: u64 = 1 << 20;

/// The number of distinct keys to size a row group's key bloom filter for:
/// the records a row group can hold (a row group closes after about
/// `row_group_bytes` of the segment's `segment_bytes`), with a quarter more
/// for batches of uneven size, never more than the segment holds. The writer
/// folds each filter down to the smallest size that keeps
/// [`KEY_BLOOM_FPP`] for what was inserted, so this is only its ceiling.
pub fn key_bloom_ndv(records: u64, segment_bytes: u64, row_group_bytes: u64) -> u64 {
    let per_group = if segment_bytes <= row_group_bytes {
        records
    } else {
        (u128::from(records) * u128::from(row_group_bytes) / u128::from(segment_bytes.max(1))) as u64 * 5 / 4
    };
    per_group.clamp(1, records.max(1)).min(KEY_BLOOM_MAX_NDV)
}

fn writer_properties(options: &EncodeOptions, metadata: Vec<KeyValue>, key_ndv: u64) -> Result<WriterProperties, ArchiveError> {
    let level = ZstdLevel::try_new(options.zstd_level).map_err(|e| ArchiveError::Encode { reason: e.to_string() })?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(metadata))
        // Row groups are closed by size (whole batches); this is only a ceiling.
        .set_max_row_group_row_count(None);
    let key = ColumnPath::new(vec![column::KEY.to_string()]);
    props = props
        .set_column_statistics_enabled(key.clone(), EnabledStatistics::Chunk)
        .set_column_bloom_filter_enabled(key.clone(), true)
        .set_column_bloom_filter_fpp(key.clone(), KEY_BLOOM_FPP)
        .set_column_bloom_filter_max_ndv(key, key_ndv);
    for opaque in [vec![column::VALUE], vec![column::HEADERS, "list", "item", "value"]] {
        let path = ColumnPath::new(opaque.iter().map(|s| s.to_string()).collect());
        props = props.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        if opaque == [column::VALUE] {
            // Values rarely repeat; a dictionary would be built and thrown away.
            props = props.set_column_dictionary_enabled(path.clone(), false).set_column_encoding(path, Encoding::PLAIN);
        }
    }
    Ok(props.build())
}

/// Encodes a sealed segment's batches (as stored on disk, back to back) as
/// one Parquet file. `topic` and `partition` go into the file's metadata.
pub fn encode_segment(batches: &Bytes, topic: &str, partition: i32, options: &EncodeOptions) -> Result<EncodedSegment, ArchiveError> {
    let schema = schema();
    let mut summary =
        SegmentSummary { base_offset: -1, last_offset: -1, min_timestamp: i64::MAX, max_timestamp: i64::MIN, rows: 0, segment_bytes: batches.len() as u64 };
    // Walk headers first: the file's name and metadata need its offset range.
    let mut at = 0;
    let mut spans = Vec::new();
    let mut records = 0u64;
    while at < batches.len() {
        let header = BatchHeader::parse(&batches[at..])?;
        let end = at + header.total_len();
        if end > batches.len() {
            return Err(crate::BatchError::Truncated { needed: header.total_len(), available: batches.len() - at }.into());
        }
        if summary.base_offset < 0 {
            summary.base_offset = header.base_offset;
        }
        summary.last_offset = header.last_offset();
        records += header.record_count().max(0) as u64;
        spans.push((at, end));
        at = end;
    }
    if spans.is_empty() {
        return Err(ArchiveError::Encode { reason: "the segment holds no batches".into() });
    }
    let metadata = vec![
        KeyValue::new("silt.format_version".into(), FORMAT_VERSION.to_string()),
        KeyValue::new("silt.topic".into(), topic.to_string()),
        KeyValue::new("silt.partition".into(), partition.to_string()),
        KeyValue::new("silt.base_offset".into(), summary.base_offset.to_string()),
        KeyValue::new("silt.last_offset".into(), summary.last_offset.to_string()),
    ];
    let props = writer_properties(options, metadata, key_bloom_ndv(records, summary.segment_bytes, options.row_group_bytes))?;
    let mut out = Vec::with_capacity(batches.len() / 2);
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).map_err(ArchiveError::parquet)?;
    let mut builders = Builders::new();
    let mut group_bytes = 0u64;
    for (start, end) in spans {
        let decoded = batch::decode_records(&batches.slice(start..end))?;
        if decoded.header.is_control() {
            continue; // transaction markers carry no records (and Silt writes none)
        }
        for record in &decoded.records {
            summary.min_timestamp = summary.min_timestamp.min(record.timestamp);
            summary.max_timestamp = summary.max_timestamp.max(record.timestamp);
            builders.push(&decoded.header, record);
        }
        summary.rows += decoded.records.len() as u64;
        group_bytes += (end - start) as u64;
        if group_bytes >= options.row_group_bytes {
            writer.write(&builders.finish(&schema)?).map_err(ArchiveError::parquet)?;
            writer.flush().map_err(ArchiveError::parquet)?;
            group_bytes = 0;
        }
    }
    if builders.rows > 0 {
        writer.write(&builders.finish(&schema)?).map_err(ArchiveError::parquet)?;
    }
    writer.close().map_err(ArchiveError::parquet)?;
    if summary.rows == 0 {
        summary.min_timestamp = -1;
        summary.max_timestamp = -1;
    }
    Ok(EncodedSegment { parquet: Bytes::from(out), summary })
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArchiveError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArchiveError::Decode { reason: format!("column {name:?} is missing or has the wrong type") })
}

/// One rebuilt batch with the offsets it covers.
#[derive(Debug, Clone)]
pub struct RebuiltBatch {
    pub base_offset: i64,
    /// One past the batch's last offset.
    pub next_offset: i64,
    pub bytes: Bytes,
}

/// Rebuilds the Kafka batches of decoded rows (whole batches, in offset order).
///
/// The rows are input, not trusted: every row of a batch must repeat its
/// batch's fields, its records must hold exactly the offsets from the batch's
/// base to its last offset, one row each and in order, and batches must
/// follow each other in offset order. Rows that disagree are refused
/// ([`ArchiveError::Decode`]), so every rebuilt batch is a valid batch.
pub fn rebuild_batches(batches: &[RecordBatch]) -> Result<Vec<RebuiltBatch>, ArchiveError> {
    let mut out: Vec<RebuiltBatch> = Vec::new();
    let mut pending: Option<PendingBatch> = None;
    for rb in batches {
        use column::*;
        let offset = col::<Int64Array>(rb, OFFSET)?;
        let timestamp = col::<TimestampMillisecondArray>(rb, TIMESTAMP)?;
        let key = col::<BinaryArray>(rb, KEY)?;
        let value = col::<BinaryArray>(rb, VALUE)?;
        let headers = col::<ListArray>(rb, HEADERS)?;
        let base_offset = col::<Int64Array>(rb, BATCH_BASE_OFFSET)?;
        let last_offset = col::<Int64Array>(rb, BATCH_LAST_OFFSET)?;
        let base_timestamp = col::<Int64Array>(rb, BATCH_BASE_TIMESTAMP)?;
        let max_timestamp = col::<Int64Array>(rb, BATCH_MAX_TIMESTAMP)?;
        let attributes = col::<Int16Array>(rb, BATCH_ATTRIBUTES)?;
        let leader_epoch = col::<Int32Array>(rb, PARTITION_LEADER_EPOCH)?;
        let producer_id = col::<Int64Array>(rb, PRODUCER_ID)?;
        let producer_epoch = col::<Int16Array>(rb, PRODUCER_EPOCH)?;
        let base_sequence = col::<Int32Array>(rb, BASE_SEQUENCE)?;
        let _ = col::<DictionaryArray<Int8Type>>(rb, TIMESTAMP_TYPE)?;
        for row in 0..rb.num_rows() {
            let fields = BatchFields {
                base_offset: base_offset.value(row),
                partition_leader_epoch: leader_epoch.value(row),
                attributes: attributes.value(row),
                last_offset_delta: last_offset_delta(base_offset.value(row), last_offset.value(row))?,
                base_timestamp: base_timestamp.value(row),
                max_timestamp: max_timestamp.value(row),
                producer_id: producer_id.value(row),
                producer_epoch: producer_epoch.value(row),
                base_sequence: base_sequence.value(row),
            };
            let record = Record {
                offset: offset.value(row),
                timestamp: timestamp.value(row),
                key: (!key.is_null(row)).then(|| Bytes::copy_from_slice(key.value(row))),
                value: (!value.is_null(row)).then(|| Bytes::copy_from_slice(value.value(row))),
                headers: record_headers(headers, row)?,
            };
            match &mut pending {
                Some(p) if p.fields.base_offset == fields.base_offset => {
                    if p.fields != fields {
                        return Err(disagree(format!("the rows of the batch at offset {} disagree on its header fields", fields.base_offset)));
                    }
                    p.push(record)?;
                }
                _ => {
                    if let Some(p) = pending.take() {
                        out.push(p.finish()?);
                    }
                    if let Some(before) = out.last().filter(|b| fields.base_offset < b.next_offset) {
                        return Err(disagree(format!(
                            "the batch at offset {} overlaps or precedes the batch ending at {}",
                            fields.base_offset,
                            before.next_offset - 1
                        )));
                    }
                    let mut p = PendingBatch { fields, records: Vec::new() };
                    p.push(record)?;
                    pending = Some(p);
                }
            }
        }
    }
    if let Some(p) = pending {
        out.push(p.finish()?);
    }
    Ok(out)
}

fn disagree(reason: String) -> ArchiveError {
    ArchiveError::Decode { reason }
}

/// The offset span of a batch from its first and last offset columns: the
/// offsets must be valid (`0 <= base <= last < i64::MAX`) and span at most
/// what a batch header can say.
fn last_offset_delta(base_offset: i64, last_offset: i64) -> Result<i32, ArchiveError> {
    if base_offset < 0 || last_offset < base_offset || last_offset == i64::MAX {
        return Err(disagree(format!("a batch cannot run from offset {base_offset} to {last_offset}")));
    }
    i32::try_from(last_offset - base_offset).map_err(|_| disagree(format!("the batch at offset {base_offset} spans too many offsets")))
}

/// The headers of one record: a list of (key, value) structs.
fn record_headers(headers: &ListArray, row: usize) -> Result<Vec<Header>, ArchiveError> {
    let list = headers.value(row);
    let items = list.as_any().downcast_ref::<StructArray>().ok_or_else(|| disagree("headers are not structs".into()))?;
    if items.num_columns() != 2 {
        return Err(disagree(format!("headers have {} fields, not a key and a value", items.num_columns())));
    }
    let keys = items.column(0).as_any().downcast_ref::<StringArray>().ok_or_else(|| disagree("header keys are not strings".into()))?;
    let values = items.column(1).as_any().downcast_ref::<BinaryArray>().ok_or_else(|| disagree("header values are not binary".into()))?;
    Ok((0..items.len())
        .map(|i| Header { key: Bytes::copy_from_slice(keys.value(i).as_bytes()), value: (!values.is_null(i)).then(|| Bytes::copy_from_slice(values.value(i))) })
        .collect())
}

/// The rows of one batch read so far. Invariant: `records` hold the offsets
/// `fields.base_offset..` in order, at most `last_offset_delta + 1` of them.
struct PendingBatch {
    fields: BatchFields,
    records: Vec<Record>,
}

impl PendingBatch {
    fn push(&mut self, record: Record) -> Result<(), ArchiveError> {
        let base = self.fields.base_offset;
        let held = i64::try_from(self.records.len()).unwrap_or(i64::MAX);
        if held > i64::from(self.fields.last_offset_delta) {
            return Err(disagree(format!("the batch at offset {base} has more rows than its offsets")));
        }
        // Cannot overflow: base + held <= base + last_offset_delta, the batch's last offset.
        let expected = base + held;
        if record.offset != expected {
            return Err(disagree(format!("the batch at offset {base} holds offset {} where {expected} belongs", record.offset)));
        }
        self.records.push(record);
        Ok(())
    }

    fn finish(self) -> Result<RebuiltBatch, ArchiveError> {
        let rows = self.records.len();
        if i64::try_from(rows).ok() != Some(i64::from(self.fields.last_offset_delta) + 1) {
            return Err(disagree(format!(
                "the batch at offset {} covers {} offsets but has {rows} rows",
                self.fields.base_offset,
                i64::from(self.fields.last_offset_delta) + 1
            )));
        }
        Ok(finish_batch(&self.fields, &self.records))
    }
}

fn finish_batch(fields: &BatchFields, records: &[Record]) -> RebuiltBatch {
    RebuiltBatch {
        base_offset: fields.base_offset,
        next_offset: fields.base_offset + i64::from(fields.last_offset_delta) + 1,
        bytes: batch::encode_batch(fields, records),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_idempotent_batch;
    use kafka_protocol::records::Compression as Codec;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn segment(batches: usize, per_batch: usize, codec: Codec) -> Bytes {
        let mut all = Vec::new();
        for i in 0..batches {
            let b = make_idempotent_batch(per_batch, 1_000 + (i * per_batch) as i64, codec, 7, 1, (i * per_batch) as i32);
            all.extend_from_slice(&batch::stamp(&b, (i * per_batch) as i64 + 100, 4, None));
        }
        Bytes::from(all)
    }

    fn read_back(parquet: &Bytes) -> (Vec<RecordBatch>, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(parquet.clone()).unwrap();
        let groups = builder.metadata().num_row_groups();
        (builder.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap(), groups)
    }

    #[test]
    fn a_segment_round_trips_through_parquet_record_for_record() {
        for codec in [Codec::None, Codec::Lz4] {
            let original = segment(20, 10, codec);
            let options = EncodeOptions { row_group_bytes: 1_000, ..EncodeOptions::default() };
            let encoded = encode_segment(&original, "orders", 3, &options).unwrap();
            let s = encoded.summary;
            assert_eq!((s.base_offset, s.last_offset, s.rows), (100, 299, 200));
            assert_eq!((s.min_timestamp, s.max_timestamp), (1_000, 1_199));
            let (rows, groups) = read_back(&encoded.parquet);
            assert!(groups > 1, "small row groups were closed by size");
            let rebuilt = rebuild_batches(&rows).unwrap();
            assert_eq!(rebuilt.len(), 20, "one rebuilt batch per original batch");
            let mut at = 0;
            for r in &rebuilt {
                let orig = BatchHeader::parse(&original[at..]).unwrap();
                let len = orig.total_len();
                let before = batch::decode_records(&original.slice(at..at + len)).unwrap();
                let after = batch::decode_records(&r.bytes).unwrap();
                assert_eq!(after.records, before.records);
                assert_eq!((after.header.producer_id, after.header.base_sequence), (orig.producer_id, orig.base_sequence));
                assert_eq!((r.base_offset, r.next_offset), (orig.base_offset, orig.next_offset()));
                at += len;
            }
        }
    }

    #[test]
    fn files_carry_offset_statistics_for_pruning() {
        let encoded = encode_segment(&segment(10, 10, Codec::None), "t", 0, &EncodeOptions { row_group_bytes: 1, ..EncodeOptions::default() }).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(encoded.parquet.clone()).unwrap();
        let first = builder.metadata().row_group(0);
        let stats = first.column(0).statistics().expect("offset statistics");
        assert_eq!(stats.min_bytes_opt().map(|b| i64::from_le_bytes(b.try_into().unwrap())), Some(100));
        let kv = builder.metadata().file_metadata().key_value_metadata().unwrap();
        assert!(kv.iter().any(|k| k.key == "silt.topic" && k.value.as_deref() == Some("t")));
    }

    /// The rows of a real file: 3 batches of 4 records, offsets 100..=111.
    fn real_rows() -> Vec<RecordBatch> {
        let encoded = encode_segment(&segment(3, 4, Codec::None), "t", 0, &EncodeOptions::default()).unwrap();
        read_back(&encoded.parquet).0
    }

    /// `rows` with the column `name` replaced by `f` of its values.
    fn with_column(rows: &[RecordBatch], name: &str, f: impl Fn(usize, i64) -> i64) -> Vec<RecordBatch> {
        rows.iter()
            .map(|rb| {
                let index = rb.schema().index_of(name).unwrap();
                let old = rb.column(index).as_any().downcast_ref::<Int64Array>().unwrap();
                let mut columns = rb.columns().to_vec();
                columns[index] = Arc::new(Int64Array::from_iter_values((0..old.len()).map(|row| f(row, old.value(row)))));
                RecordBatch::try_new(rb.schema(), columns).unwrap()
            })
            .collect()
    }

    fn refused(rows: &[RecordBatch]) -> String {
        match rebuild_batches(rows) {
            Err(ArchiveError::Decode { reason }) => reason,
            other => panic!("rows that disagree were not refused: {other:?}"),
        }
    }

    #[test]
    fn rows_that_disagree_with_their_batch_are_refused() {
        let rows = real_rows();
        assert_eq!(rebuild_batches(&rows).unwrap().len(), 3);
        // A record offset that is not the next one of its batch (a gap, then a repeat).
        assert!(refused(&with_column(&rows, column::OFFSET, |row, o| if row == 1 { o + 1 } else { o })).contains("where 101 belongs"));
        assert!(refused(&with_column(&rows, column::OFFSET, |row, o| if row == 2 { o - 1 } else { o })).contains("where 102 belongs"));
        // A batch whose last offset says it holds fewer or more records than it has rows.
        assert!(refused(&with_column(&rows, column::BATCH_LAST_OFFSET, |_, o| o - 1)).contains("more rows than its offsets"));
        assert!(refused(&with_column(&rows, column::BATCH_LAST_OFFSET, |_, o| o + 1)).contains("covers 5 offsets but has 4 rows"));
        // Rows of one batch with different header fields.
        assert!(refused(&with_column(&rows, column::PRODUCER_ID, |row, p| if row == 3 { p + 1 } else { p })).contains("disagree on its header fields"));
        // Offsets no batch header can hold.
        assert!(refused(&with_column(&rows, column::BATCH_BASE_OFFSET, |_, o| o - 1_000)).contains("cannot run from offset"));
        assert!(refused(&with_column(&rows, column::BATCH_LAST_OFFSET, |_, _| i64::MAX)).contains("cannot run from offset"));
        assert!(refused(&with_column(&rows, column::BATCH_LAST_OFFSET, |_, o| o + (1 << 40))).contains("spans too many offsets"));
    }

    #[test]
    fn batches_out_of_order_or_overlapping_are_refused() {
        let rows = real_rows();
        let twice: Vec<RecordBatch> = rows.iter().chain(rows.iter()).cloned().collect();
        assert!(refused(&twice).contains("overlaps or precedes"));
    }

    #[test]
    fn headers_of_the_wrong_shape_are_refused() {
        let rows = real_rows();
        let rb = &rows[0];
        let index = rb.schema().index_of(column::HEADERS).unwrap();
        // A list of structs with one field instead of a key and a value.
        let one_field = Fields::from(vec![Field::new("key", DataType::Utf8, false)]);
        let items = StructArray::new(one_field.clone(), vec![Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef], None);
        let offsets = arrow_buffer::OffsetBuffer::new_zeroed(rb.num_rows());
        let list = ListArray::new(Arc::new(Field::new("item", DataType::Struct(one_field), false)), offsets, Arc::new(items), None);
        let mut fields: Vec<Field> = rb.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[index] = Field::new(column::HEADERS, list.data_type().clone(), false);
        let mut columns = rb.columns().to_vec();
        columns[index] = Arc::new(list);
        let damaged = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        assert!(refused(&[damaged]).contains("headers have 1 fields"));
    }

    #[test]
    fn an_empty_segment_is_refused() {
        assert!(encode_segment(&Bytes::new(), "t", 0, &EncodeOptions::default()).is_err());
    }
}
