//! The ruler end to end with its real peers: a rule created through the rules API over pushed
//! lines fires, reaches a real Alertmanager and its webhook with the templated labels and
//! annotations, then resolves when the lines leave the window; a recording rule's series is
//! read back from a real Prometheus (remote-write receiver) with the value tovlog's own query
//! API gives.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tovlog::Config;

use crate::{
    ruler_peers::{free_port, start_alertmanager, start_prometheus, Listener},
    server::TestServer,
};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Push logfmt `lines` to `{app="api"}` at the current time.
async fn push(s: &TestServer, lines: &[String]) -> Result<()> {
    let t = now_ns();
    let values: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| json!([(t + i as i64).to_string(), l]))
        .collect();
    let resp = s
        .client
        .post(format!("{}/loki/api/v1/push", s.url))
        .json(&json!({"streams": [{"stream": {"app": "api"}, "values": values}]}))
        .send()
        .await?;
    if resp.status().as_u16() != 204 {
        bail!("push answered {}: {}", resp.status(), resp.text().await?);
    }
    Ok(())
}

/// POST a rule group (YAML) to namespace `ns`; Loki answers 202.
async fn post_group(s: &TestServer, ns: &str, yaml: &str) -> Result<()> {
    let resp = s
        .client
        .post(format!("{}/loki/api/v1/rules/{ns}", s.url))
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    if status != 202 {
        bail!("rule group refused with {status}: {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rule_fires_through_alertmanager_to_the_webhook_and_resolves() -> Result<()> {
    let mut hook = Listener::start().await?;
    let am = start_alertmanager(&format!("{}/hook", hook.url)).await?;
    let config = Config::from_yaml(&format!(
        "auth_enabled: false\nruler:\n  evaluation_interval: 1s\n  poll_interval: 1s\n  \
         resend_delay: 1s\n  alertmanager_url: {}\n  external_url: http://grafana.example\n  \
         external_labels: {{cluster: test}}\n",
        am.url
    ))?;
    let mut s = TestServer::start(config).await?;
    post_group(
        &s,
        "security",
        "name: wipe\ninterval: 1s\nrules:\n  - alert: MassDelete\n    expr: 'sum by (user) \
         (count_over_time({app=\"api\"} | logfmt | action=\"DELETE\" [5s])) > 2'\n    labels:\n      \
         severity: critical\n    annotations:\n      summary: '{{ $labels.user }} deleted {{ $value }} \
         rows'\n",
    )
    .await?;
    let lines: Vec<String> = (0..3)
        .map(|i| format!("action=DELETE user=mallory table=games id={i}"))
        .chain(std::iter::once("action=READ user=alice".to_string()))
        .collect();
    push(&s, &lines).await?;

    // Firing: the webhook gets the alert with the rule's templated labels and annotations.
    let firing = hook
        .webhook(Duration::from_secs(30), |v| v["status"] == "firing")
        .await?;
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "MassDelete");
    assert_eq!(alert["labels"]["user"], "mallory");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["labels"]["cluster"], "test",
        "external labels are added"
    );
    assert_eq!(alert["annotations"]["summary"], "mallory deleted 3 rows");
    let gen = alert["generatorURL"].as_str().unwrap_or("");
    assert!(
        gen.starts_with("http://grafana.example/explore"),
        "generatorURL {gen}"
    );
    // Alertmanager's own API lists it as active.
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/api/v2/alerts", am.url))
        .send()
        .await?
        .json()
        .await?;
    let names: Vec<&str> = listed
        .as_array()
        .context("alert list")?
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert_eq!(names, ["MassDelete"]);

    // Resolved once the lines leave the 5 s window.
    let resolved = hook
        .webhook(Duration::from_secs(40), |v| v["status"] == "resolved")
        .await?;
    assert_eq!(resolved["alerts"][0]["labels"]["user"], "mallory");
    assert_ne!(
        resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z",
        "a resolved alert carries its end"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_rule_series_read_back_from_prometheus() -> Result<()> {
    let port = free_port()?;
    let prom = start_prometheus(port).await?;
    let config = Config::from_yaml(&format!(
        "auth_enabled: false\nruler:\n  evaluation_interval: 1s\n  poll_interval: 1s\n  \
         external_labels: {{cluster: test}}\n  remote_write:\n    enabled: true\n    clients:\n      \
         prom:\n        url: {}/api/v1/write\n",
        prom.url
    ))?;
    let mut s = TestServer::start(config).await?;
    let lines: Vec<String> = (0..7)
        .map(|i| {
            format!(
                "level={} msg=\"request {i}\"",
                if i % 3 == 0 { "error" } else { "info" }
            )
        })
        .collect();
    push(&s, &lines).await?;
    let expr = r#"sum by (level) (count_over_time({app="api"} | logfmt [1h]))"#;
    post_group(
        &s,
        "recording",
        &format!(
            "name: counts\ninterval: 1s\nrules:\n  - record: app:lines_by_level:count1h\n    \
             expr: '{expr}'\n"
        ),
    )
    .await?;

    // What tovlog's query API answers for the same expression.
    let v: Value = s
        .client
        .get(format!("{}/loki/api/v1/query", s.url))
        .query(&[("query", expr)])
        .send()
        .await?
        .json()
        .await?;
    let mut want: Vec<(String, f64)> = v["data"]["result"]
        .as_array()
        .context("query result")?
        .iter()
        .map(|r| {
            let level = r["metric"]["level"].as_str().unwrap_or("").to_string();
            let value = r["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            (level, value)
        })
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(want.len(), 2, "{v}");

    // The recorded series in Prometheus, with the rule's name and the external labels.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", prom.url))
            .query(&[("query", "app:lines_by_level:count1h")])
            .send()
            .await?
            .json()
            .await?;
        let mut got: Vec<(String, f64)> = v["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter(|r| r["metric"]["cluster"] == "test")
                    .map(|r| {
                        let level = r["metric"]["level"].as_str().unwrap_or("").to_string();
                        let value = r["value"][1]
                            .as_str()
                            .unwrap_or("NaN")
                            .parse()
                            .unwrap_or(f64::NAN);
                        (level, value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        if got == want || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got, want, "Prometheus holds what tovlog computed");
    s.stop().await?;
    Ok(())
}
