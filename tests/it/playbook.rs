//! The forensics playbook end to end (docs/forensics.md): `scripts/playbook/gen.py` writes a small
//! incident data set (fixed seed and end), a real server ingests it over HTTP, and every playbook
//! query of `scripts/playbook/queries.json` must give the answer its ground truth (`truth.json`)
//! predicts: the culprit, the time windows, the request chain ids, the counts
//! (`scripts/playbook/check.py` compares). The decisive answers are also asserted here directly.

use std::path::Path;

use serde_json::Value;

use crate::server::{conformance_config, TestServer};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Generate 20k lines into `out` with the repository's generator.
async fn generate(out: &Path) -> anyhow::Result<Value> {
    let gen = tokio::process::Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/playbook/gen.py"))
        .args(["--lines", "20000", "--seed", "25"])
        .args(["--end", "2026-11-21T00:00:00Z", "--out"])
        .arg(out)
        .output()
        .await?;
    anyhow::ensure!(
        gen.status.success(),
        "gen.py failed: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    Ok(serde_json::from_slice(&std::fs::read(
        out.join("truth.json"),
    )?)?)
}

/// Push every body gen.py wrote, in order.
async fn push_all(server: &TestServer, dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("push-"))
        })
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "gen.py wrote no push bodies");
    for f in files {
        let (status, body) = server
            .post(
                "/loki/api/v1/push",
                std::fs::read(&f)?,
                &[("content-type", "application/json")],
            )
            .await?;
        anyhow::ensure!(status == 204, "push of {} → {status}: {body}", f.display());
    }
    Ok(())
}

/// An instant query at the named instant of truth.json; the answer's result.
async fn instant(
    server: &TestServer,
    truth: &Value,
    query: &str,
    at: &str,
) -> anyhow::Result<Vec<Value>> {
    let time = truth["instants"][at]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("truth.json has no instant {at}"))?;
    let (status, body) = server
        .get(
            "/loki/api/v1/query",
            &[
                ("query".into(), query.into()),
                ("time".into(), time.to_string()),
            ],
            &[],
        )
        .await?;
    anyhow::ensure!(status == 200, "{query} → {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playbook_finds_every_planted_incident() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let truth = generate(dir.path()).await?;
    assert_eq!(truth["lines"], 20_000);
    let server = TestServer::start(conformance_config()?).await?;
    push_all(&server, dir.path()).await?;

    // Every playbook query, compared with the ground truth by the checker the demo ships.
    let check = tokio::process::Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/playbook/check.py"))
        .args(["--url", &server.url, "--data"])
        .arg(dir.path())
        .output()
        .await?;
    let report = String::from_utf8_lossy(&check.stdout);
    let queries: Value = serde_json::from_slice(&std::fs::read(
        Path::new(ROOT).join("scripts/playbook/queries.json"),
    )?)?;
    let n = queries["queries"].as_array().map_or(0, Vec::len);
    assert!(n >= 20, "queries.json lists {n} queries");
    assert!(
        check.status.success() && report.contains(&format!("{n} of {n} playbook queries")),
        "check.py:\n{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The decisive answers, asserted here too: the wipe's alert names exactly the culprit ...
    let culprit = truth["scenario1"]["culprit_user_id"].to_string();
    let who = instant(
        &server,
        &truth,
        r#"sum by (user_id) (count_over_time({job="tovplay-backend"} | json | action="DELETE" [5m])) > 10"#,
        "wipe_end",
    )
    .await?;
    let users: Vec<&str> = who
        .iter()
        .filter_map(|s| s["metric"]["user_id"].as_str())
        .collect();
    assert_eq!(users, [culprit.as_str()]);
    // ... the brute force's alert the attacker's IP ...
    let ips = instant(
        &server,
        &truth,
        r#"sum by (ip) (count_over_time({job="tovplay-backend"} | json | action="LOGIN" | status="401" [5m])) > 20"#,
        "brute_force_end",
    )
    .await?;
    let ips: Vec<&str> = ips
        .iter()
        .filter_map(|s| s["metric"]["ip"].as_str())
        .collect();
    assert_eq!(
        ips,
        [truth["scenario2"]["attacker_ip"].as_str().unwrap_or("?")]
    );
    // ... and the database counts every row the wipe deleted.
    let rows = instant(
        &server,
        &truth,
        &format!(
            r#"sum(count_over_time({{job="postgres"}} | logfmt | operation="DELETE" | app_user_id="{culprit}" [10m]))"#
        ),
        "wipe_end_plus_1m",
    )
    .await?;
    let got = rows
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(got, truth["scenario1"]["db_rows"].as_u64());

    // The source playbook's clock filter is a 400 that says to use the time range.
    let (status, body) = server
        .get(
            "/loki/api/v1/query_range",
            &[
                (
                    "query".into(),
                    r#"{job="tovplay-backend"} | json | __timestamp__ > now() - 1h"#.into(),
                ),
                ("limit".into(), "10".into()),
            ],
            &[],
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("query's time range instead"), "{body}");
    Ok(())
}
