//! Cost of redaction at ingest, on the standard workload's lines (`shared/bench/gen.py`).
//!
//! ```text
//! cargo bench --workspace --bench redact -- [--dataset DIR] [--files 40] [--rounds 5]
//! ```
//!
//! 1. loads the first `--files` push bodies of the dataset (`--dataset`, else the first
//!    `target/bench-data/*` that exists, else 200,000 lines generated with `gen.py`),
//! 2. **rules alone**: runs the default rules (every built-in kind) over every line and metadata
//!    value, and the same on lines that each hold a secret (the matching path),
//! 3. **ingest CPU**: decode + validate of every body, without and with redaction, which is the
//!    in-process part of a push in front of the WAL (the fsync and the head come on top, so the
//!    share shown is an upper bound of the slowdown of a real push),
//!
//! and prints lines/s, ns/line and the slowdown, each the best of `--rounds` runs. Figures are
//! printed, never asserted.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tovlog::{
    config::LimitsConfig,
    ingest::{
        decode,
        redact::{RedactionConfig, Redactor, RuleSet},
        validate::Validator,
    },
};

struct Args {
    dataset: Option<PathBuf>,
    files: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        dataset: None,
        files: 40,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dataset" => a.dataset = Some(it.next().context("--dataset DIR")?.into()),
            "--files" => a.files = it.next().context("--files N")?.parse()?,
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--bench" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    Ok(a)
}

fn dataset(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.dataset {
        return Ok(d.clone());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = root.join("target/bench-data");
    if let Ok(dirs) = std::fs::read_dir(&base) {
        let mut dirs: Vec<PathBuf> = dirs.flatten().map(|e| e.path()).collect();
        dirs.sort();
        if let Some(d) = dirs.into_iter().find(|d| d.join("meta.json").exists()) {
            return Ok(d);
        }
    }
    let dir = base.join("200000");
    let gen = root.join("../shared/bench/gen.py");
    eprintln!("generating 200000 lines with {}", gen.display());
    let status = Command::new("python3")
        .arg(&gen)
        .args(["--lines", "200000", "--out"])
        .arg(&dir)
        .status()
        .context("running gen.py")?;
    if !status.success() {
        bail!("gen.py failed");
    }
    Ok(dir)
}

/// Best wall time of `rounds` runs of `f`.
fn best(rounds: usize, mut f: impl FnMut() -> u64) -> (Duration, u64) {
    let mut best = Duration::MAX;
    let mut last = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        last = std::hint::black_box(f());
        best = best.min(t.elapsed());
    }
    (best, last)
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>12.0} lines/s {:>8.1} ns/line",
        n as f64 / d.as_secs_f64(),
        d.as_nanos() as f64 / n.max(1) as f64
    )
}

/// Run `rules` over every text; returns how many texts changed.
fn redact_all(rules: &RuleSet, texts: &[(String, Vec<(String, String)>)]) -> u64 {
    let mut pass = rules.pass();
    let mut changed = 0;
    for (line, metadata) in texts {
        if rules.redact_text(line, &mut pass).is_some() {
            changed += 1;
        }
        for (k, v) in metadata {
            if rules.redact_metadata(k, v, &mut pass).is_some() {
                changed += 1;
            }
        }
    }
    changed
}

/// The first `n` workload texts the rules change, before and after.
fn changed_samples(
    rules: &RuleSet,
    texts: &[(String, Vec<(String, String)>)],
    n: usize,
) -> Vec<(String, String)> {
    let mut pass = rules.pass();
    let mut out = Vec::new();
    for (line, metadata) in texts {
        if let Some(r) = rules.redact_text(line, &mut pass) {
            out.push((line.clone(), r));
        }
        for (k, v) in metadata {
            if let Some(r) = rules.redact_metadata(k, v, &mut pass) {
                out.push((format!("{k}={v}"), r));
            }
        }
        if out.len() >= n {
            break;
        }
    }
    out
}

/// Lines that each hold one secret of a built-in kind, in the shapes services log them.
fn secret_lines() -> Vec<(String, Vec<(String, String)>)> {
    let shapes = [
        r#"{"level":"INFO","msg":"login","user":"bob","password":"hunter2-%N","ip":"10.1.2.3"}"#,
        "level=warn msg=\"retrying upstream\" api_key=9f86d081884c7d659a2feaa0c55ad%N attempt=2",
        "10.0.0.5 - - [21/Nov/2025:10:00:01 +0000] \"GET /api HTTP/1.1\" 200 12 \"-\" \"curl\" authorization: Bearer eyJhbGciOiJIUzI1NiJ9.%N",
        "boto3 client created with AKIAIOSFODNN7EXAMPLE region=eu-west-1 n=%N",
        "charged card 4111 1111 1111 1111 for order %N amount=12.50",
        "connecting to postgres://app:S3cret%N@db:5432/tovplay",
    ];
    (0..60_000)
        .map(|i| {
            let shape = shapes[i % shapes.len()];
            (shape.replace("%N", &i.to_string()), Vec::new())
        })
        .collect()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = dataset(&args)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("push-"))
        })
        .collect();
    files.sort();
    files.truncate(args.files);
    let bodies: Vec<Vec<u8>> = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<_>>()?;
    let mut texts = Vec::new();
    for b in &bodies {
        for s in decode::decode(b, Some("application/json"))? {
            for e in s.entries {
                texts.push((e.line, e.metadata));
            }
        }
    }
    let lines = texts.len();
    let bytes: usize = texts.iter().map(|(l, _)| l.len()).sum();
    println!(
        "dataset {}: {} bodies, {lines} lines, {:.1} bytes/line, {} metadata values",
        dir.display(),
        bodies.len(),
        bytes as f64 / lines.max(1) as f64,
        texts.iter().map(|(_, m)| m.len()).sum::<usize>()
    );

    let config = RedactionConfig {
        enabled: true,
        ..RedactionConfig::default()
    };
    let redactor = Redactor::new(&config)?;
    let rules = redactor
        .for_tenant("bench")
        .context("redaction is enabled")?;

    println!(
        "\nrules alone (all built-in kinds), best of {}:",
        args.rounds
    );
    let (d, changed) = best(args.rounds, || redact_all(rules, &texts));
    println!(
        "  workload lines      {}  ({changed} texts changed)",
        rate(lines, d)
    );
    for (before, after) in changed_samples(rules, &texts, 5) {
        println!("    changed: {before}\n         to: {after}");
    }
    let secrets = secret_lines();
    let (d, changed) = best(args.rounds, || redact_all(rules, &secrets));
    println!(
        "  one secret per line {}  ({changed} of {} changed)",
        rate(secrets.len(), d),
        secrets.len()
    );

    let limits = LimitsConfig {
        discover_log_levels: false,
        ..LimitsConfig::default()
    };
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let ingest = |redact: Option<&RuleSet>| -> Result<u64> {
        let mut entries = 0u64;
        for b in &bodies {
            let raw = decode::decode(b, Some("application/json"))?;
            let mut v = Validator::new(&limits, now_ns).validate(raw);
            if let Some(r) = redact {
                let mut pass = r.pass();
                r.redact_streams(&mut v.streams, &mut pass);
            }
            entries += v.entries as u64;
        }
        Ok(entries)
    };
    println!(
        "\ningest CPU in front of the WAL (decode + validate), best of {}:",
        args.rounds
    );
    let mut without = Duration::MAX;
    let mut with = Duration::MAX;
    // Interleaved, so a slow phase of the shared machine hits both sides alike.
    for _ in 0..args.rounds.max(1) {
        let t = Instant::now();
        std::hint::black_box(ingest(None)?);
        without = without.min(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(ingest(Some(rules))?);
        with = with.min(t.elapsed());
    }
    println!("  without redaction   {}", rate(lines, without));
    println!("  with redaction      {}", rate(lines, with));
    println!(
        "  slowdown            {:+.1}%",
        (with.as_secs_f64() / without.as_secs_f64() - 1.0) * 100.0
    );
    Ok(())
}
