//! The record batch decoder (`silt_tiering::batch`, the one place Silt parses
//! batches) for every codec: none, gzip, snappy, lz4 and zstd. The input is a
//! run of batches as a producer sends them or a segment stores them. It is
//! decoded as it is, and again with every batch's CRC made right, so that
//! mutations get past the CRC check into the decompressors and the record
//! decoder. Seeds: batches of each codec from real clients, cut out of a
//! broker's segments by `fuzz/seed`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use silt_tiering::batch;

/// The default `max.message.bytes`.
const MESSAGE_MAX_BYTES: usize = 1_048_588;
/// Where a batch's CRC sits (see the layout in `silt_tiering::batch`).
const CRC_AT: usize = 17;

fuzz_target!(|data: &[u8]| {
    decode(&Bytes::copy_from_slice(data));
    decode(&with_right_crcs(data));
});

fn decode(bytes: &Bytes) {
    let _ = batch::count_records(bytes);
    let _ = batch::decode_records(bytes);
    let Ok(batches) = batch::split_validated(bytes, MESSAGE_MAX_BYTES) else { return };
    for b in &batches {
        if let Ok(decoded) = batch::decode_records(&b.bytes) {
            assert_eq!(decoded.header, b.header, "the decoder reads the header the validator checked");
        }
        let _ = batch::record_positions(&b.bytes);
    }
}

fn with_right_crcs(data: &[u8]) -> Bytes {
    let mut out = data.to_vec();
    let mut at = 0usize;
    while out.len().saturating_sub(at) >= batch::HEADER_LEN {
        let length = i32::from_be_bytes([out[at + 8], out[at + 9], out[at + 10], out[at + 11]]);
        let Ok(length) = usize::try_from(length) else { break };
        let end = (at + batch::LOG_OVERHEAD).saturating_add(length).min(out.len());
        if end < at + batch::HEADER_LEN {
            break;
        }
        let crc = batch::compute_crc(&out[at..end]);
        out[at + CRC_AT..at + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    Bytes::from(out)
}
