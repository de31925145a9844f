//! The Kafka listeners of a broker: each bound socket with its name,
//! security protocol and TLS acceptor, and the addresses clients of each
//! listener are told (Metadata, FindCoordinator and DescribeCluster answer
//! with the listener the client connected on, as Kafka does).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use silt_actors::metadata::quorum::Endpoint;
use tokio::net::TcpListener;

use super::tls::{self, ReloadingCertificate};
use crate::config::{Config, ListenerSpec, SecurityProtocol};

/// One listener as connections see it.
pub struct Listener {
    /// Position in [`Listeners::advertised`] (and in the broker's listeners).
    pub index: usize,
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Present on SSL and SASL_SSL listeners.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    /// A PLAINTEXT listener (for tests and tools that bind their own socket).
    pub fn plaintext(index: usize, name: &str) -> Listener {
        Listener { index, name: name.to_owned(), protocol: SecurityProtocol::Plaintext, tls: None }
    }
}

/// What clients of a listener are told to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedListener {
    pub name: String,
    pub host: String,
    pub port: i32,
}

/// Every bound listener, the `[kafka]` one first.
pub struct Listeners {
    pub bound: Vec<(TcpListener, Arc<Listener>)>,
    pub advertised: Vec<AdvertisedListener>,
    /// The certificate shared by the TLS listeners (watched for changes).
    pub certificate: Option<Arc<ReloadingCertificate>>,
}

/// The advertised host and port of a listener bound at `bound`.
fn advertised(spec: &ListenerSpec, bound: SocketAddr) -> (String, i32) {
    match spec.advertised_address.as_deref().and_then(|a| a.rsplit_once(':')) {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(i32::from(bound.port()))),
        None => (bound.ip().to_string(), i32::from(bound.port())),
    }
}

impl Listeners {
    /// Binds every listener of `config` and loads the TLS certificate if one is used.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let specs = config.listeners()?;
        let certificate = match (specs.iter().any(|s| s.protocol.uses_tls()), &config.tls.cert_file, &config.tls.key_file) {
            (true, Some(cert), Some(key)) => Some(ReloadingCertificate::load(cert.clone(), key.clone())?),
            _ => None,
        };
        let mut bound = Vec::with_capacity(specs.len());
        let mut advertised_listeners = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            let socket = TcpListener::bind(spec.listen).await.with_context(|| format!("cannot listen on {} for listener {}", spec.listen, spec.name))?;
            let (host, port) = advertised(spec, socket.local_addr()?);
            let tls = match (&certificate, spec.protocol.uses_tls()) {
                (Some(certificate), true) => Some(tokio_rustls::TlsAcceptor::from(
                    tls::server_config(&config.tls, spec.client_auth, certificate.clone()).with_context(|| format!("TLS of listener {}", spec.name))?,
                )),
                _ => None,
            };
            advertised_listeners.push(AdvertisedListener { name: spec.name.clone(), host, port });
            bound.push((socket, Arc::new(Listener { index, name: spec.name.clone(), protocol: spec.protocol, tls })));
        }
        Ok(Listeners { bound, advertised: advertised_listeners, certificate })
    }

    /// The endpoints this broker registers, the inter-broker listener first:
    /// other brokers' replica fetchers dial a leader's first endpoint.
    pub fn endpoints(&self, inter_broker_listener: Option<&str>) -> anyhow::Result<Vec<Endpoint>> {
        let mut endpoints = self
            .advertised
            .iter()
            .map(|a| {
                let port = u16::try_from(a.port).with_context(|| format!("the advertised port {} of listener {} is not a TCP port", a.port, a.name))?;
                Ok(Endpoint { listener: a.name.clone(), host: a.host.clone(), port })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(position) = inter_broker_listener.and_then(|name| endpoints.iter().position(|e| e.listener == name)) {
            let inter_broker = endpoints.remove(position);
            endpoints.insert(0, inter_broker);
        }
        Ok(endpoints)
    }
}
