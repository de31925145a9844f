//! Listener security at the edge: the listeners and their protocols
//! ([`listener`]), TLS with reloading certificates and client-certificate
//! principals ([`tls`], [`x509`]), and SASL authentication ([`sasl`]) with
//! PLAIN and SCRAM ([`scram`]). Credentials themselves are metadata
//! (`silt_actors::metadata::quorum::scram`); see docs/security.md.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// Log lines about failed authentications allowed per second; the rest are
/// counted and the count reported with the next line that is written.
pub const FAILURE_LOG_LINES_PER_SECOND: u64 = 10;

/// A rate limit for log lines: a client hammering a listener with bad logins
/// must not fill the disk with logs (the metrics count every failure).
pub struct RateLimitedLog {
    /// The current second (since the epoch) and the lines written in it, packed as `second << 16 | lines`.
    window: AtomicU64,
    /// Lines not written since the last line that was.
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub const fn new() -> Self {
        RateLimitedLog { window: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(lines suppressed before this one)` if a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        let second = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) & 0xffff_ffff_ffff;
        let admitted = self.window.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
            let (window_second, lines) = (packed >> 16, packed & 0xffff);
            if window_second != second {
                Some(second << 16 | 1)
            } else if lines < FAILURE_LOG_LINES_PER_SECOND {
                Some(packed + 1)
            } else {
                None
            }
        });
        match admitted {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
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
    fn the_failure_log_admits_a_bounded_number_of_lines_per_second() {
        let log = RateLimitedLog::new();
        let admitted = (0..100).filter(|_| log.admit().is_some()).count() as u64;
        // The burst may straddle a second boundary, at most doubling the count.
        assert!((FAILURE_LOG_LINES_PER_SECOND..=2 * FAILURE_LOG_LINES_PER_SECOND).contains(&admitted), "{admitted}");
    }
}
