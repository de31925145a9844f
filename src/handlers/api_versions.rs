//! ApiVersions: what Silt speaks.

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::{api_version_entries, RequestContext};

pub async fn handle(_ctx: &RequestContext, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_version_entries())
}
