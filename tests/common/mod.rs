//! Black-box harness for the Rust integration tests: a real `silt broker`
//! process on 127.0.0.1 port 0, and a blocking Kafka wire client whose every
//! read has a deadline.
//!
//! Nothing here sleeps to synchronise. Readiness is the broker's
//! `broker ready` log line (pushed to us by a stderr-draining thread through a
//! condition variable); exits are polled with a deadline; socket reads wait on
//! the socket itself, bounded by a deadline. Every wait names what it waited
//! for when it gives up.
//!
//! Each integration-test crate uses a different subset of these helpers.
#![allow(dead_code, reason = "shared by several test crates, each using a subset")]
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

// ---------------------------------------------------------------------------
// Limits. Every wait and loop in these tests is bounded by one of these.
// ---------------------------------------------------------------------------

/// How long a broker may take to log its readiness line.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM (its own drain is 10 s).
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to disappear after SIGKILL.
pub const BROKER_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of one request/response round trip.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connection may take to be closed by the broker.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pacing between two checks of a polled condition (not a synchronisation
/// delay: the condition decides when the test proceeds).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Broker log lines kept for failure messages.
pub const LOG_LINES_MAX: usize = 5_000;
/// Log lines shown in a failure message.
pub const LOG_TAIL_LINES: usize = 60;
/// The largest response frame the client accepts (a sanity bound, not Kafka's).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The client id the tests send in request headers.
pub const CLIENT_ID: &str = "silt-rust-it";

// ---------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------

/// Lines the broker wrote to stderr, shared with the draining thread.
#[derive(Default)]
struct LogState {
    lines: VecDeque<String>,
    /// Total lines ever seen (`lines` keeps only the last `LOG_LINES_MAX`).
    seen: usize,
    /// The current incarnation's stderr reached end of file.
    eof: bool,
}

struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

/// One `silt broker` process on 127.0.0.1 port 0, and its data directory.
///
/// The value survives restarts: `restart`/`start_again` run a new process on
/// the same data directory and environment and re-read the listener
/// addresses (port 0 gives new ports). Dropping it SIGKILLs a process still
/// running, so a failed test leaves nothing behind.
pub struct Broker {
    child: Option<Child>,
    drain: Option<JoinHandle<()>>,
    data_dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    log: Arc<Log>,
    incarnation: u32,
    /// The Kafka listener of the current incarnation.
    pub kafka: SocketAddr,
    /// The HTTP listener of the current incarnation.
    pub http: SocketAddr,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Skip parameters up to and including the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The address after `key=` in a log line (`key=127.0.0.1:1234`, possibly quoted).
fn field_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let token = rest.split_whitespace().next()?.trim_matches('"');
    token.parse().ok()
}

impl Broker {
    /// Starts a broker with the default configuration on a fresh data directory.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker on a fresh data directory with extra `SILT_*` settings.
    pub fn start_with(env: &[(&str, &str)]) -> Broker {
        let data_dir = tempfile::Builder::new().prefix("silt-it-").tempdir().expect("create a temporary data directory");
        let mut broker = Broker {
            child: None,
            drain: None,
            data_dir,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: Arc::new(Log { state: Mutex::new(LogState::default()), changed: Condvar::new() }),
            incarnation: 0,
            kafka: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        broker.spawn();
        broker
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "a broker process is already running");
        self.incarnation += 1;
        let mut command = Command::new(env!("CARGO_BIN_EXE_silt"));
        command.arg("broker");
        // Only this test's configuration: no inherited SILT_* keys, and the
        // default log filter so the INFO readiness line is printed.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SILT_") {
                command.env_remove(&key);
            }
        }
        command.env_remove("RUST_LOG");
        if let Ok(filter) = std::env::var("SILT_TEST_RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .env("SILT_STORAGE__DATA_DIR", self.data_dir.path())
            .env("SILT_KAFKA__LISTEN", "127.0.0.1:0")
            .env("SILT_HTTP__LISTEN", "127.0.0.1:0");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command.current_dir(self.data_dir.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn the silt binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let first_line = {
            let mut state = self.log.state.lock().unwrap();
            state.eof = false;
            state.seen
        };
        let log = self.log.clone();
        let incarnation = self.incarnation;
        let drain = std::thread::Builder::new()
            .name(format!("silt-stderr-{incarnation}"))
            .spawn(move || {
                let reader = BufReader::new(stderr);
                for line in reader.split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = strip_ansi(&String::from_utf8_lossy(&line));
                    let mut state = log.state.lock().unwrap();
                    state.lines.push_back(format!("[silt#{incarnation}] {text}"));
                    state.seen += 1;
                    while state.lines.len() > LOG_LINES_MAX {
                        state.lines.pop_front();
                    }
                    log.changed.notify_all();
                }
                let mut state = log.state.lock().unwrap();
                state.eof = true;
                log.changed.notify_all();
            })
            .expect("spawn the stderr drain thread");
        self.child = Some(child);
        self.drain = Some(drain);
        self.await_ready(first_line);
    }

    /// Waits for this incarnation's `broker ready` line and reads the listener addresses from it.
    fn await_ready(&mut self, first_line: usize) {
        let deadline = Instant::now() + BROKER_READY_TIMEOUT;
        let mut state = self.log.state.lock().unwrap();
        loop {
            // Lines of this incarnation still in the ring buffer.
            let skip = state.lines.len().saturating_sub(state.seen - first_line);
            let ready = state.lines.iter().skip(skip).find(|l| l.contains("broker ready")).cloned();
            if let Some(line) = ready {
                let kafka = field_addr(&line, "kafka_listener");
                let http = field_addr(&line, "http_listener");
                match (kafka, http) {
                    (Some(kafka), Some(http)) => {
                        self.kafka = kafka;
                        self.http = http;
                        return;
                    }
                    _ => {
                        drop(state);
                        panic!("the readiness line names no kafka_listener/http_listener address: {line}");
                    }
                }
            }
            if state.eof {
                drop(state);
                let status = self.wait_exit(BROKER_KILL_TIMEOUT);
                panic!("the broker exited ({status:?}) before logging `broker ready`\n{}", self.log_tail());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                panic!("timed out after {BROKER_READY_TIMEOUT:?} waiting for the broker's `broker ready` line\n{}", self.log_tail());
            }
            state = self.log.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// The last lines the broker logged (all incarnations), for failure messages.
    pub fn log_tail(&self) -> String {
        let state = self.log.state.lock().unwrap();
        let skip = state.lines.len().saturating_sub(LOG_TAIL_LINES);
        let mut out = String::from("--- broker log tail ---\n");
        for line in state.lines.iter().skip(skip) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Whether the broker process is still running (`try_wait` is `None`).
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics, with the log tail, unless the broker process is still running.
    pub fn assert_alive(&mut self, after: &str) {
        if !self.is_alive() {
            let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!("the broker died after {after} (exit status {status:?})\n{}", self.log_tail());
        }
    }

    /// Polls for the process to exit, up to `timeout`. `None` if it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(e) => panic!("cannot wait for the broker process: {e}"),
            }
        }
    }

    /// Reaps the exited process and its stderr drain thread.
    fn reap(&mut self) {
        self.child = None;
        if let Some(drain) = self.drain.take() {
            // stderr is at EOF once the process has exited, so this returns.
            let _ = drain.join();
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit with status 0.
    pub fn stop(&mut self) {
        let pid = self.pid();
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
        match self.wait_exit(BROKER_STOP_TIMEOUT) {
            Some(status) => {
                self.reap();
                assert!(status.success(), "the broker exited with {status} after SIGTERM, expected 0\n{}", self.log_tail());
            }
            None => panic!("the broker did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM\n{}", self.log_tail()),
        }
    }

    /// SIGKILL (`kill -9`), then waits (bounded) for the process to disappear.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().expect("the broker is running");
        child.kill().expect("SIGKILL the broker");
        match self.wait_exit(BROKER_KILL_TIMEOUT) {
            Some(_) => self.reap(),
            None => panic!("the broker did not die within {BROKER_KILL_TIMEOUT:?} of SIGKILL"),
        }
    }

    /// Starts a new process on the same data directory (after `stop` or `kill`).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// SIGTERM and start again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A new connection to the Kafka listener.
    pub fn client(&self) -> Client {
        Client::connect(self.kafka)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            // Bounded: SIGKILL cannot be ignored.
            if self.wait_exit(BROKER_KILL_TIMEOUT).is_some() {
                self.reap();
            }
        }
        // The default archive lives beside the data directory
        // (`<data dir>-archive`, Config::archive_url); the TempDir only
        // removes the data directory itself.
        let mut archive = self.data_dir.path().as_os_str().to_os_string();
        archive.push("-archive");
        let _ = std::fs::remove_dir_all(archive);
    }
}

// ---------------------------------------------------------------------------
// Wire client
// ---------------------------------------------------------------------------

/// Why a round trip did not produce a response.
#[derive(Debug)]
pub enum WireError {
    /// The broker closed the connection (end of file or reset).
    Closed(String),
    /// Nothing (or not enough) arrived before the deadline.
    Timeout(String),
    /// Any other socket error.
    Io(std::io::Error),
    /// A response arrived but is not what the request calls for.
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Closed(s) => write!(f, "connection closed by the broker: {s}"),
            WireError::Timeout(s) => write!(f, "timed out: {s}"),
            WireError::Io(e) => write!(f, "socket error: {e}"),
            WireError::Malformed(s) => write!(f, "malformed response: {s}"),
        }
    }
}

fn is_closed_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

fn is_timeout_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), WouldBlock | TimedOut)
}

/// Encodes a request frame (length prefix, header, body).
pub fn request_frame(api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + body.len());
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut buf, api.request_header_version(version))
        .expect("encode a request header");
    buf.extend_from_slice(body);
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Encodes a request body with kafka-protocol at `version`.
pub fn encode_body<R: Encodable>(request: &R, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    request.encode(&mut buf, version).unwrap_or_else(|e| panic!("kafka-protocol cannot encode this request at v{version}: {e}"));
    buf.freeze()
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

/// A blocking connection to the broker. Requests go one at a time, as a
/// Kafka client does on one connection; every read has a deadline.
pub struct Client {
    stream: TcpStream,
    next_correlation_id: i32,
    /// Deadline of each round trip made with `call`.
    pub timeout: Duration,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Client { stream, next_correlation_id: 1, timeout: IO_TIMEOUT }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Allocates the next correlation id (starting high and odd-looking, so
    /// an echoed constant would not match by accident).
    pub fn next_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id.wrapping_mul(7919).wrapping_add(1_000_003);
        self.next_correlation_id += 1;
        id
    }

    /// Writes raw bytes. A write refused because the broker already closed the
    /// connection is `Closed`.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.stream.write_all(bytes).map_err(|e| if is_closed_error(&e) { WireError::Closed(format!("write failed: {e}")) } else { WireError::Io(e) })?;
        self.stream.flush().map_err(WireError::Io)
    }

    /// Reads into `buf` until full, end of file or `deadline`.
    fn read_full(&mut self, buf: &mut [u8], deadline: Instant, what: &str) -> Result<(), WireError> {
        let mut filled = 0;
        while filled < buf.len() {
            let now = Instant::now();
            if now >= deadline {
                return Err(WireError::Timeout(format!("{what}: {filled} of {} bytes arrived", buf.len())));
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).map_err(WireError::Io)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(WireError::Closed(format!("end of file while reading {what} ({filled} of {} bytes)", buf.len()))),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout_error(&e) => {}
                Err(e) if is_closed_error(&e) => return Err(WireError::Closed(format!("{e} while reading {what}"))),
                Err(e) => return Err(WireError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads one response frame (without its length prefix).
    pub fn read_frame(&mut self, deadline: Instant) -> Result<Bytes, WireError> {
        let mut prefix = [0u8; 4];
        self.read_full(&mut prefix, deadline, "a response length prefix")?;
        let len = i32::from_be_bytes(prefix);
        if len < 4 || len as usize > RESPONSE_BYTES_MAX {
            return Err(WireError::Malformed(format!("response length prefix {len}")));
        }
        let mut body = vec![0u8; len as usize];
        self.read_full(&mut body, deadline, "a response body")?;
        Ok(Bytes::from(body))
    }

    /// Sends a request body of `api` at `version` with a fresh correlation id,
    /// without waiting for the response (see `receive_raw`).
    pub fn send_request_raw(&mut self, api: ApiKey, version: i16, body: &[u8]) -> Result<Pending, WireError> {
        let correlation_id = self.next_correlation_id();
        let frame = request_frame(api, version, correlation_id, body);
        self.send_raw(&frame)?;
        Ok(Pending { api, version, correlation_id })
    }

    /// Reads the response to `pending` and returns its body after checking the correlation id.
    pub fn receive_raw(&mut self, pending: Pending) -> Result<Bytes, WireError> {
        let Pending { api, version, correlation_id } = pending;
        let mut response = self.read_frame(Instant::now() + self.timeout)?;
        let header = ResponseHeader::decode(&mut response, api.response_header_version(version))
            .map_err(|e| WireError::Malformed(format!("{api:?} v{version} response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(WireError::Malformed(format!(
                "{api:?} v{version}: correlation id {} in the response, {correlation_id} in the request",
                header.correlation_id
            )));
        }
        Ok(response)
    }

    /// One round trip of a raw request body; returns the response body.
    pub fn call_raw(&mut self, api: ApiKey, version: i16, body: &[u8]) -> Result<Bytes, WireError> {
        let pending = self.send_request_raw(api, version, body)?;
        self.receive_raw(pending)
    }

    /// Sends `request` encoded at `version` without waiting for the response.
    pub fn send_request<R: Request>(&mut self, request: &R, version: i16) -> Result<Pending, WireError> {
        let api = ApiKey::try_from(R::KEY).expect("a known API key");
        self.send_request_raw(api, version, &encode_body(request, version))
    }

    /// Reads and decodes (exactly) the response to a request sent with `send_request`.
    pub fn receive<T: Decodable>(&mut self, pending: Pending) -> Result<T, WireError> {
        let (api, version) = (pending.api, pending.version);
        let body = self.receive_raw(pending)?;
        decode_exact::<T>(api, version, body)
    }

    /// One round trip with kafka-protocol types: encode `request` at
    /// `version`, decode the response at the same version and check that it
    /// is consumed exactly.
    pub fn call<R>(&mut self, request: &R, version: i16) -> Result<R::Response, WireError>
    where
        R: Request,
    {
        let pending = self.send_request(request, version)?;
        self.receive::<R::Response>(pending)
    }

    /// Like `call`, panicking with context on any failure.
    pub fn must<R>(&mut self, request: &R, version: i16) -> R::Response
    where
        R: Request,
    {
        let api = ApiKey::try_from(R::KEY).expect("a known API key");
        self.call(request, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
    }

    /// Waits until the broker closes this connection. Returns what happened
    /// instead if bytes arrive or the deadline passes.
    pub fn expect_closed(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut scratch = [0u8; 4096];
        let mut received = 0usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("the connection was still open after {within:?} ({received} bytes received meanwhile)"));
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
            match self.stream.read(&mut scratch) {
                Ok(0) => return if received == 0 { Ok(()) } else { Err(format!("the broker sent {received} bytes before closing")) },
                Ok(n) => received += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout_error(&e) => {}
                Err(e) if is_closed_error(&e) => return if received == 0 { Ok(()) } else { Err(format!("the broker sent {received} bytes before resetting")) },
                Err(e) => return Err(format!("socket error while waiting for the close: {e}")),
            }
        }
    }

    /// Closes our sending side (the broker sees end of file).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    // -- high-level helpers (panicking with context) ------------------------

    pub fn api_versions(&mut self, version: i16) -> ApiVersionsResponse {
        self.must(&api_versions_request(), version)
    }

    /// Metadata v12 of `topics`, letting the broker auto-create them when `auto_create`.
    pub fn metadata(&mut self, topics: &[&str], auto_create: bool) -> MetadataResponse {
        let request = MetadataRequest::default()
            .with_topics(Some(topics.iter().map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t)))).collect()))
            .with_allow_auto_topic_creation(auto_create);
        self.must(&request, 12)
    }

    /// The topic id of an existing topic (Metadata v12).
    pub fn topic_id(&mut self, topic: &str) -> uuid::Uuid {
        let response = self.metadata(&[topic], false);
        let t = &response.topics[0];
        assert_eq!(t.error_code, 0, "metadata of {topic}: error {}", code_name(t.error_code));
        assert!(!t.topic_id.is_nil(), "metadata of {topic} has a nil topic id");
        t.topic_id
    }

    /// CreateTopics v7 of one topic; returns the topic's error code.
    pub fn create_topic(&mut self, topic: &str, partitions: i32) -> i16 {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default().with_name(topic_name(topic)).with_num_partitions(partitions).with_replication_factor(1)])
            .with_timeout_ms(30_000);
        let response = self.must(&request, 7);
        assert_eq!(response.topics.len(), 1, "CreateTopics answered {} topics for 1", response.topics.len());
        response.topics[0].error_code
    }

    /// Creates a topic, panicking unless that succeeded.
    pub fn create_topic_ok(&mut self, topic: &str, partitions: i32) {
        let code = self.create_topic(topic, partitions);
        assert_eq!(code, 0, "CreateTopics {topic}: error {}", code_name(code));
    }

    /// Produce v9 of one batch to one partition, acks=-1.
    pub fn produce(&mut self, topic: &str, partition: i32, records: Bytes) -> PartitionProduceResponse {
        self.produce_at(topic, partition, records, 9)
    }

    /// Produce of one batch to one partition, acks=-1, at `version` (< 13: by name).
    pub fn produce_at(&mut self, topic: &str, partition: i32, records: Bytes, version: i16) -> PartitionProduceResponse {
        let request = produce_request(topic, partition, records);
        let response = self.must(&request, version);
        single_produce_partition(response, topic)
    }

    /// Fetch v12 of one partition.
    pub fn fetch(&mut self, topic: &str, partition: i32, offset: i64, max_wait_ms: i32, min_bytes: i32) -> PartitionData {
        let request = fetch_request_by_name(topic, partition, offset, max_wait_ms, min_bytes);
        single_fetch_partition(self.must(&request, 12))
    }

    /// ListOffsets v7 of one partition at `timestamp` (-1 latest, -2 earliest): (error, offset).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
        let request = list_offsets_request(topic, partition, timestamp);
        let response = self.must(&request, 7);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.offset)
    }

    /// The log end offset (ListOffsets latest), panicking on an error.
    pub fn log_end_offset(&mut self, topic: &str, partition: i32) -> i64 {
        let (code, offset) = self.list_offset(topic, partition, -1);
        assert_eq!(code, 0, "ListOffsets latest of {topic}-{partition}: error {}", code_name(code));
        offset
    }

    /// Fetches everything from `offset` to the high watermark (bounded number
    /// of fetches) and returns the records.
    pub fn read_all(&mut self, topic: &str, partition: i32, mut offset: i64) -> Vec<Record> {
        /// A partition in these tests holds a handful of batches.
        const FETCHES_MAX: usize = 1_000;
        let mut out = Vec::new();
        for _ in 0..FETCHES_MAX {
            let data = self.fetch(topic, partition, offset, 0, 1);
            assert_eq!(data.error_code, 0, "Fetch {topic}-{partition}@{offset}: error {}", code_name(data.error_code));
            let records = decode_records(data.records.as_ref());
            let Some(last_offset) = records.last().map(|r| r.offset) else {
                assert!(offset >= data.high_watermark, "Fetch {topic}-{partition}@{offset} returned nothing below the high watermark {}", data.high_watermark);
                return out;
            };
            // A batch may start before the fetch offset; keep only what was asked for.
            let start = offset;
            out.extend(records.into_iter().filter(|r| r.offset >= start));
            offset = last_offset + 1;
            if offset >= data.high_watermark {
                return out;
            }
        }
        panic!("read_all {topic}-{partition}: more than {FETCHES_MAX} fetches");
    }

    /// InitProducerId v4 without a transactional id: (producer id, epoch).
    pub fn init_producer_id(&mut self) -> (i64, i16) {
        let request = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        let response = self.must(&request, 4);
        assert_eq!(response.error_code, 0, "InitProducerId: error {}", code_name(response.error_code));
        (response.producer_id.0, response.producer_epoch)
    }
}

/// Decodes a response body of `api` at `version`, requiring every byte to be used.
pub fn decode_exact<T: Decodable>(api: ApiKey, version: i16, mut body: Bytes) -> Result<T, WireError> {
    let value = T::decode(&mut body, version).map_err(|e| WireError::Malformed(format!("{api:?} v{version} response body: {e}")))?;
    if !body.is_empty() {
        return Err(WireError::Malformed(format!("{api:?} v{version} response: {} bytes left after the body", body.len())));
    }
    Ok(value)
}

/// The versions kafka-protocol's codec of `M` handles.
pub fn codec_versions<M: Message>() -> (i16, i16) {
    (M::VERSIONS.min, M::VERSIONS.max)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// An ApiVersions request as a real client sends it (v3+ carries the software name).
pub fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("silt-rust-it"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"))
}

/// A produce request (acks=-1) of one batch to one partition, naming the topic by name.
pub fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic_name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])])
}

/// The single partition response of a one-partition produce.
pub fn single_produce_partition(response: ProduceResponse, topic: &str) -> PartitionProduceResponse {
    assert_eq!(response.responses.len(), 1, "Produce to {topic}: {} topic responses for 1", response.responses.len());
    let t = response.responses.into_iter().next().unwrap();
    assert_eq!(t.partition_responses.len(), 1, "Produce to {topic}: {} partition responses for 1", t.partition_responses.len());
    t.partition_responses.into_iter().next().unwrap()
}

/// The single partition of a one-partition fetch response.
pub fn single_fetch_partition(response: FetchResponse) -> PartitionData {
    assert_eq!(response.error_code, 0, "Fetch: top-level error {}", code_name(response.error_code));
    assert_eq!(response.responses.len(), 1, "Fetch answered {} topics for 1", response.responses.len());
    let topic_response = response.responses.into_iter().next().unwrap();
    assert_eq!(topic_response.partitions.len(), 1, "Fetch answered {} partitions for 1", topic_response.partitions.len());
    topic_response.partitions.into_iter().next().unwrap()
}

/// A consumer's fetch (replica -1) of one partition by topic name (v4-12).
pub fn fetch_request_by_name(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(8 * 1024 * 1024)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(1024 * 1024)])])
}

/// A consumer's ListOffsets (replica -1) of one partition.
pub fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp)])])
}

// ---------------------------------------------------------------------------
// Record batches
// ---------------------------------------------------------------------------

/// Who writes a batch: a plain producer, or an idempotent one.
#[derive(Debug, Clone, Copy)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
}

impl Producer {
    /// A producer without idempotence (producer id -1, sequence -1).
    pub const NONE: Producer = Producer { id: -1, epoch: -1 };
}

/// One v2 record batch (uncompressed) of `values`, written by `producer`
/// starting at `base_sequence` (-1 for a non-idempotent producer).
///
/// `RecordBatchEncoder` starts a new batch whenever `offset - sequence`
/// changes, so record i gets offset i and sequence `base_sequence + i`.
pub fn batch(values: &[&[u8]], producer: Producer, base_sequence: i32) -> Bytes {
    assert!(!values.is_empty(), "a batch holds at least one record");
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None }).expect("encode a record batch");
    let bytes = buf.freeze();
    let batches = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).expect("decode our own batch header");
    assert_eq!(batches.len(), 1, "the encoder split {} records into {} batches", values.len(), batches.len());
    bytes
}

/// A non-idempotent batch of `values`.
pub fn plain_batch(values: &[&[u8]]) -> Bytes {
    batch(values, Producer::NONE, -1)
}

/// `count` records named `{prefix}-{i}`.
pub fn values(prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| format!("{prefix}-{i}").into_bytes()).collect()
}

/// Borrows a list of owned values as slices for `batch`.
pub fn as_slices(values: &[Vec<u8>]) -> Vec<&[u8]> {
    values.iter().map(Vec::as_slice).collect()
}

/// Decodes every record in a fetched record set (panics on a corrupt set).
pub fn decode_records(records: Option<&Bytes>) -> Vec<Record> {
    let Some(records) = records else { return Vec::new() };
    let mut buf = records.clone();
    let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap_or_else(|e| panic!("the broker returned undecodable records ({} bytes): {e}", records.len()));
    sets.into_iter().flat_map(|s| s.records).collect()
}

// ---------------------------------------------------------------------------
// Errors and names
// ---------------------------------------------------------------------------

/// `code (NAME)` for failure messages.
pub fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{code} ({e:?})"),
        None if code == 0 => "0 (NONE)".to_owned(),
        None => format!("{code} (unknown)"),
    }
}

/// A topic name unique within this test process.
pub fn unique_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// Observing the broker's side of a connection
// ---------------------------------------------------------------------------

/// The receive queue (bytes not yet read by the broker) of the broker-side
/// socket of our connection `client` → `broker`, from /proc/net/tcp.
/// `None` if the socket is not listed.
pub fn broker_receive_queue(broker: SocketAddr, client: SocketAddr) -> Option<u64> {
    fn hex_addr(addr: SocketAddr) -> String {
        match addr {
            SocketAddr::V4(a) => format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port()),
            SocketAddr::V6(_) => panic!("the tests use IPv4 loopback only"),
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp (the test needs Linux procfs)");
    let (local, remote) = (hex_addr(broker), hex_addr(client));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[1] != local || fields[2] != remote {
            return None;
        }
        let (_, rx) = fields[4].split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// Polls until `condition` holds or `timeout` passes; panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

// ---------------------------------------------------------------------------
// Consumer groups
// ---------------------------------------------------------------------------

/// The session timeout the group tests join with (within the broker's 6 s..30 min).
pub const GROUP_SESSION_TIMEOUT_MS: i32 = 10_000;

/// A JoinGroup request of a consumer-protocol member with one protocol.
pub fn join_group_request(group: &str, member_id: &str, protocol: &str, metadata: Bytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_session_timeout_ms(GROUP_SESSION_TIMEOUT_MS)
        .with_rebalance_timeout_ms(GROUP_SESSION_TIMEOUT_MS)
        .with_member_id(str_bytes(member_id))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name(str_bytes(protocol)).with_metadata(metadata)])
}

/// Joins `group` alone as a new member (following MEMBER_ID_REQUIRED) with
/// JoinGroup v5, then syncs an assignment with SyncGroup v3. Returns the
/// member id and generation.
pub fn join_and_sync(client: &mut Client, group: &str, assignment: &[u8]) -> (String, i32) {
    let first = client.must(&join_group_request(group, "", "range", Bytes::from_static(b"meta")), 5);
    assert_eq!(first.error_code, 79, "first join of {group}: expected MEMBER_ID_REQUIRED, got {}", code_name(first.error_code));
    let member_id = first.member_id.to_string();
    let joined = client.must(&join_group_request(group, &member_id, "range", Bytes::from_static(b"meta")), 5);
    assert_eq!(joined.error_code, 0, "join of {group}: error {}", code_name(joined.error_code));
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(str_bytes(&member_id))
        .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
            .with_member_id(str_bytes(&member_id))
            .with_assignment(Bytes::copy_from_slice(assignment))]);
    let synced = client.must(&sync, 3);
    assert_eq!(synced.error_code, 0, "sync of {group}: error {}", code_name(synced.error_code));
    (member_id, joined.generation_id)
}

/// Commits `offset` for `topic`-`partition` in `group` with OffsetCommit `version`.
pub fn offset_commit_request(group: &str, generation: i32, member_id: &str, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str_bytes(member_id))
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(vec![
            offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(str_bytes("meta"))),
        ])])
}

/// The committed offset of `topic`-`partition` in `group` (OffsetFetch v7), -1 if none.
pub fn committed_offset(client: &mut Client, group: &str, topic: &str, partition: i32) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default().with_name(topic_name(topic)).with_partition_indexes(vec![partition])]));
    let response = client.must(&request, 7);
    assert_eq!(response.error_code, 0, "OffsetFetch of {group}: error {}", code_name(response.error_code));
    response.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition_index == partition).map_or(-1, |p| p.committed_offset)
}
