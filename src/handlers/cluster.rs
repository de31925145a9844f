//! DescribeCluster: the live brokers of the metadata image (and, from v2 on
//! request, the fenced ones) and the active controller; UnregisterBroker: an operator removes a broker (KIP-500).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, UnregisterBrokerRequest, UnregisterBrokerResponse};

use super::{authorized_operations, message, wire};
use crate::protocol::RequestContext;

/// DescribeCluster v1 added the endpoint type (brokers or controllers).
const ENDPOINT_TYPE_SINCE_VERSION: i16 = 1;

/// DescribeCluster v2 lists fenced brokers on request (KIP-1073).
const FENCED_BROKERS_SINCE_VERSION: i16 = 2;

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
    if ctx.version >= FENCED_BROKERS_SINCE_VERSION && request.include_fenced_brokers {
        // KIP-1073: tools (kafka-reassign-partitions) must know a broker that is down.
        let listener = &broker.advertised(ctx.listener).name;
        for b in broker.node.fenced_brokers() {
            let Some(endpoint) = b.endpoints.iter().find(|e| &e.listener == listener) else { continue };
            response.brokers.push(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(wire(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(b.rack.map(wire))
                    .with_is_fenced(true),
            );
        }
        response.brokers.sort_by_key(|b| b.broker_id.0);
    }
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
