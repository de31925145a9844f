//! Opening the object store an archive URL names: `file:///path` (local
//! disk), `s3://bucket/prefix` (any S3-compatible store), `gs://bucket/prefix`,
//! `az://container/prefix` and `memory://` (tests). Cloud credentials come
//! from the settings first, then the standard environment (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`), as object_store's builders read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme};
use url::Url;

use crate::error::ArchiveError;

/// S3 settings that override the `AWS_*` environment when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000` for MinIO or moto.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// `bucket.host` addressing instead of path style (`host/bucket`).
    pub virtual_hosted_style: bool,
}

/// Where the archive lives and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSettings {
    pub url: String,
    pub s3: S3Settings,
    /// Any further object_store option by its name (e.g. `aws_session_token`,
    /// `google_service_account`, `azure_storage_account_key`).
    pub options: BTreeMap<String, String>,
}

fn invalid(url: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::InvalidLocation { url: url.to_owned(), reason: reason.into() }
}

/// Applies `settings.options` to a builder, refusing names the store does not know.
fn with_options<B, K: std::str::FromStr>(builder: B, settings: &StoreSettings, store: &str, set: impl Fn(B, K, &str) -> B) -> Result<B, ArchiveError> {
    settings.options.iter().try_fold(builder, |b, (k, v)| {
        let key = k.to_ascii_lowercase().parse().map_err(|_| invalid(&settings.url, format!("unknown {store} option {k:?}")))?;
        Ok(set(b, key, v))
    })
}

/// Whether the settings name a local folder (`file://`), whose store stages
/// each write as a temporary file beside its target.
pub fn is_local(settings: &StoreSettings) -> bool {
    Url::parse(&settings.url).ok().and_then(|url| ObjectStoreScheme::parse(&url).ok()).is_some_and(|(scheme, _)| scheme == ObjectStoreScheme::Local)
}

/// Makes ring the process's rustls crypto provider unless one is installed
/// already. The cloud stores' HTTP client (reqwest built without a provider,
/// see the workspace Cargo.toml) panics when it finds none.
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one first, which serves as well.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Opens the store and returns it with the root path of the archive in it.
pub fn open(settings: &StoreSettings) -> Result<(Arc<dyn ObjectStore>, Path), ArchiveError> {
    let raw = settings.url.as_str();
    let url = Url::parse(raw).map_err(|e| invalid(raw, e.to_string()))?;
    let (scheme, path) = ObjectStoreScheme::parse(&url).map_err(|e| invalid(raw, e.to_string()))?;
    if matches!(scheme, ObjectStoreScheme::AmazonS3 | ObjectStoreScheme::GoogleCloudStorage | ObjectStoreScheme::MicrosoftAzure) {
        install_tls_provider();
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => {
            let dir = url.to_file_path().map_err(|()| invalid(raw, "not an absolute file path"))?;
            std::fs::create_dir_all(&dir).map_err(|e| invalid(raw, format!("cannot create the directory: {e}")))?;
            let local = LocalFileSystem::new_with_prefix(&dir).map_err(|e| invalid(raw, e.to_string()))?;
            // The archive is what local retention relies on: make it durable.
            let local = local.with_fsync(true).with_automatic_cleanup(true);
            return Ok((Arc::new(local), Path::default()));
        }
        ObjectStoreScheme::Memory => Arc::new(InMemory::new()),
        ObjectStoreScheme::AmazonS3 => {
            let s3 = &settings.s3;
            let mut b = AmazonS3Builder::from_env().with_url(raw);
            if let Some(v) = &s3.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &s3.region {
                b = b.with_region(v);
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            if s3.allow_http {
                b = b.with_allow_http(true);
            }
            b = b.with_virtual_hosted_style_request(s3.virtual_hosted_style);
            let b = with_options(b, settings, "S3", |b, key: AmazonS3ConfigKey, v| b.with_config(key, v))?;
            Arc::new(b.build().map_err(|e| invalid(raw, e.to_string()))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let b = with_options(GoogleCloudStorageBuilder::from_env().with_url(raw), settings, "GCS", |b, key: GoogleConfigKey, v| b.with_config(key, v))?;
            Arc::new(b.build().map_err(|e| invalid(raw, e.to_string()))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let b = with_options(MicrosoftAzureBuilder::from_env().with_url(raw), settings, "Azure", |b, key: AzureConfigKey, v| b.with_config(key, v))?;
            Arc::new(b.build().map_err(|e| invalid(raw, e.to_string()))?)
        }
        other => return Err(invalid(raw, format!("{other:?} is not supported: use file://, s3://, gs://, az:// or memory://"))),
    };
    Ok((store, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> StoreSettings {
        StoreSettings { url: url.into(), ..StoreSettings::default() }
    }

    #[test]
    fn opens_local_and_memory_stores() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path().join("archive")).unwrap();
        let (_, root) = open(&settings(url.as_str())).unwrap();
        assert_eq!(root, Path::default());
        assert!(dir.path().join("archive").is_dir(), "the folder is created");
        let (_, root) = open(&settings("memory:///some/prefix")).unwrap();
        assert_eq!(root.as_ref(), "some/prefix");
    }

    #[test]
    fn s3_urls_take_their_prefix_and_settings() {
        let mut s = settings("s3://bucket/silt/archive");
        s.s3 = S3Settings { endpoint: Some("http://127.0.0.1:1".into()), region: Some("us-east-1".into()), allow_http: true, ..S3Settings::default() };
        let (_, root) = open(&s).unwrap();
        assert_eq!(root.as_ref(), "silt/archive");
    }

    /// object_store's HTTP client gets TLS from rustls with ring, installed
    /// by `open` (reqwest panics when it finds no provider): a request to an
    /// https endpoint that nothing serves fails as an error.
    #[tokio::test]
    async fn an_https_store_builds_its_tls_client_and_fails_cleanly() {
        use object_store::ObjectStoreExt;
        let mut s = settings("s3://bucket/archive");
        s.s3 = S3Settings { endpoint: Some("https://127.0.0.1:1".into()), region: Some("us-east-1".into()), ..S3Settings::default() };
        s.options.insert("aws_skip_signature".into(), "true".into());
        let (store, root) = open(&s).unwrap();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let err = store.head(&root.clone().join("missing")).await.unwrap_err();
        assert!(!matches!(err, object_store::Error::NotFound { .. }), "{err}");
    }

    #[test]
    fn bad_locations_are_named() {
        for bad in ["not a url", "ftp://host/x", "file://relative"] {
            let err = open(&settings(bad)).map(drop).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        let mut s = settings("s3://bucket");
        s.options.insert("no_such_option".into(), "1".into());
        assert!(open(&s).map(drop).unwrap_err().to_string().contains("no_such_option"));
    }
}
