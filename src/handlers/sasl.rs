//! SaslHandshake and SaslAuthenticate outside a SASL login: on a listener
//! without SASL, or after the client has authenticated (re-authentication,
//! KIP-368, is not served). Kafka answers both with ILLEGAL_SASL_STATE. The
//! login itself is [`crate::security::sasl`].

use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::ResponseError;

use super::wire;
use crate::protocol::RequestContext;

pub async fn handshake(ctx: &RequestContext, _request: SaslHandshakeRequest) -> SaslHandshakeResponse {
    SaslHandshakeResponse::default().with_error_code(ctx.count(ResponseError::IllegalSaslState.code()))
}

pub async fn authenticate(ctx: &RequestContext, _request: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(ctx.count(ResponseError::IllegalSaslState.code()))
        .with_error_message(Some(wire("SaslAuthenticate outside a SASL login: the listener has no SASL, or the connection is already authenticated")))
}
