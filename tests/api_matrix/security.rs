//! The security APIs of the matrix: SASL outside a SASL listener, and the
//! SCRAM credential APIs (Kafka's answers; tests/test_security.py drives
//! the SASL listeners themselves).

use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::common::*;

const ILLEGAL_SASL_STATE: i16 = 34;
const RESOURCE_NOT_FOUND: i16 = 91;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;
/// Kafka's SCRAM-SHA-256 mechanism number.
const SCRAM_SHA_256: i8 = 1;

/// A PLAINTEXT listener answers SaslHandshake with ILLEGAL_SASL_STATE, as Kafka does.
pub(super) fn check_sasl_handshake(broker: &Broker, version: i16) {
    let response = broker.client().must(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")), version);
    assert_eq!(response.error_code, ILLEGAL_SASL_STATE, "error {}", code_name(response.error_code));
}

pub(super) fn check_sasl_authenticate(broker: &Broker, version: i16) {
    let response = broker.client().must(&SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0a\0b")), version);
    assert_eq!(response.error_code, ILLEGAL_SASL_STATE, "error {}", code_name(response.error_code));
}

fn user(name: &str) -> StrBytes {
    StrBytes::from_string(name.to_owned())
}

pub(super) fn check_alter_user_scram_credentials(broker: &Broker, version: i16) {
    let name = unique_topic(&format!("matrix-user-v{version}"));
    let upsert = ScramCredentialUpsertion::default()
        .with_name(user(&name))
        .with_mechanism(SCRAM_SHA_256)
        .with_iterations(4096)
        .with_salt(bytes::Bytes::from_static(b"0123456789abcdef"))
        .with_salted_password(bytes::Bytes::from_static(&[7; 32]));
    let response = broker.client().must(&AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsert.clone()]), version);
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].error_code, 0, "error {}", code_name(response.results[0].error_code));
    let too_few = upsert.with_name(user(&format!("{name}-weak"))).with_iterations(100);
    let missing = ScramCredentialDeletion::default().with_name(user(&format!("{name}-missing"))).with_mechanism(SCRAM_SHA_256);
    let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![too_few]).with_deletions(vec![missing]);
    let response = broker.client().must(&request, version);
    let mut codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec![RESOURCE_NOT_FOUND, UNACCEPTABLE_CREDENTIAL]);
}

pub(super) fn check_describe_user_scram_credentials(broker: &Broker, version: i16) {
    let name = unique_topic(&format!("matrix-nobody-v{version}"));
    let request = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![UserName::default().with_name(user(&name))]));
    let response = broker.client().must(&request, version);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].error_code, RESOURCE_NOT_FOUND, "error {}", code_name(response.results[0].error_code));
}
