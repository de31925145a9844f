//! TLS for SSL and SASL_SSL listeners, with rustls: the server certificate
//! from PEM files, reloaded when the files change (new connections get the
//! new certificate; open ones keep theirs), and client-certificate
//! authentication (`ssl.client.auth`) with the principal taken from the
//! client certificate's subject, as Kafka's default principal builder does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, TlsSection};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM file {path}: {source}")]
    Pem { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} does not suit the certificate: {source}")]
    Key { path: PathBuf, source: rustls::Error },
    #[error("cannot trust the CA certificates of {path}: {source}")]
    Trust { path: PathBuf, source: rustls::Error },
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("tls.{0} must be set")]
    Missing(&'static str),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// Loads a certificate chain and its private key, checking that they match.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Pem { path: key_file.to_owned(), source })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|source| TlsError::Key { path: key_file.to_owned(), source })
}

/// The server certificate, swapped when its files change. Resolving never
/// touches the disk: a background task checks the files' modification times
/// every `tls.reload_check_interval_ms` and loads them off the async threads.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCertificate {
    /// Loads the files once (an error here stops the broker from starting).
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Arc<ReloadingCertificate>, TlsError> {
        let modified = (modified(&cert_file), modified(&key_file));
        let key = Arc::new(load_certified_key(&cert_file, &key_file)?);
        Ok(Arc::new(ReloadingCertificate { cert_file, key_file, current: RwLock::new(Loaded { key, modified }) }))
    }

    fn loaded(&self) -> Loaded {
        // Writers never panic while holding the lock; a poisoned one still holds a whole value.
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the files if either changed since the last load. A file
    /// that cannot be loaded (half written, mismatched key) keeps the old
    /// certificate in service, and is tried again at the next check.
    fn reload_if_changed(&self) {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        if now == self.loaded().modified {
            return;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded { key: Arc::new(key), modified: now };
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(cause = %e, "TLS certificate files changed but cannot be loaded; keeping the previous certificate"),
        }
    }

    /// Checks the files every `interval` until the certificate is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<ReloadingCertificate> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(certificate) = weak.upgrade() else { return };
                if let Err(e) = tokio::task::spawn_blocking(move || certificate.reload_if_changed()).await {
                    tracing::warn!(cause = %e, "the TLS certificate check failed");
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().key)
    }
}

/// The rustls configuration of one listener.
pub fn server_config(tls: &TlsSection, client_auth: ClientAuth, certificate: Arc<ReloadingCertificate>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let ca_file = tls.ca_file.as_deref().ok_or(TlsError::Missing("ca_file"))?;
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca_file)? {
                roots.add(cert).map_err(|source| TlsError::Trust { path: ca_file.to_owned(), source })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if client_auth == ClientAuth::Requested { verifier.allow_unauthenticated().build()? } else { verifier.build()? };
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(certificate)))
}

/// The principal of a verified client certificate: `User:<subject DN>` in
/// RFC 2253 form (`CN=client,O=Example,C=DE`), as Kafka's default principal
/// builder names it. `None` without a client certificate.
pub fn certificate_principal(certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certificates?.first()?;
    super::x509::subject_dn(leaf.as_ref()).map(|dn| format!("User:{dn}"))
}
