//! `/loki/api/v1/patterns` over the whole day of the workload, for the nginx and backend
//! streams with a 5m step: one cold run, then the median of 5 warm runs, like Q1–Q9.
//! The answer column gives the number of patterns and the share of the stream's lines they
//! count (nginx: against `Q4_nginx_by_status` of `meta.json`).

use anyhow::Result;
use serde_json::{json, Value};
use std::time::Instant;

/// Time the patterns requests against the server at `url` and add their figures to
/// `results` under `P_nginx` and `P_backend`.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    meta: &Value,
    results: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let t0 = meta["t0_ns"].as_i64().unwrap_or(0);
    let t1 = meta["t_end_ns"].as_i64().unwrap_or(0);
    let nginx_lines: u64 = meta["truth"]["Q4_nginx_by_status"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    for (id, job, lines) in [
        ("P_nginx", "nginx", Some(nginx_lines)),
        ("P_backend", "tovplay-backend", None),
    ] {
        let params = [
            ("query", format!("{{job=\"{job}\"}}")),
            ("start", t0.to_string()),
            ("end", t1.to_string()),
            ("step", "5m".to_string()),
        ];
        let mut times = Vec::new();
        let mut last = Value::Null;
        for _ in 0..6 {
            let t = Instant::now();
            let r = client
                .get(format!("{url}/loki/api/v1/patterns"))
                .query(&params)
                .send()
                .await?;
            let status = r.status();
            let body = r.text().await?;
            times.push(t.elapsed().as_secs_f64());
            if !status.is_success() {
                last = json!({"error": format!("{status}: {}", body.chars().take(200).collect::<String>())});
                break;
            }
            last = serde_json::from_str(&body).unwrap_or(Value::Null);
        }
        let cold = times[0];
        let mut warm: Vec<f64> = times[1..].to_vec();
        warm.sort_by(|a, b| a.total_cmp(b));
        let med = warm.get(warm.len() / 2).copied().unwrap_or(f64::NAN);
        let answer = match last.get("error") {
            Some(e) => e.to_string(),
            None => {
                let data = last["data"].as_array().cloned().unwrap_or_default();
                let patterns: std::collections::BTreeSet<&str> =
                    data.iter().filter_map(|p| p["pattern"].as_str()).collect();
                let counted: u64 = data
                    .iter()
                    .flat_map(|p| p["samples"].as_array().cloned().unwrap_or_default())
                    .filter_map(|s| s[1].as_u64())
                    .sum();
                match lines {
                    Some(n) if n > 0 => format!(
                        "{} patterns, {counted} lines ({:.1}% of {n})",
                        patterns.len(),
                        counted as f64 * 100.0 / n as f64
                    ),
                    _ => format!("{} patterns, {counted} lines", patterns.len()),
                }
            }
        };
        println!("{id:<5} {cold:>10.4} {med:>12.4}  {answer}");
        results.insert(
            id.to_string(),
            json!({"cold_s": cold, "warm_median_s": med, "answer": answer}),
        );
    }
    Ok(())
}
