//! Object store construction from the configuration: a local directory (default) or an
//! S3-compatible service. Everything above this module sees only `Arc<dyn ObjectStore>`.

use std::sync::Arc;

use datafusion_execution::object_store::ObjectStoreUrl;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};

use crate::config::{ObjectStoreConfig, StorageConfig};
use crate::error::{Error, Result};

/// The URL under which the chunk store is registered with DataFusion runtimes. The scheme
/// is ours, so it never collides with stores a user registers.
pub const CHUNK_STORE_URL: &str = "tovlog-chunks://store/";

/// The [`ObjectStoreUrl`] of [`CHUNK_STORE_URL`].
pub fn chunk_store_url() -> Result<ObjectStoreUrl> {
    Ok(ObjectStoreUrl::parse(CHUNK_STORE_URL)?)
}

/// Build the object store the configuration describes; a local directory is created.
pub fn build(config: &StorageConfig) -> Result<Arc<dyn ObjectStore>> {
    match &config.object_store {
        ObjectStoreConfig::Local(_) => {
            let dir = config
                .local_chunk_dir()
                .ok_or_else(|| Error::Internal("local store without a directory".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                path: dir.clone(),
                source: e,
            })?;
            let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| Error::ObjectStore {
                path: dir.display().to_string(),
                source: e,
            })?;
            Ok(Arc::new(store))
        }
        ObjectStoreConfig::S3(s3) => {
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_allow_http(s3.allow_http)
                .with_virtual_hosted_style_request(!s3.path_style);
            if let Some(endpoint) = &s3.endpoint {
                b = b.with_endpoint(endpoint);
            }
            if let Some(key) = &s3.access_key_id {
                b = b.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                b = b.with_secret_access_key(secret);
            }
            let mut client = ClientOptions::new()
                .with_allow_http(s3.allow_http)
                .with_timeout(s3.request_timeout.0)
                .with_connect_timeout(s3.connect_timeout.0);
            if let Some(ca) = &s3.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    Error::Config(format!("object_store.ca_file {}: {e}", ca.display()))
                })?;
                let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
                    Error::Config(format!("object_store.ca_file {}: {e}", ca.display()))
                })?;
                if certs.is_empty() {
                    return Err(Error::Config(format!(
                        "object_store.ca_file {}: no PEM certificate in it",
                        ca.display()
                    )));
                }
                for cert in certs {
                    client = client.with_root_certificate(cert);
                }
            }
            b = b.with_client_options(client).with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: s3.max_retries,
                retry_timeout: s3.retry_timeout.0,
            });
            let store = b
                .build()
                .map_err(|e| Error::Config(format!("object_store (s3): {e}")))?;
            if s3.prefix.trim_matches('/').is_empty() {
                Ok(Arc::new(store))
            } else {
                let prefix = s3.prefix.trim_matches('/').to_string();
                Ok(Arc::new(PrefixStore::new(store, prefix)))
            }
        }
    }
}
