//! DescribeCluster: the live brokers of the metadata image and the active
//! controller; UnregisterBroker: an operator removes a broker (KIP-500).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, UnregisterBrokerRequest, UnregisterBrokerResponse};

use super::{authorized_operations, message, wire};
use crate::protocol::RequestContext;

/// DescribeCluster v1 added the endpoint type (brokers or controllers).
const ENDPOINT_TYPE_SINCE_VERSION: i16 = 1;

/// DescribeCluster's endpoint type for brokers (controllers are type 2).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub async fn describe(ctx: &RequestContext, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &ctx.broker;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(wire(broker.node.cluster_id.clone()))
        // As a KRaft broker does: the controller clients see is a live broker
        // (this one), which forwards to the active controller, so an admin
        // request never waits on a dead or still-electing controller.
        .with_controller_id(BrokerId(broker.node.node_id));
    if ctx.version >= ENDPOINT_TYPE_SINCE_VERSION {
        response.endpoint_type = request.endpoint_type;
        if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
            response.error_code = ctx.count(ResponseError::UnsupportedEndpointType.code());
            response.error_message = Some(wire("only broker endpoints (type 1) are served; the controller is co-located"));
            return response;
        }
    }
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = authorized_operations::CLUSTER;
    }
    response.brokers = super::metadata::live_brokers(ctx)
        .into_iter()
        .map(|b| DescribeClusterBroker::default().with_broker_id(BrokerId(b.id)).with_host(wire(b.host)).with_port(b.port).with_rack(b.rack.map(wire)))
        .collect();
    response
}

/// UnregisterBroker, as Kafka's controller answers it: the broker's
/// leaderships move and it leaves every ISR, then its registration goes
/// (BROKER_ID_NOT_REGISTERED when there is none). Proposed through the
/// metadata quorum like every admin change, from any broker.
pub async fn unregister_broker(ctx: &RequestContext, request: UnregisterBrokerRequest) -> UnregisterBrokerResponse {
    let mut response = UnregisterBrokerResponse::default();
    if let Err(e) = ctx.broker.node.unregister_broker(request.broker_id.0).await {
        response.error_code = ctx.error_code(&e);
        response.error_message = message(&e);
    }
    response
}
