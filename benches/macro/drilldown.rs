//! Logs Drilldown's `detected_fields` over the whole day of the workload, for a JSON
//! stream set (`tovplay-backend`) and a mostly unstructured one (`nginx`): the sample is
//! the newest 100 entries, so the time should not depend on the range. Printed in the
//! table and the JSON line of the Q1–Q9 queries (ids DF1, DF2).

use anyhow::Result;
use serde_json::{json, Value};

use super::time_query;

/// Time `detected_fields` for each job (one cold run, then the median of 5 warm runs),
/// print a table row per job and add the figures to `results`.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    meta: &Value,
    results: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let t0 = meta["t0_ns"].as_i64().unwrap_or(0);
    let t1 = meta["t_end_ns"].as_i64().unwrap_or(0);
    for (id, job) in [("DF1", "tovplay-backend"), ("DF2", "nginx")] {
        let params = vec![
            ("query".to_string(), format!(r#"{{job="{job}"}}"#)),
            ("start".to_string(), t0.to_string()),
            ("end".to_string(), t1.to_string()),
        ];
        let (cold, med, last) =
            time_query(client, url, "/loki/api/v1/detected_fields", &params).await?;
        let verdict = match last["fields"].as_array() {
            _ if last.get("error").is_some() => last["error"].to_string(),
            Some(fields) if !fields.is_empty() => format!("ok ({} fields)", fields.len()),
            _ => "WRONG (no fields)".to_string(),
        };
        println!("{id:<5} {cold:>10.4} {med:>12.4}  {verdict}");
        results.insert(
            id.to_string(),
            json!({"cold_s": cold, "warm_median_s": med, "answer": verdict}),
        );
    }
    Ok(())
}
