//! One asynchronous Kafka connection from a follower to its leader's
//! listener: request framing and version picking are the raw load
//! generator's (`perf::raw::wire`), the I/O is tokio's so that a fetcher is a
//! task, not a thread. Requests go one at a time: a fetcher waits for each
//! answer before it sends the next (Kafka's replica fetchers do the same).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ReplicationError;
use crate::perf::raw::wire::{encode_request, Versions};

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an answer may take beyond the fetch's own long-poll wait.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response frame accepted (Kafka's `replica.fetch.response.max.bytes` is 10 MiB).
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// A connection to a leader's Kafka listener.
pub struct LeaderConnection {
    stream: TcpStream,
    addr: String,
    pub versions: Versions,
    next_correlation_id: i32,
}

impl LeaderConnection {
    /// Connects and learns the leader's API versions.
    pub async fn open(addr: &str) -> Result<LeaderConnection, ReplicationError> {
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
        let stream = match connecting {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(ReplicationError::Connect { addr: addr.to_owned(), source }),
            Err(_) => return Err(ReplicationError::Timeout { addr: addr.to_owned() }),
        };
        stream.set_nodelay(true).map_err(|source| ReplicationError::Io { addr: addr.to_owned(), source })?;
        let mut conn = LeaderConnection { stream, addr: addr.to_owned(), versions: Versions::default(), next_correlation_id: 0 };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("silt-replica-fetcher"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = conn.call(&request, 3).await?;
        if response.error_code != 0 {
            return Err(ReplicationError::Protocol(format!("{addr} answered ApiVersions with error code {}", response.error_code)));
        }
        conn.versions = Versions::from_response(&response);
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `R` both sides speak, at most `cap`.
    pub fn pick<R: Request>(&self, cap: i16) -> Result<i16, ReplicationError> {
        self.versions.pick::<R>(cap).map_err(|e| ReplicationError::Protocol(format!("{}: {e}", self.addr)))
    }

    /// Sends one request and waits for its answer (within [`RESPONSE_TIMEOUT`]
    /// plus `extra_wait`, the request's own long-poll time).
    pub async fn call_waiting<R: Request>(&mut self, request: &R, version: i16, extra_wait: Duration) -> Result<R::Response, ReplicationError> {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(request, version, id).map_err(|e| ReplicationError::Codec(format!("encoding API {} v{version}: {e}", R::KEY)))?;
        let exchange = async {
            self.stream.write_all(&frame).await.map_err(|source| ReplicationError::Io { addr: self.addr.clone(), source })?;
            self.receive().await
        };
        let mut body = match tokio::time::timeout(RESPONSE_TIMEOUT + extra_wait, exchange).await {
            Ok(body) => body?,
            Err(_) => return Err(ReplicationError::Timeout { addr: self.addr.clone() }),
        };
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| ReplicationError::Codec(format!("decoding a response header from {}: {e}", self.addr)))?;
        if header.correlation_id != id {
            return Err(ReplicationError::Protocol(format!("{} answered correlation id {} where {id} was due", self.addr, header.correlation_id)));
        }
        R::Response::decode(&mut body, version).map_err(|e| ReplicationError::Codec(format!("decoding API {} v{version} from {}: {e}", R::KEY, self.addr)))
    }

    pub async fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, ReplicationError> {
        self.call_waiting(request, version, Duration::ZERO).await
    }

    /// Reads one length-prefixed response frame.
    async fn receive(&mut self) -> Result<Bytes, ReplicationError> {
        let len = self.stream.read_i32().await.map_err(|source| ReplicationError::Io { addr: self.addr.clone(), source })?;
        let Some(len) = usize::try_from(len).ok().filter(|&l| l <= RESPONSE_BYTES_MAX) else {
            return Err(ReplicationError::Protocol(format!("{} sent a response frame of bad length {len}", self.addr)));
        };
        let mut buf = BytesMut::zeroed(len);
        self.stream.read_exact(&mut buf).await.map_err(|source| ReplicationError::Io { addr: self.addr.clone(), source })?;
        Ok(buf.freeze())
    }
}
