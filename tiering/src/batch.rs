//! The record batch format (magic v2): the one place Silt parses batches.
//!
//! Batches are stored as producers sent them; the broker rewrites the fields
//! outside the CRC (base offset, partition leader epoch) and, for
//! `LogAppendTime` topics, the max timestamp (recomputing the CRC). Records are
//! decoded only where a record-level answer is needed (ListOffsets by time),
//! where a topic's `compression.type` differs from the producer's codec
//! ([`recompress`]) and where the log cleaner filters records
//! ([`encode_batch_with`]).
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
/// KIP-534: the base timestamp is the time after which the batch's
/// tombstones may be removed by the log cleaner.
const DELETE_HORIZON_FLAG: i16 = 0x40;

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
    /// The time after which the log cleaner may remove this batch's
    /// tombstones, once a cleaning pass has set it (KIP-534).
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_FLAG != 0).then_some(self.base_timestamp)
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

/// Parses and fully validates one complete stored batch (`batch.len()` must
/// be its total length). A stored batch may hold fewer records than its
/// offset range: the log cleaner removes records but keeps the batch's base
/// and last offsets (offset gaps, as in Kafka).
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(BatchError::Truncated { needed: header.total_len(), available: batch.len() });
    }
    if header.records_count < 0 || header.last_offset_delta < 0 || header.records_count as i64 > header.last_offset_delta as i64 + 1 {
        return Err(BatchError::InvalidRecordCount { records_count: header.records_count, last_offset_delta: header.last_offset_delta });
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
/// A producer's batch has one record per offset of its range.
pub fn split_validated(records: &Bytes, max_message_bytes: usize) -> Result<Vec<IncomingBatch>, BatchError> {
    let batches = split_stored(records, max_message_bytes)?;
    for b in &batches {
        if b.header.records_count as i64 != b.header.last_offset_delta as i64 + 1 {
            return Err(BatchError::InvalidRecordCount { records_count: b.header.records_count, last_offset_delta: b.header.last_offset_delta });
        }
    }
    Ok(batches)
}

/// Like [`split_validated`] for batches a log already holds (a leader's
/// batches on a follower): cleaned batches may have offset gaps.
pub fn split_stored(records: &Bytes, max_message_bytes: usize) -> Result<Vec<IncomingBatch>, BatchError> {
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
    let decoded = decode_records(batch)?;
    Ok(decoded.records.iter().map(|r| RecordPosition { offset: r.offset, timestamp: r.timestamp }).collect())
}

/// One record, fully decoded. Exact: a null key or value stays distinct from
/// an empty one, and header order and duplicate header keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// The timestamp a consumer sees: the record's own, or the batch's
    /// broker time for `LogAppendTime` batches.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// A record header. Kafka header keys are strings; values may be null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// A batch's header with its records decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

/// The batch-level fields [`encode_batch`] needs: everything in the header
/// except what it computes (length, CRC, record count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFields {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// Written as given except the compression bits, which name the codec
    /// the batch is encoded with.
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl From<&BatchHeader> for BatchFields {
    fn from(h: &BatchHeader) -> Self {
        BatchFields {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            attributes: h.attributes,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        }
    }
}

fn undecodable(reason: impl Into<String>) -> BatchError {
    BatchError::Undecodable { reason: reason.into() }
}

/// The records section of a batch, decompressed.
fn records_section(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, BatchError> {
    use bytes::Buf;
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let mut section = batch.slice(HEADER_LEN..header.total_len());
    // kafka-protocol's decompressors hand the plain bytes to a callback.
    let take = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(b.copy_to_bytes(b.remaining())) };
    let out = match header.compression_codec() {
        0 => return Ok(section),
        1 => Gzip::decompress(&mut section, take),
        2 => Snappy::decompress(&mut section, take),
        3 => Lz4::decompress(&mut section, take),
        4 => Zstd::decompress(&mut section, take),
        codec => return Err(undecodable(format!("unknown compression codec {codec}"))),
    };
    out.map_err(|e| undecodable(format!("cannot decompress records: {e:#}")))
}

/// A cursor over a records section with Kafka's zigzag varints.
struct Reader {
    buf: Bytes,
    at: usize,
}

impl Reader {
    fn byte(&mut self) -> Result<u8, BatchError> {
        let b = *self.buf.get(self.at).ok_or_else(|| undecodable("record runs past the end of the batch"))?;
        self.at += 1;
        Ok(b)
    }
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(undecodable("varint is too long"))
    }
    fn varint(&mut self) -> Result<i32, BatchError> {
        i32::try_from(self.varlong()?).map_err(|_| undecodable("varint out of range"))
    }
    /// A length-prefixed byte string; length -1 is null.
    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, BatchError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        let end = self.at.checked_add(len as usize).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| undecodable("record field runs past the end of the batch"))?;
        let out = self.buf.slice(self.at..end);
        self.at = end;
        Ok(Some(out))
    }
}

/// Decodes every record of one whole batch, decompressing as needed.
pub fn decode_records(batch: &Bytes) -> Result<DecodedBatch, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() < header.total_len() {
        return Err(BatchError::Truncated { needed: header.total_len(), available: batch.len() });
    }
    let mut reader = Reader { buf: records_section(batch, &header)?, at: 0 };
    let count = usize::try_from(header.records_count).map_err(|_| undecodable("negative record count"))?;
    // Every record takes at least 7 bytes: never trust the count for an allocation.
    let mut records = Vec::with_capacity(count.min(reader.buf.len() / 7 + 1));
    for _ in 0..count {
        let length = reader.varint()?;
        let end = usize::try_from(length).ok().and_then(|l| reader.at.checked_add(l));
        let end = end.filter(|&e| e <= reader.buf.len()).ok_or_else(|| undecodable("record length runs past the end of the batch"))?;
        let _attributes = reader.byte()?;
        let timestamp_delta = reader.varlong()?;
        let offset_delta = reader.varint()?;
        let key = reader.nullable_bytes()?;
        let value = reader.nullable_bytes()?;
        let header_count = usize::try_from(reader.varint()?).map_err(|_| undecodable("negative header count"))?;
        let mut headers = Vec::with_capacity(header_count.min(end.saturating_sub(reader.at)));
        for _ in 0..header_count {
            let key = reader.nullable_bytes()?.ok_or_else(|| undecodable("a header key is null"))?;
            let value = reader.nullable_bytes()?;
            headers.push(Header { key, value });
        }
        if reader.at != end {
            return Err(undecodable("record length does not match its fields"));
        }
        let timestamp = if header.is_log_append_time() { header.max_timestamp } else { header.base_timestamp.wrapping_add(timestamp_delta) };
        let offset = header.base_offset.checked_add(i64::from(offset_delta)).ok_or_else(|| undecodable("a record's offset overflows"))?;
        records.push(Record { offset, timestamp, key, value, headers });
    }
    Ok(DecodedBatch { header, records })
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn put_nullable_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A record batch compression codec: the attribute's low three bits, and
/// the values of `compression.type` other than `producer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec a `compression.type` value names; `None` for `producer`
    /// (keep the producer's codec) and for unknown values.
    pub fn from_topic_config(value: &str) -> Option<Codec> {
        match value {
            "uncompressed" => Some(Codec::None),
            "gzip" => Some(Codec::Gzip),
            "snappy" => Some(Codec::Snappy),
            "lz4" => Some(Codec::Lz4),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }
    /// The attribute bits of this codec.
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
    /// The codec with these attribute bits.
    pub fn from_id(id: i16) -> Option<Codec> {
        [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd].into_iter().find(|c| c.id() == id)
    }

    fn compress(self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        // kafka-protocol's compressors ask a callback for the plain bytes.
        let put = |b: &mut BytesMut| -> anyhow::Result<()> {
            b.extend_from_slice(plain);
            Ok(())
        };
        let done = match self {
            Codec::None => {
                out.extend_from_slice(plain);
                Ok(())
            }
            Codec::Gzip => <Gzip as Compressor<Vec<u8>>>::compress(out, put),
            Codec::Snappy => <Snappy as Compressor<Vec<u8>>>::compress(out, put),
            Codec::Lz4 => <Lz4 as Compressor<Vec<u8>>>::compress(out, put),
            Codec::Zstd => <Zstd as Compressor<Vec<u8>>>::compress(out, put),
        };
        done.map_err(|e| BatchError::Undecodable { reason: format!("cannot compress records with {self:?}: {e:#}") })
    }
}

/// Rewrites a producer's batch with `codec` (a topic's `compression.type`),
/// keeping every record and header field: what a leader does on append when
/// the producer's codec differs from the topic's. The result's CRC is new.
pub fn recompress(batch: &Bytes, codec: Codec) -> Result<Bytes, BatchError> {
    let decoded = decode_records(batch)?;
    let mut fields = BatchFields::from(&decoded.header);
    fields.attributes = (fields.attributes & !COMPRESSION_MASK) | codec.id();
    encode_batch_with(&fields, &decoded.records, codec)
}

/// Marks a batch's fields with a tombstone delete horizon (KIP-534): the
/// base timestamp becomes the horizon and record timestamps stay exact,
/// since [`encode_batch_with`] stores them as deltas from it.
pub fn set_delete_horizon(fields: &mut BatchFields, horizon_ms: i64) {
    fields.attributes |= DELETE_HORIZON_FLAG;
    fields.base_timestamp = horizon_ms;
}

/// Encodes records as one uncompressed magic v2 batch with the given header
/// fields, computing its length, record count and CRC. Record offsets and
/// timestamps are stored as deltas from the batch's base offset and base timestamp.
pub fn encode_batch(fields: &BatchFields, records: &[Record]) -> Bytes {
    encode_batch_with(fields, records, Codec::None).expect("an uncompressed batch always encodes")
}

/// Encodes records as one magic v2 batch compressed with `codec` (the
/// attributes' codec bits are set from it), computing length, record count
/// and CRC. Offsets are deltas from the base offset, so a batch may hold
/// fewer records than its offset range (the cleaner's output).
pub fn encode_batch_with(fields: &BatchFields, records: &[Record], codec: Codec) -> Result<Bytes, BatchError> {
    let plain_len = records.iter().map(|r| 16 + r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len)).sum::<usize>();
    let mut plain = Vec::with_capacity(plain_len);
    let mut record = Vec::new();
    for r in records {
        record.clear();
        record.push(0); // record attributes: unused in magic v2
        put_varlong(&mut record, r.timestamp.wrapping_sub(fields.base_timestamp));
        put_varlong(&mut record, r.offset - fields.base_offset);
        put_nullable_bytes(&mut record, r.key.as_deref());
        put_nullable_bytes(&mut record, r.value.as_deref());
        put_varlong(&mut record, r.headers.len() as i64);
        for h in &r.headers {
            put_nullable_bytes(&mut record, Some(&h.key));
            put_nullable_bytes(&mut record, h.value.as_deref());
        }
        put_varlong(&mut plain, record.len() as i64);
        plain.extend_from_slice(&record);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len());
    out.resize(HEADER_LEN, 0);
    codec.compress(&plain, &mut out)?;
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[0..8].copy_from_slice(&fields.base_offset.to_be_bytes());
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4].copy_from_slice(&fields.partition_leader_epoch.to_be_bytes());
    out[MAGIC_AT] = 2;
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&((fields.attributes & !COMPRESSION_MASK) | codec.id()).to_be_bytes());
    out[23..27].copy_from_slice(&fields.last_offset_delta.to_be_bytes());
    out[27..35].copy_from_slice(&fields.base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&fields.max_timestamp.to_be_bytes());
    out[43..51].copy_from_slice(&fields.producer_id.to_be_bytes());
    out[51..53].copy_from_slice(&fields.producer_epoch.to_be_bytes());
    out[53..57].copy_from_slice(&fields.base_sequence.to_be_bytes());
    out[57..61].copy_from_slice(&(records.len() as i32).to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(out))
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
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let fields = BatchFields {
        base_offset: 0,
        partition_leader_epoch: 0,
        attributes: 0,
        last_offset_delta: records.len() as i32 - 1,
        base_timestamp: timestamp,
        max_timestamp: timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record { offset: i as i64, timestamp, key: Some(key.clone()), value: value.clone(), headers: Vec::new() })
        .collect();
    Ok(encode_batch(&fields, &records))
}

/// Decodes every record of the batches in `batches` (as a log read returns
/// them), decompressing as needed. Control batches are skipped.
pub fn decode_key_values(batches: &Bytes) -> Result<Vec<KeyValue>, BatchError> {
    let mut buf = batches.clone();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let header = BatchHeader::parse(&buf)?;
        let len = header.total_len();
        if len > buf.len() {
            return Err(BatchError::Truncated { needed: len, available: buf.len() });
        }
        let one = buf.split_to(len);
        if header.is_control() {
            continue;
        }
        let decoded = decode_records(&one)?;
        out.extend(decoded.records.into_iter().map(|r| KeyValue { offset: r.offset, key: r.key, value: r.value }));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Compression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    use proptest::prelude::*;

    /// Builds a real batch with kafka-protocol's encoder (a client's view).
    pub(crate) fn make_batch(n: usize, ts0: i64, compression: Compression) -> Bytes {
        make_idempotent_batch(n, ts0, compression, -1, -1, -1)
    }

    pub(crate) fn make_idempotent_batch(n: usize, ts0: i64, compression: Compression, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Bytes {
        let records: Vec<WireRecord> = (0..n)
            .map(|i| WireRecord {
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
                headers: [(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")))].into_iter().collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).expect("encode");
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

    /// Found by the record_batches fuzz target (fuzz/fuzz_targets/record_batches.rs)
    /// in 90 s: a base offset near i64::MIN plus a negative offset delta
    /// overflowed the record's offset.
    #[test]
    fn a_record_offset_that_overflows_is_undecodable() {
        const CRASH: [u8; 93] = [
            0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x51, 0x00, 0x01, 0x07, 0x00, 0x02, 0xd9, 0x92, 0xb8, 0x6b, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x02, 0x3b, 0x00, 0x6b, 0x00, 0x5d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xa2, 0x3b, 0x6b, 0x60, 0xd8, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x03, 0x12, 0x00, 0x0c, 0x01, 0x06, 0x01, 0x6f, 0x6e, 0x65, 0x00, 0x12,
            0x00, 0x00, 0x74, 0x06, 0x6f, 0x01, 0x02, 0x91, 0xff, 0xe9, 0xff, 0x00, 0x04, 0x00, 0x0a, 0x74, 0x68, 0x72, 0x65, 0x65, 0x00,
        ];
        let err = decode_records(&Bytes::from_static(&CRASH)).unwrap_err();
        assert!(matches!(&err, BatchError::Undecodable { reason } if reason.contains("overflows")), "{err:?}");
        // The same through a real batch: its second record at base offset i64::MAX.
        let batch = stamp(&make_batch(2, 1_000, Compression::None), i64::MAX, 0, None);
        assert!(matches!(decode_records(&batch), Err(BatchError::Undecodable { .. })));
        assert!(record_positions(&batch).is_err());
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

    /// A record flattened for comparison: offset, timestamp, key, value, headers.
    type FlatRecord = (i64, i64, Option<Bytes>, Option<Bytes>, Vec<(String, Option<Bytes>)>);
    /// A generated record: key, value, headers, timestamp delta.
    type ArbitraryRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>, i64);

    /// Records as a third-party encoder sees them, for cross-checking.
    fn third_party_records(batch: &Bytes) -> Vec<FlatRecord> {
        let mut buf = batch.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).expect("third-party decode");
        set.records.into_iter().map(|r| (r.offset, r.timestamp, r.key, r.value, r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect())).collect()
    }

    fn ours(decoded: &DecodedBatch) -> Vec<FlatRecord> {
        decoded
            .records
            .iter()
            .map(|r| {
                let headers = r.headers.iter().map(|h| (String::from_utf8(h.key.to_vec()).unwrap(), h.value.clone())).collect();
                (r.offset, r.timestamp, r.key.clone(), r.value.clone(), headers)
            })
            .collect()
    }

    #[test]
    fn decodes_every_codec_like_a_third_party_decoder() {
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let batch = stamp(&make_idempotent_batch(25, 7_000, compression, 42, 3, 100), 500, 2, None);
            let decoded = decode_records(&batch).unwrap();
            assert_eq!(decoded.header.base_offset, 500);
            assert_eq!(ours(&decoded), third_party_records(&batch), "{compression:?}");
        }
    }

    #[test]
    fn rebuilt_batches_keep_every_field_but_compression() {
        for compression in [Compression::None, Compression::Zstd] {
            let original = stamp(&make_idempotent_batch(10, 9_000, compression, 42, 3, 100), 500, 2, None);
            let decoded = decode_records(&original).unwrap();
            let rebuilt = encode_batch(&BatchFields::from(&decoded.header), &decoded.records);
            let header = validate(&rebuilt).expect("a valid batch with a correct CRC");
            let o = decoded.header;
            assert_eq!(
                (header.base_offset, header.partition_leader_epoch, header.last_offset_delta, header.base_timestamp, header.max_timestamp),
                (o.base_offset, o.partition_leader_epoch, o.last_offset_delta, o.base_timestamp, o.max_timestamp)
            );
            assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (42, 3, 100));
            assert_eq!(header.compression_codec(), 0);
            assert_eq!(third_party_records(&rebuilt), third_party_records(&original));
        }
    }

    #[test]
    fn recompression_keeps_every_record_in_any_codec() {
        let codecs = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
        for from in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let original = stamp(&make_idempotent_batch(12, 4_000, from, 7, 1, 30), 200, 3, None);
            for codec in codecs {
                let rewritten = recompress(&original, codec).unwrap();
                let header = validate(&rewritten).expect("valid, CRC recomputed");
                assert_eq!(header.compression_codec(), codec.id());
                assert_eq!((header.producer_id, header.base_sequence, header.last_offset_delta), (7, 30, 11));
                assert_eq!(third_party_records(&rewritten), third_party_records(&original), "{from:?} -> {codec:?}");
                assert!(split_validated(&rewritten, 1 << 20).is_ok());
            }
        }
        assert_eq!(Codec::from_topic_config("zstd"), Some(Codec::Zstd));
        assert_eq!(Codec::from_topic_config("producer"), None);
    }

    #[test]
    fn a_batch_with_offset_gaps_is_stored_but_not_produced() {
        let original = stamp(&make_batch(5, 100, Compression::None), 10, 0, None);
        let decoded = decode_records(&original).unwrap();
        let kept: Vec<Record> = decoded.records.iter().filter(|r| r.offset % 2 == 0).cloned().collect();
        let mut fields = BatchFields::from(&decoded.header);
        set_delete_horizon(&mut fields, 9_999);
        let cleaned = encode_batch_with(&fields, &kept, Codec::Lz4).unwrap();
        let header = validate(&cleaned).expect("gaps are valid in a stored batch");
        assert_eq!((header.base_offset, header.last_offset(), header.records_count), (10, 14, 3));
        assert_eq!(header.delete_horizon_ms(), Some(9_999));
        let back = decode_records(&cleaned).unwrap().records;
        assert_eq!(back, kept, "offsets and timestamps survive a new base timestamp");
        assert!(split_stored(&cleaned, 1 << 20).is_ok());
        assert!(matches!(split_validated(&cleaned, 1 << 20), Err(BatchError::InvalidRecordCount { .. })));
    }

    #[test]
    fn log_append_time_batches_show_the_broker_time() {
        let batch = stamp(&make_batch(3, 10, Compression::Gzip), 0, 0, Some(55_555));
        let decoded = decode_records(&batch).unwrap();
        assert!(decoded.records.iter().all(|r| r.timestamp == 55_555));
        let rebuilt = encode_batch(&BatchFields::from(&decoded.header), &decoded.records);
        assert_eq!(decode_records(&rebuilt).unwrap().records, decoded.records);
    }

    fn arbitrary_record() -> impl Strategy<Value = ArbitraryRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec((proptest::collection::vec(b'a'..=b'z', 0..5), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..5))), 0..4),
            -1_000_000i64..1_000_000,
        )
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_exact(rows in proptest::collection::vec(arbitrary_record(), 1..20), base in 0i64..1 << 40, ts0 in 0i64..1 << 41) {
            let records: Vec<Record> = rows
                .into_iter()
                .enumerate()
                .map(|(i, (k, v, h, dt))| Record {
                    offset: base + 2 * i as i64, // gaps, as after compaction
                    timestamp: ts0 + dt,
                    key: k.map(Bytes::from),
                    value: v.map(Bytes::from),
                    headers: h.into_iter().map(|(k, v)| Header { key: Bytes::from(k), value: v.map(Bytes::from) }).collect(),
                })
                .collect();
            let fields = BatchFields {
                base_offset: base,
                partition_leader_epoch: 1,
                attributes: 0,
                last_offset_delta: (records.last().unwrap().offset - base) as i32,
                base_timestamp: ts0,
                max_timestamp: records.iter().map(|r| r.timestamp).max().unwrap(),
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            };
            let batch = encode_batch(&fields, &records);
            prop_assert!(BatchHeader::parse(&batch).is_ok());
            let decoded = decode_records(&batch).unwrap();
            prop_assert_eq!(decoded.records, records);
        }

        #[test]
        fn decoding_arbitrary_records_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256), count in 0i32..1000) {
            let mut batch = vec![0u8; HEADER_LEN];
            batch.extend_from_slice(&data);
            let len = (batch.len() - LOG_OVERHEAD) as i32;
            batch[8..12].copy_from_slice(&len.to_be_bytes());
            batch[MAGIC_AT] = 2;
            batch[57..61].copy_from_slice(&count.to_be_bytes());
            let _ = decode_records(&Bytes::from(batch));
        }
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
