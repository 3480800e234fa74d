//! What the benchmarks share (each includes this file with `#[path]`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Wait until every chunk file is compacted and every replaced file deleted (the
/// compactor's gauges on `/metrics` at zero), at most `limit`.
pub async fn wait_for_compaction(
    client: &reqwest::Client,
    url: &str,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if gauge("tovlog_chunk_files_uncompacted ") == Some(0)
            && gauge("tovlog_chunk_files_pending_delete ") == Some(0)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("compaction was not over within {}s", limit.as_secs())
}
