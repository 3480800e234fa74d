//! The ruler over real HTTP: the rules configuration API on both prefixes with Loki's codes
//! and texts, Grafana's feature discovery, validation errors, rule evaluation over pushed data
//! (alert lifecycle, unhealthy rules), local rule files, and a `kill -9` restart that keeps the
//! API's rules and a firing alert firing.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use tovlog::Config;

use crate::server::{spawn, wait_ready, TestServer};

/// A server whose ruler evaluates every second and re-reads its stores every second.
fn ruler_config(extra: &str) -> anyhow::Result<Config> {
    Ok(Config::from_yaml(&format!(
        "auth_enabled: false\nruler:\n  evaluation_interval: 1s\n  poll_interval: 1s\n{extra}"
    ))?)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &str,
) -> anyhow::Result<(u16, String, String)> {
    let resp = client
        .request(method, url)
        .header("content-type", "application/yaml")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((status, ct, resp.text().await?))
}

/// Push `lines` to stream `{app="auth"}` at the current time.
async fn push_lines(client: &reqwest::Client, url: &str, lines: &[&str]) -> anyhow::Result<()> {
    let t = now_ns();
    let values: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| json!([(t + i as i64).to_string(), l]))
        .collect();
    let body = json!({"streams": [{"stream": {"app": "auth"}, "values": values}]});
    let resp = client
        .post(format!("{url}/loki/api/v1/push"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().as_u16() == 204,
        "push failed: {}",
        resp.status()
    );
    Ok(())
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = client.get(url).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// The rule `name` in `/prometheus/api/v1/rules`, if listed.
async fn rule(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<Option<Value>> {
    let v = get_json(client, &format!("{url}/prometheus/api/v1/rules")).await?;
    Ok(v["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == name)
        .cloned())
}

/// Poll `rule` until `pred` holds (at most `secs` seconds).
async fn wait_rule(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(r) = rule(client, url, name).await? {
            if pred(&r) {
                return Ok(r);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "rule {name} never reached the expected state: {:?}",
            rule(client, url, name).await?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const GROUP: &str = r#"name: auth
interval: 1m
rules:
  - alert: HighFailures
    expr: sum by (user) (count_over_time({app="auth"} |= "failed" | logfmt [5m])) > 10
    for: 1m
    labels:
      severity: page
    annotations:
      summary: "{{ $labels.user }} failed {{ $value }} times"
  - record: auth:failures:count5m
    expr: sum(count_over_time({app="auth"} |= "failed" [5m]))
"#;

#[tokio::test]
async fn rules_api_round_trip_on_both_prefixes() -> anyhow::Result<()> {
    let mut s = TestServer::start(ruler_config("")?).await?;
    let c = s.client.clone();
    for prefix in ["/loki/api/v1/rules", "/api/prom/rules"] {
        let base = format!("{}{prefix}", s.url);
        // Nothing yet: Loki's 404 text; Grafana's discovery probe gets "group does not exist".
        let (st, _, body) = send(&c, reqwest::Method::GET, &base, "").await?;
        assert_eq!((st, body.trim()), (404, "no rule groups found"));
        let (st, _, body) =
            send(&c, reqwest::Method::GET, &format!("{base}/test/test"), "").await?;
        assert_eq!((st, body.trim()), (404, "group does not exist"));

        let (st, ct, body) = send(&c, reqwest::Method::POST, &format!("{base}/ns1"), GROUP).await?;
        assert_eq!(st, 202, "{body}");
        assert!(ct.contains("json"));
        assert_eq!(
            serde_json::from_str::<Value>(&body)?,
            json!({"status": "success"})
        );
        let second = GROUP.replace("name: auth", "name: other");
        let (st, _, _) = send(&c, reqwest::Method::POST, &format!("{base}/ns1"), &second).await?;
        assert_eq!(st, 202);

        let posted: serde_yaml::Value = serde_yaml::from_str(GROUP)?;
        let (st, ct, body) =
            send(&c, reqwest::Method::GET, &format!("{base}/ns1/auth"), "").await?;
        assert_eq!(st, 200);
        assert!(ct.contains("yaml"));
        assert_eq!(serde_yaml::from_str::<serde_yaml::Value>(&body)?, posted);

        for url in [base.clone(), format!("{base}/ns1")] {
            let (st, ct, body) = send(&c, reqwest::Method::GET, &url, "").await?;
            assert_eq!(st, 200, "{url}");
            assert!(ct.contains("yaml"));
            let all: serde_yaml::Value = serde_yaml::from_str(&body)?;
            let groups = all["ns1"].as_sequence().cloned().unwrap_or_default();
            let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
            assert_eq!(names, ["auth", "other"]);
            assert_eq!(groups[0], posted);
        }
        let (st, _, body) = send(&c, reqwest::Method::GET, &format!("{base}/nope"), "").await?;
        assert_eq!((st, body.trim()), (404, "no rule groups found"));

        // The read API lists the groups with `file` = namespace, as JSON.
        let resp = c
            .get(format!("{}/prometheus/api/v1/rules", s.url))
            .send()
            .await?;
        assert!(resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json")));
        let v: Value = resp.json().await?;
        assert_eq!(v["status"], "success");
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["file"], "ns1");
        assert_eq!(groups[0]["name"], "auth");
        assert_eq!(groups[0]["interval"], 60.0);
        assert_eq!(groups[0]["rules"][0]["type"], "alerting");
        assert_eq!(groups[0]["rules"][0]["duration"], 60.0);
        assert_eq!(groups[0]["rules"][1]["type"], "recording");
        // Grafana's filters.
        let v = get_json(
            &c,
            &format!(
                "{}/prometheus/api/v1/rules?type=record&rule_group[]=other",
                s.url
            ),
        )
        .await?;
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0]["name"], "other");
        assert_eq!(groups[0]["rules"].as_array().map(Vec::len), Some(1));
        assert_eq!(groups[0]["rules"][0]["name"], "auth:failures:count5m");
        let v = get_json(
            &c,
            &format!("{}/prometheus/api/v1/rules?group_limit=1", s.url),
        )
        .await?;
        assert_eq!(v["data"]["groups"].as_array().map(Vec::len), Some(1));
        let token = v["data"]["groupNextToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!token.is_empty());
        let v = get_json(
            &c,
            &format!(
                "{}/prometheus/api/v1/rules?group_limit=1&group_next_token={token}",
                s.url
            ),
        )
        .await?;
        assert_eq!(v["data"]["groups"][0]["name"], "other");
        assert!(v["data"].get("groupNextToken").is_none());
        let v = get_json(
            &c,
            &format!("{}/prometheus/api/v1/rules?exclude_alerts=true&rule_name[]=HighFailures&file[]=ns1", s.url),
        )
        .await?;
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        assert_eq!(groups.len(), 2);
        assert!(groups[0]["rules"][0].get("alerts").is_none());
        let matcher = r#"{"Name":"severity","Value":"page","IsRegex":false,"IsEqual":true}"#;
        let v: Value = c
            .get(format!("{}/prometheus/api/v1/rules", s.url))
            .query(&[("matcher", matcher)])
            .send()
            .await?
            .json()
            .await?;
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| r["name"] == "HighFailures"));
        let resp = c
            .get(format!("{}/prometheus/api/v1/rules?type=bogus", s.url))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 400);
        let v = get_json(&c, &format!("{}/prometheus/api/v1/alerts", s.url)).await?;
        assert_eq!(v["data"]["alerts"], json!([]));

        // Deletes.
        let (st, _, _) = send(&c, reqwest::Method::DELETE, &format!("{base}/ns1/auth"), "").await?;
        assert_eq!(st, 202);
        let (st, _, body) = send(&c, reqwest::Method::GET, &format!("{base}/ns1/auth"), "").await?;
        assert_eq!((st, body.trim()), (404, "group does not exist"));
        let (st, _, body) =
            send(&c, reqwest::Method::DELETE, &format!("{base}/ns1/auth"), "").await?;
        assert_eq!((st, body.trim()), (404, "group does not exist"));
        let (st, _, _) = send(&c, reqwest::Method::DELETE, &format!("{base}/ns1"), "").await?;
        assert_eq!(st, 202);
        let (st, _, body) = send(&c, reqwest::Method::DELETE, &format!("{base}/ns1"), "").await?;
        assert_eq!((st, body.trim()), (404, "group namespace does not exist"));
        let (st, _, body) = send(&c, reqwest::Method::GET, &base, "").await?;
        assert_eq!((st, body.trim()), (404, "no rule groups found"));
        let v = get_json(&c, &format!("{}/prometheus/api/v1/rules", s.url)).await?;
        assert_eq!(v["data"]["groups"], json!([]));
    }
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn rules_api_validation_errors_are_lokis_400s() -> anyhow::Result<()> {
    let mut s = TestServer::start(ruler_config("")?).await?;
    let c = s.client.clone();
    let bad_logql = r#"sum(count_over_time({app="auth"}[5m])"#;
    // The parse error as the query API words it.
    let resp = c
        .get(format!("{}/loki/api/v1/query", s.url))
        .query(&[("query", bad_logql)])
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);
    let parse_error = resp.text().await?.trim().to_string();
    let alert = |body: &str| format!("name: g\nrules:\n  - alert: A\n{body}");
    let expr = "    expr: sum(count_over_time({app=\"auth\"}[5m])) > 1\n";
    let cases: Vec<(String, String)> = vec![
        (
            format!("name: \"\"\nrules:\n  - alert: A\n{expr}"),
            "group 0: Groupname must not be empty".into(),
        ),
        (
            alert(&format!("    record: r\n{expr}")),
            "only one of 'record' and 'alert' must be set".into(),
        ),
        (
            format!("name: g\nrules:\n  - labels: {{a: b}}\n{expr}"),
            "one of 'record' or 'alert' must be set".into(),
        ),
        (
            alert("    for: 1m\n"),
            "field 'expr' must be set in rule".into(),
        ),
        (
            alert(&format!("    expr: '{bad_logql}'\n")),
            format!("could not parse expression for alert 'A' in group 'g': {parse_error}"),
        ),
        (
            alert(&format!("{expr}    for: 5 minutes\n")),
            "unable to decoded rule group".into(),
        ),
        ("[1, 2".into(), "unable to decoded rule group".into()),
        (
            alert(&format!(
                "{expr}    annotations:\n      summary: '{{{{ nope $value }}}}'\n"
            )),
            "annotation \"summary\": template: __alert_A:1: function \"nope\" not defined".into(),
        ),
        (
            alert(&format!(
                "{expr}    labels:\n      team: '{{{{ $labels.x '\n"
            )),
            String::new(),
        ),
        (
            format!("name: g\nrules:\n  - record: 1bad\n{expr}"),
            "invalid recording rule name: 1bad".into(),
        ),
        (
            format!("name: g\nrules:\n  - record: r\n{expr}    annotations: {{a: b}}\n"),
            "invalid field 'annotations' in recording rule".into(),
        ),
        (
            format!("name: g\nrules:\n  - record: r\n{expr}    for: 1m\n"),
            "invalid field 'for' in recording rule".into(),
        ),
        (
            alert(&format!("{expr}    labels:\n      bad-name: x\n")),
            "invalid label name: bad-name".into(),
        ),
        (
            format!("name: g\nrules:\n  - labels: {{a: b}}\n{expr}  - alert: B\n"),
            "one of 'record' or 'alert' must be set, field 'expr' must be set in rule".into(),
        ),
    ];
    for prefix in ["/loki/api/v1/rules", "/api/prom/rules"] {
        for (body, want) in &cases {
            let (st, _, got) = send(
                &c,
                reqwest::Method::POST,
                &format!("{}{prefix}/ns", s.url),
                body,
            )
            .await?;
            assert_eq!(st, 400, "{body}: {got}");
            if want.is_empty() {
                // An unterminated action: Go's parse error, under the label's name.
                assert!(
                    got.starts_with("label \"team\": template: __alert_A:1: "),
                    "{got}"
                );
            } else {
                assert_eq!(got.trim(), want, "{body}");
            }
        }
        // A log query is not a rule.
        let (st, _, got) = send(
            &c,
            reqwest::Method::POST,
            &format!("{}{prefix}/ns", s.url),
            &alert("    expr: '{app=\"auth\"} |= \"x\"'\n"),
        )
        .await?;
        assert_eq!(st, 400);
        assert!(
            got.contains("rule result is not a vector or scalar"),
            "{got}"
        );
        // Nothing was stored.
        let (st, _, _) = send(&c, reqwest::Method::GET, &format!("{}{prefix}", s.url), "").await?;
        assert_eq!(st, 404);
    }
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_goes_pending_firing_and_resolves_over_pushed_data() -> anyhow::Result<()> {
    let mut s = TestServer::start(ruler_config(
        "  external_labels:\n    cluster: eu1\n  external_url: http://grafana.example\n",
    )?)
    .await?;
    let c = s.client.clone();
    let group = r#"name: auth
interval: 1s
rules:
  - alert: BruteForce
    expr: sum by (user) (count_over_time({app="auth"} |= "failed" | logfmt [6s])) > 2
    for: 2s
    labels:
      severity: page
      team: "{{ $labels.user }}-team"
    annotations:
      summary: "{{ $labels.user }} failed {{ $value }} times"
      where: "{{ $externalLabels.cluster }} {{ $externalURL }}"
"#;
    let (st, _, body) = send(
        &c,
        reqwest::Method::POST,
        &format!("{}/loki/api/v1/rules/security", s.url),
        group,
    )
    .await?;
    assert_eq!(st, 202, "{body}");
    let lines = [
        "level=warn msg=\"login failed\" user=bob",
        "level=warn msg=\"login failed\" user=bob",
        "level=warn msg=\"login failed\" user=bob",
        "level=warn msg=\"login failed\" user=bob",
        "level=warn msg=\"login failed\" user=alice",
        "level=info msg=\"login ok\" user=carol",
    ];
    push_lines(&c, &s.url, &lines).await?;
    let bob_failures = lines
        .iter()
        .filter(|l| l.contains("failed") && l.ends_with("user=bob"))
        .count() as f64;

    let pending = wait_rule(&c, &s.url, "BruteForce", 20, |r| r["state"] == "pending").await?;
    assert_eq!(pending["health"], "ok");
    assert_eq!(pending["alerts"].as_array().map(Vec::len), Some(1));
    let firing = wait_rule(&c, &s.url, "BruteForce", 20, |r| r["state"] == "firing").await?;
    let a = &firing["alerts"][0];
    assert_eq!(a["state"], "firing");
    assert_eq!(a["labels"]["alertname"], "BruteForce");
    assert_eq!(a["labels"]["user"], "bob");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["team"], "bob-team");
    assert_eq!(
        a["value"],
        format!("{bob_failures:e}").replace("e0", "e+00")
    );
    assert_eq!(
        a["annotations"]["summary"],
        format!("bob failed {bob_failures} times")
    );
    assert_eq!(a["annotations"]["where"], "eu1 http://grafana.example");
    assert_eq!(a["activeAt"], pending["alerts"][0]["activeAt"]);
    assert!(chrono::DateTime::parse_from_rfc3339(a["activeAt"].as_str().unwrap_or("")).is_ok());
    assert!(firing["lastEvaluation"]
        .as_str()
        .is_some_and(|t| !t.starts_with("0001")));

    let alerts = get_json(&c, &format!("{}/prometheus/api/v1/alerts", s.url)).await?;
    assert_eq!(alerts["data"]["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(alerts["data"]["alerts"][0]["labels"], a["labels"]);
    let v = get_json(
        &c,
        &format!("{}/prometheus/api/v1/rules?state=firing", s.url),
    )
    .await?;
    assert_eq!(v["data"]["groups"].as_array().map(Vec::len), Some(1));
    let v = get_json(
        &c,
        &format!("{}/prometheus/api/v1/rules?state=inactive", s.url),
    )
    .await?;
    assert_eq!(v["data"]["groups"], json!([]));

    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await?
        .text()
        .await?;
    let evals = metrics
        .lines()
        .find(|l| {
            l.starts_with("loki_prometheus_rule_evaluations_total{rule_group=\"security;auth\",user=\"fake\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(evals >= 2.0, "{metrics}");
    assert!(metrics.contains(
        "loki_prometheus_rule_group_rules{rule_group=\"security;auth\",user=\"fake\"} 1"
    ));

    // The lines leave the 6s window: the alert resolves and is no longer listed.
    let resolved = wait_rule(&c, &s.url, "BruteForce", 30, |r| r["state"] == "inactive").await?;
    assert_eq!(resolved["alerts"], json!([]));
    assert_eq!(resolved["health"], "ok");
    let alerts = get_json(&c, &format!("{}/prometheus/api/v1/alerts", s.url)).await?;
    assert_eq!(alerts["data"]["alerts"], json!([]));
    s.stop().await?;
    Ok(())
}

/// A group of two alerts over `{app="auth"}`: `Broken` with `broken`, which the query API
/// refuses (400), and `Works`, which fires. `Broken` must end `health: err` with the query
/// API's message and `Works` fire with `health: ok`. Returns that message and `Works`.
async fn failing_rule_as_the_query_api(
    s: &TestServer,
    group_name: &str,
    broken: &str,
) -> anyhow::Result<(String, Value)> {
    let c = &s.client;
    let group = format!(
        "name: {group_name}\ninterval: 1s\nrules:\n  - alert: Broken\n    expr: '{broken}'\n  - alert: Works\n    expr: 'sum(count_over_time({{app=\"auth\"}}[1m])) > 0'\n"
    );
    // What the query API says about the same query now.
    let resp = c
        .get(format!("{}/loki/api/v1/query", s.url))
        .query(&[("query", broken)])
        .send()
        .await?;
    assert_eq!(
        resp.status().as_u16(),
        400,
        "the query must fail for this test"
    );
    let expected = resp.text().await?.trim().to_string();
    let (st, _, body) = send(
        c,
        reqwest::Method::POST,
        &format!("{}/loki/api/v1/rules/ns", s.url),
        &group,
    )
    .await?;
    assert_eq!(st, 202, "{body}");
    let b = wait_rule(c, &s.url, "Broken", 20, |r| r["health"] != "unknown").await?;
    assert_eq!(b["health"], "err");
    assert_eq!(b["lastError"], expected);
    let w = wait_rule(c, &s.url, "Works", 20, |r| r["state"] == "firing").await?;
    assert_eq!(w["health"], "ok");
    assert_eq!(w["lastError"], "");
    Ok((expected, w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_error_marks_rule_unhealthy_and_the_group_goes_on() -> anyhow::Result<()> {
    let mut s = TestServer::start(ruler_config("")?).await?;
    let c = s.client.clone();
    push_lines(&c, &s.url, &["not json at all", "still not json"]).await?;
    let (_, w) = failing_rule_as_the_query_api(
        &s,
        "mixed",
        r#"count_over_time({app="auth"} | json [1m]) > 0"#,
    )
    .await?;
    assert_eq!(w["alerts"][0]["value"], "2e+00");
    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await?
        .text()
        .await?;
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("loki_prometheus_rule_evaluation_failures_total{rule_group=\"ns;mixed\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    s.stop().await?;
    Ok(())
}

/// The tenant's `max_query_range` holds for rules as for the query API (Loki checks it in
/// its engine): a rule over it fails with the query API's message; the group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_over_the_max_query_range_fail_as_the_query_api_does() -> anyhow::Result<()> {
    let mut s = TestServer::start(ruler_config("limits_config:\n  max_query_range: 1h\n")?).await?;
    push_lines(&s.client, &s.url, &["failed login"]).await?;
    let (expected, _) = failing_rule_as_the_query_api(
        &s,
        "ranges",
        r#"sum(count_over_time({app="auth"}[2h])) > 0"#,
    )
    .await?;
    assert!(
        expected.contains("[interval] value exceeds limit: [2h] > [1h]"),
        "{expected}"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn local_rule_files_are_served_read_only() -> anyhow::Result<()> {
    let rules = tempfile::tempdir()?;
    std::fs::create_dir_all(rules.path().join("fake"))?;
    std::fs::write(
        rules.path().join("fake/team.yaml"),
        format!(
            "groups:\n{}",
            GROUP
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
                .replacen("  name:", "- name:", 1)
        ),
    )?;
    // Two groups with one name: Loki refuses the file, and so do we.
    std::fs::write(
        rules.path().join("fake/dup.yaml"),
        "groups:\n- name: d\n  rules: []\n- name: d\n  rules: []\n",
    )?;
    let config = ruler_config(&format!(
        "  storage:\n    type: local\n    local:\n      directory: {}\n",
        rules.path().display()
    ))?;
    let mut s = TestServer::start(config).await?;
    let c = s.client.clone();
    let (st, _, body) = send(
        &c,
        reqwest::Method::GET,
        &format!("{}/loki/api/v1/rules/team.yaml/auth", s.url),
        "",
    )
    .await?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        serde_yaml::from_str::<serde_yaml::Value>(&body)?,
        serde_yaml::from_str::<serde_yaml::Value>(GROUP)?
    );
    let (st, _, _) = send(
        &c,
        reqwest::Method::GET,
        &format!("{}/loki/api/v1/rules/dup.yaml", s.url),
        "",
    )
    .await?;
    assert_eq!(st, 404);
    assert!(rule(&c, &s.url, "HighFailures").await?.is_some());
    // A local group cannot be deleted through the API.
    let (st, _, body) = send(
        &c,
        reqwest::Method::DELETE,
        &format!("{}/loki/api/v1/rules/team.yaml/auth", s.url),
        "",
    )
    .await?;
    assert_eq!((st, body.trim()), (404, "group does not exist"));
    s.stop().await?;
    Ok(())
}

/// True when some file under `dir` whose path mentions `part` contains `needle`.
fn file_contains(dir: &Path, part: &str, needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.filter_map(|e| e.ok()).any(|e| {
        let p = e.path();
        if p.is_dir() {
            file_contains(&p, part, needle)
        } else {
            p.to_string_lossy().contains(part)
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rules_and_a_firing_alert_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tovlog.yaml");
    std::fs::write(
        &config,
        "auth_enabled: false\nruler:\n  evaluation_interval: 1s\n  poll_interval: 1s\n",
    )?;
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut child = spawn(&config, &data, port)?;
    wait_ready(&c, &url).await?;
    // `for: 3s`: without the restore, the alert would be pending for 3 s after a restart.
    let group = "name: g\ninterval: 1s\nrules:\n  - alert: Failures\n    expr: 'sum(count_over_time({app=\"auth\"} |= \"failed\" [10m])) > 1'\n    for: 3s\n    annotations:\n      summary: '{{ $value }} failures'\n";
    let (st, _, body) = send(
        &c,
        reqwest::Method::POST,
        &format!("{url}/api/prom/rules/ns"),
        group,
    )
    .await?;
    assert_eq!(st, 202, "{body}");
    push_lines(&c, &url, &["failed", "failed", "failed"]).await?;
    let firing = wait_rule(&c, &url, "Failures", 30, |r| r["state"] == "firing").await?;
    let active_at = firing["alerts"][0]["activeAt"].clone();
    // The state file says firing before the kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file_contains(&data, "ruler-state", "\"firing\"") {
        anyhow::ensure!(Instant::now() < deadline, "alert state never persisted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill()?;
    child.wait()?;

    let mut child = spawn(&config, &data, port)?;
    wait_ready(&c, &url).await?;
    let (st, _, body) = send(
        &c,
        reqwest::Method::GET,
        &format!("{url}/api/prom/rules/ns/g"),
        "",
    )
    .await?;
    assert_eq!(st, 200);
    assert_eq!(
        serde_yaml::from_str::<serde_yaml::Value>(&body)?,
        serde_yaml::from_str::<serde_yaml::Value>(group)?
    );
    let r = rule(&c, &url, "Failures").await?;
    let r = r.ok_or_else(|| anyhow::anyhow!("rule missing after restart"))?;
    assert_eq!(r["state"], "firing", "{r}");
    assert_eq!(r["alerts"][0]["state"], "firing");
    assert_eq!(r["alerts"][0]["activeAt"], active_at);
    // And it stays firing through the next evaluations.
    let after = wait_rule(&c, &url, "Failures", 10, |r| r["health"] == "ok").await?;
    assert_eq!(after["state"], "firing");
    assert_eq!(after["alerts"][0]["activeAt"], active_at);
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Prometheus remote-write 1.0 messages, decoded by the test's receiver.
mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

type Received =
    std::sync::Arc<std::sync::Mutex<Vec<(std::collections::BTreeMap<String, String>, f64, i64)>>>;

/// A remote-write receiver on a loopback port: snappy-framed protobuf in, samples kept.
async fn remote_write_receiver() -> anyhow::Result<(String, Received)> {
    use prost::Message;
    let received: Received = Default::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/api/v1/write",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let Ok(req) = prompb::WriteRequest::decode(raw.as_slice()) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                for ts in req.timeseries {
                    let labels: std::collections::BTreeMap<String, String> =
                        ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
                    for s in ts.samples {
                        kept.push((labels.clone(), s.value, s.timestamp));
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/api/v1/write"), received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_rule_values_match_the_query_api() -> anyhow::Result<()> {
    let (rw_url, received) = remote_write_receiver().await?;
    let mut s = TestServer::start(ruler_config(&format!(
        "  external_labels:\n    cluster: eu1\n  remote_write:\n    enabled: true\n    clients:\n      test:\n        url: {rw_url}\n        queue_config:\n          min_backoff: 10ms\n          max_backoff: 100ms\n"
    ))?)
    .await?;
    let c = s.client.clone();
    let expr = r#"sum by (app) (count_over_time({app="auth"} |= "failed" [1m]))"#;
    let group = format!(
        "name: rec\ninterval: 1s\nrules:\n  - record: auth:failures:count1m\n    expr: '{expr}'\n    labels:\n      source: tovlog\n"
    );
    let lines = ["failed a", "failed b", "ok c", "failed d"];
    push_lines(&c, &s.url, &lines).await?;
    let failed = lines.iter().filter(|l| l.contains("failed")).count() as f64;
    let (st, _, body) = send(
        &c,
        reqwest::Method::POST,
        &format!("{}/loki/api/v1/rules/ns", s.url),
        &group,
    )
    .await?;
    assert_eq!(st, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let sample = loop {
        let got = received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned();
        if let Some(s) = got {
            break s;
        }
        anyhow::ensure!(Instant::now() < deadline, "no recorded sample arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (labels, value, ts_ms) = sample;
    assert_eq!(
        labels.get("__name__").map(String::as_str),
        Some("auth:failures:count1m")
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("auth"));
    assert_eq!(labels.get("source").map(String::as_str), Some("tovlog"));
    assert_eq!(labels.get("cluster").map(String::as_str), Some("eu1"));
    // The query API at the evaluation time gives the same value.
    let v: Value = c
        .get(format!("{}/loki/api/v1/query", s.url))
        .query(&[("query", expr), ("time", &(ts_ms * 1_000_000).to_string())])
        .send()
        .await?
        .json()
        .await?;
    let want: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no value in {v}"))?;
    assert_eq!(value, want);
    assert_eq!(value, failed);
    let r = wait_rule(&c, &s.url, "auth:failures:count1m", 10, |r| {
        r["health"] != "unknown"
    })
    .await?;
    assert_eq!(r["health"], "ok");
    assert_eq!(r["type"], "recording");
    s.stop().await?;
    Ok(())
}
