//! The Kafka wire protocol at the edge: a request frame in, a response frame
//! (or nothing, or a reason to close) out.
//!
//! This module decodes the request header, checks the API and version against
//! what Silt implements, decodes the body with `kafka-protocol`, hands the
//! typed request to its handler, and encodes the response with the header
//! version the API and version call for.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use tracing::Instrument;

use crate::broker::Broker;
use crate::handlers;

/// The APIs Silt implements and the versions it advertises for each. Every
/// handler honours the fields of every version in its range; the ranges are
/// those the codec decodes (kafka-protocol's `valid_versions`), except
/// InitProducerId v6 (KIP-939 two-phase commit), whose request the codec cannot
/// decode and which released Kafka does not advertise.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The advertised version range of `api`, if Silt implements it.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(key, ..)| *key == api).map(|&(_, min, max)| (min, max))
}

/// The ApiVersions entries Silt advertises.
pub fn api_version_entries() -> Vec<ApiVersion> {
    SUPPORTED_APIS.iter().map(|&(api, min, max)| ApiVersion::default().with_api_key(api as i16).with_min_version(min).with_max_version(max)).collect()
}

/// What to do after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this frame (length prefix included).
    Respond(Bytes),
    /// Write these parts, one after another, as one frame (a Fetch response
    /// sharing its record batches: see [`crate::shared_frame`]).
    RespondParts(Vec<Bytes>),
    /// Write nothing (a produce with acks=0).
    NoResponse,
    /// Close the connection; the reason is logged and counted.
    Close { reason: &'static str, detail: String },
}

fn close(reason: &'static str, detail: impl Into<String>) -> Outcome {
    Outcome::Close { reason, detail: detail.into() }
}

/// What a handler knows about the request it serves.
pub struct RequestContext {
    pub broker: Arc<Broker>,
    pub api: ApiKey,
    pub api_name: &'static str,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's address as Kafka reports it in DescribeGroups (`/1.2.3.4`).
    pub client_host: String,
    /// The listener the client connected on: its position in the broker's listeners.
    pub listener: usize,
}

impl RequestContext {
    /// Maps a domain error to its Kafka code, counting it.
    pub fn error_code(&self, error: &silt_actors::Error) -> i16 {
        let code = crate::errors::error_code(error).code();
        tracing::debug!(api = self.api_name, code, cause = %error, "request error");
        self.broker.metrics.count_error(self.api_name, code);
        code
    }

    /// Counts an error code produced without a domain error.
    pub fn count(&self, code: i16) -> i16 {
        self.broker.metrics.count_error(self.api_name, code);
        code
    }
}

/// The printable name of an API (for metrics and logs).
pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::AlterReplicaLogDirs => "AlterReplicaLogDirs",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::DescribeProducers => "DescribeProducers",
        ApiKey::DescribeQuorum => "DescribeQuorum",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::UnregisterBroker => "UnregisterBroker",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        _ => "Other",
    }
}

/// Encodes a response frame: length prefix, response header, body.
pub fn encode_response<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Result<Bytes, anyhow::Error> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default().with_correlation_id(correlation_id).encode(&mut buf, api.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4)?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Answers an ApiVersions request of a version Silt does not know in the v0
/// format with UNSUPPORTED_VERSION and the supported list (KIP-511), so the
/// client can retry with a version both sides speak.
fn unsupported_api_versions(correlation_id: i32) -> Outcome {
    let body = ApiVersionsResponse::default().with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code()).with_api_keys(api_version_entries());
    match encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) {
        Ok(frame) => Outcome::Respond(frame),
        Err(e) => close("encode_failed", e.to_string()),
    }
}

/// A request whose header parsed and whose API and version Silt implements.
#[derive(Debug)]
pub struct ParsedFrame {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    /// The request body, not yet decoded.
    pub body: Bytes,
}

/// Parses a request frame (without its length prefix) up to its body. The
/// error is what to answer instead: UNSUPPORTED_VERSION for an ApiVersions of
/// unknown version, otherwise a reason to close the connection.
pub fn parse_frame(mut frame: Bytes) -> Result<ParsedFrame, Outcome> {
    if frame.len() < 8 {
        return Err(close("short_frame", format!("a {}-byte request cannot hold a request header", frame.len())));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(raw_key) else {
        return Err(close("unknown_api", format!("unknown API key {raw_key}")));
    };
    let Some((min, max)) = supported_versions(api) else {
        return Err(close("unsupported_api", format!("API {api:?} is not implemented")));
    };
    if version < min || version > max {
        if api == ApiKey::ApiVersions {
            return Err(unsupported_api_versions(correlation_id));
        }
        return Err(close("unsupported_version", format!("{api:?} v{version} is not supported (v{min}..=v{max})")));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version)).map_err(|e| close("malformed_header", e.to_string()))?;
    Ok(ParsedFrame { api, version, correlation_id, header, body: frame })
}

/// Decodes a parsed frame's body into its typed request (used by tests and
/// fuzzing to check that no input makes the decoder panic).
pub fn decode_body(parsed: &ParsedFrame) -> Result<RequestKind, Outcome> {
    let mut body = parsed.body.clone();
    RequestKind::decode(parsed.api, &mut body, parsed.version).map_err(|e| close("malformed_body", e.to_string()))
}

/// Handles one request frame (without its length prefix) that arrived on
/// the broker's listener number `listener`.
pub async fn handle_frame(broker: &Arc<Broker>, frame: Bytes, peer: Option<std::net::SocketAddr>, listener: usize) -> Outcome {
    let parsed = match parse_frame(frame) {
        Ok(parsed) => parsed,
        Err(outcome) => return outcome,
    };
    let ctx = RequestContext {
        broker: broker.clone(),
        api: parsed.api,
        api_name: api_name(parsed.api),
        version: parsed.version,
        correlation_id: parsed.correlation_id,
        client_id: parsed.header.client_id.as_ref().map(|c| c.to_string()),
        client_host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        listener,
    };
    let span = tracing::debug_span!(
        "request",
        api_key = ctx.api_name,
        api_version = ctx.version,
        correlation_id = ctx.correlation_id,
        client_id = ctx.client_id.as_deref().unwrap_or("")
    );
    let started = Instant::now();
    let in_flight = broker.metrics.in_flight(ctx.api_name);
    let outcome = dispatch(&ctx, parsed.body).instrument(span).await;
    drop(in_flight);
    broker.metrics.observe_request(ctx.api_name, ctx.version, started.elapsed().as_secs_f64());
    outcome
}

/// Decodes a request body. Bytes after the body are ignored, as Apache Kafka
/// ignores them: librdkafka 2.16 sends three after an all-topics Metadata v13.
fn decode<R: Decodable>(body: &mut Bytes, version: i16) -> Result<R, Outcome> {
    let request = R::decode(body, version).map_err(|e| close("malformed_body", e.to_string()))?;
    if body.has_remaining() {
        tracing::debug!(unread_bytes = body.remaining(), "ignoring bytes after the request body");
    }
    Ok(request)
}

fn respond<R: Encodable>(ctx: &RequestContext, body: &R) -> Outcome {
    match encode_response(ctx.api, ctx.version, ctx.correlation_id, body) {
        Ok(frame) => Outcome::Respond(frame),
        Err(e) => {
            tracing::error!(api = ctx.api_name, version = ctx.version, cause = %e, "could not encode a response");
            close("encode_failed", e.to_string())
        }
    }
}

async fn dispatch(ctx: &RequestContext, mut body: Bytes) -> Outcome {
    macro_rules! route {
        ($handler:path) => {
            match decode(&mut body, ctx.version) {
                Ok(request) => respond(ctx, &$handler(ctx, request).await),
                Err(outcome) => outcome,
            }
        };
    }
    match ctx.api {
        ApiKey::Produce => match decode(&mut body, ctx.version) {
            Ok(request) => match handlers::produce::handle(ctx, request).await {
                Some(response) => respond(ctx, &response),
                None => Outcome::NoResponse,
            },
            Err(outcome) => outcome,
        },
        ApiKey::Fetch => match decode(&mut body, ctx.version) {
            Ok(request) => {
                let response = handlers::fetch::handle(ctx, request).await;
                match crate::shared_frame::encode_fetch_response(ctx.version, ctx.correlation_id, &response) {
                    Ok(parts) => Outcome::RespondParts(parts),
                    Err(e) => {
                        tracing::error!(api = ctx.api_name, version = ctx.version, cause = %e, "could not encode a response");
                        close("encode_failed", e.to_string())
                    }
                }
            }
            Err(outcome) => outcome,
        },
        ApiKey::ListOffsets => route!(handlers::list_offsets::handle),
        ApiKey::Metadata => route!(handlers::metadata::handle),
        ApiKey::ApiVersions => route!(handlers::api_versions::handle),
        ApiKey::CreateTopics => route!(handlers::topics::create),
        ApiKey::DeleteTopics => route!(handlers::topics::delete),
        ApiKey::CreatePartitions => route!(handlers::topics::create_partitions),
        ApiKey::DeleteRecords => route!(handlers::delete_records::handle),
        ApiKey::InitProducerId => route!(handlers::producer_id::handle),
        ApiKey::OffsetForLeaderEpoch => route!(handlers::leaders::offset_for_leader_epoch),
        ApiKey::DescribeConfigs => route!(handlers::configs::describe),
        ApiKey::AlterConfigs => route!(handlers::configs::alter),
        ApiKey::AlterReplicaLogDirs => route!(handlers::log_dirs::alter_replicas),
        ApiKey::DescribeLogDirs => route!(handlers::log_dirs::describe),
        ApiKey::ElectLeaders => route!(handlers::leaders::elect),
        ApiKey::AlterPartitionReassignments => route!(handlers::reassignments::alter),
        ApiKey::ListPartitionReassignments => route!(handlers::reassignments::list),
        ApiKey::DescribeProducers => route!(handlers::producers::describe),
        ApiKey::DescribeQuorum => route!(handlers::quorum::describe),
        ApiKey::IncrementalAlterConfigs => route!(handlers::configs::incremental_alter),
        ApiKey::DescribeCluster => route!(handlers::cluster::describe),
        ApiKey::UnregisterBroker => route!(handlers::cluster::unregister_broker),
        ApiKey::SaslHandshake => route!(handlers::sasl::handshake),
        ApiKey::SaslAuthenticate => route!(handlers::sasl::authenticate),
        ApiKey::DescribeUserScramCredentials => route!(handlers::scram_credentials::describe),
        ApiKey::AlterUserScramCredentials => route!(handlers::scram_credentials::alter),
        ApiKey::FindCoordinator => route!(handlers::groups::find_coordinator),
        ApiKey::JoinGroup => route!(handlers::groups::join),
        ApiKey::SyncGroup => route!(handlers::groups::sync),
        ApiKey::Heartbeat => route!(handlers::groups::heartbeat),
        ApiKey::LeaveGroup => route!(handlers::groups::leave),
        ApiKey::OffsetCommit => route!(handlers::offsets::commit),
        ApiKey::OffsetFetch => route!(handlers::offsets::fetch),
        ApiKey::OffsetDelete => route!(handlers::offsets::delete),
        ApiKey::ListGroups => route!(handlers::groups::list),
        ApiKey::DescribeGroups => route!(handlers::groups::describe),
        ApiKey::DeleteGroups => route!(handlers::groups::delete),
        ApiKey::ConsumerGroupHeartbeat => route!(handlers::consumer_groups::heartbeat),
        ApiKey::ConsumerGroupDescribe => route!(handlers::consumer_groups::describe),
        other => close("unsupported_api", format!("API {other:?} is not implemented")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn frame_for(api: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("prop")))
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn metadata_frame(version: i16) -> Bytes {
        frame_for(ApiKey::Metadata, version, &MetadataRequest::default().with_topics(None))
    }

    #[test]
    fn unknown_api_versions_version_answers_in_v0_format() {
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::ApiVersions as i16);
        buf.put_i16(99);
        buf.put_i32(42);
        buf.put_i16(-1);
        let Err(Outcome::Respond(frame)) = parse_frame(buf.freeze()) else { panic!("expected an answer") };
        let mut body = frame.slice(4..);
        let header = ResponseHeader::decode(&mut body, 0).unwrap();
        assert_eq!(header.correlation_id, 42);
        let response = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(response.error_code, 35);
        assert!(response.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16));
    }

    #[test]
    fn every_advertised_version_of_a_real_request_parses() {
        for version in 0..=12 {
            let parsed = parse_frame(metadata_frame(version)).expect("parses");
            assert!(matches!(decode_body(&parsed), Ok(RequestKind::Metadata(_))), "v{version}");
        }
    }

    #[test]
    fn every_advertised_version_is_within_the_codec_and_round_trips() {
        for &(api, min, max) in SUPPORTED_APIS {
            let codec = api.valid_versions();
            assert!(codec.min <= min && max <= codec.max, "{api:?} v{min}..=v{max} outside the codec's v{}..=v{}", codec.min, codec.max);
            for version in min..=max {
                let request = default_request(api);
                let mut buf = BytesMut::new();
                request.encode(&mut buf, version).unwrap_or_else(|e| panic!("{api:?} v{version} does not encode: {e}"));
                let decoded = RequestKind::decode(api, &mut buf.freeze(), version);
                assert!(decoded.is_ok(), "{api:?} v{version} does not decode: {:?}", decoded.err());
            }
        }
    }

    fn default_request(api: ApiKey) -> RequestKind {
        match api {
            ApiKey::Produce => RequestKind::Produce(Default::default()),
            ApiKey::Fetch => RequestKind::Fetch(Default::default()),
            ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
            ApiKey::Metadata => RequestKind::Metadata(Default::default()),
            ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
            ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
            ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
            ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
            ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
            ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
            ApiKey::AlterReplicaLogDirs => RequestKind::AlterReplicaLogDirs(Default::default()),
            ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(Default::default()),
            ApiKey::ElectLeaders => RequestKind::ElectLeaders(Default::default()),
            ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(Default::default()),
            ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(Default::default()),
            ApiKey::DescribeProducers => RequestKind::DescribeProducers(Default::default()),
            ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(Default::default()),
            ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
            ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
            ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
            ApiKey::UnregisterBroker => RequestKind::UnregisterBroker(Default::default()),
            ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
            ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
            ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
            ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
            ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
            ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
            ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(Default::default()),
            ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(Default::default()),
            ApiKey::SaslHandshake => RequestKind::SaslHandshake(Default::default()),
            ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(Default::default()),
            ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(Default::default()),
            ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(Default::default()),
            other => panic!("no default request for {other:?}"),
        }
    }

    #[test]
    fn refusals_close_the_connection() {
        assert!(matches!(parse_frame(Bytes::from_static(&[0, 3])), Err(Outcome::Close { reason: "short_frame", .. })));
        let unknown = Bytes::from_static(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(parse_frame(unknown), Err(Outcome::Close { reason: "unknown_api", .. })));
        let too_new = Bytes::from_static(&[0, 3, 0, 99, 0, 0, 0, 1]);
        assert!(matches!(parse_frame(too_new), Err(Outcome::Close { reason: "unsupported_version", .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(parsed) = parse_frame(Bytes::from(data)) {
                let _ = decode_body(&parsed);
            }
        }

        #[test]
        fn arbitrary_bodies_for_every_supported_api_never_panic(
            api_index in 0..SUPPORTED_APIS.len(),
            version_offset in 0i16..20,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let (api, min, max) = SUPPORTED_APIS[api_index];
            let version = min + version_offset % (max - min + 1);
            let mut buf = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .encode(&mut buf, api.request_header_version(version))
                .unwrap();
            buf.extend_from_slice(&body);
            if let Ok(parsed) = parse_frame(buf.freeze()) {
                let _ = decode_body(&parsed);
            }
        }

        #[test]
        fn corrupted_real_frames_never_panic(version in 0i16..=12, at in 0usize..64, byte in any::<u8>(), cut in 0usize..64) {
            let frame = metadata_frame(version);
            let mut bytes = frame.to_vec();
            if at < bytes.len() {
                bytes[at] = byte;
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            if let Ok(parsed) = parse_frame(Bytes::from(bytes)) {
                let _ = decode_body(&parsed);
            }
        }
    }
}
