//! Retention and delete requests ([`tovlog_storage::erase`]) on a real storage: on a local
//! directory and on the in-process S3-protocol server, read back through DataFusion as the
//! query engine reads, before and after the compactor applies them, and across restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, UInt64Type};
use tovlog_storage::chain::{self, VerifyOptions};
use tovlog_storage::config::HumanDuration;
use tovlog_storage::erase::{
    CancelOutcome, CompiledDelete, DeleteCompiler, DeleteStatus, LineMatch, RetentionPolicy,
    RetentionRule,
};
use tovlog_storage::{
    Error, LabelSet, MatchOp, Matcher, Result, ScanRequest, Storage, StorageConfig,
};

use crate::common::{self, config, push};

const TENANT: &str = "fake";
const HOUR: i64 = 3_600_000_000_000;
const MINUTE: i64 = 60_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn m(name: &str, value: &str) -> Result<Matcher> {
    Matcher::new(name, MatchOp::Eq, value).map_err(|e| Error::Internal(e.to_string()))
}

/// A compiler for `{k="v", ...}` optionally followed by `|= "text"`: enough LogQL for
/// storage tests (the server compiles real LogQL).
fn compiler() -> DeleteCompiler {
    Arc::new(
        |query: &str| -> std::result::Result<CompiledDelete, String> {
            let query = query.trim();
            let (selector, rest) = query
                .strip_prefix('{')
                .and_then(|q| q.split_once('}'))
                .ok_or_else(|| format!("parse error: {query:?} is not a selector"))?;
            let mut matchers = Vec::new();
            for pair in selector.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("parse error: bad matcher {pair:?}"))?;
                let v = v.trim().trim_matches('"');
                matchers.push(Matcher::new(k.trim(), MatchOp::Eq, v).map_err(|e| e.to_string())?);
            }
            let rest = rest.trim();
            let mut needles = Vec::new();
            let line: Option<LineMatch> = if rest.is_empty() {
                None
            } else {
                let needle = rest
                    .strip_prefix("|=")
                    .map(|n| n.trim().trim_matches('"').to_string())
                    .ok_or_else(|| format!("parse error: unsupported filter {rest:?}"))?;
                needles.push(needle.clone().into_bytes());
                Some(Arc::new(move |l: &str| l.contains(&needle)))
            };
            Ok(CompiledDelete {
                matchers,
                line,
                needles,
            })
        },
    )
}

/// Every (labels, ts, line) of `streams` in `[start, end)` as a query reads it, sorted.
/// The streams are scanned whether `series` lists them or not (a stream erasure hides
/// must not come back from a scan either); every stream with a row must be listed.
async fn read_all(
    storage: &Storage,
    streams: &[LabelSet],
    start: i64,
    end: i64,
) -> Result<Vec<(String, i64, String)>> {
    let series = storage.series(TENANT, &[], start, end)?;
    let names: BTreeMap<u64, String> = streams
        .iter()
        .map(|l| (l.fingerprint(), l.to_string()))
        .collect();
    let table = storage.logs_table(ScanRequest {
        tenant: TENANT.into(),
        streams: names.keys().copied().collect(),
        start_ns: start,
        end_ns: end,
    })?;
    let batches = crate::common::collect(storage, &table, &[]).await?;
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| {
            b.column_by_name(n)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no {n} column")))
        };
        let (ids, ts, lines) = (col("stream_id")?, col("ts")?, col("line")?);
        let ids = ids.as_primitive::<UInt64Type>();
        let ts = ts.as_primitive::<Int64Type>();
        let lines = lines.as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(!lines.is_null(i));
            out.push((
                names.get(&ids.value(i)).cloned().unwrap_or_default(),
                ts.value(i),
                lines.value(i).to_string(),
            ));
        }
    }
    for (labels, _, _) in &out {
        assert!(
            series.iter().any(|s| &s.labels.to_string() == labels),
            "{labels} has rows but no series"
        );
    }
    out.sort();
    Ok(out)
}

async fn verify_ok(cfg: &StorageConfig) -> Result<()> {
    let store = tovlog_storage::store::build(cfg)?;
    let report = chain::verify(store, &VerifyOptions::default()).await;
    assert_eq!(report.first_break, None, "verify: {:?}", report.notes);
    Ok(())
}

fn erase_config(dir: &Path, cancel: Duration) -> StorageConfig {
    let mut cfg = config(dir);
    cfg.compaction.enabled = false;
    // Windows are not merged (files are minutes old): only retention and deletes
    // rewrite them.
    cfg.compaction.min_age = HumanDuration(Duration::from_secs(3600));
    cfg.compaction.delete_delay = HumanDuration(Duration::ZERO);
    cfg.compaction.retention_enabled = true;
    cfg.compaction.delete_request_cancel_period = HumanDuration(cancel);
    cfg
}

mod retention {
    use super::*;

    const STREAMS: [(&str, &[(&str, &str)]); 5] = [
        ("plain", &[("app", "plain")]),
        ("keep", &[("app", "keep")]),
        ("short", &[("app", "short")]),
        ("dev", &[("app", "short"), ("env", "dev")]),
        ("prod", &[("app", "short"), ("env", "prod")]),
    ];

    /// Tenant period 2h; `{app="keep"}` 10h; `{app="short"}` 1h, but 5h with
    /// `env="dev"` (more matchers, same priority) and 3h with `env="prod"` (a rule of
    /// higher priority, though less specific, wins).
    fn policy() -> Result<RetentionPolicy> {
        let h = |n: u64| Duration::from_secs(n * 3600);
        Ok(RetentionPolicy {
            period: h(2),
            streams: vec![
                RetentionRule {
                    matchers: vec![m("app", "keep")?],
                    priority: 0,
                    period: h(10),
                },
                RetentionRule {
                    matchers: vec![m("app", "short")?],
                    priority: 0,
                    period: h(1),
                },
                RetentionRule {
                    matchers: vec![m("app", "short")?, m("env", "dev")?],
                    priority: 0,
                    period: h(5),
                },
                RetentionRule {
                    matchers: vec![m("env", "prod")?],
                    priority: 2,
                    period: h(3),
                },
            ],
        })
    }

    fn period_hours(name: &str) -> i64 {
        match name {
            "plain" => 2,
            "keep" => 10,
            "short" => 1,
            "dev" => 5,
            _ => 3,
        }
    }

    /// One row per stream per hour, 15 minutes past each whole age: ages 0.25h ..
    /// 11.25h. One row per stream per window makes volumes exact.
    fn rows(now: i64) -> Vec<(usize, i64)> {
        (0..12)
            .map(|k| (k, now - k as i64 * HOUR - 15 * MINUTE))
            .collect()
    }

    async fn check(storage: &Storage, now: i64) -> Result<()> {
        let (start, end) = (now - 13 * HOUR, now + HOUR);
        let mut expected = Vec::new();
        let mut visible: BTreeMap<String, u64> = BTreeMap::new();
        for (name, labels) in STREAMS {
            let labels = common::labels(labels).to_string();
            for (k, ts) in rows(now) {
                if (k as i64) < period_hours(name) {
                    expected.push((labels.clone(), ts, format!("{name} {k}")));
                    *visible.entry(labels.clone()).or_default() += 1;
                }
            }
        }
        expected.sort();
        let known: Vec<LabelSet> = STREAMS.iter().map(|(_, l)| common::labels(l)).collect();
        assert_eq!(read_all(storage, &known, start, end).await?, expected);
        // Series, labels and volumes agree with the cut-offs.
        let series: Vec<String> = storage
            .series(TENANT, &[], start, end)?
            .into_iter()
            .map(|s| s.labels.to_string())
            .collect();
        assert_eq!(series.len(), 5);
        let volumes: BTreeMap<String, u64> = storage
            .volumes(TENANT, &[], start, end)
            .await?
            .into_iter()
            .map(|v| (v.series.labels.to_string(), v.entries))
            .collect();
        assert_eq!(volumes, visible);
        // Between 4h and 13h ago only `dev` (5h) and `keep` (10h) have rows left.
        let old = (now - 13 * HOUR, now - 4 * HOUR);
        let values = storage.label_values(TENANT, "env", &[], old.0, old.1)?;
        assert_eq!(values, vec!["dev".to_string()]);
        let series = storage.series(TENANT, &[], old.0, old.1)?;
        assert_eq!(series.len(), 2);
        let names = storage.label_names(TENANT, &[m("app", "keep")?], old.0, old.1)?;
        assert_eq!(names, vec!["app".to_string()]);
        assert!(storage
            .label_names(TENANT, &[m("app", "plain")?], old.0, old.1)?
            .is_empty());
        // The other tenant has no retention: every row is there.
        let other = storage.volumes("other", &[], start, end).await?;
        assert_eq!(other.iter().map(|v| v.entries).sum::<u64>(), 12);
        Ok(())
    }

    async fn retention_round_trip(cfg: StorageConfig) -> Result<()> {
        let storage = Storage::open(cfg.clone()).await?;
        let policy = policy()?;
        storage.set_retention(Arc::new(move |tenant: &str| {
            if tenant == TENANT {
                policy.clone()
            } else {
                RetentionPolicy::default()
            }
        }));
        let now = now_ns();
        let mut streams = Vec::new();
        for (name, labels) in STREAMS {
            let lines: Vec<(i64, String)> = rows(now)
                .into_iter()
                .map(|(k, ts)| (ts, format!("{name} {k}")))
                .collect();
            let entries: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
            streams.push(push(labels, &entries));
        }
        storage.append(TENANT, streams).await?;
        let other: Vec<(i64, String)> = rows(now)
            .into_iter()
            .map(|(k, t)| (t, format!("o {k}")))
            .collect();
        let other: Vec<(i64, &str)> = other.iter().map(|(t, l)| (*t, l.as_str())).collect();
        storage
            .append("other", vec![push(&[("app", "plain")], &other)])
            .await?;
        // From the head.
        check(&storage, now).await?;
        storage.flush().await?;
        let before = storage.metrics();
        // From the flushed files, filtered at query time.
        check(&storage, now).await?;
        storage.compact().await?;
        // Past the delete delay (zero), the replaced files go on the next pass.
        storage.compact().await?;
        let after = storage.metrics();
        check(&storage, now).await?;
        assert!(
            after.chunk_bytes < before.chunk_bytes && after.chunk_files < before.chunk_files,
            "bytes {} -> {}, files {} -> {}",
            before.chunk_bytes,
            after.chunk_bytes,
            before.chunk_files,
            after.chunk_files
        );
        assert_eq!(after.pending_deletes, 0);
        storage.shutdown().await?;
        drop(storage);
        verify_ok(&cfg).await?;
        Ok(())
    }

    /// A cut-off inside a chunk file: 40 rows spread over one window (1h), the retention
    /// period chosen so the cut-off falls mid-window. Volumes count exactly the visible
    /// rows and their bytes, from the head and from the flushed file (where the manifest's
    /// per-stream totals would only prorate them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn volumes_are_exact_where_the_cut_off_falls_inside_a_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let storage = Storage::open(erase_config(dir.path(), Duration::from_secs(3600))).await?;
        let now = now_ns();
        let window = (now - 2 * HOUR).div_euclid(HOUR) * HOUR;
        let mid = window + HOUR / 2;
        let period = Duration::from_nanos(u64::try_from(now - mid).unwrap_or(0));
        storage.set_retention(Arc::new(move |_: &str| RetentionPolicy {
            period,
            streams: Vec::new(),
        }));
        // 45 s from the cut-off at least, so the seconds the test takes change nothing.
        let lines: Vec<(i64, String)> = (0..40i64)
            .map(|j| {
                let ts = window + (45 + 90 * j) * 1_000_000_000;
                (ts, format!("row {j} {}", "x".repeat((j * j) as usize)))
            })
            .collect();
        let visible: Vec<&(i64, String)> = lines.iter().filter(|(ts, _)| *ts >= mid).collect();
        assert_eq!(visible.len(), 20);
        let want = (
            visible.len() as u64,
            visible.iter().map(|(_, l)| l.len() as u64).sum::<u64>(),
        );
        let entries: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
        storage
            .append(TENANT, vec![push(&[("app", "a")], &entries)])
            .await?;
        let (start, end) = (now - 4 * HOUR, now + HOUR);
        let volume = |v: Vec<tovlog_storage::StreamVolume>| -> (u64, u64) {
            v.iter()
                .fold((0, 0), |a, v| (a.0 + v.entries, a.1 + v.bytes))
        };
        assert_eq!(
            volume(storage.volumes(TENANT, &[], start, end).await?),
            want
        );
        storage.flush().await?;
        assert_eq!(storage.metrics().chunk_files, 1);
        assert_eq!(
            volume(storage.volumes(TENANT, &[], start, end).await?),
            want
        );
        // Again, from the rows kept since.
        assert_eq!(
            volume(storage.volumes(TENANT, &[], start, end).await?),
            want
        );
        storage.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_tenant_and_per_stream_before_and_after_compaction() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let cfg = erase_config(dir.path(), Duration::from_secs(3600));
        retention_round_trip(cfg.clone()).await?;
        // Windows older than 10h held only expired rows: their files are gone from disk.
        let tenant = dir.path().join("chunks").join(TENANT);
        let now = now_ns();
        for age in [10, 11] {
            let window = (now - age * HOUR - 15 * MINUTE).div_euclid(HOUR) * 3600;
            let files = std::fs::read_dir(tenant.join(window.to_string()))
                .map(|d| d.count())
                .unwrap_or(0);
            assert_eq!(files, 0, "window {age}h ago");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_s3() -> Result<()> {
        let s3_root = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let data = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let (endpoint, server) = super::s3::start(s3_root.path()).await?;
        let mut cfg = super::s3::config(data.path(), &endpoint);
        let local = erase_config(data.path(), Duration::from_secs(3600));
        cfg.compaction = local.compaction;
        let result = retention_round_trip(cfg).await;
        server.abort();
        result
    }
}

mod deletes {
    use super::*;

    fn rows(base: i64) -> Vec<tovlog_storage::PushStream> {
        let lines: Vec<(i64, String)> = (0..40)
            .map(|i| {
                let kind = if i % 4 == 0 { "secret=hunter2" } else { "ok" };
                (base + i * MINUTE, format!("line {i} {kind}"))
            })
            .collect();
        let a: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
        vec![
            push(&[("app", "api")], &a),
            push(&[("app", "db")], &a),
            push(&[("app", "gone")], &a[..10]),
        ]
    }

    /// Half the rows flushed, half in the head.
    async fn load(storage: &Storage, base: i64) -> Result<()> {
        let all = rows(base);
        let (flushed, head): (Vec<_>, Vec<_>) = all
            .into_iter()
            .flat_map(|s| {
                let labels = s.labels.clone();
                let (a, b): (Vec<_>, Vec<_>) = s
                    .entries
                    .into_iter()
                    .partition(|e| e.ts_ns < base + 20 * MINUTE);
                [
                    (
                        true,
                        tovlog_storage::PushStream {
                            labels: labels.clone(),
                            entries: a,
                        },
                    ),
                    (false, tovlog_storage::PushStream { labels, entries: b }),
                ]
            })
            .partition(|(f, _)| *f);
        storage
            .append(TENANT, flushed.into_iter().map(|(_, s)| s).collect())
            .await?;
        storage.flush().await?;
        storage
            .append(TENANT, head.into_iter().map(|(_, s)| s).collect())
            .await?;
        Ok(())
    }

    /// The rows the two test deletes leave: `{app="api"} |= "secret"` in
    /// `[base+10m, base+30m]` and all of `{app="gone"}`.
    fn expected_after(all: &[(String, i64, String)], base: i64) -> Vec<(String, i64, String)> {
        all.iter()
            .filter(|(l, t, line)| {
                let api_secret = l == "{app=\"api\"}"
                    && line.contains("secret")
                    && (base + 10 * MINUTE..=base + 30 * MINUTE).contains(t);
                !(api_secret || l == "{app=\"gone\"}")
            })
            .cloned()
            .collect()
    }

    fn known() -> Vec<LabelSet> {
        rows(0).into_iter().map(|s| s.labels).collect()
    }

    async fn add_both(storage: &Storage, base: i64) -> Result<(String, String)> {
        let a = storage
            .add_delete(
                TENANT,
                "{app=\"api\"} |= \"secret\"",
                base + 10 * MINUTE,
                base + 30 * MINUTE,
                "fake:alice",
            )
            .await?;
        let b = storage
            .add_delete(
                TENANT,
                "{app=\"gone\"}",
                base - HOUR,
                base + HOUR,
                "fake:bob",
            )
            .await?;
        assert_eq!(a.status, DeleteStatus::Received);
        assert_eq!(a.requested_by, "fake:alice");
        Ok((a.request_id, b.request_id))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visible_in_the_next_scan_and_cancelled_leaves_everything() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let cfg = erase_config(dir.path(), Duration::from_secs(3600));
        let storage = Storage::open(cfg).await?;
        storage.set_delete_compiler(compiler());
        let base = now_ns() - 2 * HOUR;
        load(&storage, base).await?;
        let (start, end) = (base - HOUR, base + 2 * HOUR);
        let all = read_all(&storage, &known(), start, end).await?;
        assert_eq!(all.len(), 90);
        let generation = storage.delete_generation(TENANT);

        // Bad requests are refused.
        for (q, s, e) in [
            ("app=\"api\"", base, base + 1),
            ("{app=\"api\"}", base + 1, base),
        ] {
            let err = storage.add_delete(TENANT, q, s, e, "x").await;
            assert!(matches!(err, Err(Error::InvalidRequest(_))), "{q}: {err:?}");
        }
        assert_eq!(storage.delete_generation(TENANT), generation);

        let (a, b) = add_both(&storage, base).await?;
        assert_ne!(storage.delete_generation(TENANT), generation);
        // The very next scan: head and files alike.
        let after = read_all(&storage, &known(), start, end).await?;
        assert_eq!(after, expected_after(&all, base));
        assert_eq!(after.len(), 90 - 10 - 5);
        // The stream deleted whole leaves series and labels; the other stays.
        let apps = storage.label_values(TENANT, "app", &[], start, end)?;
        assert_eq!(apps, vec!["api".to_string(), "db".to_string()]);
        // The compactor leaves requests alone within the cancel period.
        let files = storage.metrics().chunk_files;
        storage.compact().await?;
        assert_eq!(storage.metrics().chunk_files, files);
        assert!(storage
            .deletes(TENANT)
            .await?
            .iter()
            .all(|r| r.status == DeleteStatus::Received));

        // Cancelled: everything is back.
        let g = storage.delete_generation(TENANT);
        assert_eq!(
            storage.cancel_delete(TENANT, &a).await?,
            CancelOutcome::Cancelled
        );
        assert_eq!(
            storage.cancel_delete(TENANT, &b).await?,
            CancelOutcome::Cancelled
        );
        assert_ne!(storage.delete_generation(TENANT), g);
        assert_eq!(
            storage.cancel_delete(TENANT, "nope").await?,
            CancelOutcome::NotFound
        );
        assert_eq!(
            storage.cancel_delete("other", &a).await?,
            CancelOutcome::NotFound
        );
        assert_eq!(read_all(&storage, &known(), start, end).await?, all);
        storage.compact().await?;
        assert_eq!(read_all(&storage, &known(), start, end).await?, all);
        let listed = storage.deletes(TENANT).await?;
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|r| r.status == DeleteStatus::Cancelled));
        Ok(())
    }

    async fn processed_round_trip(cfg: StorageConfig, chunk_dir: Option<&Path>) -> Result<()> {
        let base = now_ns() - 2 * HOUR;
        let (start, end) = (base - HOUR, base + 2 * HOUR);
        let all = {
            let storage = Storage::open(cfg.clone()).await?;
            storage.set_delete_compiler(compiler());
            load(&storage, base).await?;
            let all = read_all(&storage, &known(), start, end).await?;
            let (a, _) = add_both(&storage, base).await?;
            let expected = expected_after(&all, base);
            assert_eq!(read_all(&storage, &known(), start, end).await?, expected);
            // Past the cancel period (zero): head rows are flushed, files rewritten.
            storage.compact().await?;
            storage.compact().await?;
            assert_eq!(
                storage.cancel_delete(TENANT, &a).await?,
                CancelOutcome::TooLate
            );
            let done = storage.deletes(TENANT).await?;
            let lines: BTreeMap<String, Option<u64>> = done
                .iter()
                .map(|r| (r.query.clone(), r.lines_removed))
                .collect();
            assert!(done.iter().all(|r| r.status == DeleteStatus::Processed));
            assert!(done.iter().all(|r| r.finished_ms.is_some()));
            assert_eq!(lines.get("{app=\"api\"} |= \"secret\""), Some(&Some(5)));
            assert_eq!(lines.get("{app=\"gone\"}"), Some(&Some(10)));
            assert_eq!(read_all(&storage, &known(), start, end).await?, expected);
            // Nothing is filtered at query time any more: the files lack the rows.
            assert_eq!(storage.metrics().head_entries, 0);
            storage.shutdown().await?;
            all
        };
        // After a restart (the compiler set after open), requests and data are the same.
        let storage = Storage::open(cfg.clone()).await?;
        let listed = storage.deletes(TENANT).await?;
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|r| r.status == DeleteStatus::Processed));
        assert_eq!(
            read_all(&storage, &known(), start, end).await?,
            expected_after(&all, base)
        );
        storage.set_delete_compiler(compiler());
        assert_eq!(
            read_all(&storage, &known(), start, end).await?,
            expected_after(&all, base)
        );
        storage.shutdown().await?;
        drop(storage);
        verify_ok(&cfg).await?;
        if let Some(dir) = chunk_dir {
            // The request log is in the tenant's directory, one object per event.
            let events = std::fs::read_dir(dir.join(TENANT).join("deletes"))
                .map_err(|e| Error::Internal(e.to_string()))?
                .flatten()
                .map(|d| std::fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0))
                .sum::<usize>();
            assert_eq!(events, 4);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processed_after_the_cancel_period_and_kept_across_restarts() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let cfg = erase_config(dir.path(), Duration::ZERO);
        processed_round_trip(cfg, Some(&dir.path().join("chunks"))).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processed_on_s3() -> Result<()> {
        let s3_root = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let data = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let (endpoint, server) = super::s3::start(s3_root.path()).await?;
        let mut cfg = super::s3::config(data.path(), &endpoint);
        cfg.compaction = erase_config(data.path(), Duration::ZERO).compaction;
        let result = processed_round_trip(cfg, None).await;
        server.abort();
        result
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_older_than_an_hour_go_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let cfg = erase_config(dir.path(), Duration::from_secs(3600));
        let storage = Storage::open(cfg).await?;
        storage.set_delete_compiler(compiler());
        let base = now_ns() - 2 * HOUR;
        load(&storage, base).await?;
        storage
            .add_delete(TENANT, "{app=\"db\"}", base, base + MINUTE, "x")
            .await?;
        let window = dir
            .path()
            .join("chunks")
            .join(TENANT)
            .join((base.div_euclid(HOUR) * 3600).to_string());
        let old = window.join("lost.parquet");
        let fresh = window.join("writing.parquet");
        let odd = dir.path().join("chunks").join(TENANT).join("notes.parquet");
        for f in [&old, &fresh, &odd] {
            std::fs::write(f, b"x").map_err(|e| Error::Internal(e.to_string()))?;
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        for f in [&old, &odd] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .and_then(|f| f.set_modified(two_hours_ago))
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        storage.compact().await?;
        assert!(!old.exists(), "an old unlisted chunk object is removed");
        assert!(fresh.exists(), "a young one may be a write in progress");
        assert!(odd.exists(), "only window directories hold chunk objects");
        assert_eq!(storage.deletes(TENANT).await?.len(), 1);
        Ok(())
    }
}

mod s3 {
    //! The in-process S3-protocol server (`s3s-fs`), as in recovery_and_s3.rs.
    use super::*;

    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;
    use tovlog_storage::config::{ObjectStoreConfig, S3Config};

    const BUCKET: &str = "tovlog-erase";
    const ACCESS_KEY: &str = "tovlog-access";
    const SECRET_KEY: &str = "tovlog-secret-key";

    pub async fn start(root: &Path) -> Result<(String, tokio::task::JoinHandle<()>)> {
        let err = |e: std::io::Error| Error::Internal(e.to_string());
        std::fs::create_dir(root.join(BUCKET)).map_err(err)?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| Error::Internal(format!("{e:?}")))?;
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok((format!("http://{addr}"), task))
    }

    pub fn config(data_dir: &Path, endpoint: &str) -> StorageConfig {
        StorageConfig {
            data_dir: data_dir.to_path_buf(),
            object_store: ObjectStoreConfig::S3(Box::new(S3Config {
                endpoint: Some(endpoint.to_string()),
                bucket: BUCKET.into(),
                region: "us-east-1".into(),
                access_key_id: Some(ACCESS_KEY.into()),
                secret_access_key: Some(SECRET_KEY.into()),
                allow_http: true,
                path_style: true,
                prefix: "logs".into(),
                ..S3Config::default()
            })),
            ..StorageConfig::default()
        }
    }
}

mod figures {
    //! Scan cost with pending tombstones (run by hand:
    //! `cargo test --workspace --release --test integration erase::figures -- --ignored --nocapture`).
    use super::*;

    /// Rows of `streams` in the range, read as a metric query reads (ts only) and as a
    /// log query reads (all columns); the best of five runs of each, ms.
    async fn time_scans(
        storage: &Storage,
        ids: &[u64],
        start: i64,
        end: i64,
    ) -> Result<(u64, f64, f64)> {
        let mut best = (f64::MAX, f64::MAX);
        let mut rows = 0u64;
        for _ in 0..5 {
            for (k, sql_ts_only) in [true, false].into_iter().enumerate() {
                let table = storage.logs_table(ScanRequest {
                    tenant: TENANT.into(),
                    streams: ids.to_vec(),
                    start_ns: start,
                    end_ns: end,
                })?;
                let started = std::time::Instant::now();
                let columns: &[&str] = if sql_ts_only {
                    &["ts"]
                } else {
                    &["stream_id", "ts", "line"]
                };
                let batches = crate::common::collect(storage, &table, columns).await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                if k == 0 {
                    best.0 = best.0.min(ms);
                } else {
                    best.1 = best.1.min(ms);
                }
            }
        }
        Ok((rows, best.0, best.1))
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "a measurement, not a test: run by hand"]
    #[allow(clippy::print_stderr)]
    async fn scan_with_and_without_tombstones() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let mut cfg = erase_config(dir.path(), Duration::from_secs(3600));
        cfg.compaction.min_age = HumanDuration(Duration::ZERO);
        let storage = Storage::open(cfg).await?;
        storage.set_delete_compiler(compiler());
        let base = (now_ns() - 30 * HOUR).div_euclid(HOUR) * HOUR;
        let streams = 40usize;
        let per_stream = 50_000i64;
        let step = 24 * HOUR / per_stream;
        let mut known = Vec::new();
        for s in 0..streams {
            let labels = [("app", format!("svc-{s}")), ("env", "prod".to_string())];
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            known.push(common::labels(&pairs));
            for chunk in 0..5 {
                let lines: Vec<(i64, String)> = (chunk * per_stream / 5
                    ..(chunk + 1) * per_stream / 5)
                    .map(|i| {
                        (
                            base + i * step + s as i64,
                            format!(
                                "GET /api/v1/items/{i} status=200 user=u{} took={}ms",
                                i % 977,
                                i % 300
                            ),
                        )
                    })
                    .collect();
                let entries: Vec<(i64, &str)> =
                    lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
                storage.append(TENANT, vec![push(&pairs, &entries)]).await?;
            }
            if s % 10 == 9 {
                storage.flush().await?;
            }
        }
        storage.flush().await?;
        storage.compact().await?;
        let ids: Vec<u64> = known.iter().map(|l| l.fingerprint()).collect();
        let (start, end) = (base, base + 24 * HOUR);
        let plain = time_scans(&storage, &ids, start, end).await?;
        // A delete with a line filter on one stream over two hours, one without over a
        // whole other stream, both pending.
        storage
            .add_delete(
                TENANT,
                "{app=\"svc-3\"} |= \"user=u42 \"",
                base + 5 * HOUR,
                base + 7 * HOUR,
                "x",
            )
            .await?;
        let line = time_scans(&storage, &ids, start, end).await?;
        storage
            .add_delete(TENANT, "{app=\"svc-7\"}", base, base + 24 * HOUR, "x")
            .await?;
        let tomb = time_scans(&storage, &ids, start, end).await?;
        eprintln!(
            "rows {} -> {} -> {}; ts-only scan {:.1} -> {:.1} -> {:.1} ms; full scan {:.1} -> {:.1} -> {:.1} ms (none -> the line-filtered delete -> both); files {}",
            plain.0,
            line.0,
            tomb.0,
            plain.1,
            line.1,
            tomb.1,
            plain.2,
            line.2,
            tomb.2,
            storage.metrics().chunk_files
        );
        let filtered = (0..per_stream)
            .filter(|i| {
                let ts = base + i * step + 3;
                i % 977 == 42 && (base + 5 * HOUR..=base + 7 * HOUR).contains(&ts)
            })
            .count() as u64;
        assert_eq!(plain.0 - tomb.0, per_stream as u64 + filtered);
        Ok(())
    }
}
