//! InitProducerId: ids for idempotent producers. Transactions are not
//! supported, so a transactional id is refused.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::protocol::RequestContext;

pub async fn handle(ctx: &RequestContext, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if request.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty()) {
        response.error_code = ctx.count(ResponseError::TransactionalIdAuthorizationFailed.code());
        return response;
    }
    // KIP-360: a producer that already has an id may ask for an epoch bump.
    if request.producer_id.0 >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX - 1 {
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch + 1;
        return response;
    }
    match ctx.broker.node.allocate_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => response.error_code = ctx.error_code(&e),
    }
    response
}
