//! `tovlog verify` and `tovlog chain-head`: check the tamper-evident storage offline (see
//! `tovlog_storage::chain` and docs/verify.md). Both read the object store only, so they run
//! while the server is stopped, against the local directory or S3 of the configuration.

use std::io::Write;

use tovlog_storage::chain::{self, VerifyOptions};

use crate::cli::{ServeArgs, VerifyArgs};
use crate::config::Config;

/// Fail unless a local chunk directory exists already (`store::build` would create it).
fn check_local_store(config: &Config) -> anyhow::Result<()> {
    if let Some(dir) = config.storage.local_chunk_dir() {
        anyhow::ensure!(
            dir.is_dir(),
            "no chunk store at {} (check --data-dir / --config)",
            dir.display()
        );
    }
    Ok(())
}

/// Parse `TENANT=HASH`.
fn parse_expect(s: &str) -> anyhow::Result<(String, String)> {
    let (tenant, hash) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow::anyhow!("--expect-head {s:?}: expected TENANT=HASH"))?;
    let hash = hash.trim().to_ascii_lowercase();
    anyhow::ensure!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "--expect-head {s:?}: the hash must be 64 hex digits (as `tovlog chain-head` prints)"
    );
    Ok((tenant.to_string(), hash))
}

/// Run `verify`; returns the process exit code (0 clean, 1 on a break).
pub async fn run_verify(args: &VerifyArgs, serve: ServeArgs) -> anyhow::Result<i32> {
    let config = args.serve.clone().or(serve).load()?;
    let expect_heads = args
        .expect_head
        .iter()
        .map(|s| parse_expect(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_local_store(&config)?;
    let store = tovlog_storage::store::build(&config.storage)?;
    let report = chain::verify(
        store,
        &VerifyOptions {
            expect_heads,
            concurrency: args.concurrency,
        },
    )
    .await;
    let mut out = std::io::stdout().lock();
    for t in &report.tenants {
        match &t.head {
            Some(h) => writeln!(
                out,
                "tenant {:?}: ok, head entry {} {}, {} chain entries, {} files, {} bytes",
                t.tenant, h.seq, h.hash, t.entries, t.files, t.bytes
            )?,
            None => writeln!(out, "tenant {:?}: ok, nothing written yet", t.tenant)?,
        }
    }
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    out.flush()?;
    if let Some(b) = &report.first_break {
        let mut err = std::io::stderr().lock();
        writeln!(err, "INTEGRITY BREAK: {b}")?;
        writeln!(
            err,
            "verify stopped at the first break; {} tenants checked clean before it",
            report.tenants.len()
        )?;
        return Ok(1);
    }
    let entries: u64 = report.tenants.iter().map(|t| t.entries).sum();
    let files: u64 = report.tenants.iter().map(|t| t.files).sum();
    let bytes: u64 = report.tenants.iter().map(|t| t.bytes).sum();
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        bytes as f64 / secs / 1e9
    } else {
        0.0
    };
    writeln!(
        out,
        "verified: {} tenants, {entries} chain entries, {files} files, {bytes} bytes in {secs:.3} s \
         ({rate:.3} GB/s); no break",
        report.tenants.len()
    )?;
    Ok(0)
}

/// Run `chain-head`: print `TENANT=HASH<TAB>entry SEQ` per tenant (a line to keep and pass
/// back to `verify --expect-head`).
pub async fn run_chain_head(args: ServeArgs) -> anyhow::Result<i32> {
    let config = args.load()?;
    check_local_store(&config)?;
    let store = tovlog_storage::store::build(&config.storage)?;
    let heads = chain::heads(store.as_ref()).await?;
    let mut out = std::io::stdout().lock();
    for (tenant, head) in heads {
        match head {
            Some(h) => writeln!(out, "{tenant}={}\tentry {}", h.hash, h.seq)?,
            None => writeln!(out, "{tenant}=\tno chain yet")?,
        }
    }
    Ok(0)
}
