//! Credentials bound to tenants and roles (`auth`): the matrix of each role × each endpoint
//! group × its own and another tenant over real HTTP, failures that do not say which part was
//! wrong, the rate limit on failures, open `/ready` and `/metrics`, a one-tenant credential
//! without `X-Scope-OrgID`, and `tovlog hash-secret` making a hash the server accepts.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::json;
use tovlog::server::auth::{hash_secret, AuthConfig, Credential, Role};

use crate::server::{free_port, spawn, wait_ready, TestServer};

const PUSH_TOKEN: &str = "push-token-4b1d";
const ADMIN_TOKEN: &str = "admin-token-77aa";
const READER_PASSWORD: &str = "correct horse battery";

fn credential(name: &str, role: Role, tenants: &[&str]) -> Credential {
    Credential {
        name: name.into(),
        role,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        token_hash: None,
        username: None,
        password_hash: None,
    }
}

fn auth_config(max_failures: u32) -> anyhow::Result<AuthConfig> {
    let mut pusher = credential("promtail", Role::Push, &["a"]);
    pusher.token_hash = Some(hash_secret(PUSH_TOKEN)?);
    let mut reader = credential("grafana", Role::Read, &["a", "b"]);
    reader.username = Some("grafana".into());
    reader.password_hash = Some(hash_secret(READER_PASSWORD)?);
    let mut admin = credential("ops", Role::Admin, &["a"]);
    admin.token_hash = Some(hash_secret(ADMIN_TOKEN)?);
    Ok(AuthConfig {
        enabled: true,
        credentials: vec![pusher, reader, admin],
        max_failures_per_minute: max_failures,
        ..AuthConfig::default()
    })
}

async fn server(max_failures: u32) -> anyhow::Result<TestServer> {
    let config = tovlog::Config {
        auth: auth_config(max_failures)?,
        ..tovlog::Config::default()
    };
    TestServer::start(config).await
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Pusher,
    Reader,
    Admin,
}

fn authorization(who: Who) -> Option<String> {
    match who {
        Who::Nobody => None,
        Who::Pusher => Some(format!("Bearer {PUSH_TOKEN}")),
        Who::Admin => Some(format!("Bearer {ADMIN_TOKEN}")),
        Who::Reader => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("grafana:{READER_PASSWORD}"))
        )),
    }
}

/// One request of an endpoint group, as `who` for `tenant`; returns the status.
async fn call(s: &TestServer, group: &str, who: Who, tenant: Option<&str>) -> anyhow::Result<u16> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let req = match group {
        "push" => s
            .client
            .post(format!("{}/loki/api/v1/push", s.url))
            .header("content-type", "application/json")
            .body(
                json!({"streams": [{"stream": {"job": "auth"}, "values": [[now.to_string(), "hello"]]}]})
                    .to_string(),
            ),
        "query" => s
            .client
            .get(format!("{}/loki/api/v1/query_range", s.url))
            .query(&[("query", r#"{job="auth"}"#), ("limit", "10")]),
        "labels" => s.client.get(format!("{}/loki/api/v1/labels", s.url)),
        "rules-read" => s.client.get(format!("{}/prometheus/api/v1/rules", s.url)),
        "rules-write" => s
            .client
            .post(format!("{}/loki/api/v1/rules/ns", s.url))
            .header("content-type", "application/yaml")
            .body("name: g\nrules:\n  - alert: A\n    expr: sum(count_over_time({job=\"auth\"}[1m])) > 1000\n"),
        "flush" => s.client.post(format!("{}/flush", s.url)),
        "config" => s.client.get(format!("{}/config", s.url)),
        other => anyhow::bail!("unknown group {other}"),
    };
    let req = match authorization(who) {
        Some(v) => req.header("authorization", v),
        None => req,
    };
    let req = match tenant {
        Some(t) => req.header("x-scope-orgid", t),
        None => req,
    };
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    if status == 401 {
        // Loki's own 401 for a request without a tenant, once the credential is accepted.
        let want = if tenant.is_none() && !matches!(who, Who::Nobody) {
            "no org id\n"
        } else {
            "unauthorized\n"
        };
        assert_eq!(body, want, "a 401 must not say which part was wrong");
    }
    if status == 403 {
        assert_eq!(
            body, "forbidden\n",
            "a 403 must not say which part was wrong"
        );
    }
    Ok(status)
}

/// The status a request of `group` gets when it is allowed.
fn success(group: &str) -> u16 {
    match group {
        "push" | "flush" => 204,
        "rules-write" => 202,
        _ => 200,
    }
}

#[tokio::test]
async fn each_role_reaches_only_its_endpoint_groups_and_tenants() -> anyhow::Result<()> {
    let s = server(1000).await?;
    let groups = [
        "push",
        "query",
        "labels",
        "rules-read",
        "rules-write",
        "flush",
        "config",
    ];
    for group in groups {
        for who in [Who::Nobody, Who::Pusher, Who::Reader, Who::Admin] {
            for (tenant, own) in [("a", true), ("c", false)] {
                let role_ok = match who {
                    Who::Nobody => false,
                    Who::Pusher => group == "push",
                    Who::Reader => ["query", "labels", "rules-read"].contains(&group),
                    Who::Admin => true,
                };
                let want = match who {
                    Who::Nobody => 401,
                    _ if !role_ok || !own => 403,
                    _ => success(group),
                };
                let got = call(&s, group, who, Some(tenant)).await?;
                assert_eq!(got, want, "{group} as {who:?} for tenant {tenant}");
            }
        }
    }
    // The reader holds two tenants: the second is its own too, a multi-tenant header only
    // when every tenant is held.
    assert_eq!(call(&s, "labels", Who::Reader, Some("b")).await?, 200);
    assert_eq!(call(&s, "labels", Who::Reader, Some("a|c")).await?, 403);
    // What the pusher wrote for tenant a is there for the reader of a, not of b.
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &[("query".into(), r#"{job="auth"}"#.into())],
            &[
                (
                    "authorization".into(),
                    authorization(Who::Reader).unwrap_or_default(),
                ),
                ("x-scope-orgid".into(), "a".into()),
            ],
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let lines: usize = v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| s["values"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    // One push by the pusher and one by the admin, both for tenant a.
    assert_eq!(lines, 2, "{body}");
    Ok(())
}

#[tokio::test]
async fn wrong_secrets_are_401_a_one_tenant_credential_needs_no_header() -> anyhow::Result<()> {
    let s = server(1000).await?;
    let url = format!("{}/loki/api/v1/labels", s.url);
    let wrong = [
        "Bearer not-a-token".to_string(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("grafana:wrong")
        ),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("nobody:{READER_PASSWORD}"))
        ),
        "Basic !!!".to_string(),
        "Digest abc".to_string(),
    ];
    for header in wrong {
        let r = s
            .client
            .get(&url)
            .header("authorization", &header)
            .header("x-scope-orgid", "a")
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 401, "{header}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(r.text().await?, "unauthorized\n");
    }
    // The pusher holds only tenant a: without X-Scope-OrgID its push goes to a.
    assert_eq!(call(&s, "push", Who::Pusher, None).await?, 204);
    let (status, body) = s
        .get(
            "/loki/api/v1/labels",
            &[],
            &[(
                "authorization".into(),
                authorization(Who::Admin).unwrap_or_default(),
            )],
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"job\""), "{body}");
    // The reader holds two tenants: without the header the request has no tenant.
    assert_eq!(call(&s, "labels", Who::Reader, None).await?, 401);
    // /ready and /metrics stay open; /metrics counts the refusals by reason.
    let ready = s.client.get(format!("{}/ready", s.url)).send().await?;
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = s
        .client
        .get(format!("{}/metrics", s.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("tovlog_auth_failures_total{reason=\"invalid\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("tovlog_auth_requests_total{credential=\"promtail\"} 1"));
    // /config (admin) masks the hashes.
    let (status, config) = s
        .get(
            "/config",
            &[],
            &[(
                "authorization".into(),
                authorization(Who::Admin).unwrap_or_default(),
            )],
        )
        .await?;
    assert_eq!(status, 200);
    assert!(!config.contains("$argon2id$"), "{config}");
    assert!(
        config.contains("token_hash: '********'") || config.contains("token_hash: ********"),
        "{config}"
    );
    Ok(())
}

#[tokio::test]
async fn failures_past_the_limit_are_429_even_with_a_right_secret() -> anyhow::Result<()> {
    let s = server(3).await?;
    for _ in 0..3 {
        let r = s
            .client
            .get(format!("{}/loki/api/v1/labels", s.url))
            .header("authorization", "Bearer guess")
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 401);
    }
    assert_eq!(call(&s, "labels", Who::Admin, Some("a")).await?, 429);
    Ok(())
}

#[tokio::test]
async fn hash_secret_prints_a_hash_the_server_accepts() -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(b"from-stdin-token\n")?;
    let out = child.wait_with_output()?;
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout)?.trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("auth.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  enabled: true\n  credentials:\n    - name: cli\n      role: read\n      tenants: [t1]\n      token_hash: '{hash}'\n"
        ),
    )?;
    let port = free_port()?;
    let mut server = spawn(&config, &dir.path().join("data"), port)?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let result = async {
        wait_ready(&client, &url).await?;
        let ok = client
            .get(format!("{url}/loki/api/v1/labels"))
            .bearer_auth("from-stdin-token")
            .send()
            .await?;
        assert_eq!(ok.status().as_u16(), 200);
        let bad = client
            .get(format!("{url}/loki/api/v1/labels"))
            .bearer_auth("from-stdin-token\n")
            .send()
            .await;
        // A newline in a header value is refused by the client itself or by the server.
        if let Ok(bad) = bad {
            assert_eq!(bad.status().as_u16(), 401);
        }
        anyhow::Ok(())
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    result?;

    // `check-config` refuses a credential whose hash is not one hash-secret prints.
    std::fs::write(
        &config,
        "auth:\n  enabled: true\n  credentials:\n    - name: cli\n      role: read\n      tenants: [t1]\n      token_hash: 'plain-text'\n",
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.credentials[cli]"), "{err}");
    Ok(())
}
