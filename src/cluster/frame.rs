//! The node-to-node frame: `[length: u32 BE][version: u8][JSON payload]`,
//! `length` counting the version byte and the payload.
//!
//! JSON (not a binary format) because the metadata log already stores its
//! entries as JSON and the traffic is small: Raft entries of metadata records,
//! heartbeats every two seconds. The version byte lets a later format be told
//! apart instead of misread; a frame with another version closes the
//! connection. The length is checked against [`FRAME_BYTES_MAX`] before any
//! buffer is allocated, and the body is read as it arrives, so a peer that
//! announces a huge frame or stalls holds no memory.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The format this node writes and reads.
pub const FRAME_VERSION: u8 = 1;

/// The largest frame accepted or sent: 64 MiB, the metadata log's own frame
/// limit. A snapshot chunk (openraft's default is 3 MiB of bytes, about
/// 11 MiB as a JSON array) fits with room.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// The most a body read grows its buffer before more bytes arrive.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a frame could not be read or written. Every variant ends the
/// connection it happened on; none ends the node.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("a frame of {length} bytes is over the limit of {max} bytes")]
    TooLarge { length: usize, max: usize },
    #[error("an empty frame (no version byte)")]
    Empty,
    #[error("frame version {0} is not supported (this node speaks version {FRAME_VERSION})")]
    Version(u8),
    #[error("the frame's payload does not decode: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("the message does not encode: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `message` as one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; 5];
    frame[4] = FRAME_VERSION;
    serde_json::to_writer(&mut frame, message).map_err(FrameError::Encode)?;
    let length = frame.len() - 4;
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { length, max: FRAME_BYTES_MAX });
    }
    frame[..4].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(frame)
}

/// The body length a frame header announces, checked against the limit.
pub fn body_length(header: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(header) as usize;
    if length > max {
        return Err(FrameError::TooLarge { length, max });
    }
    if length == 0 {
        return Err(FrameError::Empty);
    }
    Ok(length)
}

/// Decodes a frame body (version byte and payload).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (&version, payload) = body.split_first().ok_or(FrameError::Empty)?;
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    serde_json::from_slice(payload).map_err(FrameError::Decode)
}

/// Reads one frame. A connection closed before the first header byte is
/// [`FrameError::Closed`]; closed anywhere else it is an I/O error.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    let first = reader.read(&mut header).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut header[first..]).await?;
    let length = body_length(header, max)?;
    let mut body = Vec::with_capacity(length.min(READ_CHUNK_BYTES));
    while body.len() < length {
        let want = (length - body.len()).min(READ_CHUNK_BYTES);
        let read = (&mut *reader).take(want as u64).read_to_end(&mut body).await?;
        if read == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    decode_body(&body)
}

/// Writes one encoded frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    writer.write_all(frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Message {
        id: u64,
        text: String,
        bytes: Vec<u8>,
    }

    fn read<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, FrameError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut reader = bytes;
            read_frame(&mut reader, max).await
        })
    }

    #[test]
    fn a_frame_round_trips() {
        let message = Message { id: 7, text: "hello".into(), bytes: vec![1, 2, 3] };
        let frame = encode(&message).unwrap();
        assert_eq!(frame[4], FRAME_VERSION);
        assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(read::<Message>(&frame, FRAME_BYTES_MAX).unwrap(), message);
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(read::<Message>(&[], FRAME_BYTES_MAX), Err(FrameError::Closed)));
        assert!(matches!(read::<Message>(&[0, 0], FRAME_BYTES_MAX), Err(FrameError::Io(_))), "a torn header");
        assert!(matches!(read::<Message>(&[0, 0, 0, 0], FRAME_BYTES_MAX), Err(FrameError::Empty)));
        assert!(matches!(read::<Message>(&[0, 0, 0, 3, FRAME_VERSION, b'{'], FRAME_BYTES_MAX), Err(FrameError::Io(_))), "a torn body");
        assert!(matches!(read::<Message>(&[0, 0, 0, 3, 9, b'{', b'}'], FRAME_BYTES_MAX), Err(FrameError::Version(9))));
        assert!(matches!(read::<Message>(&[0, 0, 0, 3, FRAME_VERSION, b'{', b'}'], FRAME_BYTES_MAX), Err(FrameError::Decode(_))), "missing fields");
        let mut frame = encode(&Message { id: 1, text: String::new(), bytes: vec![0; 100] }).unwrap();
        assert!(matches!(read::<Message>(&frame, 50), Err(FrameError::TooLarge { max: 50, .. })));
        frame[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read::<Message>(&frame, FRAME_BYTES_MAX), Err(FrameError::TooLarge { .. })), "no allocation for a hostile length");
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_message_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = read::<Message>(&bytes, 32);
        }

        #[test]
        fn any_message_round_trips(id in any::<u64>(), text in ".{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let message = Message { id, text, bytes };
            let frame = encode(&message).unwrap();
            prop_assert_eq!(read::<Message>(&frame, FRAME_BYTES_MAX).unwrap(), message);
        }

        #[test]
        fn a_corrupted_frame_never_panics(id in any::<u64>(), flip in 0usize..64, value in any::<u8>()) {
            let mut frame = encode(&Message { id, text: "x".into(), bytes: vec![1; 8] }).unwrap();
            let at = flip % frame.len();
            frame[at] = value;
            let _ = read::<Message>(&frame, 1024);
        }
    }
}
