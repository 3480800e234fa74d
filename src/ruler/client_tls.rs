//! TLS of the ruler's HTTP clients (Alertmanager, remote write): the system's roots plus an
//! optional CA file, an optional client certificate, and verification that can only be
//! turned off explicitly. Key names follow Prometheus' `tls_config`.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Prometheus' `tls_config` (the keys tovlog honours).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM file of certificate authorities trusted besides the system's.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// Client certificate (PEM) presented to a peer that asks for one; with `key_file`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    /// Key of `cert_file` (PEM).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    /// Accept any certificate. Unsafe; for tests against self-signed peers only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl ClientTlsConfig {
    /// `true` when nothing is set (the default client).
    pub fn is_default(&self) -> bool {
        *self == ClientTlsConfig::default()
    }
}

/// A client for `what` (named in errors) with `tls` applied.
pub fn client(
    builder: reqwest::ClientBuilder,
    tls: &ClientTlsConfig,
    what: &str,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = builder;
    if !tls.ca_file.is_empty() {
        let pem = read(&tls.ca_file, what, "ca_file")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{what}: ca_file {}", tls.ca_file))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{what}: ca_file {} holds no PEM certificate",
            tls.ca_file
        );
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (tls.cert_file.is_empty(), tls.key_file.is_empty()) {
        (true, true) => {}
        (false, false) => {
            let mut pem = read(&tls.cert_file, what, "cert_file")?;
            pem.push(b'\n');
            pem.extend(read(&tls.key_file, what, "key_file")?);
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "{what}: cert_file {} / key_file {}",
                    tls.cert_file, tls.key_file
                )
            })?;
            builder = builder.identity(identity);
        }
        _ => anyhow::bail!("{what}: cert_file and key_file go together"),
    }
    if tls.insecure_skip_verify {
        tracing::warn!(client = what, "TLS certificate verification is off");
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .with_context(|| format!("building the {what} HTTP client"))
}

fn read(path: &str, what: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(Path::new(path)).with_context(|| format!("{what}: {key} {path}"))
}
