//! `silt user`: SCRAM credentials over the Kafka API (AlterUserScramCredentials
//! and DescribeUserScramCredentials, KIP-554), against Silt or Apache Kafka.
//!
//! librdkafka has no binding for these APIs, so this command speaks them with
//! the protocol codec over one plain connection (a PLAINTEXT listener). The
//! password never leaves this process: it is salted and iterated here
//! (PBKDF2, RFC 5802's `Hi`), and only the salted password is sent, as
//! Kafka's own tools do.

use clap::{Subcommand, ValueEnum};
use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest};
use kafka_protocol::protocol::StrBytes;
use silt::config::security::DEFAULT_SCRAM_ITERATIONS;
use silt::perf::raw::wire::Connection;
use silt_actors::metadata::quorum::ScramMechanism;

use super::{print_table, CliError};

/// Which SCRAM mechanisms a command covers.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mechanisms {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// Both mechanisms.
    All,
}

impl Mechanisms {
    fn list(self) -> Vec<ScramMechanism> {
        match self {
            Mechanisms::ScramSha256 => vec![ScramMechanism::Sha256],
            Mechanisms::ScramSha512 => vec![ScramMechanism::Sha512],
            Mechanisms::All => ScramMechanism::ALL.to_vec(),
        }
    }
}

/// Where to send the requests.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// A broker's PLAINTEXT listener, host:port.
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092", env = "SILT_BOOTSTRAP_SERVER")]
    pub bootstrap_server: String,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create or replace a user's SCRAM credentials.
    #[command(alias = "alter")]
    Create {
        #[command(flatten)]
        target: Target,
        /// The user name.
        #[arg(long)]
        name: String,
        /// The password (or from SILT_USER_PASSWORD, which keeps it out of `ps`).
        #[arg(long, env = "SILT_USER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, value_enum, default_value = "all")]
        mechanism: Mechanisms,
        /// PBKDF2 iterations (4096..=16384).
        #[arg(long, default_value_t = DEFAULT_SCRAM_ITERATIONS)]
        iterations: u32,
    },
    /// Delete a user's SCRAM credentials.
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "all")]
        mechanism: Mechanisms,
    },
    /// List users with SCRAM credentials, or describe the named ones.
    Describe {
        #[command(flatten)]
        target: Target,
        /// Users to describe (repeatable); none lists every user.
        #[arg(long)]
        name: Vec<String>,
    },
}

fn connect(target: &Target) -> Result<Connection, CliError> {
    Connection::open(&target.bootstrap_server).map_err(|e| CliError::Unreachable {
        bootstrap: target.bootstrap_server.clone(),
        timeout: silt::perf::raw::wire::RESPONSE_TIMEOUT,
        cause: format!("{e:#}"),
    })
}

fn refused(action: &str) -> impl FnOnce(anyhow::Error) -> CliError + '_ {
    move |e| CliError::Refused { action: action.to_owned(), reason: format!("{e:#}") }
}

pub fn run(command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::Create { target, name, password, mechanism, iterations } => {
            if password.is_empty() {
                return Err(CliError::BadArgument("the password must not be empty".into()));
            }
            let upsertions = mechanism
                .list()
                .into_iter()
                .map(|m| {
                    let salt = silt::security::scram::random_salt();
                    let salted = silt::security::scram::salted_password(m, password.as_bytes(), &salt, iterations);
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_mechanism(m.wire_value())
                        .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
                        .with_salt(salt.into())
                        .with_salted_password(salted.into())
                })
                .collect();
            alter(&target, AlterUserScramCredentialsRequest::default().with_upsertions(upsertions), "create the credentials")?;
            println!("user {name:?}: credentials written");
            Ok(())
        }
        UserCommand::Delete { target, name, mechanism } => {
            let deletions = mechanism
                .list()
                .into_iter()
                .map(|m| ScramCredentialDeletion::default().with_name(StrBytes::from_string(name.clone())).with_mechanism(m.wire_value()))
                .collect();
            alter(&target, AlterUserScramCredentialsRequest::default().with_deletions(deletions), "delete the credentials")?;
            println!("user {name:?}: credentials deleted");
            Ok(())
        }
        UserCommand::Describe { target, name } => {
            let mut conn = connect(&target)?;
            let users = (!name.is_empty()).then(|| name.iter().map(|n| UserName::default().with_name(StrBytes::from_string(n.clone()))).collect());
            let request = DescribeUserScramCredentialsRequest::default().with_users(users);
            let response = conn.call(&request, 0).map_err(refused("describe users"))?;
            if response.error_code != 0 {
                return Err(CliError::Refused {
                    action: "describe users".into(),
                    reason: describe_error(response.error_code, response.error_message.as_deref()),
                });
            }
            let mut rows = vec![vec!["USER".into(), "MECHANISM".into(), "ITERATIONS".into()]];
            for result in &response.results {
                if result.error_code != 0 {
                    rows.push(vec![result.user.to_string(), describe_error(result.error_code, result.error_message.as_deref()), String::new()]);
                }
                for info in &result.credential_infos {
                    let mechanism = ScramMechanism::from_wire(info.mechanism).map_or("UNKNOWN", ScramMechanism::sasl_name);
                    rows.push(vec![result.user.to_string(), mechanism.into(), info.iterations.to_string()]);
                }
            }
            print_table(&rows);
            Ok(())
        }
    }
}

fn describe_error(code: i16, message: Option<&str>) -> String {
    let name = kafka_protocol::ResponseError::try_from_code(code).map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    match message {
        Some(m) => format!("{name}: {m}"),
        None => name,
    }
}

fn alter(target: &Target, request: AlterUserScramCredentialsRequest, action: &str) -> Result<(), CliError> {
    let mut conn = connect(target)?;
    let response = conn.call(&request, 0).map_err(refused(action))?;
    let failures: Vec<String> = response
        .results
        .iter()
        .filter(|r| r.error_code != 0)
        .map(|r| format!("user {:?}: {}", r.user.as_str(), describe_error(r.error_code, r.error_message.as_deref())))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused { action: action.to_owned(), reason: failures.join("; ") })
    }
}
