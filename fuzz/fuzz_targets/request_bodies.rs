//! Every request body Silt decodes: one request frame (without its length
//! prefix) whose API key and version come from the input, parsed and decoded
//! by `protocol::parse_frame` and `protocol::decode_body`, the decoder behind
//! the listener's dispatch. The record batches of a Produce request go on to
//! the batch decoder, as the produce path sends them. Seeds: single frames
//! captured from real clients by `fuzz/capture.py`.
#![no_main]

use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;
use silt::protocol;
use silt_tiering::batch;

/// The default `max.message.bytes`.
const MESSAGE_MAX_BYTES: usize = 1_048_588;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = protocol::parse_frame(bytes::Bytes::copy_from_slice(data)) else { return };
    let Ok(request) = protocol::decode_body(&parsed) else { return };
    if let RequestKind::Produce(produce) = request {
        for topic in &produce.topic_data {
            for partition in &topic.partition_data {
                let Some(records) = &partition.records else { continue };
                let Ok(batches) = batch::split_validated(records, MESSAGE_MAX_BYTES) else { continue };
                for b in &batches {
                    let _ = batch::decode_records(&b.bytes);
                }
            }
        }
    }
});
