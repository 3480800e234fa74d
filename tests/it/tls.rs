//! HTTPS (`server.http_tls_config`): a round trip with certificates made by the real `openssl`
//! command, a certificate replaced on disk and served to the next connection without a
//! restart, and client certificates required and verified. The S3 client trusts a private CA
//! named by `storage.object_store.ca_file`, and only it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::TestServer;

/// Run `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA `name.crt`/`name.key` (P-256).
pub(crate) fn make_ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    )
}

/// A leaf `name.crt`/`name.key` signed by CA `ca`, for the server (127.0.0.1) or a client.
pub(crate) fn make_leaf(dir: &Path, ca: &str, name: &str, server: bool) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    let ext = if server {
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    } else {
        "extendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

pub(crate) fn client(
    dir: &Path,
    ca: &str,
    identity: Option<&str>,
) -> anyhow::Result<reqwest::Client> {
    let root = reqwest::Certificate::from_pem(&std::fs::read(dir.join(format!("{ca}.crt")))?)?;
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        // A new connection (and handshake) per request: reloads show at once.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if let Some(name) = identity {
        let mut pem = std::fs::read(dir.join(format!("{name}.crt")))?;
        pem.extend(std::fs::read(dir.join(format!("{name}.key")))?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

async fn tls_server(dir: &Path, client_ca: Option<&str>) -> anyhow::Result<TestServer> {
    let mut config = tovlog::Config {
        auth_enabled: false,
        ..tovlog::Config::default()
    };
    let tls = &mut config.server.http_tls_config;
    tls.cert_file = Some(dir.join("server.crt"));
    tls.key_file = Some(dir.join("server.key"));
    tls.reload_interval = Duration::from_millis(100);
    if let Some(ca) = client_ca {
        tls.client_auth_type = "RequireAndVerifyClientCert".into();
        tls.client_ca_file = Some(dir.join(format!("{ca}.crt")));
    }
    TestServer::start(config).await
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[tokio::test]
async fn https_round_trip_and_a_replaced_certificate_is_served_without_restart(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    make_ca(dir, "ca1")?;
    make_ca(dir, "ca2")?;
    make_leaf(dir, "ca1", "server", true)?;
    let s = tls_server(dir, None).await?;
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);

    let trusts_ca1 = client(dir, "ca1", None)?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let push = trusts_ca1
        .post(format!("{}/loki/api/v1/push", s.url))
        .header("content-type", "application/json")
        .body(json!({"streams": [{"stream": {"job": "tls"}, "values": [[now.to_string(), "over https"]]}]}).to_string())
        .send()
        .await?;
    assert_eq!(push.status().as_u16(), 204);
    let v: serde_json::Value = trusts_ca1
        .get(format!("{}/loki/api/v1/query_range", s.url))
        .query(&[("query", r#"{job="tls"}"#)])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v["data"]["result"][0]["values"][0][1], "over https", "{v}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(s.url.replace("https://", "http://") + "/ready")
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.is_ok_and(|r| r.status().is_success()));

    // A client trusting only ca2 fails until the certificate signed by ca2 replaces the old.
    let trusts_ca2 = client(dir, "ca2", None)?;
    assert!(trusts_ca2
        .get(format!("{}/ready", s.url))
        .send()
        .await
        .is_err());
    make_leaf(dir, "ca2", "next", true)?;
    // Replace key and certificate by renames, as cert-manager and certbot do.
    std::fs::rename(path(dir, "next.key"), path(dir, "server.key"))?;
    std::fs::rename(path(dir, "next.crt"), path(dir, "server.crt"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = trusts_ca2.get(format!("{}/ready", s.url)).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trusts_ca1
        .get(format!("{}/ready", s.url))
        .send()
        .await
        .is_err());

    // A broken certificate file keeps the current certificate.
    std::fs::write(path(dir, "server.crt"), "not a certificate")?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = trusts_ca2.get(format!("{}/ready", s.url)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    make_ca(dir, "ca")?;
    make_ca(dir, "stranger-ca")?;
    make_leaf(dir, "ca", "server", true)?;
    make_leaf(dir, "ca", "grafana", false)?;
    make_leaf(dir, "stranger-ca", "stranger", false)?;
    let s = tls_server(dir, Some("ca")).await?;
    let with_cert = client(dir, "ca", Some("grafana"))?;
    let r = with_cert
        .get(format!("{}/loki/api/v1/labels", s.url))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    // No client certificate, or one from another CA: the handshake (or the first read) fails.
    for c in [
        client(dir, "ca", None)?,
        client(dir, "ca", Some("stranger"))?,
    ] {
        let r = c.get(format!("{}/loki/api/v1/labels", s.url)).send().await;
        assert!(r.is_err(), "{r:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_certificate_that_cannot_load_stops_start_up() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    std::fs::write(dir.join("server.crt"), "garbage")?;
    std::fs::write(dir.join("server.key"), "garbage")?;
    let mut config = tovlog::Config::default();
    config.server.http_tls_config.cert_file = Some(dir.join("server.crt"));
    config.server.http_tls_config.key_file = Some(dir.join("server.key"));
    let err = config
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("server.http_tls_config"), "{err}");
    assert!(TestServer::start(config).await.is_err());
    Ok(())
}

/// An S3 server (moto) behind a certificate of a private CA: trusted through
/// `storage.object_store.ca_file`, refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_client_trusts_the_configured_ca_file_only() -> anyhow::Result<()> {
    use tovlog_storage::config::{ObjectStoreConfig, S3Config};

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    make_ca(d, "ca")?;
    make_leaf(d, "ca", "s3", true)?;
    let moto = crate::sor::Moto::start_with(Some((
        &d.join("s3.crt"),
        &d.join("s3.key"),
        client(d, "ca", None)?,
    )))
    .await?;
    let config = |ca_file: Option<PathBuf>, data: &str| tovlog::Config {
        auth_enabled: false,
        storage: tovlog_storage::StorageConfig {
            data_dir: d.join(data),
            object_store: ObjectStoreConfig::S3(Box::new(S3Config {
                endpoint: Some(moto.endpoint.clone()),
                bucket: crate::sor::BUCKET.into(),
                access_key_id: Some("test".into()),
                secret_access_key: Some("test".into()),
                prefix: data.into(),
                ca_file,
                max_retries: 1,
                retry_timeout: tovlog_storage::config::HumanDuration(Duration::from_secs(2)),
                ..S3Config::default()
            })),
            ..tovlog_storage::StorageConfig::default()
        },
        ..tovlog::Config::default()
    };

    // Without the CA the server cannot reach its bucket, and says why.
    let refused = TestServer::start(config(None, "untrusted")).await;
    let err = match refused {
        Ok(_) => anyhow::bail!("started against an untrusted certificate"),
        Err(e) => format!("{e:#}"),
    };
    anyhow::ensure!(err.contains("certificate"), "start-up error: {err}");

    // With it: a push flushed into the bucket and read back by a second node.
    let server = TestServer::start(config(Some(d.join("ca.crt")), "trusted")).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let r = server
        .client
        .post(format!("{}/loki/api/v1/push", server.url))
        .json(&json!({"streams": [{"stream": {"job": "s3tls"}, "values": [[now.to_string(), "over https"]]}]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 204, "push: {}", r.status());
    let r = server
        .client
        .post(format!("{}/flush", server.url))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "flush: {}", r.status());
    let files: Vec<String> = {
        let list = client(d, "ca", None)?
            .get(format!(
                "{}/{}?list-type=2&prefix=trusted/",
                moto.endpoint,
                crate::sor::BUCKET
            ))
            .send()
            .await?
            .text()
            .await?;
        list.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .filter(|k| k.ends_with(".parquet"))
            .map(str::to_string)
            .collect()
    };
    anyhow::ensure!(files.len() == 1, "chunk files in the bucket: {files:?}");
    Ok(())
}
