//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server side:
//! credential derivation, and the two-round exchange that checks a client's
//! proof against a stored credential and proves the server knows it too.
//!
//! Only `Hi` (PBKDF2 with HMAC), HMAC and the hash come from `ring`
//! (already the TLS provider); the proof comparison is constant-time
//! (`subtle`). Channel binding (`p=`) is not offered, as Kafka offers none:
//! a client asking for it is refused.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::{digest, hmac};
use silt_actors::metadata::quorum::{ScramCredential, ScramMechanism};
use subtle::ConstantTimeEq;

/// The longest SCRAM message accepted, in bytes (real ones are under 300).
pub const SCRAM_MESSAGE_BYTES_MAX: usize = 4096;
/// Bytes of the server's nonce before base64.
const SERVER_NONCE_BYTES: usize = 24;

/// Why an exchange failed. Every variant is answered alike to the client
/// (SASL_AUTHENTICATION_FAILED); the variant is for the broker's log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding was requested; none is offered")]
    ChannelBinding,
    #[error("unknown user")]
    UnknownUser,
    #[error("the nonce {given:?} does not continue the exchange (expected {expected:?})")]
    NonceMismatch { given: String, expected: String },
    #[error("the channel binding attribute does not match the first message")]
    BindingMismatch,
    #[error("invalid proof (wrong password)")]
    BadProof,
}

fn hmac_algorithm(mechanism: ScramMechanism) -> hmac::Algorithm {
    match mechanism {
        ScramMechanism::Sha256 => hmac::HMAC_SHA256,
        ScramMechanism::Sha512 => hmac::HMAC_SHA512,
    }
}

fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    let algorithm = match mechanism {
        ScramMechanism::Sha256 => &digest::SHA256,
        ScramMechanism::Sha512 => &digest::SHA512,
    };
    digest::digest(algorithm, data).as_ref().to_vec()
}

fn hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac_algorithm(mechanism), key), data).as_ref().to_vec()
}

/// RFC 5802's `Hi(str, salt, i)`: PBKDF2 with the mechanism's HMAC, one block.
pub fn salted_password(mechanism: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let key = hmac::Key::new(hmac_algorithm(mechanism), password);
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac::sign(&key, &first).as_ref().to_vec();
    let mut result = u.clone();
    for _ in 1..iterations {
        u = hmac::sign(&key, &u).as_ref().to_vec();
        result.iter_mut().zip(&u).for_each(|(r, x)| *r ^= x);
    }
    result
}

/// The stored credential for a salted password: StoredKey = H(HMAC(SaltedPassword,
/// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key").
pub fn credential_from_salted(mechanism: ScramMechanism, salted: &[u8], salt: Vec<u8>, iterations: u32) -> ScramCredential {
    let client_key = hmac(mechanism, salted, b"Client Key");
    ScramCredential { salt, iterations, stored_key: hash(mechanism, &client_key), server_key: hmac(mechanism, salted, b"Server Key") }
}

/// A fresh random salt (32 bytes).
pub fn random_salt() -> Vec<u8> {
    random_bytes::<32>().to_vec()
}

/// A new credential for `password` with a random salt.
pub fn credential_from_password(mechanism: ScramMechanism, password: &str, iterations: u32) -> ScramCredential {
    let salt = random_salt();
    let salted = salted_password(mechanism, password.as_bytes(), &salt, iterations);
    credential_from_salted(mechanism, &salted, salt, iterations)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; N];
    // The system generator fails only if the OS has no entropy source at all;
    // then a zero nonce still fails no login, and the salt is at worst shared.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("the system random generator failed");
    }
    bytes
}

/// A fresh server nonce: random bytes in hex. Letters and digits only, as
/// Kafka's are: librdkafka 1.x mangles a nonce holding `+` or `/` and its
/// final message then fails the nonce check.
pub fn server_nonce() -> String {
    random_bytes::<SERVER_NONCE_BYTES>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a `saslname` (`=2C` is `,`, `=3D` is `=`; any other `=` is malformed).
fn decode_sasl_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The exchange after the client's first message: what the final message is checked against.
#[derive(Debug)]
pub struct ScramExchange {
    mechanism: ScramMechanism,
    user: String,
    credential: Option<ScramCredential>,
    /// `c=` the client must send back: base64 of the GS2 header.
    binding: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl ScramExchange {
    /// Reads the client's first message and answers the server's first.
    /// `credential_of` looks the user up; an unknown user gets a made-up
    /// salt and fails at the proof, so the answer does not tell which users exist.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        server_nonce: &str,
        credential_of: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramExchange, Vec<u8>), ScramError> {
        if client_first.len() > SCRAM_MESSAGE_BYTES_MAX {
            return Err(ScramError::Malformed("message too long"));
        }
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = &text[..text.len() - bare.len()];
        let mut attributes = bare.split(',');
        let user = attributes.next().and_then(|a| a.strip_prefix("n=")).ok_or(ScramError::Malformed("no user name"))?;
        let user = decode_sasl_name(user)?;
        if user.is_empty() {
            return Err(ScramError::Malformed("empty user name"));
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_sasl_name(authzid)? != user {
                return Err(ScramError::Malformed("an authorization id other than the user is not supported"));
            }
        } else if !authzid.is_empty() {
            return Err(ScramError::Malformed("bad authorization id"));
        }
        let client_nonce = attributes.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
            return Err(ScramError::Malformed("bad nonce"));
        }
        // Extensions (Kafka's `tokenauth=true`) are ignored, as delegation tokens are not served.
        let credential = credential_of(&user);
        let nonce = format!("{client_nonce}{server_nonce}");
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (hash(mechanism, user.as_bytes()), silt_actors::metadata::quorum::scram::SCRAM_ITERATIONS_MIN),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let exchange = ScramExchange {
            mechanism,
            user,
            credential,
            binding: BASE64.encode(gs2_header),
            nonce,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// The user the client named.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's final message; on success answers the server's
    /// final message (`v=` ServerSignature).
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        if client_final.len() > SCRAM_MESSAGE_BYTES_MAX {
            return Err(ScramError::Malformed("message too long"));
        }
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Malformed("no channel binding attribute"))?;
        let nonce = attributes.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        if binding != self.binding {
            return Err(ScramError::BindingMismatch);
        }
        // Kafka accepts a final nonce that ends with the exchange's nonce, and
        // librdkafka 2.0 (Debian 12's kcat) relies on it: it sends its own nonce
        // again in front. The server's fresh half must still be there, and the
        // proof covers the message as sent, so a replay still fails.
        if !nonce.ends_with(&self.nonce) {
            return Err(ScramError::NonceMismatch { given: nonce.chars().take(128).collect(), expected: self.nonce.clone() });
        }
        let proof = BASE64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let Some(credential) = &self.credential else { return Err(ScramError::UnknownUser) };
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let client_signature = hmac(self.mechanism, &credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let matches: bool = hash(self.mechanism, &client_key).ct_eq(&credential.stored_key).into();
        if !matches {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(self.mechanism, &credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    const RFC7677_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC7677_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC7677_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC7677_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC7677_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc7677_credential() -> ScramCredential {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        credential_from_salted(ScramMechanism::Sha256, &salted, salt, 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_is_reproduced_byte_for_byte() {
        let (exchange, server_first) =
            ScramExchange::start(ScramMechanism::Sha256, RFC7677_CLIENT_FIRST.as_bytes(), RFC7677_SERVER_NONCE, |u| (u == "user").then(rfc7677_credential))
                .unwrap();
        assert_eq!(String::from_utf8(server_first).unwrap(), RFC7677_SERVER_FIRST);
        assert_eq!(exchange.user(), "user");
        let server_final = exchange.finish(RFC7677_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), RFC7677_SERVER_FINAL);
    }

    #[test]
    fn a_wrong_password_or_an_unknown_user_fails_at_the_proof() {
        let wrong = || {
            let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
            let salted = salted_password(ScramMechanism::Sha256, b"pen", &salt, 4096);
            Some(credential_from_salted(ScramMechanism::Sha256, &salted, salt, 4096))
        };
        let (exchange, _) = ScramExchange::start(ScramMechanism::Sha256, RFC7677_CLIENT_FIRST.as_bytes(), RFC7677_SERVER_NONCE, |_| wrong()).unwrap();
        assert_eq!(exchange.finish(RFC7677_CLIENT_FINAL.as_bytes()), Err(ScramError::BadProof));
        let (exchange, server_first) = ScramExchange::start(ScramMechanism::Sha256, RFC7677_CLIENT_FIRST.as_bytes(), RFC7677_SERVER_NONCE, |_| None).unwrap();
        assert!(String::from_utf8(server_first).unwrap().ends_with(",i=4096"), "an unknown user still gets a salt and a count");
        assert_eq!(exchange.finish(RFC7677_CLIENT_FINAL.as_bytes()), Err(ScramError::UnknownUser));
    }

    #[test]
    fn a_replayed_or_altered_final_message_is_refused() {
        let start = || ScramExchange::start(ScramMechanism::Sha256, RFC7677_CLIENT_FIRST.as_bytes(), "other-nonce", |_| Some(rfc7677_credential())).unwrap().0;
        assert!(matches!(start().finish(RFC7677_CLIENT_FINAL.as_bytes()), Err(ScramError::NonceMismatch { .. })), "another server nonce");
        let altered = RFC7677_CLIENT_FINAL.replace("c=biws", "c=eSws");
        let (exchange, _) =
            ScramExchange::start(ScramMechanism::Sha256, RFC7677_CLIENT_FIRST.as_bytes(), RFC7677_SERVER_NONCE, |_| Some(rfc7677_credential())).unwrap();
        assert_eq!(exchange.finish(altered.as_bytes()), Err(ScramError::BindingMismatch));
    }

    #[test]
    fn a_final_nonce_with_the_client_nonce_repeated_in_front_is_accepted_as_kafka_accepts_it() {
        let credential = credential_from_password(ScramMechanism::Sha256, "pw", 4096);
        let (exchange, server_first) = ScramExchange::start(ScramMechanism::Sha256, b"n,,n=u,r=abc", "def", |_| Some(credential.clone())).unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        let (message, _) = client_final(ScramMechanism::Sha256, "pw", "n=u,r=abc", &server_first);
        let doubled = message.replace("r=abcdef", "r=abcabcdef");
        // The proof was computed over the undoubled message, so recompute it the way librdkafka does.
        let fields: Vec<&str> = server_first.split(',').collect();
        let salt = BASE64.decode(&fields[1][2..]).unwrap();
        let salted = salted_password(ScramMechanism::Sha256, b"pw", &salt, 4096);
        let client_key = hmac(ScramMechanism::Sha256, &salted, b"Client Key");
        let without_proof = doubled.rsplit_once(",p=").unwrap().0;
        let auth = format!("n=u,r=abc,{server_first},{without_proof}");
        let signature = hmac(ScramMechanism::Sha256, &hash(ScramMechanism::Sha256, &client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        assert!(exchange.finish(format!("{without_proof},p={}", BASE64.encode(proof)).as_bytes()).is_ok());
    }

    /// A client side of the exchange (RFC 5802 section 3), to test SHA-512 end to end.
    fn client_final(mechanism: ScramMechanism, password: &str, client_first_bare: &str, server_first: &str) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = &fields[0][2..];
        let salt = BASE64.decode(&fields[1][2..]).unwrap();
        let iterations: u32 = fields[2][2..].parse().unwrap();
        let salted = salted_password(mechanism, password.as_bytes(), &salt, iterations);
        let client_key = hmac(mechanism, &salted, b"Client Key");
        let stored_key = hash(mechanism, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(mechanism, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_signature = hmac(mechanism, &hmac(mechanism, &salted, b"Server Key"), auth_message.as_bytes());
        (format!("{without_proof},p={}", BASE64.encode(proof)), server_signature)
    }

    #[test]
    fn sha_512_credentials_authenticate_a_client_with_the_password() {
        let credential = credential_from_password(ScramMechanism::Sha512, "s3cret", 4096);
        assert_eq!((credential.stored_key.len(), credential.server_key.len()), (64, 64));
        let first = "n,,n=al=2Cice,r=abcdef";
        let (exchange, server_first) = ScramExchange::start(ScramMechanism::Sha512, first.as_bytes(), &server_nonce(), |u| {
            assert_eq!(u, "al,ice", "=2C decodes to a comma");
            Some(credential.clone())
        })
        .unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        let (final_message, expected_signature) = client_final(ScramMechanism::Sha512, "s3cret", "n=al=2Cice,r=abcdef", &server_first);
        let server_final = exchange.finish(final_message.as_bytes()).unwrap();
        assert_eq!(server_final, format!("v={}", BASE64.encode(expected_signature)).into_bytes());
    }

    #[test]
    fn malformed_first_messages_are_refused_not_panicked_on() {
        let cases: &[&[u8]] =
            &[b"", b"n", b"n,,", b"n,,r=abc", b"p=tls-unique,,n=u,r=a", b"n,,n=a=ZZ,r=x", b"n,,n=u,r=", b"x,,n=u,r=a", &[0xff, 0xfe], b"n,a=other,n=u,r=a"];
        for case in cases {
            assert!(ScramExchange::start(ScramMechanism::Sha256, case, "s", |_| None).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        let (exchange, _) = ScramExchange::start(ScramMechanism::Sha256, b"n,,n=u,r=a", "s", |_| Some(rfc7677_credential())).unwrap();
        assert!(exchange.finish(b"garbage").is_err());
    }
}
