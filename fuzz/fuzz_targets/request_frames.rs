//! Request framing and request header decoding: the bytes a client sends on
//! one connection, cut into frames by the listener's length-prefix check
//! (`server::frame_size`) and parsed up to the body (`protocol::parse_frame`),
//! as `server::connection` does. Seeds: whole client connections captured by
//! `fuzz/capture.py`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use silt::protocol::{self, Outcome};
use silt::server::frame_size;

/// The default `kafka.socket_request_max_bytes`.
const REQUEST_MAX_BYTES: u32 = 104_857_600;

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    while rest.len() >= 4 {
        let Ok(size) = frame_size([rest[0], rest[1], rest[2], rest[3]], REQUEST_MAX_BYTES) else { return };
        // A short read: the listener waits for the rest, or the client went away.
        let Some(end) = size.checked_add(4).filter(|&end| end <= rest.len()) else { return };
        let frame = rest.slice(4..end);
        rest = rest.slice(end..);
        match protocol::parse_frame(frame) {
            Ok(parsed) => {
                // The header decoder and the fixed fields read before it must agree.
                assert_eq!(parsed.header.request_api_key, parsed.api as i16);
                assert_eq!(parsed.header.request_api_version, parsed.version);
                assert_eq!(parsed.header.correlation_id, parsed.correlation_id);
            }
            Err(Outcome::Close { .. }) => return,
            // An answer instead of the request (ApiVersions of an unknown version): the connection goes on.
            Err(_) => {}
        }
    }
});
