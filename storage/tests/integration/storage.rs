//! End-to-end tests of the storage engine through its public API: append, read back with
//! DataFusion, label queries, restart/replay, flush, pruning.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, UInt64Type};
use tovlog_storage::{Error, MatchOp, Matcher, Result, ScanRequest, Storage, StreamId};

use crate::common::{collect, config, labels, push};

fn m(name: &str, op: MatchOp, value: &str) -> Result<Matcher> {
    Matcher::new(name, op, value).map_err(|e| Error::Internal(e.to_string()))
}

/// The table of a scan of tenant `fake`.
fn table(
    storage: &Storage,
    streams: Vec<StreamId>,
    start_ns: i64,
    end_ns: i64,
) -> Result<tovlog_storage::scan::LogsTable> {
    storage.logs_table(ScanRequest {
        tenant: "fake".into(),
        streams,
        start_ns,
        end_ns,
    })
}

/// Read (stream_id, ts, line) rows of a scan, sorted.
async fn read(
    storage: &Storage,
    streams: Vec<StreamId>,
    start_ns: i64,
    end_ns: i64,
) -> Result<Vec<(StreamId, i64, String)>> {
    let table = table(storage, streams, start_ns, end_ns)?;
    let batches = collect(storage, &table, &["stream_id", "ts", "line"]).await?;
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column(0).as_primitive::<UInt64Type>();
        let ts = b.column(1).as_primitive::<Int64Type>();
        let lines = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((ids.value(i), ts.value(i), lines.value(i).to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// Settings under which `Storage::compact` compacts every window at once and deletes
/// replaced files on its next pass; the background compactor stays idle.
fn compact_now_config(dir: &std::path::Path) -> tovlog_storage::StorageConfig {
    let mut cfg = config(dir);
    cfg.compaction.min_age = tovlog_storage::config::HumanDuration(std::time::Duration::ZERO);
    cfg.compaction.delete_delay = tovlog_storage::config::HumanDuration(std::time::Duration::ZERO);
    cfg.compaction.check_interval =
        tovlog_storage::config::HumanDuration(std::time::Duration::from_secs(3600));
    cfg
}

fn tmp() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))
}

#[tokio::test]
async fn appended_entries_read_back_from_head_and_chunks() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let a = labels(&[("job", "api")]).fingerprint();
    let b = labels(&[("job", "web")]).fingerprint();
    let s = storage
        .append(
            "fake",
            vec![
                push(&[("job", "api")], &[(10, "a10"), (30, "a30"), (20, "a20")]),
                push(&[("job", "web")], &[(15, "b15")]),
            ],
        )
        .await?;
    assert_eq!((s.entries, s.duplicates, s.bytes), (4, 0, 12));
    let head_rows = read(&storage, vec![a], 0, 100).await?;
    assert_eq!(
        head_rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["a10", "a20", "a30"]
    );
    storage.flush().await?;
    assert_eq!(storage.metrics().head_entries, 0);
    assert_eq!(storage.metrics().chunk_files, 1);
    storage
        .append("fake", vec![push(&[("job", "api")], &[(25, "a25")])])
        .await?;
    // Half from the chunk, half from the head; the range end is exclusive.
    let rows = read(&storage, vec![a, b], 15, 30).await?;
    let mut expected = vec![
        (a, 20, "a20".to_string()),
        (a, 25, "a25".into()),
        (b, 15, "b15".into()),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    Ok(())
}

/// Whether the scan of `streams` over `[start_ns, end_ns)` tests rows with a predicate
/// (DataFusion moves the scan's `FilterExec` into the Parquet source).
async fn scan_tests_rows(
    storage: &Storage,
    streams: Vec<StreamId>,
    start_ns: i64,
    end_ns: i64,
) -> Result<bool> {
    let table = table(storage, streams, start_ns, end_ns)?;
    let plan = table.scan(2, None).await?;
    let shown = datafusion_physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    Ok(shown.contains("FilterExec") || shown.contains("predicate="))
}

#[tokio::test]
async fn ranges_covering_the_files_read_the_selected_streams_without_a_row_test() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let a = labels(&[("job", "api")]).fingerprint();
    storage
        .append(
            "fake",
            vec![
                push(&[("job", "api")], &[(10, "a10"), (30, "a30"), (20, "a20")]),
                push(&[("job", "web")], &[(15, "b15"), (40, "b40")]),
            ],
        )
        .await?;
    storage.flush().await?;
    // Stream `api` lies wholly inside [10, 31): its row range in the file is the answer;
    // the other stream's rows in the same file stay out.
    assert!(!scan_tests_rows(&storage, vec![a], 10, 31).await?);
    let rows = read(&storage, vec![a], 10, 31).await?;
    let expected: Vec<(StreamId, i64, String)> = [(10, "a10"), (20, "a20"), (30, "a30")]
        .into_iter()
        .map(|(t, l)| (a, t, l.to_string()))
        .collect();
    assert_eq!(rows, expected);
    // A range that cuts the stream's rows tests each row.
    assert!(scan_tests_rows(&storage, vec![a], 10, 30).await?);
    assert_eq!(
        read(&storage, vec![a], 10, 30).await?,
        expected[..2].to_vec()
    );
    Ok(())
}

#[tokio::test]
async fn volumes_of_flushed_data_prorate_files_the_range_cuts() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let sel = [m("job", MatchOp::Eq, "api")?];
    // 101 ten-byte lines, one per second from 0 s to 100 s.
    let sec = 1_000_000_000i64;
    let lines: Vec<(i64, String)> = (0..=100)
        .map(|i| (i * sec, format!("line-{i:05}")))
        .collect();
    let refs: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
    storage
        .append("fake", vec![push(&[("job", "api")], &refs)])
        .await?;
    let volume = |start: i64, end: i64| {
        let (storage, sel) = (&storage, &sel);
        async move {
            let v = storage.volumes("fake", sel, start, end).await?;
            Ok::<_, Error>(v.iter().fold((0, 0, 0), |a, v| {
                (a.0 + v.entries, a.1 + v.bytes, a.2 + v.chunks)
            }))
        }
    };
    // In the head: exact.
    assert_eq!(volume(0, 50 * sec).await?, (50, 500, 1));
    storage.flush().await?;
    assert_eq!(storage.metrics().head_entries, 0);
    // A range covering the file counts it whole.
    assert_eq!(volume(0, 101 * sec).await?, (101, 1010, 1));
    // The first half of the file's span: half of its rows and bytes, not all of them.
    assert_eq!(volume(0, 50 * sec + 1).await?, (50, 505, 1));
    // A quarter in the middle.
    assert_eq!(volume(25 * sec, 50 * sec + 1).await?, (25, 252, 1));
    // Outside the file's span: nothing.
    assert_eq!(volume(101 * sec, 200 * sec).await?, (0, 0, 0));
    Ok(())
}

#[tokio::test]
async fn duplicates_are_stored_once_and_out_of_order_is_accepted() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let id = labels(&[("job", "api")]).fingerprint();
    storage
        .append(
            "fake",
            vec![push(&[("job", "api")], &[(50, "x"), (40, "y")])],
        )
        .await?;
    let s = storage
        .append(
            "fake",
            vec![push(&[("job", "api")], &[(50, "x"), (50, "x2"), (10, "z")])],
        )
        .await?;
    assert_eq!((s.entries, s.duplicates), (2, 1));
    let rows = read(&storage, vec![id], 0, 100).await?;
    assert_eq!(
        rows.iter().map(|r| (r.1, r.2.as_str())).collect::<Vec<_>>(),
        [(10, "z"), (40, "y"), (50, "x"), (50, "x2")]
    );
    Ok(())
}

#[tokio::test]
async fn label_queries_answer_each_matcher_from_head_and_index() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    storage
        .append(
            "fake",
            vec![
                push(&[("job", "api"), ("env", "prod")], &[(100, "1")]),
                push(&[("job", "api"), ("env", "dev")], &[(200, "2")]),
            ],
        )
        .await?;
    storage.flush().await?;
    // One stream only in the head.
    storage
        .append("fake", vec![push(&[("job", "web")], &[(300, "3")])])
        .await?;

    let jobs = |s: Vec<tovlog_storage::Series>| -> Vec<String> {
        s.into_iter().map(|s| s.labels.to_string()).collect()
    };
    assert_eq!(
        jobs(storage.series("fake", &[m("job", MatchOp::Eq, "api")?], 0, 1000)?),
        ["{env=\"dev\", job=\"api\"}", "{env=\"prod\", job=\"api\"}"]
    );
    assert_eq!(
        jobs(storage.series("fake", &[m("env", MatchOp::Neq, "prod")?], 0, 1000)?),
        ["{env=\"dev\", job=\"api\"}", "{job=\"web\"}"]
    );
    assert_eq!(
        jobs(storage.series("fake", &[m("job", MatchOp::Re, "w.*|x")?], 0, 1000)?),
        ["{job=\"web\"}"]
    );
    assert_eq!(
        jobs(storage.series("fake", &[m("env", MatchOp::Nre, "d.*")?], 0, 1000)?),
        ["{env=\"prod\", job=\"api\"}", "{job=\"web\"}"]
    );
    // Time range: only the dev stream has data in [150, 250).
    assert_eq!(
        jobs(storage.series("fake", &[], 150, 250)?),
        ["{env=\"dev\", job=\"api\"}"]
    );
    assert_eq!(storage.label_names("fake", &[], 0, 1000)?, ["env", "job"]);
    assert_eq!(storage.label_names("fake", &[], 250, 1000)?, ["job"]);
    assert_eq!(
        storage.label_values("fake", "job", &[], 0, 1000)?,
        ["api", "web"]
    );
    assert_eq!(
        storage.label_values("fake", "env", &[m("job", MatchOp::Eq, "api")?], 0, 150)?,
        ["prod"]
    );
    assert!(storage.series("other-tenant", &[], 0, 1000)?.is_empty());
    let vols = storage
        .volumes("fake", &[m("job", MatchOp::Re, ".+")?], 0, 1000)
        .await?;
    assert_eq!(
        vols.iter()
            .map(|v| (v.entries, v.bytes, v.chunks))
            .collect::<Vec<_>>(),
        [(1, 1, 1); 3]
    );
    Ok(())
}

#[tokio::test]
async fn restart_replays_the_wal_exactly_once() -> Result<()> {
    let dir = tmp()?;
    let id = labels(&[("job", "api")]).fingerprint();
    {
        let storage = Storage::open(config(dir.path())).await?;
        storage
            .append(
                "fake",
                vec![push(&[("job", "api")], &[(1, "one"), (2, "two")])],
            )
            .await?;
        storage
            .append("fake", vec![push(&[("job", "api")], &[(3, "three")])])
            .await?;
        // Dropped without flush or shutdown, like a crash after the acknowledgements.
    }
    {
        let storage = Storage::open(config(dir.path())).await?;
        let rows = read(&storage, vec![id], 0, 10).await?;
        assert_eq!(rows.len(), 3);
        storage.flush().await?;
        storage
            .append("fake", vec![push(&[("job", "api")], &[(4, "four")])])
            .await?;
    }
    let storage = Storage::open(config(dir.path())).await?;
    let rows = read(&storage, vec![id], 0, 10).await?;
    assert_eq!(
        rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three", "four"]
    );
    assert_eq!(storage.series("fake", &[], 0, 10)?.len(), 1);
    storage.shutdown().await?;
    assert!(matches!(
        storage
            .append("fake", vec![push(&[("job", "api")], &[(5, "five")])])
            .await,
        Err(Error::Closed)
    ));
    let storage = Storage::open(config(dir.path())).await?;
    assert_eq!(read(&storage, vec![id], 0, 10).await?.len(), 4);
    assert_eq!(storage.metrics().head_entries, 0);
    Ok(())
}

#[tokio::test]
async fn torn_wal_tail_is_truncated_on_open() -> Result<()> {
    let dir = tmp()?;
    let id = labels(&[("job", "api")]).fingerprint();
    {
        let storage = Storage::open(config(dir.path())).await?;
        storage
            .append("fake", vec![push(&[("job", "api")], &[(1, "kept")])])
            .await?;
    }
    let wal_dir = dir.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .map_err(|e| Error::Internal(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    segments.sort();
    let last = segments
        .last()
        .ok_or_else(|| Error::Internal("no segment".into()))?;
    let mut data = std::fs::read(last).map_err(|e| Error::Internal(e.to_string()))?;
    data.extend_from_slice(&[200, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(last, data).map_err(|e| Error::Internal(e.to_string()))?;
    let storage = Storage::open(config(dir.path())).await?;
    let rows = read(&storage, vec![id], 0, 10).await?;
    assert_eq!(
        rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
    storage
        .append("fake", vec![push(&[("job", "api")], &[(2, "after")])])
        .await?;
    assert_eq!(read(&storage, vec![id], 0, 10).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn scans_only_touch_overlapping_chunk_files() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let hour = 3_600_000_000_000i64;
    let a = labels(&[("job", "api")]).fingerprint();
    let b = labels(&[("job", "web")]).fingerprint();
    // Three hourly windows → three files; stream b only in the last one.
    storage
        .append(
            "fake",
            vec![
                push(
                    &[("job", "api")],
                    &[(10, "h0"), (hour + 10, "h1"), (2 * hour + 10, "h2")],
                ),
                push(&[("job", "web")], &[(2 * hour + 20, "w2")]),
            ],
        )
        .await?;
    storage.flush().await?;
    assert_eq!(storage.metrics().chunk_files, 3);

    let table = storage.logs_table(ScanRequest {
        tenant: "fake".into(),
        streams: vec![a],
        start_ns: hour,
        end_ns: 2 * hour,
    })?;
    assert_eq!(table.files().len(), 1);
    assert!(table.files()[0]
        .path
        .contains(&(hour / 1_000_000_000).to_string()));
    let table = storage.logs_table(ScanRequest {
        tenant: "fake".into(),
        streams: vec![b],
        start_ns: 0,
        end_ns: 3 * hour,
    })?;
    assert_eq!(table.files().len(), 1);
    let before = storage.metrics().scan_chunk_files;
    let rows = read(&storage, vec![a], hour, 3 * hour).await?;
    assert_eq!(
        rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["h1", "h2"]
    );
    assert_eq!(storage.metrics().scan_chunk_files - before, 2);
    Ok(())
}

#[tokio::test]
async fn structured_metadata_survives_flush() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let id = labels(&[("job", "api")]).fingerprint();
    let mut s = push(&[("job", "api")], &[(1, "with"), (2, "without")]);
    s.entries[0].metadata = vec![
        ("trace_id".into(), "t1".into()),
        ("user".into(), "u".into()),
    ];
    storage.append("fake", vec![s]).await?;
    storage.flush().await?;
    let table = table(&storage, vec![id], 0, 10)?;
    // One batch in time order (the file holds the stream's rows sorted by time).
    let batches = collect(&storage, &table, &[]).await?;
    let batches = [arrow::compute::concat_batches(&table.schema(), &batches)?];
    let ts = batches[0].column(1).as_primitive::<Int64Type>();
    assert_eq!(ts.values().to_vec(), vec![1, 2]);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    let map = batches[0].column(3).as_map();
    assert!(!map.is_null(0));
    assert!(map.is_null(1));
    let keys = map.value(0);
    let entries = keys.column(0).as_string::<i32>();
    let values = keys.column(1).as_string::<i32>();
    assert_eq!(
        entries.iter().flatten().collect::<Vec<_>>(),
        ["trace_id", "user"]
    );
    assert_eq!(values.iter().flatten().collect::<Vec<_>>(), ["t1", "u"]);
    Ok(())
}

#[tokio::test]
async fn concurrent_appends_share_the_wal_and_all_land() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let mut tasks = Vec::new();
    for c in 0..8 {
        let storage: Arc<Storage> = storage.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let line = format!("c{c} i{i}");
                storage
                    .append(
                        "fake",
                        vec![push(
                            &[("job", "api")],
                            &[(i64::from(c * 100 + i), line.as_str())],
                        )],
                    )
                    .await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Internal(e.to_string()))??;
    }
    assert_eq!(storage.metrics().head_entries, 160);
    Ok(())
}

fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn compaction_merges_a_window_drops_duplicates_and_deletes_replaced_files() -> Result<()> {
    let dir = tmp()?;
    let cfg = compact_now_config(dir.path());
    let a = labels(&[("job", "api")]).fingerprint();
    let b = labels(&[("job", "web")]).fingerprint();
    let hour = 3_600_000_000_000i64;
    let expected = {
        let storage = Storage::open(cfg.clone()).await?;
        storage
            .append(
                "fake",
                vec![
                    push(&[("job", "api")], &[(30, "a30"), (10, "a10")]),
                    push(&[("job", "web")], &[(15, "b15"), (hour + 1, "next window")]),
                ],
            )
            .await?;
        storage.flush().await?;
        // The second flush into the same window repeats one entry (a client retry after
        // the first copy was flushed) and interleaves with the first file's rows.
        storage
            .append(
                "fake",
                vec![
                    push(
                        &[("job", "api")],
                        &[(10, "a10"), (20, "a20"), (10, "a10 other")],
                    ),
                    push(&[("job", "web")], &[(5, "b5")]),
                ],
            )
            .await?;
        storage.flush().await?;
        let files = parquet_files(dir.path());
        assert_eq!(files.len(), 3, "{files:?}");
        let before = read(&storage, vec![a, b], 0, 2 * hour).await?;
        // The re-sent entry is read twice before compaction...
        assert_eq!(before.iter().filter(|r| r.2 == "a10").count(), 2);

        assert_eq!(storage.compact().await?, 2);
        let m = storage.metrics();
        assert_eq!((m.chunk_files, m.pending_deletes), (2, 3));
        // ...and once after it; everything else is unchanged.
        let after = read(&storage, vec![a, b], 0, 2 * hour).await?;
        let mut dedup = before.clone();
        dedup.dedup();
        assert_eq!(after, dedup);
        assert_eq!(after.len(), before.len() - 1);
        // Replaced files stay until the next pass deletes them; nothing is left to merge.
        assert_eq!(parquet_files(dir.path()).len(), 5);
        assert_eq!(storage.compact().await?, 0);
        assert_eq!(parquet_files(dir.path()).len(), 2);
        assert_eq!(storage.metrics().pending_deletes, 0);
        storage.shutdown().await?;
        after
    };

    // A file no manifest lists (a write interrupted before its manifest edit) is removed
    // at start-up; the data is intact after a restart.
    let window = parquet_files(dir.path())[0]
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| Error::Internal("no window dir".into()))?;
    let orphan = window.join("c9999999999999-000.parquet");
    std::fs::write(&orphan, b"partial").map_err(|e| Error::Internal(e.to_string()))?;
    let storage = Storage::open(cfg).await?;
    assert!(!orphan.exists());
    assert_eq!(read(&storage, vec![a, b], 0, 2 * hour).await?, expected);
    Ok(())
}

/// Every row of stream `id` in `[0, 1 ms)` of tenant `fake` that the needle indexes let
/// through.
async fn read_with_needles(
    storage: &Storage,
    id: StreamId,
    needles: Vec<tovlog_storage::textindex::TextNeedle>,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let table = storage.logs_table_with_needles(
        ScanRequest {
            tenant: "fake".into(),
            streams: vec![id],
            start_ns: 0,
            end_ns: 1_000_000,
        },
        needles,
    )?;
    collect(storage, &table, &[]).await
}

#[tokio::test]
async fn compacted_files_skip_blocks_without_the_needle() -> Result<()> {
    let dir = tmp()?;
    let mut cfg = config(dir.path());
    cfg.compaction.min_age = tovlog_storage::config::HumanDuration(std::time::Duration::ZERO);
    // One 2 MiB page holds all the lines: the block sizes asserted below follow from it.
    cfg.compaction.line_page_bytes = tovlog_storage::config::ByteSize(2 * 1024 * 1024);
    let cfg_again = cfg.clone();
    let id = labels(&[("job", "api")]).fingerprint();
    let storage = Storage::open(cfg).await?;
    let lines: Vec<(i64, String)> = (0..20_000i64)
        .map(|i| {
            let line = if i == 15_000 {
                format!("user=mallory action=DELETE needle-7f3a9c {i}")
            } else {
                format!("user=alice action=READ {i}")
            };
            (i, line)
        })
        .collect();
    let entries: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
    storage
        .append("fake", vec![push(&[("job", "api")], &entries)])
        .await?;
    storage.flush().await?;
    assert_eq!(storage.compact().await?, 1);

    let count = |needle: &'static str| {
        let storage = &storage;
        async move {
            let needles = vec![tovlog_storage::textindex::TextNeedle::literal(
                needle.as_bytes(),
            )];
            let batches = read_with_needles(storage, id, needles).await?;
            let mut rows = 0;
            let mut hits = 0;
            for b in &batches {
                rows += b.num_rows();
                let l = b.column(2).as_string::<i32>();
                hits += (0..b.num_rows())
                    .filter(|&i| l.value(i).contains(needle))
                    .count();
            }
            Ok::<_, Error>((rows, hits))
        }
    };
    // Only the block holding the needle is read; an absent needle reads nothing; a needle
    // every line has (or one too short to index) reads everything. The 20,000 lines fill
    // one page of the line column, cut into three equal blocks (6667, 6667, 6666 rows):
    // row 15,000 is in the last.
    assert_eq!(count("needle-7f3a9c").await?, (6666, 1));
    assert_eq!(count("mallory").await?, (6666, 1));
    assert_eq!(count("not-there-at-all").await?, (0, 0));
    assert_eq!(count("action=").await?, (20_000, 20_000));
    assert_eq!(count("15").await?.0, 20_000);
    storage.shutdown().await?;

    // A damaged index only costs reading: the file is read whole, the answer is the same.
    let indexes: Vec<_> = parquet_files(dir.path())
        .iter()
        .map(|p| p.with_extension("tri"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(indexes.len(), 1);
    for p in &indexes {
        std::fs::write(p, b"TVLTRI01 damaged").map_err(|e| Error::Internal(e.to_string()))?;
    }
    let reopened = Storage::open(cfg_again).await?;
    let rows: usize = read_with_needles(
        &reopened,
        id,
        vec![tovlog_storage::textindex::TextNeedle::literal(
            "needle-7f3a9c".as_bytes(),
        )],
    )
    .await?
    .iter()
    .map(|b| b.num_rows())
    .sum();
    assert_eq!(rows, 20_000);
    Ok(())
}

#[tokio::test]
async fn compacted_files_skip_blocks_without_a_bounded_id() -> Result<()> {
    use tovlog_storage::textindex::TextNeedle;
    let dir = tmp()?;
    let mut cfg = config(dir.path());
    cfg.compaction.min_age = tovlog_storage::config::HumanDuration(std::time::Duration::ZERO);
    // One 2 MiB page holds all the lines: the block sizes asserted below follow from it.
    cfg.compaction.line_page_bytes = tovlog_storage::config::ByteSize(2 * 1024 * 1024);
    let id = labels(&[("job", "api")]).fingerprint();
    let storage = Storage::open(cfg).await?;
    // Ids from a fixed generator: every block has every hex trigram and every dash
    // trigram, so only the hex tokens can tell the blocks apart.
    let mut state: u64 = 11;
    let mut hex = |len: usize| -> String {
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b"0123456789abcdef"[(state >> 60) as usize])
            })
            .collect()
    };
    let cid = "5b2e9d41-c7a0-4f3e-a9d2-7f3a9c01e5d8";
    let trace = "c10b73843ca5d6c0b92a1a9002b9d27d";
    let mut entries = Vec::new();
    for i in 0..20_000i64 {
        let (c, t) = if i == 15_000 {
            (cid.to_string(), trace.to_string())
        } else {
            let c = [hex(8), hex(4), hex(4), hex(4), hex(12)].join("-");
            (c, hex(32))
        };
        // Some lines of every block have escapes; one id is escaped itself.
        let (c, err) = match i {
            3_000 => (r"\u0061bcdef01-0000-4000-8000-0123456789ab".to_string(), ""),
            _ if i % 100 == 0 => (c, r#","err":"dup \"key\"""#),
            _ => (c, ""),
        };
        entries.push(tovlog_storage::Entry {
            ts_ns: i,
            line: format!(r#"{{"correlation_id":"{c}","user":"alice"{err}}}"#),
            metadata: vec![("trace_id".to_string(), t)],
        });
    }
    storage
        .append(
            "fake",
            vec![tovlog_storage::PushStream {
                labels: labels(&[("job", "api")]),
                entries,
            }],
        )
        .await?;
    storage.flush().await?;
    assert_eq!(storage.compact().await?, 1);

    let rows = |needle: TextNeedle| {
        let storage = &storage;
        async move {
            let batches = read_with_needles(storage, id, vec![needle]).await?;
            Ok::<_, Error>(batches.iter().map(|b| b.num_rows()).sum::<usize>())
        }
    };
    // A parsed field's value and a whole metadata value read only the block holding them;
    // the same id as a plain substring may continue a longer run in a line: all is read.
    // One page of lines, three blocks of 6667, 6667 and 6666 rows: row 15,000 is in the
    // last, row 3,000 in the first.
    assert_eq!(rows(TextNeedle::field(cid)).await?, 6666);
    let escaped = "abcdef01-0000-4000-8000-0123456789ab";
    assert_eq!(rows(TextNeedle::field(escaped)).await?, 6667);
    assert_eq!(rows(TextNeedle::metadata(trace)).await?, 6666);
    assert_eq!(rows(TextNeedle::literal(cid)).await?, 20_000);
    storage.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn compacted_files_answer_minute_counts_instead_of_a_scan() -> Result<()> {
    let dir = tmp()?;
    let mut cfg = config(dir.path());
    cfg.compaction.min_age = tovlog_storage::config::HumanDuration(std::time::Duration::ZERO);
    let minute = tovlog_storage::textindex::MINUTE_NS;
    let a = labels(&[("job", "api")]).fingerprint();
    let b = labels(&[("job", "web")]).fingerprint();
    let storage = Storage::open(cfg).await?;
    // Rows on and around minute boundaries, in both streams, over 12 minutes.
    let times: Vec<i64> = (0..12 * 60)
        .map(|s| s * 1_000_000_000 + (s % 7) * 3)
        .chain([minute, 5 * minute, 5 * minute + 1, 10 * minute])
        .collect();
    let lines: Vec<(i64, String)> = times.iter().map(|&t| (t, format!("line {t}"))).collect();
    let entries: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
    storage
        .append(
            "fake",
            vec![
                push(&[("job", "api")], &entries),
                push(&[("job", "web")], &entries[..300]),
            ],
        )
        .await?;
    storage.flush().await?;
    assert_eq!(storage.compact().await?, 1);
    // A later row stays in the head: it is scanned, never counted.
    storage
        .append(
            "fake",
            vec![push(&[("job", "api")], &[(3 * minute, "late")])],
        )
        .await?;

    let table = |start_ns: i64, end_ns: i64| {
        storage.logs_table_with_needles(
            ScanRequest {
                tenant: "fake".into(),
                streams: vec![a, b],
                start_ns,
                end_ns,
            },
            Vec::new(),
        )
    };
    // Minutes 2..=10, i.e. (60 s, 600 s]: the range [60 s + 1, 600 s + 1).
    let (start, end) = (minute + 1, 10 * minute + 1);
    let mut t = table(start, end)?;
    assert_eq!(t.files().len(), 1);
    let counts = t.take_minute_counts().await;
    assert!(t.files().is_empty(), "the counted file is still scanned");
    assert_eq!(t.head_rows(), 1);
    let mut want: std::collections::BTreeMap<(u64, i64), u32> = Default::default();
    for (stream, n) in [(a, times.len()), (b, 300)] {
        for &ts in times.iter().take(n).filter(|&&ts| ts >= start && ts < end) {
            let m = tovlog_storage::textindex::minute_of(ts);
            *want.entry((stream, m * minute)).or_default() += 1;
        }
    }
    let mut got: std::collections::BTreeMap<(u64, i64), u32> = Default::default();
    for c in &counts {
        *got.entry((c.stream, c.minute_end_ns)).or_default() += c.rows;
    }
    assert_eq!(got, want);
    assert_eq!(
        counts.iter().map(|c| u64::from(c.rows)).sum::<u64>(),
        want.values().map(|&n| u64::from(n)).sum::<u64>()
    );
    // A range not made of whole minutes cannot be counted: the file is scanned.
    let mut t = table(start, end - 1)?;
    assert!(t.take_minute_counts().await.is_empty());
    assert_eq!(t.files().len(), 1);
    // Nor can a needle query.
    let mut t = storage.logs_table_with_needles(
        ScanRequest {
            tenant: "fake".into(),
            streams: vec![a],
            start_ns: start,
            end_ns: end,
        },
        vec![tovlog_storage::textindex::TextNeedle::literal(
            "line 6".as_bytes(),
        )],
    )?;
    assert!(t.take_minute_counts().await.is_empty());
    assert_eq!(t.files().len(), 1);
    storage.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn line_predicates_drop_rows_while_decoding_unless_metadata_may_decide() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let id = labels(&[("job", "api")]).fingerprint();
    let lines: Vec<(i64, String)> = (0..5000i64)
        .map(|i| {
            (
                i,
                format!("request {i} {}", if i % 10 == 0 { "ERROR" } else { "ok" }),
            )
        })
        .collect();
    let entries: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
    let mut stream = push(&[("job", "api")], &entries);
    // One row carries metadata `trace_id`; the first flush has none.
    storage.append("fake", vec![stream.clone()]).await?;
    storage.flush().await?;
    let predicate = |unless: &[&str]| tovlog_storage::scan::LinePredicate {
        matches: Arc::new(|line: &str| line.contains("ERROR")),
        unless_metadata_keys: unless.iter().map(|k| k.to_string()).collect(),
        on_rejected: None,
    };
    let rows = |p: tovlog_storage::scan::LinePredicate| {
        let storage = &storage;
        async move {
            let table = storage
                .logs_table(ScanRequest {
                    tenant: "fake".into(),
                    streams: vec![id],
                    start_ns: 0,
                    end_ns: 1_000_000,
                })?
                .with_line_predicate(p);
            let batches = collect(storage, &table, &[]).await?;
            Ok::<_, Error>(batches.iter().map(|b| b.num_rows()).sum::<usize>())
        }
    };
    // The file is known to lack `trace_id`: only ERROR lines are decoded and returned.
    assert_eq!(rows(predicate(&["trace_id"])).await?, 500);
    assert_eq!(rows(predicate(&[])).await?, 500);
    // A second file holds `trace_id`: a row without ERROR may be wanted for its metadata,
    // so no file is filtered by the predicate.
    stream.entries = vec![tovlog_storage::Entry {
        ts_ns: 9_000,
        line: "traced ok".into(),
        metadata: vec![("trace_id".into(), "abc".into())],
    }];
    storage.append("fake", vec![stream]).await?;
    storage.flush().await?;
    assert_eq!(rows(predicate(&["trace_id"])).await?, 5001);
    assert_eq!(rows(predicate(&["other"])).await?, 500);
    // Rows dropped in the reader are reported, so a caller can still count every line read.
    let rejected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&rejected);
    let mut p = predicate(&["other"]);
    p.on_rejected = Some(Arc::new(move |rows, _bytes| {
        counter.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
    }));
    let returned = rows(p).await?;
    assert_eq!(returned, 500);
    assert_eq!(rejected.load(std::sync::atomic::Ordering::Relaxed), 4501);
    storage.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn row_estimates_count_head_and_overlapping_chunk_rows() -> Result<()> {
    let dir = tmp()?;
    let storage = Storage::open(config(dir.path())).await?;
    let a = labels(&[("job", "api")]).fingerprint();
    let b = labels(&[("job", "web")]).fingerprint();
    let hour = 3_600_000_000_000i64;
    storage
        .append(
            "fake",
            vec![
                push(&[("job", "api")], &[(1, "a1"), (2, "a2"), (hour + 1, "a3")]),
                push(&[("job", "web")], &[(3, "b1")]),
            ],
        )
        .await?;
    storage.flush().await?;
    storage
        .append("fake", vec![push(&[("job", "api")], &[(5, "a4")])])
        .await?;
    let mut both = vec![a, b];
    both.sort_unstable();
    // Chunks: a has 2 rows in the first hour's file, 1 in the next; b has 1. Head: 1.
    assert_eq!(storage.estimate_rows("fake", &both, 0, 2 * hour), 5);
    assert_eq!(storage.estimate_rows("fake", &[a], 0, hour), 3);
    assert_eq!(storage.estimate_rows("fake", &[b], hour, 2 * hour), 0);
    assert_eq!(storage.estimate_rows("nobody", &both, 0, 2 * hour), 0);
    storage.shutdown().await?;
    Ok(())
}

/// Rewrite a flushed file the way versions before the stream order wrote it: rows in
/// `(stream_id, ts)` order, no `line_flags` column, its manifest entry without first rows,
/// manifest version 1.
fn make_legacy(dir: &std::path::Path, file: &std::path::Path) -> Result<()> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    let data = bytes::Bytes::from(std::fs::read(file).map_err(io)?);
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.build()?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Internal("empty file".into()))?;
    let all = arrow::compute::concat_batches(&schema, &batches)?.project(&[0, 1, 2, 3])?;
    let schema = all.schema();
    let sort = arrow::compute::lexsort_to_indices(
        &[
            arrow::compute::SortColumn {
                values: all.column(0).clone(),
                options: None,
            },
            arrow::compute::SortColumn {
                values: all.column(1).clone(),
                options: None,
            },
        ],
        None,
    )?;
    let sorted = arrow::compute::take_record_batch(&all, &sort)?;
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, None)?;
    writer.write(&sorted)?;
    let bytes = writer.into_inner()?;
    std::fs::write(file, &bytes).map_err(io)?;
    let manifest = dir.join("chunks/fake/manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).map_err(io)?)
        .map_err(|e| Error::Internal(e.to_string()))?;
    m["version"] = 1.into();
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Internal("file name".into()))?;
    for c in m["chunks"].as_array_mut().into_iter().flatten() {
        if c["path"].as_str().is_some_and(|p| p.ends_with(name)) {
            c["size"] = bytes.len().into();
            // Listed with the hash of its new bytes: damage checks must not take it.
            c["sha256"] = tovlog_storage::chain::sha256_hex(&bytes).into();
            for s in c["streams"].as_array_mut().into_iter().flatten() {
                s.as_object_mut().map(|o| o.remove("first_row"));
            }
        }
    }
    std::fs::write(
        &manifest,
        serde_json::to_vec(&m).map_err(|e| Error::Internal(e.to_string()))?,
    )
    .map_err(io)
}

/// Each row's line and `line_flags` (null: `None`), through a scan of the logs table.
async fn read_flags(
    storage: &Storage,
    streams: Vec<StreamId>,
) -> Result<Vec<(String, Option<u8>)>> {
    let table = table(storage, streams, 0, i64::MAX)?;
    let batches = collect(storage, &table, &["line", "line_flags"]).await?;
    let mut out = Vec::new();
    for b in batches {
        let lines = b.column(0).as_string::<i32>();
        let flags = b.column(1).as_primitive::<arrow::datatypes::UInt8Type>();
        for i in 0..b.num_rows() {
            out.push((
                lines.value(i).to_string(),
                flags.is_valid(i).then(|| flags.value(i)),
            ));
        }
    }
    Ok(out)
}

/// The stream ids of a Parquet file's rows, in file order, one per run of rows; fails when
/// a stream's rows are not in time order.
fn stream_runs(file: &std::path::Path) -> Result<Vec<StreamId>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let data = bytes::Bytes::from(std::fs::read(file).map_err(|e| Error::Internal(e.to_string()))?);
    let mut out: Vec<StreamId> = Vec::new();
    let mut last_ts = i64::MIN;
    for batch in ParquetRecordBatchReaderBuilder::try_new(data)?.build()? {
        let batch = batch?;
        let ts = batch.column(1).as_primitive::<Int64Type>();
        for (i, id) in batch
            .column(0)
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .enumerate()
        {
            if out.last() != Some(id) {
                out.push(*id);
            } else if ts.value(i) < last_ts {
                return Err(Error::Internal(format!("stream {id} is not in time order")));
            }
            last_ts = ts.value(i);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn files_group_a_services_streams_and_legacy_id_ordered_files_still_merge() -> Result<()> {
    let dir = tmp()?;
    let cfg = compact_now_config(dir.path());
    // Eight streams of two services; by id they interleave.
    let sets: Vec<Vec<(&str, &str)>> = ["1", "2", "3", "4"]
        .iter()
        .flat_map(|h| {
            [
                vec![("job", "api"), ("host", *h)],
                vec![("job", "web"), ("host", *h)],
            ]
        })
        .collect();
    let ids: Vec<StreamId> = sets.iter().map(|s| labels(s).fingerprint()).collect();
    let mut by_id = ids.clone();
    by_id.sort_unstable();
    let label_order: Vec<StreamId> = (0..8)
        .step_by(2)
        .chain((1..8).step_by(2))
        .map(|i| ids[i])
        .collect();
    assert_ne!(
        by_id, label_order,
        "the test needs ids that interleave the services"
    );
    let rows = |first: i64| -> Vec<tovlog_storage::PushStream> {
        sets.iter()
            .enumerate()
            .map(|(i, s)| {
                let lines: Vec<(i64, String)> = (0..3)
                    .map(|k| {
                        (
                            first + 10 * k + i as i64,
                            format!("s{i} t{}", first + 10 * k),
                        )
                    })
                    .collect();
                let refs: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
                push(s, &refs)
            })
            .collect()
    };
    {
        let storage = Storage::open(cfg.clone()).await?;
        storage.append("fake", rows(100)).await?;
        storage.flush().await?;
        storage.shutdown().await?;
    }
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 1);
    // A flushed file puts each service's streams together.
    assert_eq!(stream_runs(&files[0])?, label_order);
    make_legacy(dir.path(), &files[0])?;
    assert_eq!(stream_runs(&files[0])?, by_id);

    // With a line classifier: compaction fills `line_flags`.
    let classifier: tovlog_storage::schema::LineClassifier =
        std::sync::Arc::new(|line: &str| line.len() as u8);
    let storage = Storage::open_with(cfg, Some(classifier)).await?;
    // A second file in the new order, same window, interleaving in time.
    storage.append("fake", rows(105)).await?;
    storage.flush().await?;
    let before = read(&storage, ids.clone(), 0, 1_000).await?;
    assert_eq!(before.len(), 48);
    // The file without the column reads as null, like the flushed one.
    let flags = read_flags(&storage, ids.clone()).await?;
    assert_eq!(flags.len(), 48);
    assert!(flags.iter().all(|(_, f)| f.is_none()));
    // Each stream alone reads back its own rows from both files.
    for &id in &ids {
        let one = read(&storage, vec![id], 0, 1_000).await?;
        assert_eq!(one.len(), 6);
        assert!(one.iter().all(|r| r.0 == id));
    }
    assert_eq!(storage.compact().await?, 1);
    assert_eq!(read(&storage, ids.clone(), 0, 1_000).await?, before);
    let flags = read_flags(&storage, ids.clone()).await?;
    assert_eq!(flags.len(), 48);
    assert!(flags.iter().all(|(line, f)| *f == Some(line.len() as u8)));
    for &id in &ids {
        let one = read(&storage, vec![id], 0, 1_000).await?;
        assert_eq!(one.len(), 6);
        assert!(one.iter().all(|r| r.0 == id));
    }
    // The merged file is in the stream order, each stream's rows in time order.
    storage.compact().await?;
    let files = parquet_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(stream_runs(&files[0])?, label_order);
    storage.shutdown().await?;
    Ok(())
}

mod chain {
    //! The hash chain of file-list changes (`tovlog_storage::chain`) on a real local store:
    //! what flushes and compactions record, `verify` on clean and edited data, data of a
    //! build without the chain, and a write interrupted between chain entry and manifest.
    use super::*;
    use tovlog_storage::chain::{self, BreakKind, ChainEntry, ChainEvent, VerifyOptions};
    use tovlog_storage::StorageConfig;

    fn io(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    async fn verify(cfg: &StorageConfig) -> Result<chain::VerifyReport> {
        let store = tovlog_storage::store::build(cfg)?;
        Ok(chain::verify(store, &VerifyOptions::default()).await)
    }

    fn tenant_dir(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("chunks").join("fake")
    }

    fn entry(dir: &std::path::Path, seq: u64) -> Result<ChainEntry> {
        let path = tenant_dir(dir)
            .join("chain")
            .join(format!("{seq:020}.json"));
        serde_json::from_slice(&std::fs::read(path).map_err(io)?).map_err(io)
    }

    fn manifest_json(dir: &std::path::Path) -> Result<serde_json::Value> {
        let bytes = std::fs::read(tenant_dir(dir).join("manifest.json")).map_err(io)?;
        serde_json::from_slice(&bytes).map_err(io)
    }

    async fn two_flushes(storage: &Storage, hour: i64) -> Result<()> {
        storage
            .append(
                "fake",
                vec![
                    push(&[("job", "api")], &[(30, "a30"), (10, "a10")]),
                    push(&[("job", "web")], &[(hour + 1, "next window")]),
                ],
            )
            .await?;
        storage.flush().await?;
        storage
            .append("fake", vec![push(&[("job", "api")], &[(20, "a20")])])
            .await?;
        storage.flush().await
    }

    #[tokio::test]
    async fn flushes_and_compactions_are_chained_and_verify_finds_an_edited_file() -> Result<()> {
        let dir = tmp()?;
        let cfg = compact_now_config(dir.path());
        let hour = 3_600_000_000_000i64;
        let storage = Storage::open(cfg.clone()).await?;
        two_flushes(&storage, hour).await?;
        assert_eq!(storage.compact().await?, 2);
        // The next pass deletes the replaced files: no entry of its own.
        assert_eq!(storage.compact().await?, 0);
        storage.shutdown().await?;
        drop(storage);

        let e: Vec<ChainEntry> = (0..4)
            .map(|s| entry(dir.path(), s))
            .collect::<Result<_>>()?;
        assert_eq!(
            e.iter().map(|e| e.event).collect::<Vec<_>>(),
            vec![
                ChainEvent::Flush,
                ChainEvent::Flush,
                ChainEvent::Compaction,
                ChainEvent::Compaction
            ]
        );
        assert_eq!((e[0].added.len(), e[1].added.len()), (2, 1));
        for w in e.windows(2) {
            assert_eq!(w[1].prev_hash, w[0].hash);
        }
        // The first window's compaction merged its two flushed files into a file and its
        // block index, and says so.
        let first = e[2..]
            .iter()
            .find(|e| e.removed.len() == 2)
            .ok_or_else(|| io("no compaction of two files"))?;
        assert_eq!(first.added.len(), 2);
        let merged = first.added.iter().find(|f| f.path.ends_with(".parquet"));
        let merged = merged.ok_or_else(|| io("no merged file"))?;
        for r in &first.removed {
            assert!(
                r.reason
                    .starts_with(&format!("compaction: merged into {}", merged.path)),
                "{}",
                r.reason
            );
        }
        // Each recorded hash is the file's SHA-256.
        for f in e.iter().flat_map(|e| &e.added) {
            let on_disk = dir.path().join("chunks").join(&f.path);
            if on_disk.exists() {
                let bytes = std::fs::read(&on_disk).map_err(io)?;
                assert_eq!(f.sha256, chain::sha256_hex(&bytes), "{}", f.path);
            }
        }

        let report = verify(&cfg).await?;
        assert_eq!(report.first_break, None);
        let t = &report.tenants[0];
        // The manifest lists both windows' compacted files and their indexes.
        assert_eq!((t.entries, t.files), (4, 4));
        assert_eq!(
            t.head.as_ref().map(|h| h.hash.as_str()),
            Some(e[3].hash.as_str())
        );

        // One flipped byte in the merged file.
        let file = dir.path().join("chunks").join(&merged.path);
        let mut bytes = std::fs::read(&file).map_err(io)?;
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&file, &bytes).map_err(io)?;
        let b = verify(&cfg)
            .await?
            .first_break
            .ok_or_else(|| io("no break"))?;
        assert_eq!(b.kind, BreakKind::FileModified);
        assert!(b.detail.contains(&merged.path), "{b}");
        Ok(())
    }

    #[tokio::test]
    async fn data_of_a_build_without_the_chain_gets_a_genesis_entry() -> Result<()> {
        let dir = tmp()?;
        let cfg = compact_now_config(dir.path());
        let storage = Storage::open(cfg.clone()).await?;
        two_flushes(&storage, 3_600_000_000_000).await?;
        storage.shutdown().await?;
        drop(storage);
        // Make it look like an older build's: no hashes, no head, no chain.
        let mut m = manifest_json(dir.path())?;
        let obj = m.as_object_mut().ok_or_else(|| io("manifest"))?;
        obj.remove("chain");
        for c in obj
            .get_mut("chunks")
            .and_then(|c| c.as_array_mut())
            .into_iter()
            .flatten()
        {
            c.as_object_mut().map(|c| c.remove("sha256"));
        }
        std::fs::write(
            tenant_dir(dir.path()).join("manifest.json"),
            serde_json::to_vec(&m).map_err(io)?,
        )
        .map_err(io)?;
        std::fs::remove_dir_all(tenant_dir(dir.path()).join("chain")).map_err(io)?;
        let b = verify(&cfg)
            .await?
            .first_break
            .ok_or_else(|| io("no break"))?;
        assert_eq!(b.kind, BreakKind::HistoryRewritten);
        assert!(b.detail.contains("no chain head"), "{b}");

        // The first start hashes the files into a genesis entry; the chain goes on from it.
        let storage = Storage::open(cfg.clone()).await?;
        let genesis = entry(dir.path(), 0)?;
        assert_eq!(genesis.event, ChainEvent::Genesis);
        assert_eq!(genesis.added.len(), 3);
        storage
            .append("fake", vec![push(&[("job", "api")], &[(40, "a40")])])
            .await?;
        storage.flush().await?;
        storage.shutdown().await?;
        drop(storage);
        assert_eq!(entry(dir.path(), 1)?.prev_hash, genesis.hash);
        let report = verify(&cfg).await?;
        assert_eq!(report.first_break, None);
        assert_eq!((report.tenants[0].entries, report.tenants[0].files), (2, 4));
        Ok(())
    }

    #[tokio::test]
    async fn an_entry_beyond_the_head_is_a_note_and_is_discarded_at_start() -> Result<()> {
        let dir = tmp()?;
        let cfg = compact_now_config(dir.path());
        let storage = Storage::open(cfg.clone()).await?;
        two_flushes(&storage, 3_600_000_000_000).await?;
        storage.shutdown().await?;
        drop(storage);
        // A crash after writing entry 2 and before the manifest pointing at it.
        let head = entry(dir.path(), 1)?.head();
        let interrupted = ChainEntry::next(
            Some(&head),
            ChainEvent::Flush,
            "flush: never published".into(),
            vec![chain::FileRef {
                path: "fake/0/00000000000000000099.parquet".into(),
                size: 1,
                sha256: chain::sha256_hex(b"x"),
            }],
            Vec::new(),
        )?;
        let path = tenant_dir(dir.path())
            .join("chain")
            .join(format!("{:020}.json", 2));
        std::fs::write(&path, serde_json::to_vec(&interrupted).map_err(io)?).map_err(io)?;
        let report = verify(&cfg).await?;
        assert_eq!(report.first_break, None);
        assert!(
            report.notes.iter().any(|n| n.contains("beyond the head")),
            "{:?}",
            report.notes
        );

        let storage = Storage::open(cfg.clone()).await?;
        assert!(!path.exists(), "the interrupted entry is discarded");
        storage
            .append("fake", vec![push(&[("job", "api")], &[(50, "a50")])])
            .await?;
        storage.flush().await?;
        storage.shutdown().await?;
        drop(storage);
        let next = entry(dir.path(), 2)?;
        assert_eq!(next.prev_hash, head.hash);
        assert_ne!(next.hash, interrupted.hash);
        let report = verify(&cfg).await?;
        assert_eq!(report.first_break, None);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        Ok(())
    }
}

/// Scans over the last minutes take flushed and compacted files' recent rows from memory
/// after the first one, with exactly the answers of the Parquet read (the same data in a
/// store with `head.recent_bytes: 0`); a range starting before the window reads Parquet.
#[tokio::test]
async fn recent_rows_of_files_come_from_memory_with_the_same_answers() -> Result<()> {
    const MIN: i64 = 60_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::Internal(e.to_string()))?
        .as_nanos() as i64;
    let (dir, plain_dir) = (tmp()?, tmp()?);
    let storage = Storage::open(compact_now_config(dir.path())).await?;
    let mut plain_cfg = compact_now_config(plain_dir.path());
    plain_cfg.head.recent_bytes = tovlog_storage::config::ByteSize(0);
    let plain = Storage::open(plain_cfg).await?;
    let apps = ["a", "b", "c"];
    // Rows every 7 s over the last 40 minutes, in two pushes (two files per window before
    // compaction).
    for half in 0..2i64 {
        let mut streams = Vec::new();
        let lines: Vec<Vec<(i64, String)>> = apps
            .iter()
            .enumerate()
            .map(|(k, app)| {
                (0..(20 * 60 / 7))
                    .map(|i| {
                        let ts = now - 40 * MIN + half * 20 * MIN + i * 7_000_000_000 + k as i64;
                        (ts, format!("{app} {half} {i}"))
                    })
                    .collect()
            })
            .collect();
        for (app, rows) in apps.iter().zip(&lines) {
            let entries: Vec<(i64, &str)> = rows.iter().map(|(t, l)| (*t, l.as_str())).collect();
            streams.push(push(&[("app", app)], &entries));
        }
        for s in [&storage, &plain] {
            s.append("fake", streams.clone()).await?;
            s.flush().await?;
        }
    }
    let ids: Vec<StreamId> = apps
        .iter()
        .map(|a| labels(&[("app", a)]).fingerprint())
        .collect();
    for compacted in [false, true] {
        if compacted {
            storage.compact().await?;
            plain.compact().await?;
        }
        let served = storage.metrics().scan_recent_files;
        for (start, end) in [
            (now - 5 * MIN, now + MIN),
            (now - 5 * MIN + 3, now - MIN - 5),
            (now - 14 * MIN, now),
        ] {
            for streams in [ids.clone(), vec![ids[1]]] {
                let want = read(&plain, streams.clone(), start, end).await?;
                assert!(!want.is_empty());
                assert_eq!(read(&storage, streams.clone(), start, end).await?, want);
                assert_eq!(read(&storage, streams, start, end).await?, want);
            }
        }
        assert!(storage.metrics().scan_recent_files > served);
        assert!(storage.metrics().recent_bytes > 0);
        assert_eq!(plain.metrics().scan_recent_files, 0);
        // Older than the window: from Parquet.
        let served = storage.metrics().scan_recent_files;
        let (start, end) = (now - 30 * MIN, now);
        assert_eq!(
            read(&storage, ids.clone(), start, end).await?,
            read(&plain, ids.clone(), start, end).await?
        );
        assert_eq!(storage.metrics().scan_recent_files, served);
    }
    Ok(())
}
