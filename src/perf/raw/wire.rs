//! One blocking Kafka connection of the raw load generator: request framing
//! with kafka-protocol's types, version negotiation (ApiVersions) and the
//! pre-encoded frames the raw producer sends again and again.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// The client id every raw request carries.
const CLIENT_ID: &str = "silt-perf-raw";
/// Longest a response may take before the run fails (a produce request's own
/// timeout is 30 s; a broker that says nothing for longer is stuck).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response frame accepted (Kafka's `fetch.max.bytes` is 55 MiB).
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Where the correlation id sits in a request frame: after the length
/// prefix, the API key and the API version.
const CORRELATION_ID_AT: usize = 8;
/// Bytes of a request frame up to and including its correlation id.
pub const FRAME_PREFIX_LEN: usize = CORRELATION_ID_AT + 4;
/// UNSUPPORTED_VERSION: an ApiVersions answer in the v0 format (KIP-511).
const UNSUPPORTED_VERSION: i16 = 35;

/// The API versions a broker serves, from its ApiVersions answer.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    ranges: Vec<(i16, i16, i16)>,
}

impl Versions {
    pub fn from_response(response: &ApiVersionsResponse) -> Versions {
        Versions { ranges: response.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect() }
    }

    /// The highest version of `R` that the broker serves, this client
    /// encodes, and is at most `cap` (later versions name topics by id).
    pub fn pick<R: Request>(&self, cap: i16) -> anyhow::Result<i16> {
        let api = ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown API key {}", R::KEY))?;
        let Some(&(_, broker_min, broker_max)) = self.ranges.iter().find(|(key, _, _)| *key == R::KEY) else {
            bail!("the broker does not serve {api:?}");
        };
        let ours = R::VERSIONS;
        let version = broker_max.min(ours.max).min(cap);
        if version < broker_min.max(ours.min) {
            bail!("no {api:?} version in common: the broker serves v{broker_min}..=v{broker_max}, this client v{}..=v{}", ours.min, ours.max.min(cap));
        }
        Ok(version)
    }
}

/// Encodes a whole request frame: length prefix, request header, body.
pub fn encode_request<R: Request>(request: &R, version: i16, correlation_id: i32) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut buf, R::header_version(version))?;
    request.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4).context("request too large")?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// A connection to one broker. Responses arrive in request order (Kafka's
/// rule), so a pipelined sender matches them by position and checks the
/// correlation id.
pub struct Connection {
    stream: TcpStream,
    pub addr: String,
    pub versions: Versions,
    next_correlation_id: i32,
    /// Where responses are read: reused once the previous response's bytes
    /// are dropped, so a large fetch answer does not cost a fresh allocation.
    read_buf: BytesMut,
}

impl Connection {
    /// Connects and learns the broker's API versions.
    pub fn open(addr: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        // Requests are whole frames written at once; never hold a tail back.
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).context("setting a read timeout")?;
        stream.set_write_timeout(Some(RESPONSE_TIMEOUT)).context("setting a write timeout")?;
        let mut conn = Connection { stream, addr: addr.to_owned(), versions: Versions::default(), next_correlation_id: 0, read_buf: BytesMut::new() };
        conn.versions = conn.api_versions().with_context(|| format!("asking {addr} for its API versions"))?;
        Ok(conn)
    }

    /// A fresh correlation id.
    pub fn correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    fn api_versions(&mut self) -> anyhow::Result<Versions> {
        // v3 names the client; a broker that does not know v3 answers in the
        // v0 format with UNSUPPORTED_VERSION and its list (KIP-511).
        let version = 3;
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let id = self.correlation_id();
        self.send(&encode_request(&request, version, id)?)?;
        let mut body = self.receive(id, ApiVersionsResponse::header_version(version))?;
        let error_code = body.get(0..2).map(|b| i16::from_be_bytes([b[0], b[1]]));
        let answered_in = if error_code == Some(UNSUPPORTED_VERSION) { 0 } else { version };
        let response = ApiVersionsResponse::decode(&mut body, answered_in).context("decoding ApiVersions")?;
        if response.error_code != 0 && response.api_keys.is_empty() {
            bail!("ApiVersions failed with error code {}", response.error_code);
        }
        Ok(Versions::from_response(&response))
    }

    /// Sends one request and waits for its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        let id = self.correlation_id();
        self.send(&encode_request(request, version, id)?)?;
        let mut body = self.receive(id, R::Response::header_version(version))?;
        R::Response::decode(&mut body, version).with_context(|| format!("decoding the answer to API {} v{version}", R::KEY))
    }

    /// Writes a whole frame.
    pub fn send(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(frame).with_context(|| format!("writing a request to {}", self.addr))
    }

    /// Writes a pre-encoded frame with `correlation_id` in place of its own,
    /// without copying the frame: the patched prefix and the rest go out in
    /// one vectored write.
    pub fn send_with_id(&mut self, frame: &[u8], correlation_id: i32) -> anyhow::Result<()> {
        if frame.len() < FRAME_PREFIX_LEN {
            bail!("a {}-byte frame has no request header", frame.len());
        }
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        prefix.copy_from_slice(&frame[..FRAME_PREFIX_LEN]);
        prefix[CORRELATION_ID_AT..].copy_from_slice(&correlation_id.to_be_bytes());
        let mut slices = [IoSlice::new(&prefix), IoSlice::new(&frame[FRAME_PREFIX_LEN..])];
        let mut slices: &mut [IoSlice<'_>] = &mut slices;
        while !slices.is_empty() {
            let written = self.stream.write_vectored(slices).with_context(|| format!("writing a request to {}", self.addr))?;
            if written == 0 {
                bail!("{} closed the connection", self.addr);
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }

    /// Reads the next response frame, checks that it answers
    /// `correlation_id`, and returns its body (after the response header).
    pub fn receive(&mut self, correlation_id: i32, header_version: i16) -> anyhow::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).with_context(|| format!("reading a response from {}", self.addr))?;
        let len = i32::from_be_bytes(len);
        let len = usize::try_from(len).ok().filter(|&l| l <= RESPONSE_BYTES_MAX);
        let Some(len) = len else { bail!("{} sent a response frame of bad length", self.addr) };
        self.read_buf.clear();
        self.read_buf.reserve(len);
        self.read_buf.resize(len, 0);
        self.stream.read_exact(&mut self.read_buf).with_context(|| format!("reading a {len}-byte response from {}", self.addr))?;
        let mut frame = self.read_buf.split().freeze();
        let header = ResponseHeader::decode(&mut frame, header_version).context("decoding a response header")?;
        if header.correlation_id != correlation_id {
            bail!("{} answered correlation id {} where {correlation_id} was due", self.addr, header.correlation_id);
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{FetchRequest, ProduceRequest};

    fn versions(entries: &[(ApiKey, i16, i16)]) -> Versions {
        let response = ApiVersionsResponse::default().with_api_keys(
            entries.iter().map(|&(key, min, max)| ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)).collect(),
        );
        Versions::from_response(&response)
    }

    #[test]
    fn picks_the_highest_common_version_under_the_cap() {
        let v = versions(&[(ApiKey::Produce, 3, 13), (ApiKey::Fetch, 4, 17)]);
        assert_eq!(v.pick::<ProduceRequest>(12).unwrap(), 12);
        assert_eq!(v.pick::<FetchRequest>(20).unwrap(), 17);
    }

    #[test]
    fn no_common_version_is_an_error() {
        let v = versions(&[(ApiKey::Produce, 13, 13)]);
        let err = v.pick::<ProduceRequest>(12).unwrap_err().to_string();
        assert!(err.contains("no Produce version in common"), "{err}");
        assert!(v.pick::<FetchRequest>(12).unwrap_err().to_string().contains("does not serve Fetch"));
    }

    /// A connection to a listener of this test, and the listener's side of it.
    fn pair() -> (Connection, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let conn = Connection { stream, addr: "test".into(), versions: Versions::default(), next_correlation_id: 0, read_buf: BytesMut::new() };
        (conn, peer)
    }

    #[test]
    fn a_pre_encoded_frame_goes_out_with_the_new_correlation_id() {
        let (mut conn, mut peer) = pair();
        let frame = encode_request(&FetchRequest::default(), 12, 0).unwrap();
        conn.send_with_id(&frame, 99).unwrap();
        let mut got = vec![0; frame.len()];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..CORRELATION_ID_AT], &frame[..CORRELATION_ID_AT]);
        assert_eq!(&got[CORRELATION_ID_AT..FRAME_PREFIX_LEN], &99i32.to_be_bytes());
        assert_eq!(&got[FRAME_PREFIX_LEN..], &frame[FRAME_PREFIX_LEN..]);
    }

    #[test]
    fn responses_are_matched_by_correlation_id() {
        let (mut conn, mut peer) = pair();
        for id in [5i32, 6] {
            let mut frame = 8i32.to_be_bytes().to_vec();
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(b"body");
            peer.write_all(&frame).unwrap();
        }
        let body = conn.receive(5, 0).unwrap();
        assert_eq!(&body[..], b"body");
        let err = conn.receive(7, 0).unwrap_err().to_string();
        assert!(err.contains("answered correlation id 6 where 7 was due"), "{err}");
    }

    #[test]
    fn frames_carry_their_length_and_correlation_id() {
        let frame = encode_request(&FetchRequest::default(), 12, 77).unwrap();
        assert_eq!(i32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(i16::from_be_bytes(frame[4..6].try_into().unwrap()), ApiKey::Fetch as i16);
        assert_eq!(i32::from_be_bytes(frame[CORRELATION_ID_AT..FRAME_PREFIX_LEN].try_into().unwrap()), 77);
    }
}
