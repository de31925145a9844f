//! SCRAM credentials as metadata (Kafka's `UserScramCredentialRecord`): each
//! user's salt, iteration count, StoredKey and ServerKey per mechanism
//! (RFC 5802). The password itself is never stored, nor anything it could be
//! read back from without a dictionary attack against the salted, iterated
//! hash. The SCRAM arithmetic lives at the edge (`src/security/scram.rs`):
//! this module only keeps the values and the rules records must satisfy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The fewest PBKDF2 iterations a credential may use (Kafka's minimum, RFC 7677's recommendation).
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
/// The most PBKDF2 iterations a credential may use (Kafka's maximum): each
/// login costs the broker this many HMACs.
pub const SCRAM_ITERATIONS_MAX: u32 = 16_384;
/// The longest user name a credential may have, in bytes.
pub const SCRAM_USER_BYTES_MAX: usize = 1024;
/// The longest salt accepted, in bytes.
pub const SCRAM_SALT_BYTES_MAX: usize = 1024;

const _: () = assert!(SCRAM_ITERATIONS_MIN <= SCRAM_ITERATIONS_MAX);

/// A SCRAM mechanism, numbered as Kafka's `ScramMechanism` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (wire value 1).
    Sha256,
    /// SCRAM-SHA-512 (wire value 2).
    Sha512,
}

impl ScramMechanism {
    /// Every mechanism, in wire order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's wire value (`ScramMechanism.type()`).
    pub fn wire_value(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of a wire value; `None` for 0 (UNKNOWN) and anything else.
    pub fn from_wire(value: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.wire_value() == value)
    }

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    pub fn sasl_name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism a SASL name denotes.
    pub fn from_sasl_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.sasl_name() == name)
    }

    /// The digest length in bytes: StoredKey and ServerKey have this length.
    pub fn digest_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// One user's credential for one mechanism. Invariant (checked on apply):
/// `iterations` is within [`SCRAM_ITERATIONS_MIN`]..=[`SCRAM_ITERATIONS_MAX`],
/// the salt is non-empty and at most [`SCRAM_SALT_BYTES_MAX`], and both keys
/// have the mechanism's digest length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(ClientKey)`: what a client proof is checked against.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server's final message.
    pub server_key: Vec<u8>,
}

/// Why a credential record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ScramCredentialError {
    #[error("the user name is empty or longer than {SCRAM_USER_BYTES_MAX} bytes")]
    BadUserName,
    #[error("{iterations} iterations is outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}")]
    Iterations { iterations: u32 },
    #[error("the salt must hold 1..={SCRAM_SALT_BYTES_MAX} bytes")]
    Salt,
    #[error("the stored and server keys must hold {expected} bytes for {mechanism:?}")]
    KeyLength { mechanism: ScramMechanism, expected: usize },
    #[error("user {user} has no {mechanism:?} credential")]
    Unknown { user: String, mechanism: ScramMechanism },
}

/// Checks a credential against the type's invariant.
pub fn check_credential(user: &str, mechanism: ScramMechanism, credential: &ScramCredential) -> Result<(), ScramCredentialError> {
    if user.is_empty() || user.len() > SCRAM_USER_BYTES_MAX {
        return Err(ScramCredentialError::BadUserName);
    }
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&credential.iterations) {
        return Err(ScramCredentialError::Iterations { iterations: credential.iterations });
    }
    if credential.salt.is_empty() || credential.salt.len() > SCRAM_SALT_BYTES_MAX {
        return Err(ScramCredentialError::Salt);
    }
    let expected = mechanism.digest_bytes();
    if credential.stored_key.len() != expected || credential.server_key.len() != expected {
        return Err(ScramCredentialError::KeyLength { mechanism, expected });
    }
    Ok(())
}

/// Every user's credentials: user → mechanism → credential. A user with no
/// credential left has no entry.
pub type ScramCredentials = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// Sets (`Some`) or removes (`None`) one credential.
pub fn apply(
    credentials: &mut ScramCredentials,
    user: &str,
    mechanism: ScramMechanism,
    credential: Option<&ScramCredential>,
) -> Result<(), ScramCredentialError> {
    match credential {
        Some(credential) => {
            check_credential(user, mechanism, credential)?;
            credentials.entry(user.to_owned()).or_default().insert(mechanism, credential.clone());
        }
        None => {
            let unknown = || ScramCredentialError::Unknown { user: user.to_owned(), mechanism };
            let of_user = credentials.get_mut(user).ok_or_else(unknown)?;
            of_user.remove(&mechanism).ok_or_else(unknown)?;
            if of_user.is_empty() {
                credentials.remove(user);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(iterations: u32) -> ScramCredential {
        ScramCredential { salt: vec![1; 16], iterations, stored_key: vec![2; 32], server_key: vec![3; 32] }
    }

    #[test]
    fn credentials_are_set_replaced_and_removed() {
        let mut all = ScramCredentials::new();
        apply(&mut all, "alice", ScramMechanism::Sha256, Some(&credential(4096))).expect("valid");
        apply(&mut all, "alice", ScramMechanism::Sha256, Some(&credential(8192))).expect("valid");
        assert_eq!(all["alice"][&ScramMechanism::Sha256].iterations, 8192);
        assert!(matches!(apply(&mut all, "alice", ScramMechanism::Sha512, None), Err(ScramCredentialError::Unknown { .. })));
        apply(&mut all, "alice", ScramMechanism::Sha256, None).expect("exists");
        assert!(all.is_empty(), "a user without credentials leaves no entry");
    }

    #[test]
    fn credentials_breaking_the_invariant_are_refused() {
        let mut all = ScramCredentials::new();
        assert!(apply(&mut all, "a", ScramMechanism::Sha256, Some(&credential(4095))).is_err());
        assert!(apply(&mut all, "a", ScramMechanism::Sha256, Some(&credential(16_385))).is_err());
        assert!(apply(&mut all, "", ScramMechanism::Sha256, Some(&credential(4096))).is_err());
        assert!(apply(&mut all, "a", ScramMechanism::Sha512, Some(&credential(4096))).is_err(), "SHA-512 keys are 64 bytes");
        assert!(all.is_empty());
    }

    #[test]
    fn mechanisms_round_trip_their_wire_values_and_names() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_wire(m.wire_value()), Some(m));
            assert_eq!(ScramMechanism::from_sasl_name(m.sasl_name()), Some(m));
        }
        assert_eq!(ScramMechanism::from_wire(0), None);
    }

    #[test]
    fn an_image_map_with_mechanism_keys_survives_json() {
        let mut all = ScramCredentials::new();
        apply(&mut all, "alice", ScramMechanism::Sha256, Some(&credential(4096))).expect("valid");
        let json = serde_json::to_vec(&all).expect("serializes");
        let back: ScramCredentials = serde_json::from_slice(&json).expect("deserializes");
        assert_eq!(back, all);
    }
}
