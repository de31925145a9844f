//! The record batch format (magic v2): the one place Silt parses batches.
//!
//! Batches are stored exactly as producers sent them; the broker only rewrites
//! the fields outside the CRC (base offset, partition leader epoch) and, for
//! `LogAppendTime` topics, the max timestamp (recomputing the CRC). Records are
//! decoded only where a record-level answer is needed (ListOffsets by time).
//!
//! Layout of the 61-byte header (big endian):
//! `base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 |
//! crc u32 | attributes i16 | last_offset_delta i32 | base_timestamp i64 |
//! max_timestamp i64 | producer_id i64 | producer_epoch i16 | base_sequence i32 |
//! records_count i32`. The CRC-32C covers everything from `attributes` on.

use bytes::{Bytes, BytesMut};

use crate::error::BatchError;

/// Bytes before `batch_length` counts: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The fixed header of a magic v2 batch.
pub const HEADER_LEN: usize = 61;

const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

const _: () = assert!(HEADER_LEN > CRC_AT + 4);
const _: () = assert!(LOG_OVERHEAD == PARTITION_LEADER_EPOCH_AT);

/// The decoded fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the length and magic, not the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated { needed: HEADER_LEN, available: buf.len() });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(buf[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes")),
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if header.magic != 2 {
            return Err(BatchError::UnsupportedMagic { magic: header.magic });
        }
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength { length: header.batch_length });
        }
        Ok(header)
    }

    /// Size of the whole batch on disk and on the wire.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression_codec(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_FLAG != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// The sequence of the last record, wrapping like Kafka's at `i32::MAX`.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }
    /// The number of records, taken from the header.
    pub fn record_count(&self) -> i64 {
        self.last_offset_delta as i64 + 1
    }
}

/// CRC-32C of a whole batch as the header's CRC field covers it.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Parses and fully validates one complete batch (`batch.len()` must be its total length).
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(BatchError::Truncated { needed: header.total_len(), available: batch.len() });
    }
    if header.records_count < 0
        || header.last_offset_delta < 0
        || (header.records_count > 0 && header.records_count - 1 != header.last_offset_delta)
    {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { stored: header.crc, computed });
    }
    Ok(header)
}

/// One batch of a producer's payload, validated and ready to append.
#[derive(Debug, Clone)]
pub struct IncomingBatch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

/// Splits a produce payload into its batches, validating each (magic, length,
/// record count, CRC, size against `max_message_bytes`). Nothing is copied.
pub fn split_validated(records: &Bytes, max_message_bytes: usize) -> Result<Vec<IncomingBatch>, BatchError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated { needed: LOG_OVERHEAD, available: rest.len() });
        }
        let length = be_i32(rest, 8);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength { length });
        }
        let total = length as usize + LOG_OVERHEAD;
        if total > max_message_bytes {
            return Err(BatchError::TooLarge { size: total, max: max_message_bytes });
        }
        if rest.len() < total {
            return Err(BatchError::Truncated { needed: total, available: rest.len() });
        }
        let header = validate(&rest[..total])?;
        batches.push(IncomingBatch { header, bytes: records.slice(at..at + total) });
        at += total;
    }
    if batches.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(batches)
}

/// Counts the records in a run of stored batches by walking their headers
/// (no CRC check, no decompression): for metrics on the fetch path.
pub fn count_records(batches: &[u8]) -> u64 {
    let mut at = 0;
    let mut records = 0u64;
    while let Ok(header) = BatchHeader::parse(&batches[at..]) {
        records += header.record_count().max(0) as u64;
        at += header.total_len();
        if at >= batches.len() {
            break;
        }
    }
    records
}

/// Rewrites the fields the broker owns. Base offset and leader epoch lie outside
/// the CRC; a log-append timestamp does not, so the CRC is recomputed for it.
pub fn stamp(batch: &Bytes, base_offset: i64, leader_epoch: i32, log_append_time_ms: Option<i64>) -> Bytes {
    let mut owned = BytesMut::from(&batch[..]);
    owned[0..8].copy_from_slice(&base_offset.to_be_bytes());
    owned[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now_ms) = log_append_time_ms {
        let attributes = be_i16(&owned, ATTRIBUTES_AT) | TIMESTAMP_TYPE_FLAG;
        owned[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        owned[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        let crc = compute_crc(&owned);
        owned[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    owned.freeze()
}

/// The offset and timestamp of one record, decoded from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
}

/// Decodes the offsets and timestamps of a batch's records (decompressing it).
pub fn record_positions(batch: &Bytes) -> Result<Vec<RecordPosition>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let mut buf = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| BatchError::Undecodable { reason: e.to_string() })?;
    Ok(set
        .records
        .iter()
        .map(|r| RecordPosition {
            offset: r.offset,
            timestamp: if header.is_log_append_time() { header.max_timestamp } else { r.timestamp },
        })
        .collect())
}

/// One record as the internal topics (`__consumer_offsets`) see it: a key and
/// an optional value (`None` is a tombstone), with its offset once stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Encodes `records` (key, value) as one uncompressed magic v2 batch with
/// base offset 0 (the log assigns the real offset on append).
pub fn encode_key_values(records: &[(Bytes, Option<Bytes>)], timestamp: i64) -> Result<Bytes, BatchError> {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes;
            // this keeps one batch with base sequence -1 (no producer).
            sequence: i as i32 - 1,
            timestamp,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .map_err(|e| BatchError::Undecodable { reason: format!("cannot encode records: {e}") })?;
    Ok(buf.freeze())
}

/// Decodes every record of the batches in `batches` (as a log read returns
/// them), decompressing as needed.
pub fn decode_key_values(batches: &Bytes) -> Result<Vec<KeyValue>, BatchError> {
    let mut buf = batches.clone();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let header = BatchHeader::parse(&buf)?;
        let len = header.total_len();
        if len > buf.len() {
            return Err(BatchError::Truncated { needed: len, available: buf.len() });
        }
        let mut one = buf.split_to(len);
        if header.is_control() {
            continue;
        }
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one)
            .map_err(|e| BatchError::Undecodable { reason: e.to_string() })?;
        out.extend(set.records.into_iter().map(|r| KeyValue { offset: r.offset, key: r.key, value: r.value }));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    /// Builds a real batch with kafka-protocol's encoder (a client's view).
    pub(crate) fn make_batch(n: usize, ts0: i64, compression: Compression) -> Bytes {
        make_idempotent_batch(n, ts0, compression, -1, -1, -1)
    }

    pub(crate) fn make_idempotent_batch(
        n: usize,
        ts0: i64,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps one batch while offset - sequence is constant.
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: ts0 + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: [(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
            .expect("encode");
        buf.freeze()
    }

    #[test]
    fn validates_batches_from_a_real_encoder() {
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let batch = make_batch(10, 1000, compression);
            let parsed = split_validated(&batch, 1 << 20).expect("valid");
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].header.records_count, 10);
            assert_eq!(parsed[0].header.last_offset_delta, 9);
            assert_eq!(parsed[0].header.max_timestamp, 1009);
        }
    }

    #[test]
    fn counts_records_across_batches() {
        let mut both = BytesMut::from(&make_batch(3, 0, Compression::None)[..]);
        both.extend_from_slice(&make_batch(4, 0, Compression::Gzip));
        assert_eq!(count_records(&both), 7);
        assert_eq!(count_records(&[]), 0);
    }

    #[test]
    fn detects_a_flipped_bit() {
        let batch = make_batch(3, 0, Compression::None);
        let mut bad = BytesMut::from(&batch[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(split_validated(&bad.freeze(), 1 << 20), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn refuses_oversized_batches_before_reading_them() {
        let batch = make_batch(100, 0, Compression::None);
        let max = batch.len() - 1;
        assert!(matches!(split_validated(&batch, max), Err(BatchError::TooLarge { .. })));
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let batch = make_batch(5, 10, Compression::Lz4);
        let stamped = stamp(&batch, 42, 7, None);
        let header = validate(&stamped).expect("still valid");
        assert_eq!((header.base_offset, header.partition_leader_epoch), (42, 7));
        let appended = stamp(&batch, 42, 7, Some(99_999));
        let header = validate(&appended).expect("CRC recomputed");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 99_999);
    }

    #[test]
    fn decodes_record_positions() {
        let batch = stamp(&make_batch(4, 500, Compression::Zstd), 100, 0, None);
        let positions = record_positions(&batch).expect("decode");
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![100, 101, 102, 103]);
        assert_eq!(positions[3].timestamp, 503);
    }

    #[test]
    fn key_values_round_trip_with_tombstones() {
        let records = vec![(Bytes::from_static(b"k1"), Some(Bytes::from_static(b"v1"))), (Bytes::from_static(b"k2"), None)];
        let batch = encode_key_values(&records, 1234).unwrap();
        validate(&batch).unwrap();
        let stamped = stamp(&batch, 10, 0, None);
        let mut two = BytesMut::from(&stamped[..]);
        two.extend_from_slice(&stamp(&batch, 12, 0, None));
        let decoded = decode_key_values(&two.freeze()).unwrap();
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded[1], KeyValue { offset: 11, key: Some(Bytes::from_static(b"k2")), value: None });
        assert_eq!(decoded[2].offset, 12);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = split_validated(&Bytes::from(data), 1 << 20);
        }

        #[test]
        fn corrupting_any_byte_after_the_crc_is_caught(at in 21usize..200, flip in 1u8..=255) {
            let batch = make_batch(8, 0, Compression::None);
            prop_assume!(at < batch.len());
            let mut bad = BytesMut::from(&batch[..]);
            bad[at] ^= flip;
            prop_assert!(split_validated(&bad.freeze(), 1 << 20).is_err());
        }
    }
}
