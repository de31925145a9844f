//! The SASL phase of a SASL_PLAINTEXT or SASL_SSL connection: before any
//! other request the client negotiates a mechanism (SaslHandshake v0/v1) and
//! authenticates, either with SaslAuthenticate requests (after a v1
//! handshake) or with raw length-prefixed tokens (after a v0 handshake, as
//! pre-1.0 clients do).
//!
//! As in Kafka, only ApiVersions, SaslHandshake and SaslAuthenticate are
//! served until the client is authenticated; anything else closes the
//! connection. A failed login is answered with SASL_AUTHENTICATION_FAILED
//! (v1) and the connection closed, so each connection gets one attempt; the
//! requests before authentication are bounded in number
//! (`sasl.max_requests_before_auth`), size (`sasl.max_receive_bytes`) and
//! time (`kafka.request_read_timeout_ms`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use silt_actors::metadata::quorum::ScramMechanism;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::listener::Listener;
use super::scram::{server_nonce, ScramExchange};
use super::FAILURE_LOG;
use crate::broker::Broker;
use crate::config::SaslMechanism;
use crate::protocol::{self, Outcome};

/// How the SASL phase ended.
pub enum Authentication {
    /// The client logged in as this principal (`User:<name>`).
    Authenticated { principal: String },
    /// Close the connection: the client left, or was refused (logged and counted).
    Closed,
}

/// Where the exchange stands.
enum Phase {
    /// Before SaslHandshake: ApiVersions and SaslHandshake are allowed.
    Start,
    /// A mechanism is chosen; `raw` tokens follow a v0 handshake.
    Handshaken { mechanism: SaslMechanism, raw: bool },
    /// SCRAM's first round is done; the client's final message is next.
    ScramFinal { mechanism: SaslMechanism, exchange: Box<ScramExchange>, raw: bool },
}

/// A token's result.
enum Step {
    /// Answer `response`, then expect SCRAM's final message.
    Continue { response: Vec<u8>, exchange: Box<ScramExchange> },
    /// The client is `user`; answer `response` (empty for PLAIN).
    Done { user: String, response: Vec<u8> },
}

/// A refused login: what the client is told, and why (for the broker's log).
struct Refusal {
    client: String,
    reason: String,
}

fn failed(mechanism: SaslMechanism, reason: impl ToString) -> Refusal {
    Refusal {
        client: format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {}", mechanism.name()),
        reason: reason.to_string(),
    }
}

/// One token of `mechanism`: PLAIN's only one, or SCRAM's first or final message.
fn step(broker: &Broker, mechanism: SaslMechanism, exchange: Option<Box<ScramExchange>>, token: &[u8]) -> Result<Step, Refusal> {
    let scram = match mechanism {
        SaslMechanism::Plain => {
            let user = plain(&broker.config.sasl.plain_users, token).map_err(|reason| failed(mechanism, reason))?;
            return Ok(Step::Done { user, response: Vec::new() });
        }
        SaslMechanism::ScramSha256 => ScramMechanism::Sha256,
        SaslMechanism::ScramSha512 => ScramMechanism::Sha512,
    };
    match exchange {
        None => {
            let (exchange, response) =
                ScramExchange::start(scram, token, &server_nonce(), |user| broker.node.scram_credential(user, scram)).map_err(|e| failed(mechanism, e))?;
            Ok(Step::Continue { response, exchange: Box::new(exchange) })
        }
        Some(exchange) => {
            let user = exchange.user().to_owned();
            let response = exchange.finish(token).map_err(|e| failed(mechanism, format!("user {user:?}: {e}")))?;
            Ok(Step::Done { user, response })
        }
    }
}

/// Checks a PLAIN token (`authzid NUL authcid NUL password`, RFC 4616)
/// against the configured users. The comparison is constant-time over
/// SHA-256 digests, so neither the password nor its length leaks through
/// timing, and an unknown user costs the same as a wrong password.
fn plain(users: &std::collections::BTreeMap<String, String>, token: &[u8]) -> Result<String, String> {
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("a PLAIN token must hold three NUL-separated fields".into());
    };
    let user = std::str::from_utf8(user).map_err(|_| "the user name is not UTF-8".to_owned())?;
    if user.is_empty() || password.is_empty() {
        return Err("empty user name or password".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(format!("user {user:?} asked to act as another user"));
    }
    let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec();
    let (expected, known) = match users.get(user) {
        Some(p) => (digest(p.as_bytes()), true),
        None => (digest(b"\0no such user\0"), false),
    };
    let matches: bool = digest(password).ct_eq(&expected).into();
    match (known, matches) {
        (true, true) => Ok(user.to_owned()),
        (false, _) => Err(format!("unknown user {user:?}")),
        (true, false) => Err(format!("user {user:?}: wrong password")),
    }
}

/// Serves the SASL phase of a fresh connection.
pub async fn authenticate<R, W>(reader: &mut R, writer: &mut W, broker: &Arc<Broker>, listener: &Listener, peer: SocketAddr) -> std::io::Result<Authentication>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let sasl = &broker.config.sasl;
    let refuse = |mechanism: Option<SaslMechanism>, reason: &'static str, detail: String| refuse(broker, listener, peer, mechanism, reason, detail);
    let mut phase = Phase::Start;
    for _ in 0..sasl.max_requests_before_auth {
        let frame = match read_frame(reader, broker, !matches!(phase, Phase::Handshaken { raw: true, .. } | Phase::ScramFinal { raw: true, .. })).await? {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(Authentication::Closed),
            Err((reason, detail)) => return Ok(refuse(None, reason, detail)),
        };
        phase = match phase {
            // After a v0 handshake every frame is a raw token and the answers are raw too.
            Phase::Handshaken { mechanism, raw: true } | Phase::ScramFinal { mechanism, raw: true, .. } => {
                let exchange = match phase {
                    Phase::ScramFinal { exchange, .. } => Some(exchange),
                    _ => None,
                };
                match step(broker, mechanism, exchange, &frame) {
                    Ok(Step::Continue { response, exchange }) => {
                        write_raw(writer, &response).await?;
                        Phase::ScramFinal { mechanism, exchange, raw: true }
                    }
                    Ok(Step::Done { user, response }) => {
                        write_raw(writer, &response).await?;
                        return Ok(success(broker, listener, mechanism, user));
                    }
                    // v0 has no error frame: the connection just closes.
                    Err(refusal) => return Ok(refuse(Some(mechanism), "sasl_authentication_failed", refusal.reason)),
                }
            }
            current => {
                let parsed = match protocol::parse_frame(frame.clone()) {
                    Ok(parsed) => parsed,
                    Err(Outcome::Close { reason, detail }) => return Ok(refuse(None, reason, detail)),
                    // An ApiVersions of a version Silt does not know: answered; the client retries.
                    Err(other) => {
                        if !matches!(current, Phase::Start) {
                            return Ok(refuse(None, "sasl_illegal_state", "ApiVersions after SaslHandshake".into()));
                        }
                        write_outcome(writer, other).await?;
                        phase = Phase::Start;
                        continue;
                    }
                };
                let mut body = parsed.body.clone();
                match (parsed.api, current) {
                    (ApiKey::ApiVersions, Phase::Start) => {
                        match protocol::handle_frame(broker, frame, Some(peer), listener.index).await {
                            Outcome::Close { reason, detail } => return Ok(refuse(None, reason, detail)),
                            outcome => write_outcome(writer, outcome).await?,
                        }
                        Phase::Start
                    }
                    (ApiKey::SaslHandshake, Phase::Start) => {
                        let Ok(request) = SaslHandshakeRequest::decode(&mut body, parsed.version) else {
                            return Ok(refuse(None, "malformed_body", "an undecodable SaslHandshake".into()));
                        };
                        let enabled = &sasl.enabled_mechanisms;
                        let chosen = enabled.iter().copied().find(|m| m.name() == request.mechanism.as_str());
                        let mut response =
                            SaslHandshakeResponse::default().with_mechanisms(enabled.iter().map(|m| StrBytes::from_static_str(m.name())).collect());
                        if chosen.is_none() {
                            response.error_code = ResponseError::UnsupportedSaslMechanism.code();
                        }
                        write_response(writer, ApiKey::SaslHandshake, parsed.version, parsed.correlation_id, &response).await?;
                        match chosen {
                            Some(mechanism) => Phase::Handshaken { mechanism, raw: parsed.version == 0 },
                            None => {
                                let detail = format!("mechanism {:?} is not enabled", truncated(request.mechanism.as_str()));
                                return Ok(refuse(None, "sasl_unsupported_mechanism", detail));
                            }
                        }
                    }
                    (ApiKey::SaslAuthenticate, state @ (Phase::Handshaken { raw: false, .. } | Phase::ScramFinal { raw: false, .. })) => {
                        let Ok(request) = SaslAuthenticateRequest::decode(&mut body, parsed.version) else {
                            return Ok(refuse(None, "malformed_body", "an undecodable SaslAuthenticate".into()));
                        };
                        let (mechanism, exchange) = match state {
                            Phase::Handshaken { mechanism, .. } => (mechanism, None),
                            Phase::ScramFinal { mechanism, exchange, .. } => (mechanism, Some(exchange)),
                            Phase::Start => return Ok(Authentication::Closed),
                        };
                        let (response, next) = match step(broker, mechanism, exchange, &request.auth_bytes) {
                            Ok(Step::Continue { response, exchange }) => (response, Ok(Phase::ScramFinal { mechanism, exchange, raw: false })),
                            Ok(Step::Done { user, response }) => (response, Err(Ok(user))),
                            Err(refusal) => (refusal.client.into_bytes(), Err(Err(refusal.reason))),
                        };
                        let response = match &next {
                            Err(Err(_)) => SaslAuthenticateResponse::default()
                                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                                .with_error_message(Some(StrBytes::from_string(String::from_utf8_lossy(&response).into_owned()))),
                            _ => SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(response)),
                        };
                        write_response(writer, ApiKey::SaslAuthenticate, parsed.version, parsed.correlation_id, &response).await?;
                        match next {
                            Ok(phase) => phase,
                            Err(Ok(user)) => return Ok(success(broker, listener, mechanism, user)),
                            Err(Err(reason)) => return Ok(refuse(Some(mechanism), "sasl_authentication_failed", reason)),
                        }
                    }
                    (api, _) => return Ok(refuse(None, "sasl_illegal_state", format!("{api:?} before authentication completed"))),
                }
            }
        };
    }
    Ok(refuse(None, "sasl_too_many_requests", format!("more than {} requests before authentication", sasl.max_requests_before_auth)))
}

/// At most 64 characters of client-chosen text, for logs.
fn truncated(text: &str) -> &str {
    text.char_indices().nth(64).map_or(text, |(at, _)| &text[..at])
}

fn success(broker: &Broker, listener: &Listener, mechanism: SaslMechanism, user: String) -> Authentication {
    broker.metrics.authentications.with_label_values(&[mechanism.name(), &listener.name, "success"]).inc();
    tracing::debug!(listener = %listener.name, mechanism = mechanism.name(), %user, "SASL authentication succeeded");
    Authentication::Authenticated { principal: format!("User:{user}") }
}

/// Counts and logs (rate limited) a refused connection.
fn refuse(broker: &Broker, listener: &Listener, peer: SocketAddr, mechanism: Option<SaslMechanism>, reason: &'static str, detail: String) -> Authentication {
    broker.metrics.protocol_errors.with_label_values(&[reason]).inc();
    if let Some(mechanism) = mechanism {
        broker.metrics.authentications.with_label_values(&[mechanism.name(), &listener.name, "failure"]).inc();
    }
    if let Some(suppressed) = FAILURE_LOG.admit(reason) {
        let mechanism = mechanism.map_or("", SaslMechanism::name);
        tracing::warn!(%peer, listener = %listener.name, mechanism, reason, %detail, suppressed, "authentication failed; closing connection");
    }
    Authentication::Closed
}

/// Reads one frame of the SASL phase: `Ok(None)` if the client left, the
/// reason to close if it is too large, too slow or (for a request) too short.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, broker: &Broker, request: bool) -> std::io::Result<Result<Option<Bytes>, (&'static str, String)>> {
    let max = broker.config.sasl.max_receive_bytes;
    let mut prefix = [0u8; 4];
    let idle = Duration::from_millis(broker.config.kafka.request_read_timeout_ms);
    match tokio::time::timeout(idle, reader.read_exact(&mut prefix)).await {
        Err(_) => return Ok(Err(("sasl_timeout", format!("no request for {idle:?} before authentication")))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Ok(None)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => {}
    }
    let size = if request {
        match crate::server::frame_size(prefix, max) {
            Ok(size) => size,
            Err(refused) => return Ok(Err(refused)),
        }
    } else {
        match usize::try_from(i32::from_be_bytes(prefix)) {
            Ok(size) if size <= max as usize => size,
            _ => return Ok(Err(("request_too_large", format!("a SASL token of {} bytes exceeds sasl.max_receive_bytes {max}", i32::from_be_bytes(prefix))))),
        }
    };
    let mut buf = vec![0u8; size];
    match tokio::time::timeout(idle, reader.read_exact(&mut buf)).await {
        Err(_) => Ok(Err(("slow_request", format!("request not complete after {idle:?}")))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Ok(None)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(_)) => Ok(Ok(Some(Bytes::from(buf)))),
    }
}

async fn write_raw<W: AsyncWrite + Unpin>(writer: &mut W, token: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(token.len()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "SASL token too large"))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(token).await?;
    writer.flush().await
}

async fn write_outcome<W: AsyncWrite + Unpin>(writer: &mut W, outcome: Outcome) -> std::io::Result<()> {
    match outcome {
        Outcome::Respond(frame) => writer.write_all(&frame).await?,
        Outcome::RespondParts(parts) => {
            for part in parts {
                writer.write_all(&part).await?;
            }
        }
        Outcome::NoResponse | Outcome::Close { .. } => {}
    }
    writer.flush().await
}

async fn write_response<W: AsyncWrite + Unpin, B: Encodable>(writer: &mut W, api: ApiKey, version: i16, correlation_id: i32, body: &B) -> std::io::Result<()> {
    let frame =
        protocol::encode_response(api, version, correlation_id, body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    writer.write_all(&frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_are_checked_against_the_configured_users() {
        let users = [("alice".to_owned(), "alice-secret".to_owned())].into_iter().collect();
        assert_eq!(plain(&users, b"\0alice\0alice-secret").as_deref(), Ok("alice"));
        assert_eq!(plain(&users, b"alice\0alice\0alice-secret").as_deref(), Ok("alice"));
        assert!(plain(&users, b"\0alice\0wrong").unwrap_err().contains("wrong password"));
        assert!(plain(&users, b"\0bob\0alice-secret").unwrap_err().contains("unknown user"));
        assert!(plain(&users, b"bob\0alice\0alice-secret").is_err(), "acting as another user");
        for garbage in [&b""[..], b"\0", b"alice", b"\0alice\0", b"\0\0x", b"\0a\0b\0c", &[0xff, 0, 0xfe, 0, 1]] {
            assert!(plain(&users, garbage).is_err(), "{garbage:?}");
        }
    }
}
