//! Listener security at the edge: the listeners and their protocols
//! ([`listener`]), TLS with reloading certificates and client-certificate
//! principals ([`tls`], [`x509`]), and SASL authentication ([`sasl`]) with
//! PLAIN and SCRAM ([`scram`]). Credentials themselves are metadata
//! (`silt_actors::metadata::quorum::scram`); see docs/security.md.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use silt_actors::metadata::quorum::ScramMechanism;
use silt_actors::node::ScramCredentialChange;
use silt_actors::NodeHandle;

use crate::config::Config;

pub mod listener;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod x509;

/// Log lines about failed authentications allowed per second and per
/// reason; the rest are counted and the count reported with the next line
/// that is written for that reason.
pub const FAILURE_LOG_LINES_PER_SECOND: u64 = 10;

/// A rate limit for log lines, one window per reason: a client hammering a
/// listener with bad logins must not fill the disk with logs (the metrics
/// count every failure), nor hide the one line about a different failure.
/// Reasons are `&'static str` names from the code, so the map stays small.
pub struct RateLimitedLog {
    windows: Mutex<BTreeMap<&'static str, Window>>,
}

/// One reason's current second, the lines written in it, and the lines not
/// written since the last one that was.
struct Window {
    second: u64,
    lines: u64,
    suppressed: u64,
}

impl RateLimitedLog {
    pub const fn new() -> Self {
        RateLimitedLog { windows: Mutex::new(BTreeMap::new()) }
    }

    /// `Some(lines suppressed before this one)` if a line about `reason` may be written now.
    pub fn admit(&self, reason: &'static str) -> Option<u64> {
        let second = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows.entry(reason).or_insert(Window { second, lines: 0, suppressed: 0 });
        if window.second != second {
            window.second = second;
            window.lines = 0;
        }
        if window.lines < FAILURE_LOG_LINES_PER_SECOND {
            window.lines += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::new()
    }
}

/// The log of failed authentications and refused TLS handshakes, node-wide.
pub static FAILURE_LOG: RateLimitedLog = RateLimitedLog::new();

/// Writes the SCRAM credentials of `sasl.bootstrap_users` that the metadata
/// does not hold yet (both mechanisms), so a first administrator can log in.
/// An existing credential is never overwritten: once created, users are
/// managed with AlterUserScramCredentials (`silt user`).
pub async fn bootstrap_users(node: &NodeHandle, config: &Config) -> anyhow::Result<()> {
    let mut changes = Vec::new();
    for user in &config.sasl.bootstrap_users {
        for mechanism in ScramMechanism::ALL {
            if node.scram_credential(&user.name, mechanism).is_none() {
                let credential = scram::credential_from_password(mechanism, &user.password, user.iterations);
                changes.push(ScramCredentialChange::Upsert { user: user.name.clone(), mechanism, credential });
            }
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let count = changes.len();
    node.alter_scram_credentials(changes).await.context("writing the SCRAM credentials of sasl.bootstrap_users")?;
    tracing::info!(credentials = count, "bootstrap SCRAM users written to the metadata");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_log_admits_a_bounded_number_of_lines_per_second_and_reason() {
        let log = RateLimitedLog::new();
        let admitted = (0..100).filter(|_| log.admit("sasl_authentication_failed").is_some()).count() as u64;
        // The burst may straddle a second boundary, at most doubling the count.
        assert!((FAILURE_LOG_LINES_PER_SECOND..=2 * FAILURE_LOG_LINES_PER_SECOND).contains(&admitted), "{admitted}");
        assert_eq!(log.admit("request_too_large"), Some(0), "a flood of one failure does not hide another");
    }
}
