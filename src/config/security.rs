//! Listener security: the extra Kafka listeners (`[[kafka.listeners]]`),
//! their security protocols, TLS (`[tls]`) and SASL (`[sasl]`).
//!
//! Kafka's model is kept: every listener has a name, a bind address, an
//! advertised address and a security protocol (`listeners`,
//! `advertised.listeners`, `listener.security.protocol.map`). The `[kafka]`
//! section's own `listen`/`advertised_address` are the first listener, named
//! `kafka.listener_name` (default `PLAINTEXT`); `[[kafka.listeners]]` adds
//! more. A listener named after a protocol uses that protocol unless it says
//! otherwise, as Kafka's default protocol map does.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SecurityProtocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol a listener name denotes in Kafka's default map.
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        match name {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Kafka's name of the protocol.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before any other request.
    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `ssl.client.auth`: whether TLS clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client without one still connects (as `User:ANONYMOUS`).
    Requested,
    /// A client without a trusted certificate is refused during the handshake.
    Required,
}

/// A SASL mechanism Silt serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's SASL name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// One more Kafka listener (`[[kafka.listeners]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// The listener's name (Kafka's listener name): `SASL_SSL`, `INTERNAL`, `EXTERNAL`...
    pub name: String,
    /// Address to accept clients on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` clients of this listener are told to connect to; defaults to the bound address.
    #[serde(default)]
    pub advertised_address: Option<String>,
    /// Defaults to the protocol the name denotes (a name such as `EXTERNAL` must set it).
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    /// `listener.name.<name>.ssl.client.auth`: overrides `tls.client_auth` on this listener.
    #[serde(default)]
    pub ssl_client_auth: Option<ClientAuth>,
}

/// `[tls]`: the certificate every SSL and SASL_SSL listener presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain, PEM (leaf first).
    pub cert_file: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Trusted CA certificates for client certificates, PEM (`ssl.truststore`);
    /// required when any listener asks for client certificates.
    pub ca_file: Option<PathBuf>,
    /// `ssl.client.auth`: `none`, `requested` or `required`.
    pub client_auth: ClientAuth,
    /// How often the certificate and key files are checked for changes (a
    /// changed file is loaded for new connections without a restart).
    pub reload_check_interval_ms: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection { cert_file: None, key_file: None, ca_file: None, client_auth: ClientAuth::None, reload_check_interval_ms: 5_000 }
    }
}

/// A SCRAM user written to the metadata at start if it has no credential yet,
/// so that a first administrator can log in and create the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapUser {
    pub name: String,
    pub password: String,
    /// PBKDF2 iterations of the credentials written (4096..=16384).
    #[serde(default = "default_scram_iterations")]
    pub iterations: u32,
}

fn default_scram_iterations() -> u32 {
    DEFAULT_SCRAM_ITERATIONS
}

/// PBKDF2 iterations of credentials Silt derives itself (Kafka's default is 4096).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 8192;

/// `[sasl]`: what SASL_PLAINTEXT and SASL_SSL listeners accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaslSection {
    /// `sasl.enabled.mechanisms`.
    pub enabled_mechanisms: Vec<SaslMechanism>,
    /// PLAIN's users and passwords (the `user_<name>="<password>"` entries of
    /// Kafka's `PlainLoginModule` JAAS configuration). Keep this file private.
    pub plain_users: BTreeMap<String, String>,
    /// SCRAM users (both mechanisms) created at start if missing.
    pub bootstrap_users: Vec<BootstrapUser>,
    /// `sasl.server.max.receive.size`: the largest request accepted before a
    /// client has authenticated; a larger one closes the connection.
    pub max_receive_bytes: u32,
    /// Requests (ApiVersions, SaslHandshake, SaslAuthenticate) a client may
    /// send before it has authenticated; beyond this the connection is closed.
    pub max_requests_before_auth: u32,
}

impl Default for SaslSection {
    fn default() -> Self {
        SaslSection {
            enabled_mechanisms: vec![SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512],
            plain_users: BTreeMap::new(),
            bootstrap_users: Vec::new(),
            max_receive_bytes: 524_288,
            max_requests_before_auth: 16,
        }
    }
}

/// A listener with its name and protocol settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub listen: SocketAddr,
    pub advertised_address: Option<String>,
    pub protocol: SecurityProtocol,
    pub client_auth: ClientAuth,
}

/// Whether `name` is a listener name Kafka would accept (letters, digits, `_`, `-`).
fn valid_listener_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `address` is `host:port`.
pub(super) fn valid_host_port(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The most listeners one broker may have.
pub const LISTENERS_MAX: usize = 16;

impl super::Config {
    /// Every Kafka listener, the `[kafka]` one first, checked.
    pub fn listeners(&self) -> Result<Vec<ListenerSpec>, ConfigError> {
        let k = &self.kafka;
        let primary_protocol = match k.security_protocol.or_else(|| SecurityProtocol::from_name(&k.listener_name)) {
            Some(p) => p,
            None => return Err(invalid("kafka.security_protocol", "(unset)", "must be set when kafka.listener_name is not a protocol name")),
        };
        let mut specs = vec![ListenerSpec {
            name: k.listener_name.clone(),
            listen: k.listen,
            advertised_address: k.advertised_address.clone(),
            protocol: primary_protocol,
            client_auth: self.tls.client_auth,
        }];
        for l in &k.listeners {
            let Some(protocol) = l.security_protocol.or_else(|| SecurityProtocol::from_name(&l.name)) else {
                return Err(invalid("kafka.listeners.security_protocol", &l.name, "must be set for a listener whose name is not a protocol name"));
            };
            specs.push(ListenerSpec {
                name: l.name.clone(),
                listen: l.listen,
                advertised_address: l.advertised_address.clone(),
                protocol,
                client_auth: l.ssl_client_auth.unwrap_or(self.tls.client_auth),
            });
        }
        if specs.len() > LISTENERS_MAX {
            return Err(invalid("kafka.listeners", specs.len(), "must hold at most 15 listeners besides [kafka]'s own"));
        }
        for (i, spec) in specs.iter().enumerate() {
            if !valid_listener_name(&spec.name) {
                return Err(invalid("kafka.listeners.name", &spec.name, "must be 1..=64 letters, digits, '_' or '-'"));
            }
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(invalid("kafka.listeners.name", &spec.name, "is used by two listeners"));
            }
            if spec.listen.port() != 0 && specs[..i].iter().any(|s| s.listen == spec.listen) {
                return Err(invalid("kafka.listeners.listen", spec.listen, "is used by two listeners"));
            }
            if let Some(addr) = spec.advertised_address.as_deref().filter(|a| !valid_host_port(a)) {
                return Err(invalid("kafka.listeners.advertised_address", addr, "must be host:port"));
            }
            if spec.protocol.uses_tls() && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
                return Err(invalid("tls.cert_file", &spec.name, "and tls.key_file must be set for an SSL or SASL_SSL listener"));
            }
            if spec.protocol.uses_tls() && spec.client_auth != ClientAuth::None && self.tls.ca_file.is_none() {
                return Err(invalid("tls.ca_file", &spec.name, "must be set for a listener that asks for client certificates"));
            }
            if spec.protocol.uses_sasl() && self.sasl.enabled_mechanisms.is_empty() {
                return Err(invalid("sasl.enabled_mechanisms", "[]", "must name a mechanism for a SASL listener"));
            }
        }
        if let Some(name) = &k.inter_broker_listener {
            match specs.iter().find(|s| &s.name == name) {
                None => return Err(invalid("kafka.inter_broker_listener", name, "must name a listener")),
                Some(s) if s.protocol != SecurityProtocol::Plaintext => {
                    return Err(invalid("kafka.inter_broker_listener", name, "must be a PLAINTEXT listener (replica fetchers do not speak TLS or SASL yet)"))
                }
                Some(_) => {}
            }
        }
        Ok(specs)
    }

    /// Checks `[tls]` and `[sasl]`.
    pub(super) fn validate_security(&self) -> Result<(), ConfigError> {
        if self.tls.reload_check_interval_ms == 0 {
            return Err(invalid("tls.reload_check_interval_ms", 0, "must be positive"));
        }
        let s = &self.sasl;
        if s.max_receive_bytes < 1024 {
            return Err(invalid("sasl.max_receive_bytes", s.max_receive_bytes, "must be at least 1024"));
        }
        if !(3..=1000).contains(&s.max_requests_before_auth) {
            return Err(invalid("sasl.max_requests_before_auth", s.max_requests_before_auth, "must be 3..=1000"));
        }
        for user in &s.bootstrap_users {
            if user.name.is_empty() || user.password.is_empty() {
                return Err(invalid("sasl.bootstrap_users", &user.name, "need a name and a password"));
            }
            if !(silt_actors::metadata::quorum::scram::SCRAM_ITERATIONS_MIN..=silt_actors::metadata::quorum::scram::SCRAM_ITERATIONS_MAX)
                .contains(&user.iterations)
            {
                return Err(invalid("sasl.bootstrap_users.iterations", user.iterations, "must be 4096..=16384"));
            }
        }
        if let Some((name, _)) = s.plain_users.iter().find(|(name, password)| name.is_empty() || password.is_empty()) {
            return Err(invalid("sasl.plain_users", name, "need a name and a password"));
        }
        self.listeners().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn toml(text: &str) -> Result<Config, String> {
        let config: Config = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_default_is_one_plaintext_listener_on_loopback() {
        let specs = Config::default().listeners().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!((specs[0].name.as_str(), specs[0].protocol), ("PLAINTEXT", SecurityProtocol::Plaintext));
        assert_eq!(specs[0].listen.to_string(), "127.0.0.1:9092");
    }

    #[test]
    fn listeners_take_their_protocol_from_the_name_or_say_it() {
        let config = toml(
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
             [[kafka.listeners]]\nname = \"SASL_SSL\"\nlisten = \"127.0.0.1:0\"\n\
             [[kafka.listeners]]\nname = \"EXTERNAL\"\nlisten = \"127.0.0.1:0\"\nsecurity_protocol = \"SASL_PLAINTEXT\"\nadvertised_address = \"ext:9095\"\n",
        )
        .unwrap();
        let specs = config.listeners().unwrap();
        assert_eq!(
            specs.iter().map(|s| s.protocol).collect::<Vec<_>>(),
            [SecurityProtocol::Plaintext, SecurityProtocol::SaslSsl, SecurityProtocol::SaslPlaintext]
        );
        assert_eq!(specs[2].advertised_address.as_deref(), Some("ext:9095"));
    }

    #[test]
    fn bad_listener_settings_name_the_key() {
        let err = toml("[[kafka.listeners]]\nname = \"EXTERNAL\"\nlisten = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(err.contains("kafka.listeners.security_protocol"), "{err}");
        let err = toml("[[kafka.listeners]]\nname = \"SSL\"\nlisten = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(err.contains("tls.cert_file"), "{err}");
        let err = toml("[[kafka.listeners]]\nname = \"PLAINTEXT\"\nlisten = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(err.contains("used by two listeners"), "{err}");
        let err = toml("[kafka]\ninter_broker_listener = \"NOPE\"\n").unwrap_err();
        assert!(err.contains("kafka.inter_broker_listener"), "{err}");
        let err =
            toml("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_auth = \"required\"\n[[kafka.listeners]]\nname = \"SSL\"\nlisten = \"127.0.0.1:0\"\n")
                .unwrap_err();
        assert!(err.contains("tls.ca_file"), "{err}");
    }

    #[test]
    fn sasl_users_and_mechanisms_parse() {
        let config = toml(
            "[sasl]\nenabled_mechanisms = [\"PLAIN\", \"SCRAM-SHA-512\"]\n[sasl.plain_users]\nalice = \"alice-secret\"\n\
             [[sasl.bootstrap_users]]\nname = \"admin\"\npassword = \"admin-secret\"\n",
        )
        .unwrap();
        assert_eq!(config.sasl.enabled_mechanisms, [SaslMechanism::Plain, SaslMechanism::ScramSha512]);
        assert_eq!(config.sasl.plain_users["alice"], "alice-secret");
        assert_eq!(config.sasl.bootstrap_users[0].iterations, DEFAULT_SCRAM_ITERATIONS);
    }
}
