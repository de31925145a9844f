//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! SCRAM credentials kept in the metadata quorum. The client sends the
//! salted password (never the password); the broker derives StoredKey and
//! ServerKey from it and stores those, with the salt and iteration count.
//!
//! Per-user errors are Kafka's: an unknown mechanism is
//! UNSUPPORTED_SASL_MECHANISM, the same user and mechanism twice is
//! DUPLICATE_RESOURCE, an empty name or an iteration count outside
//! 4096..=16384 is UNACCEPTABLE_CREDENTIAL, and deleting or describing a
//! credential that does not exist is RESOURCE_NOT_FOUND. A user with any
//! error has none of its changes applied; the others are applied together.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::ResponseError;
use silt_actors::metadata::quorum::scram::{SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN};
use silt_actors::metadata::quorum::ScramMechanism;
use silt_actors::node::ScramCredentialChange;

use super::wire;
use crate::protocol::RequestContext;
use crate::security::scram::credential_from_salted;

/// A user's error: code and message.
type UserError = (ResponseError, String);

pub async fn describe(ctx: &RequestContext, request: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    let all = ctx.broker.node.scram_credentials();
    let info = |credentials: &BTreeMap<ScramMechanism, silt_actors::metadata::quorum::ScramCredential>| {
        credentials
            .iter()
            .map(|(m, c)| CredentialInfo::default().with_mechanism(m.wire_value()).with_iterations(i32::try_from(c.iterations).unwrap_or(i32::MAX)))
            .collect()
    };
    let results = match request.users.filter(|users| !users.is_empty()) {
        None => all
            .iter()
            .map(|(user, credentials)| DescribeUserScramCredentialsResult::default().with_user(wire(user.clone())).with_credential_infos(info(credentials)))
            .collect(),
        Some(users) => {
            let mut seen = BTreeMap::<String, usize>::new();
            users.iter().for_each(|u| *seen.entry(u.name.to_string()).or_default() += 1);
            let mut answered = BTreeSet::new();
            users
                .iter()
                .map(|u| u.name.to_string())
                .filter(|name| answered.insert(name.clone()))
                .map(|name| {
                    let result = DescribeUserScramCredentialsResult::default().with_user(wire(name.clone()));
                    let error =
                        |code: ResponseError, message: &str| result.clone().with_error_code(ctx.count(code.code())).with_error_message(Some(wire(message)));
                    if seen[&name] > 1 {
                        return error(ResponseError::DuplicateResource, "Cannot describe SCRAM credentials for the same user twice in a single request");
                    }
                    match all.get(&name) {
                        Some(credentials) => result.with_credential_infos(info(credentials)),
                        None => error(ResponseError::ResourceNotFound, "Attempt to describe a user credential that does not exist"),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub async fn alter(ctx: &RequestContext, request: AlterUserScramCredentialsRequest) -> AlterUserScramCredentialsResponse {
    let existing = ctx.broker.node.scram_credentials();
    let mut users: Vec<String> = Vec::new();
    let mut errors: BTreeMap<String, UserError> = BTreeMap::new();
    let mut changes: BTreeMap<String, Vec<ScramCredentialChange>> = BTreeMap::new();
    let mut touched: BTreeSet<(String, i8)> = BTreeSet::new();
    let mut check = |user: &str, mechanism: i8| -> Result<ScramMechanism, UserError> {
        if !users.iter().any(|u| u == user) {
            users.push(user.to_owned());
        }
        let mechanism_known = ScramMechanism::from_wire(mechanism).ok_or((ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".to_owned()))?;
        if !touched.insert((user.to_owned(), mechanism)) {
            return Err((ResponseError::DuplicateResource, "A user credential cannot be altered twice in the same request".into()));
        }
        if user.is_empty() {
            return Err((ResponseError::UnacceptableCredential, "Username must not be empty".into()));
        }
        Ok(mechanism_known)
    };
    for deletion in &request.deletions {
        let user = deletion.name.to_string();
        let outcome = check(&user, deletion.mechanism).and_then(|mechanism| match existing.get(&user).is_some_and(|m| m.contains_key(&mechanism)) {
            true => Ok(ScramCredentialChange::Delete { user: user.clone(), mechanism }),
            false => Err((ResponseError::ResourceNotFound, "Attempt to delete a user credential that does not exist".to_owned())),
        });
        record(&mut errors, &mut changes, user, outcome);
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.to_string();
        let outcome = check(&user, upsertion.mechanism).and_then(|mechanism| {
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            if iterations < SCRAM_ITERATIONS_MIN {
                return Err((ResponseError::UnacceptableCredential, format!("Too few iterations: at least {SCRAM_ITERATIONS_MIN}")));
            }
            if iterations > SCRAM_ITERATIONS_MAX {
                return Err((ResponseError::UnacceptableCredential, format!("Too many iterations: at most {SCRAM_ITERATIONS_MAX}")));
            }
            if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
                return Err((ResponseError::UnacceptableCredential, "The salt and the salted password must not be empty".into()));
            }
            let credential = credential_from_salted(mechanism, &upsertion.salted_password, upsertion.salt.to_vec(), iterations);
            silt_actors::metadata::quorum::scram::check_credential(&user, mechanism, &credential)
                .map_err(|e| (ResponseError::UnacceptableCredential, e.to_string()))?;
            Ok(ScramCredentialChange::Upsert { user: user.clone(), mechanism, credential })
        });
        record(&mut errors, &mut changes, user, outcome);
    }
    let valid: Vec<ScramCredentialChange> = changes.iter().filter(|(user, _)| !errors.contains_key(*user)).flat_map(|(_, c)| c.iter().cloned()).collect();
    let applied = ctx.broker.node.alter_scram_credentials(valid).await;
    if let Err(e) = &applied {
        tracing::warn!(cause = %e, "SCRAM credential changes were not applied");
    }
    let results = users
        .into_iter()
        .map(|user| {
            let result = AlterUserScramCredentialsResult::default().with_user(wire(user.clone()));
            match (errors.get(&user), &applied) {
                (Some((code, message)), _) => result.with_error_code(ctx.count(code.code())).with_error_message(Some(wire(message.clone()))),
                (None, Err(e)) => result.with_error_code(ctx.error_code(e)).with_error_message(Some(wire(e.to_string()))),
                (None, Ok(())) => result,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Keeps a change, or the user's first error.
fn record(
    errors: &mut BTreeMap<String, UserError>,
    changes: &mut BTreeMap<String, Vec<ScramCredentialChange>>,
    user: String,
    outcome: Result<ScramCredentialChange, UserError>,
) {
    match outcome {
        Ok(change) => changes.entry(user).or_default().push(change),
        Err(error) => {
            errors.entry(user).or_insert(error);
        }
    }
}
