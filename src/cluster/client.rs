//! The calling side of the node-to-node transport: one [`PeerClient`] per peer
//! address, shared by everything that calls that peer.
//!
//! A call takes an idle connection from the client's pool (or opens one), sends
//! one request frame and reads one response frame. Limits, each for a reason:
//! - at most `in_flight_max` calls per peer at once (a permit each), so a slow
//!   peer cannot collect unbounded requests, sockets or memory;
//! - every call has a deadline covering the wait for a permit, the connect and
//!   the exchange; a connection whose call failed or timed out is dropped, never
//!   reused, so a late answer can never be read as the next call's;
//! - a failed connect starts an exponential backoff (`backoff_min` doubling to
//!   `backoff_max`) during which calls fail at once as unreachable: openraft
//!   retries a dead voter on every heartbeat, and each retry must not cost a
//!   connect timeout;
//! - idle connections older than `idle_max` are closed rather than reused, so
//!   a call never races the server's idle timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use super::frame::{encode, read_frame, write_frame, FrameError, FRAME_BYTES_MAX};
use super::message::{Request, Response};

/// How peer clients connect and call.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// The deadline of a call whose caller gives none.
    pub call_timeout: Duration,
    /// Calls to one peer at once; the pool keeps at most this many idle connections.
    pub in_flight_max: usize,
    /// The first wait after a failed connect.
    pub backoff_min: Duration,
    /// The longest wait after repeated failed connects.
    pub backoff_max: Duration,
    /// Idle connections older than this are closed, not reused.
    pub idle_max: Duration,
    /// The largest response frame accepted.
    pub frame_bytes_max: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            in_flight_max: 8,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            idle_max: Duration::from_secs(30),
            frame_bytes_max: FRAME_BYTES_MAX,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {address}: {source}")]
    Unreachable { address: String, source: std::io::Error },
    #[error("{address} was unreachable moments ago; the next attempt is in {retry_in:?}")]
    BackingOff { address: String, retry_in: Duration },
    #[error("no answer from {address} within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("the connection to {address} failed: {source}")]
    Connection { address: String, source: FrameError },
    #[error("the request to {address} does not encode: {source}")]
    Encode { address: String, source: FrameError },
    #[error("{address} answered {got} to a {sent} request")]
    UnexpectedResponse { address: String, sent: &'static str, got: &'static str },
    #[error("{address} does not serve {request}: {reason}")]
    Unsupported { address: String, request: &'static str, reason: String },
}

impl CallError {
    /// The peer could not be reached at all: openraft should back off.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CallError::Unreachable { .. } | CallError::BackingOff { .. })
    }
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

/// Calls one peer. See the module docs for its limits.
#[derive(Debug)]
pub struct PeerClient {
    address: String,
    options: ClientOptions,
    permits: Semaphore,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    backoff: Mutex<Backoff>,
}

impl PeerClient {
    /// A client for `address` (`host:port`); it connects on the first call.
    pub fn new(address: String, options: ClientOptions) -> Self {
        let permits = Semaphore::new(options.in_flight_max.max(1));
        PeerClient { address, options, permits, idle: Mutex::new(Vec::new()), backoff: Mutex::new(Backoff::default()) }
    }

    /// The peer's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` and waits up to `timeout` (the default call timeout when
    /// `None`) for its response.
    pub async fn call(&self, request: &Request, timeout: Option<Duration>) -> Result<Response, CallError> {
        let timeout = timeout.unwrap_or(self.options.call_timeout);
        let deadline = Instant::now() + timeout;
        let frame = encode(request).map_err(|source| CallError::Encode { address: self.address.clone(), source })?;
        let timed_out = || CallError::Timeout { address: self.address.clone(), timeout };
        let _permit = timeout_at(deadline, self.permits.acquire()).await.map_err(|_| timed_out())?.map_err(|_| timed_out())?;
        let mut stream = match self.take_idle() {
            Some(stream) => stream,
            None => self.connect(deadline).await?,
        };
        let exchange = async {
            write_frame(&mut stream, &frame).await?;
            read_frame::<Response, _>(&mut stream, self.options.frame_bytes_max).await
        };
        match timeout_at(deadline, exchange).await {
            Err(_) => Err(timed_out()),
            Ok(Err(source)) => Err(CallError::Connection { address: self.address.clone(), source }),
            Ok(Ok(Response::Unsupported(reason))) => Err(CallError::Unsupported { address: self.address.clone(), request: request.kind(), reason }),
            Ok(Ok(response)) => {
                self.put_idle(stream);
                Ok(response)
            }
        }
    }

    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        idle.retain(|(_, since)| now.duration_since(*since) < self.options.idle_max);
        idle.pop().map(|(stream, _)| stream)
    }

    fn put_idle(&self, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.options.in_flight_max {
            idle.push((stream, Instant::now()));
        }
    }

    async fn connect(&self, deadline: Instant) -> Result<TcpStream, CallError> {
        let now = Instant::now();
        if let Some(retry_at) = self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).retry_at.filter(|at| *at > now) {
            return Err(CallError::BackingOff { address: self.address.clone(), retry_in: retry_at - now });
        }
        let connect_deadline = deadline.min(now + self.options.connect_timeout);
        let connected = match timeout_at(connect_deadline, TcpStream::connect(self.address.as_str())).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no connection within {:?}", connect_deadline - now))),
        };
        let mut backoff = self.backoff.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match connected {
            Ok(stream) => {
                *backoff = Backoff::default();
                // Small request/response frames: Nagle's delay would be pure latency.
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Err(source) => {
                backoff.failures = backoff.failures.saturating_add(1);
                let wait = self.options.backoff_min.saturating_mul(1u32 << backoff.failures.min(16)).min(self.options.backoff_max);
                backoff.retry_at = Some(Instant::now() + wait);
                Err(CallError::Unreachable { address: self.address.clone(), source })
            }
        }
    }
}

/// The most peer addresses kept with their pools. A cluster has a handful of
/// voters; addresses come from the membership config, so this bound only
/// guards against a misconfiguration that names ever new ones.
pub const PEERS_MAX: usize = 64;

/// The clients of every peer this node calls, by address.
#[derive(Debug)]
pub struct Peers {
    options: ClientOptions,
    clients: Mutex<HashMap<String, Arc<PeerClient>>>,
}

impl Peers {
    pub fn new(options: ClientOptions) -> Self {
        Peers { options, clients: Mutex::new(HashMap::new()) }
    }

    /// The client for `address`, created on first use.
    pub fn client(&self, address: &str) -> Arc<PeerClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(address) {
            return client.clone();
        }
        let client = Arc::new(PeerClient::new(address.to_owned(), self.options.clone()));
        if clients.len() < PEERS_MAX {
            clients.insert(address.to_owned(), client.clone());
        }
        client
    }
}
