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

/// The APIs Silt implements. Each is advertised with every version the codec
/// supports, and each handler honours the fields of every one of them.
pub const SUPPORTED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::InitProducerId,
    ApiKey::DescribeConfigs,
    ApiKey::CreatePartitions,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
];

/// The advertised version range of `api`, if Silt implements it.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.contains(&api).then(|| {
        let range = api.valid_versions();
        (range.min, range.max)
    })
}

/// The ApiVersions entries Silt advertises.
pub fn api_version_entries() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .filter_map(|&api| {
            supported_versions(api).map(|(min, max)| ApiVersion::default().with_api_key(api as i16).with_min_version(min).with_max_version(max))
        })
        .collect()
}

/// What to do after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this frame (length prefix included).
    Respond(Bytes),
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
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
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
    let body = ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_version_entries());
    match encode_response(ApiKey::ApiVersions, 0, correlation_id, &body) {
        Ok(frame) => Outcome::Respond(frame),
        Err(e) => close("encode_failed", e.to_string()),
    }
}

/// Handles one request frame (without its length prefix).
pub async fn handle_frame(broker: &Arc<Broker>, mut frame: Bytes) -> Outcome {
    if frame.len() < 8 {
        return close("short_frame", format!("a {}-byte request cannot hold a request header", frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(raw_key) else {
        return close("unknown_api", format!("unknown API key {raw_key}"));
    };
    let Some((min, max)) = supported_versions(api) else {
        return close("unsupported_api", format!("API {api:?} is not implemented"));
    };
    if version < min || version > max {
        if api == ApiKey::ApiVersions {
            return unsupported_api_versions(correlation_id);
        }
        return close("unsupported_version", format!("{api:?} v{version} is not supported (v{min}..=v{max})"));
    }
    let header = match RequestHeader::decode(&mut frame, api.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return close("malformed_header", e.to_string()),
    };
    let ctx = RequestContext {
        broker: broker.clone(),
        api,
        api_name: api_name(api),
        version,
        correlation_id,
        client_id: header.client_id.as_ref().map(|c| c.to_string()),
    };
    let span = tracing::debug_span!("request", api_key = ctx.api_name, api_version = version, correlation_id, client_id = ctx.client_id.as_deref().unwrap_or(""));
    let started = Instant::now();
    let outcome = dispatch(&ctx, frame).instrument(span).await;
    broker.metrics.requests.with_label_values(&[ctx.api_name]).inc();
    broker.metrics.request_duration.with_label_values(&[ctx.api_name]).observe(started.elapsed().as_secs_f64());
    outcome
}

fn decode<R: Decodable>(body: &mut Bytes, version: i16) -> Result<R, Outcome> {
    let request = R::decode(body, version).map_err(|e| close("malformed_body", e.to_string()))?;
    if body.has_remaining() {
        return Err(close("malformed_body", format!("{} unread bytes after the request body", body.remaining())));
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
        ApiKey::Fetch => route!(handlers::fetch::handle),
        ApiKey::ListOffsets => route!(handlers::list_offsets::handle),
        ApiKey::Metadata => route!(handlers::metadata::handle),
        ApiKey::ApiVersions => route!(handlers::api_versions::handle),
        ApiKey::CreateTopics => route!(handlers::topics::create),
        ApiKey::DeleteTopics => route!(handlers::topics::delete),
        ApiKey::CreatePartitions => route!(handlers::topics::create_partitions),
        ApiKey::DeleteRecords => route!(handlers::delete_records::handle),
        ApiKey::InitProducerId => route!(handlers::producer_id::handle),
        ApiKey::DescribeConfigs => route!(handlers::configs::describe),
        ApiKey::IncrementalAlterConfigs => route!(handlers::configs::incremental_alter),
        ApiKey::DescribeCluster => route!(handlers::cluster::describe),
        other => close("unsupported_api", format!("API {other:?} is not implemented")),
    }
}
