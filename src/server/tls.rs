//! HTTPS for the API (`server.http_tls_config`, Loki's key names): rustls with the ring
//! provider (already in the tree for the S3 client), certificate and key reloaded when their
//! files change, optional client certificate verification.
//!
//! ```text
//!  TcpListener ─► accept loop ─► one task per connection: TLS handshake (10 s at most)
//!                                   │ with the ServerConfig current at accept time
//!                                   ▼
//!                 channel of (TlsStream, client address) ─► TlsListener::accept ─► axum
//!  reload task: every `reload_interval`, files' mtimes changed? ─► load ─► swap (a bad
//!               file keeps the previous certificate and is logged)
//! ```
//! A slow or failing handshake never holds up other connections.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// `server.http_tls_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). Empty: plain HTTP.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Client certificates, as Go's `tls.ClientAuthType` names them: `NoClientCert`
    /// (default), `VerifyClientCertIfGiven` or `RequireAndVerifyClientCert`.
    pub client_auth_type: String,
    /// PEM CA certificates that sign client certificates (needed for the two verifying modes).
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes. Default `10s`.
    #[serde(with = "crate::config::duration")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_auth_type: "NoClientCert".into(),
            client_ca_file: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Is HTTPS configured?
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Load the files and build the rustls configuration: any problem is an error naming
    /// the file (start-up refuses a configuration that cannot serve).
    pub fn load(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            anyhow::bail!("server.http_tls_config needs both cert_file and key_file");
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{}: no certificate in the file", cert_file.display());
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?;
        let builder = match self.client_auth_type.as_str() {
            "" | "NoClientCert" => builder.with_no_client_auth(),
            mode @ ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert") => {
                let Some(ca_file) = &self.client_ca_file else {
                    anyhow::bail!("server.http_tls_config.client_auth_type {mode} needs client_ca_file");
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca_file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?
                {
                    let cert = cert.map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if mode == "VerifyClientCertIfGiven" {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", ca_file.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            other => anyhow::bail!(
                "server.http_tls_config.client_auth_type {other:?}: want NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn files(&self) -> Vec<&Path> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }
}

fn mtimes(files: &[&Path]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The address of a client, for [`axum::extract::ConnectInfo`] over plain and TLS listeners.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// A listener whose connections are TLS streams, handshaken off the accept path.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TlsListener {
    /// Serve TLS on `tcp` with `config` (loaded once here: an error stops start-up).
    pub fn new(tcp: TcpListener, config: &TlsConfig) -> anyhow::Result<TlsListener> {
        let current = Arc::new(RwLock::new(config.load()?));
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        let accept_current = current.clone();
        let accept = tokio::spawn(async move {
            loop {
                let (tcp_stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(accept_current.read().clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp_stream)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        let reload_config = config.clone();
        let reload = tokio::spawn(async move {
            let files = reload_config.files();
            let mut seen = mtimes(&files);
            let mut tick = tokio::time::interval(
                reload_config
                    .reload_interval
                    .max(Duration::from_millis(100)),
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = mtimes(&files);
                if now == seen {
                    continue;
                }
                match reload_config.load() {
                    Ok(c) => {
                        *current.write() = c;
                        seen = now;
                        tracing::info!("TLS certificate reloaded");
                    }
                    // Half-written files are retried at the next tick (`seen` unchanged).
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                    }
                }
            }
        });
        Ok(TlsListener {
            ready: rx,
            local,
            tasks: vec![accept, reload],
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (it never does unless aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
