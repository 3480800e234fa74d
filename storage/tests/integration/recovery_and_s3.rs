//! Storage-level tests (read-back, label API on head and chunks, restarts and torn WAL tails,
//! pruning, figures, S3 against an in-process s3s server): a real [`Storage`] on a temporary directory, read back through
//! DataFusion exactly as the query engine does (`logs_table` + `LogsTable::scan`).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray, UInt64Array};
use tovlog_storage::{MatchOp, Matcher, ScanRequest, Storage, StorageConfig};

const TENANT: &str = "fake";
/// One hour in ns; the default chunk window.
const HOUR: i64 = 3_600_000_000_000;
/// An hour-aligned base timestamp.
const BASE: i64 = 472_222 * HOUR;

use crate::common::{config, push as stream};

fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
    Matcher::new(name, op, value).expect("valid test regex")
}

/// Every (labels, ts, line) the tenant holds in `[start, end)`, sorted.
async fn read_all(storage: &Storage, start: i64, end: i64) -> Vec<(String, i64, String)> {
    let series = storage.series(TENANT, &[], start, end).expect("series");
    let ids: Vec<_> = series.iter().map(|s| s.id).collect();
    let names: std::collections::HashMap<u64, String> = series
        .iter()
        .map(|s| (s.id, s.labels.to_string()))
        .collect();
    let table = storage
        .logs_table(ScanRequest {
            tenant: TENANT.into(),
            streams: ids,
            start_ns: start,
            end_ns: end,
        })
        .expect("logs_table");
    let batches = crate::common::collect(storage, &table, &[])
        .await
        .expect("collect");
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("stream_id")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .expect("stream_id column");
        let ts = b
            .column_by_name("ts")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .expect("ts column");
        let lines = b
            .column_by_name("line")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .expect("line column");
        for i in 0..b.num_rows() {
            assert!(!lines.is_null(i));
            out.push((
                names.get(&ids.value(i)).cloned().unwrap_or_default(),
                ts.value(i),
                lines.value(i).to_string(),
            ));
        }
    }
    out.sort();
    out
}

fn row(labels: &str, ts: i64, line: &str) -> (String, i64, String) {
    (labels.to_string(), ts, line.to_string())
}

mod basics {
    use super::*;

    #[tokio::test]
    async fn append_then_read_back_from_head_and_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(config(dir.path())).await.expect("open");
        let summary = storage
            .append(
                TENANT,
                vec![
                    stream(&[("app", "a")], &[(BASE + 1, "one"), (BASE + 2, "two")]),
                    stream(&[("app", "b")], &[(BASE + 3, "three")]),
                ],
            )
            .await
            .expect("append");
        assert_eq!(summary.entries, 3);
        assert_eq!(summary.bytes, 3 + 3 + 5);
        let expected = vec![
            row("{app=\"a\"}", BASE + 1, "one"),
            row("{app=\"a\"}", BASE + 2, "two"),
            row("{app=\"b\"}", BASE + 3, "three"),
        ];
        assert_eq!(read_all(&storage, BASE, BASE + HOUR).await, expected);
        storage.flush().await.expect("flush");
        assert_eq!(read_all(&storage, BASE, BASE + HOUR).await, expected);
        // The end is exclusive, the start inclusive.
        assert_eq!(
            read_all(&storage, BASE + 2, BASE + 3).await,
            vec![row("{app=\"a\"}", BASE + 2, "two")]
        );
    }

    #[tokio::test]
    async fn exact_duplicates_are_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(config(dir.path())).await.expect("open");
        let s = stream(&[("app", "a")], &[(BASE, "x"), (BASE, "x"), (BASE, "y")]);
        let first = storage
            .append(TENANT, vec![s.clone()])
            .await
            .expect("append");
        assert_eq!((first.entries, first.duplicates), (2, 1));
        let again = storage
            .append(TENANT, vec![s.clone()])
            .await
            .expect("append");
        assert_eq!((again.entries, again.duplicates), (0, 3));
        storage.flush().await.expect("flush");
        // After a flush the head no longer knows the entries; chunks may then hold a
        // duplicate pushed again, but never from one head.
        let expected = vec![row("{app=\"a\"}", BASE, "x"), row("{app=\"a\"}", BASE, "y")];
        assert_eq!(read_all(&storage, BASE, BASE + 1).await, expected);
    }

    #[tokio::test]
    async fn out_of_order_entries_are_accepted_and_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(config(dir.path())).await.expect("open");
        storage
            .append(
                TENANT,
                vec![stream(
                    &[("app", "a")],
                    &[(BASE + 50, "late"), (BASE + 10, "early")],
                )],
            )
            .await
            .expect("append");
        storage
            .append(
                TENANT,
                vec![stream(&[("app", "a")], &[(BASE + 5, "earliest")])],
            )
            .await
            .expect("append");
        let expected = vec![
            row("{app=\"a\"}", BASE + 5, "earliest"),
            row("{app=\"a\"}", BASE + 10, "early"),
            row("{app=\"a\"}", BASE + 50, "late"),
        ];
        assert_eq!(read_all(&storage, BASE, BASE + 100).await, expected);
        storage.flush().await.expect("flush");
        assert_eq!(read_all(&storage, BASE, BASE + 100).await, expected);
    }
}

mod labels_api {
    use super::*;

    async fn populated(dir: &Path, flush: bool) -> Arc<Storage> {
        let storage = Storage::open(config(dir)).await.expect("open");
        storage
            .append(
                TENANT,
                vec![
                    stream(&[("app", "api"), ("env", "prod")], &[(BASE, "1")]),
                    stream(&[("app", "web"), ("env", "dev")], &[(BASE, "2")]),
                    stream(&[("app", "db")], &[(BASE, "3")]),
                ],
            )
            .await
            .expect("append");
        if flush {
            storage.flush().await.expect("flush");
        }
        storage
    }

    fn apps(storage: &Storage, matchers: &[Matcher]) -> Vec<String> {
        storage
            .series(TENANT, matchers, BASE, BASE + 1)
            .expect("series")
            .into_iter()
            .map(|s| s.labels.get("app").unwrap_or("").to_string())
            .collect()
    }

    async fn check(flush: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = populated(dir.path(), flush).await;
        assert_eq!(apps(&s, &[m("env", MatchOp::Eq, "prod")]), vec!["api"]);
        // Absent label matches as "".
        assert_eq!(apps(&s, &[m("env", MatchOp::Eq, "")]), vec!["db"]);
        assert_eq!(
            apps(&s, &[m("env", MatchOp::Neq, "prod")]),
            vec!["db", "web"]
        );
        assert_eq!(apps(&s, &[m("env", MatchOp::Neq, "")]), vec!["api", "web"]);
        assert_eq!(
            apps(&s, &[m("app", MatchOp::Re, "a.*|d.")]),
            vec!["api", "db"]
        );
        // Regexes are anchored.
        assert_eq!(
            apps(&s, &[m("app", MatchOp::Re, "p")]),
            Vec::<String>::new()
        );
        assert_eq!(apps(&s, &[m("env", MatchOp::Re, "")]), vec!["db"]);
        assert_eq!(
            apps(&s, &[m("app", MatchOp::Nre, "a.*")]),
            vec!["db", "web"]
        );
        assert_eq!(apps(&s, &[m("env", MatchOp::Nre, ".+")]), vec!["db"]);
        assert_eq!(
            apps(
                &s,
                &[m("app", MatchOp::Re, ".+"), m("env", MatchOp::Neq, "dev")]
            ),
            vec!["api", "db"]
        );
        // Out of the time range: nothing.
        assert!(s
            .series(TENANT, &[], BASE + 1, BASE + 2)
            .expect("series")
            .is_empty());
        assert!(s
            .series("other", &[], BASE, BASE + 1)
            .expect("series")
            .is_empty());

        assert_eq!(
            s.label_names(TENANT, &[], BASE, BASE + 1).expect("names"),
            vec!["app", "env"]
        );
        assert_eq!(
            s.label_names(TENANT, &[m("env", MatchOp::Eq, "")], BASE, BASE + 1)
                .expect("names"),
            vec!["app"]
        );
        assert_eq!(
            s.label_values(TENANT, "env", &[], BASE, BASE + 1)
                .expect("values"),
            vec!["dev", "prod"]
        );
        assert_eq!(
            s.label_values(
                TENANT,
                "app",
                &[m("env", MatchOp::Re, "p.*|")],
                BASE,
                BASE + 1
            )
            .expect("values"),
            vec!["api", "db"]
        );
        assert!(s
            .label_values(TENANT, "missing", &[], BASE, BASE + 1)
            .expect("values")
            .is_empty());
    }

    #[tokio::test]
    async fn matchers_on_head() {
        check(false).await;
    }

    #[tokio::test]
    async fn matchers_on_chunks() {
        check(true).await;
    }
}

mod restart {
    use super::*;

    #[tokio::test]
    async fn wal_is_replayed_after_a_drop_without_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = Storage::open(config(dir.path())).await.expect("open");
            storage
                .append(
                    TENANT,
                    vec![stream(&[("app", "a")], &[(BASE, "x"), (BASE + 1, "y")])],
                )
                .await
                .expect("append");
            storage
                .append(TENANT, vec![stream(&[("app", "b")], &[(BASE + 2, "z")])])
                .await
                .expect("append");
        }
        let storage = Storage::open(config(dir.path())).await.expect("reopen");
        let expected = vec![
            row("{app=\"a\"}", BASE, "x"),
            row("{app=\"a\"}", BASE + 1, "y"),
            row("{app=\"b\"}", BASE + 2, "z"),
        ];
        assert_eq!(read_all(&storage, BASE, BASE + 10).await, expected);
        assert_eq!(storage.metrics().head_entries, 3);
        // And once more: replaying twice must not double anything.
        drop(storage);
        let storage = Storage::open(config(dir.path())).await.expect("reopen");
        assert_eq!(read_all(&storage, BASE, BASE + 10).await, expected);
    }

    #[tokio::test]
    async fn restart_after_flush_does_not_double() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = Storage::open(config(dir.path())).await.expect("open");
            storage
                .append(TENANT, vec![stream(&[("app", "a")], &[(BASE, "flushed")])])
                .await
                .expect("append");
            storage.flush().await.expect("flush");
            storage
                .append(
                    TENANT,
                    vec![stream(&[("app", "a")], &[(BASE + 1, "in wal")])],
                )
                .await
                .expect("append");
        }
        let storage = Storage::open(config(dir.path())).await.expect("reopen");
        let expected = vec![
            row("{app=\"a\"}", BASE, "flushed"),
            row("{app=\"a\"}", BASE + 1, "in wal"),
        ];
        assert_eq!(read_all(&storage, BASE, BASE + 10).await, expected);
        assert_eq!(storage.metrics().head_entries, 1);
        storage.shutdown().await.expect("shutdown");
        drop(storage);
        let storage = Storage::open(config(dir.path())).await.expect("reopen");
        assert_eq!(read_all(&storage, BASE, BASE + 10).await, expected);
        assert_eq!(storage.metrics().head_entries, 0);
        assert_eq!(storage.metrics().chunk_files, 2);
    }

    fn last_segment(dir: &Path) -> std::path::PathBuf {
        let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
            .expect("wal dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "wal")
                    && std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
            })
            .collect();
        segs.sort();
        segs.pop().expect("a non-empty WAL segment")
    }

    /// Damage the tail of the last WAL segment with `tail`; `kept` entries of three must survive.
    async fn torn(kept: usize, tail: impl Fn(&[u8]) -> Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = Storage::open(config(dir.path())).await.expect("open");
            for i in 0..3 {
                storage
                    .append(
                        TENANT,
                        vec![stream(&[("app", "a")], &[(BASE + i, &format!("line {i}"))])],
                    )
                    .await
                    .expect("append");
            }
        }
        let seg = last_segment(dir.path());
        let bytes = std::fs::read(&seg).expect("read segment");
        std::fs::write(&seg, tail(&bytes)).expect("write segment");
        let storage = Storage::open(config(dir.path())).await.expect("reopen");
        let got = read_all(&storage, BASE, BASE + 10).await;
        assert_eq!(got.len(), kept);
        assert_eq!(
            got[..2],
            [
                row("{app=\"a\"}", BASE, "line 0"),
                row("{app=\"a\"}", BASE + 1, "line 1")
            ]
        );
        // The store keeps working after the truncation and survives another restart.
        storage
            .append(
                TENANT,
                vec![stream(&[("app", "a")], &[(BASE + 5, "after")])],
            )
            .await
            .expect("append");
        drop(storage);
        let storage = Storage::open(config(dir.path())).await.expect("reopen");
        let again = read_all(&storage, BASE, BASE + 10).await;
        assert_eq!(again.len(), got.len() + 1);
        assert!(again.contains(&row("{app=\"a\"}", BASE + 5, "after")));
    }

    #[tokio::test]
    async fn garbage_after_the_last_frame_is_cut() {
        torn(3, |b| {
            let mut v = b.to_vec();
            v.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03]);
            v
        })
        .await;
    }

    #[tokio::test]
    async fn truncated_last_frame_is_cut() {
        torn(2, |b| b[..b.len() - 3].to_vec()).await;
    }

    #[tokio::test]
    async fn corrupt_last_frame_is_cut() {
        torn(2, |b| {
            let mut v = b.to_vec();
            let n = v.len();
            v[n - 2] ^= 0xff;
            v
        })
        .await;
    }
}

mod pruning {
    use super::*;

    #[tokio::test]
    async fn scans_open_only_overlapping_chunk_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(config(dir.path())).await.expect("open");
        // Three windows in one flush, a fourth in a second flush.
        storage
            .append(
                TENANT,
                vec![
                    stream(
                        &[("app", "a")],
                        &[(BASE + 1, "a0"), (BASE + HOUR + 1, "a1")],
                    ),
                    stream(&[("app", "b")], &[(BASE + 2 * HOUR + 1, "b2")]),
                ],
            )
            .await
            .expect("append");
        storage.flush().await.expect("flush");
        storage
            .append(
                TENANT,
                vec![stream(&[("app", "b")], &[(BASE + 3 * HOUR + 1, "b3")])],
            )
            .await
            .expect("append");
        storage.flush().await.expect("flush");
        assert_eq!(storage.metrics().chunk_files, 4);
        assert_eq!(storage.metrics().flushes, 2);

        let a = storage
            .series(TENANT, &[m("app", MatchOp::Eq, "a")], BASE, BASE + 4 * HOUR)
            .expect("series")[0]
            .id;
        let b = storage
            .series(TENANT, &[m("app", MatchOp::Eq, "b")], BASE, BASE + 4 * HOUR)
            .expect("series")[0]
            .id;
        let files = |streams: Vec<u64>, start: i64, end: i64| {
            storage
                .logs_table(ScanRequest {
                    tenant: TENANT.into(),
                    streams,
                    start_ns: start,
                    end_ns: end,
                })
                .expect("logs_table")
                .files()
                .len()
        };
        // Time pruning: one window → one file.
        assert_eq!(files(vec![a, b], BASE + HOUR, BASE + 2 * HOUR), 1);
        assert_eq!(files(vec![a, b], BASE + 3 * HOUR, BASE + 4 * HOUR), 1);
        // Stream pruning: `a` lives in two files, `b` in the other two.
        assert_eq!(files(vec![a], BASE, BASE + 4 * HOUR), 2);
        assert_eq!(files(vec![b], BASE, BASE + 4 * HOUR), 2);
        assert_eq!(files(vec![a], BASE + 2 * HOUR, BASE + 4 * HOUR), 0);
        assert_eq!(files(vec![a, b], BASE, BASE + 4 * HOUR), 4);
        // Per-stream ranges inside a file prune too (a1 is at +1ns of its window).
        assert_eq!(files(vec![a], BASE + HOUR + 2, BASE + 2 * HOUR), 0);
        let before = storage.metrics().scan_chunk_files;
        assert_eq!(files(vec![b], BASE + 2 * HOUR, BASE + 3 * HOUR), 1);
        assert_eq!(storage.metrics().scan_chunk_files, before + 1);

        assert_eq!(
            read_all(&storage, BASE + HOUR, BASE + 3 * HOUR).await,
            vec![
                row("{app=\"a\"}", BASE + HOUR + 1, "a1"),
                row("{app=\"b\"}", BASE + 2 * HOUR + 1, "b2"),
            ]
        );
    }
}

mod figures {
    use super::*;

    #[tokio::test]
    async fn volumes_count_head_and_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(config(dir.path())).await.expect("open");
        storage
            .append(
                TENANT,
                vec![
                    stream(&[("app", "a")], &[(BASE, "12345"), (BASE + 1, "678")]),
                    stream(&[("app", "b")], &[(BASE, "x")]),
                ],
            )
            .await
            .expect("append");
        storage.flush().await.expect("flush");
        storage
            .append(TENANT, vec![stream(&[("app", "a")], &[(BASE + 2, "9")])])
            .await
            .expect("append");
        let v = storage
            .volumes(TENANT, &[], BASE, BASE + 10)
            .await
            .expect("volumes");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].series.labels.get("app"), Some("a"));
        assert_eq!((v[0].entries, v[0].bytes, v[0].chunks), (3, 9, 2));
        assert_eq!(v[1].series.labels.get("app"), Some("b"));
        assert_eq!((v[1].entries, v[1].bytes, v[1].chunks), (1, 1, 1));
        let only_a = storage
            .volumes(TENANT, &[m("app", MatchOp::Eq, "a")], BASE + 2, BASE + 3)
            .await
            .expect("volumes");
        assert_eq!(only_a.len(), 1);
        assert_eq!(
            (only_a[0].entries, only_a[0].bytes, only_a[0].chunks),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn metrics_follow_appends_and_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(config(dir.path())).await.expect("open");
        let m0 = storage.metrics();
        assert_eq!(
            (m0.head_entries, m0.head_bytes, m0.flushes, m0.chunk_files),
            (0, 0, 0, 0)
        );
        storage
            .append(
                TENANT,
                vec![stream(
                    &[("app", "a")],
                    &[(BASE, "hello"), (BASE + 1, "world")],
                )],
            )
            .await
            .expect("append");
        let m1 = storage.metrics();
        assert_eq!(m1.head_entries, 2);
        assert!(m1.head_bytes >= 10, "head bytes {}", m1.head_bytes);
        assert!(m1.wal_bytes > 10, "wal bytes {}", m1.wal_bytes);
        storage.flush().await.expect("flush");
        let m2 = storage.metrics();
        assert_eq!((m2.head_entries, m2.head_bytes), (0, 0));
        assert_eq!((m2.flushes, m2.chunk_files), (1, 1));
        assert!(m2.chunk_bytes > 0);
        assert_eq!(m2.indexed_streams, 1);
        assert!(m2.wal_bytes < m1.wal_bytes, "WAL truncated after flush");
    }
}

mod s3 {
    //! The chunk store on a real S3-protocol server: `s3s-fs` served in-process over HTTP
    //! with signature authentication, path-style requests.
    use super::*;

    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;
    use tovlog_storage::config::{ObjectStoreConfig, S3Config};

    const BUCKET: &str = "tovlog-test";
    const ACCESS_KEY: &str = "tovlog-access";
    const SECRET_KEY: &str = "tovlog-secret-key";

    /// Serve `root` (one directory per bucket) on 127.0.0.1; returns the endpoint URL and
    /// the accept loop's task.
    async fn start_server(root: &Path) -> (String, tokio::task::JoinHandle<()>) {
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
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
        (format!("http://{addr}"), task)
    }

    fn s3_config(data_dir: &Path, endpoint: &str) -> StorageConfig {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_to_s3_and_read_back_after_reopen() {
        let s3_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(s3_root.path().join(BUCKET)).expect("bucket dir");
        let data = tempfile::tempdir().expect("tempdir");
        let (endpoint, server) = start_server(s3_root.path()).await;

        let expected = vec![
            row("{app=\"a\"}", BASE + 1, "first"),
            row("{app=\"a\"}", BASE + HOUR + 1, "next window"),
            row("{app=\"b\", env=\"prod\"}", BASE + 2, "other stream"),
            row("{app=\"b\", env=\"prod\"}", BASE + 3, "in the WAL only"),
        ];
        {
            let storage = Storage::open(s3_config(data.path(), &endpoint))
                .await
                .expect("open");
            storage
                .append(
                    TENANT,
                    vec![
                        stream(
                            &[("app", "a")],
                            &[(BASE + 1, "first"), (BASE + HOUR + 1, "next window")],
                        ),
                        stream(
                            &[("app", "b"), ("env", "prod")],
                            &[(BASE + 2, "other stream")],
                        ),
                    ],
                )
                .await
                .expect("append");
            storage.flush().await.expect("flush to s3");
            storage
                .append(
                    TENANT,
                    vec![stream(
                        &[("app", "b"), ("env", "prod")],
                        &[(BASE + 3, "in the WAL only")],
                    )],
                )
                .await
                .expect("append");
            assert_eq!(read_all(&storage, BASE, BASE + 2 * HOUR).await, expected);
            let m = storage.metrics();
            assert_eq!(m.chunk_files, 2);
            assert!(m.chunk_bytes > 0);
        }
        // The chunk files really are in the bucket, under the prefix.
        let mut parquet = 0;
        let mut stack = vec![s3_root.path().join(BUCKET).join("logs")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("bucket dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    parquet += 1;
                }
            }
        }
        assert_eq!(parquet, 2);

        let storage = Storage::open(s3_config(data.path(), &endpoint))
            .await
            .expect("reopen");
        assert_eq!(read_all(&storage, BASE, BASE + 2 * HOUR).await, expected);
        assert_eq!(
            storage
                .label_values(TENANT, "env", &[], BASE, BASE + 2 * HOUR)
                .expect("values"),
            vec!["prod"]
        );
        storage.shutdown().await.expect("shutdown");
        drop(storage);
        // After the shutdown flush everything is in S3 (the label index stays in data_dir).
        let storage = Storage::open(s3_config(data.path(), &endpoint))
            .await
            .expect("reopen");
        assert_eq!(read_all(&storage, BASE, BASE + 2 * HOUR).await, expected);
        assert_eq!(storage.metrics().head_entries, 0);
        assert_eq!(storage.metrics().chunk_files, 3);
        server.abort();
    }

    /// `verify` reads the chain and re-hashes the files through the S3 API, and finds a
    /// file edited in the bucket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_over_s3_checks_the_chain_and_finds_an_edited_file() {
        use tovlog_storage::chain::{self, BreakKind, VerifyOptions};
        let s3_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(s3_root.path().join(BUCKET)).expect("bucket dir");
        let data = tempfile::tempdir().expect("tempdir");
        let (endpoint, server) = start_server(s3_root.path()).await;
        let cfg = s3_config(data.path(), &endpoint);
        let storage = Storage::open(cfg.clone()).await.expect("open");
        for (i, ts) in [BASE + 1, BASE + HOUR + 1].into_iter().enumerate() {
            storage
                .append(TENANT, vec![stream(&[("app", "a")], &[(ts, "line")])])
                .await
                .expect("append");
            if i == 0 {
                storage.flush().await.expect("flush");
            }
        }
        storage.shutdown().await.expect("shutdown");
        drop(storage);

        let store = tovlog_storage::store::build(&cfg).expect("store");
        let report = chain::verify(store.clone(), &VerifyOptions::default()).await;
        assert_eq!(report.first_break, None);
        assert_eq!(report.tenants.len(), 1);
        assert_eq!((report.tenants[0].entries, report.tenants[0].files), (2, 2));
        let head = report.tenants[0].head.clone().expect("head");
        let expect = VerifyOptions {
            expect_heads: vec![(TENANT.into(), head.hash.clone())],
            concurrency: 1,
        };
        assert_eq!(
            chain::verify(store.clone(), &expect).await.first_break,
            None
        );

        // Flip a byte of a chunk file inside the bucket.
        let mut stack = vec![s3_root.path().join(BUCKET).join("logs")];
        let mut file = None;
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("bucket dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    file = Some(p);
                }
            }
        }
        let file = file.expect("a chunk file in the bucket");
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[10] ^= 0x80;
        std::fs::write(&file, &bytes).expect("write");
        let b = chain::verify(store, &VerifyOptions::default())
            .await
            .first_break
            .expect("a break");
        assert_eq!(b.kind, BreakKind::FileModified);
        assert!(b.detail.contains("SHA-256 mismatch"), "{b}");
        server.abort();
    }

    /// Every series, label name and value of the tenant, to compare two stores' answers.
    fn label_answers(storage: &Storage) -> (Vec<String>, Vec<String>, Vec<String>) {
        let series = storage
            .series(TENANT, &[], BASE, BASE + 2 * HOUR)
            .expect("series")
            .iter()
            .map(|s| s.labels.to_string())
            .collect();
        let names = storage
            .label_names(TENANT, &[], BASE, BASE + 2 * HOUR)
            .expect("names");
        let values = storage
            .label_values(TENANT, "app", &[], BASE, BASE + 2 * HOUR)
            .expect("values");
        (series, names, values)
    }

    /// Objects of the bucket under `logs/<dir>` (file names), sorted.
    fn bucket_files(s3_root: &Path, dir: &str) -> Vec<String> {
        let d = s3_root.join(BUCKET).join("logs").join(dir);
        let mut out: Vec<String> = std::fs::read_dir(&d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Append two lines to each of `apps` streams (`round` makes them new lines).
    async fn fill(storage: &Storage, apps: usize, round: i64) {
        let streams = (0..apps)
            .map(|i| {
                let app = format!("app-{i:05}");
                stream(
                    &[("app", app.as_str()), ("env", "prod")],
                    &[
                        (BASE + 1 + i as i64 + 1000 * round, "a line"),
                        (BASE + HOUR + 5 + round, "later"),
                    ],
                )
            })
            .collect();
        storage.append(TENANT, streams).await.expect("append");
    }

    /// A node whose data directory is gone serves the bucket: the label index is rebuilt
    /// from the label objects; a bucket of an older build (no label objects) gets them
    /// from an intact local index first (migration).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_data_dir_serves_the_bucket_and_old_buckets_are_migrated() {
        let s3_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(s3_root.path().join(BUCKET)).expect("bucket dir");
        let (endpoint, server) = start_server(s3_root.path()).await;
        let first = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(s3_config(first.path(), &endpoint))
            .await
            .expect("open");
        fill(&storage, 40, 0).await;
        storage.flush().await.expect("flush");
        fill(&storage, 60, 1).await; // 20 more streams, in the head until shutdown
        let expected = read_all(&storage, BASE, BASE + 2 * HOUR).await;
        let labels = label_answers(&storage);
        assert_eq!(labels.0.len(), 60);
        storage.shutdown().await.expect("shutdown");
        drop(storage);
        assert_eq!(
            bucket_files(s3_root.path(), "fake/streams"),
            vec!["00000000000000000001.json", "00000000000000000002.json"]
        );

        // A new node on the same bucket with an empty data directory.
        let second = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(s3_config(second.path(), &endpoint))
            .await
            .expect("open on an empty data dir");
        assert_eq!(read_all(&storage, BASE, BASE + 2 * HOUR).await, expected);
        assert_eq!(label_answers(&storage), labels);
        storage.shutdown().await.expect("shutdown");
        drop(storage);

        // A bucket as older builds left it: no label objects; the second node's index is
        // intact, so its next start writes them back.
        std::fs::remove_dir_all(s3_root.path().join(BUCKET).join("logs/fake/streams"))
            .expect("remove label objects");
        let storage = Storage::open(s3_config(second.path(), &endpoint))
            .await
            .expect("reopen");
        assert_eq!(label_answers(&storage), labels);
        storage.shutdown().await.expect("shutdown");
        drop(storage);
        assert_eq!(
            bucket_files(s3_root.path(), "fake/streams"),
            vec!["00000000000000000001.json"]
        );
        let third = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(s3_config(third.path(), &endpoint))
            .await
            .expect("open on an empty data dir");
        assert_eq!(read_all(&storage, BASE, BASE + 2 * HOUR).await, expected);
        assert_eq!(label_answers(&storage), labels);
        storage.shutdown().await.expect("shutdown");
        server.abort();
    }

    /// A second writer on a bucket is refused while the first holds a fresh lease; after
    /// the first dies without releasing it, the second takes over once the TTL passed. A
    /// live writer whose lease is taken (here by a process claiming its node id, as a
    /// restart on the same data directory does) is fenced: appends and writes fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_writer_is_refused_until_the_lease_expires() {
        use std::time::{Duration, Instant};
        use tovlog_storage::config::HumanDuration;
        let s3_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(s3_root.path().join(BUCKET)).expect("bucket dir");
        let (endpoint, server) = start_server(s3_root.path()).await;
        let lease = |dir: &Path| {
            let mut c = s3_config(dir, &endpoint);
            c.lease.ttl = HumanDuration(Duration::from_millis(900));
            c.lease.renew_interval = HumanDuration(Duration::from_millis(300));
            c
        };
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let first = Storage::open(lease(a.path())).await.expect("first writer");
        fill(&first, 3, 0).await;
        first.flush().await.expect("flush");
        match Storage::open(lease(b.path())).await {
            Err(tovlog_storage::Error::ReadOnly(msg)) => {
                assert!(msg.contains("another writer holds"), "{msg}");
                let node = std::fs::read_to_string(a.path().join("node-id")).expect("node id");
                assert!(msg.contains(node.trim()), "the holder is named: {msg}");
            }
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(_) => panic!("a second writer was let in"),
        }
        // The first writer crashes: dropping it aborts its heartbeat and nothing releases
        // the lease, which the second takes once it expired.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(20);
        let second = loop {
            match Storage::open(lease(b.path())).await {
                Ok(s) => break s,
                Err(tovlog_storage::Error::ReadOnly(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("second writer: {e}"),
            }
        };
        assert_eq!(read_all(&second, BASE, BASE + 2 * HOUR).await.len(), 6);
        second.check_writable().expect("the holder may write");

        // Another process with the second's node id takes the lease at once.
        let c = tempfile::tempdir().expect("tempdir");
        std::fs::copy(b.path().join("node-id"), c.path().join("node-id")).expect("copy node id");
        let third = Storage::open(lease(c.path()))
            .await
            .expect("same node takes over");
        let deadline = Instant::now() + Duration::from_secs(10);
        while second.check_writable().is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match second
            .append(TENANT, vec![stream(&[("app", "x")], &[(BASE, "late")])])
            .await
        {
            Err(tovlog_storage::Error::ReadOnly(msg)) => {
                assert!(msg.contains("lost the bucket's lease"), "{msg}")
            }
            other => panic!("a fenced writer appended: {other:?}"),
        }
        assert!(second
            .put_object("x", bytes::Bytes::from_static(b"1"))
            .await
            .is_err());
        third.check_writable().expect("the new holder may write");
        assert_eq!(read_all(&third, BASE, BASE + 2 * HOUR).await.len(), 6);
        third.shutdown().await.expect("shutdown");
        drop(second);
        server.abort();
    }

    /// A reader follows the writer's flushes, answers the same, and refuses writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_follows_the_writer() {
        let s3_root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(s3_root.path().join(BUCKET)).expect("bucket dir");
        let (endpoint, server) = start_server(s3_root.path()).await;
        let (w, r) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let writer = Storage::open(s3_config(w.path(), &endpoint))
            .await
            .expect("writer");
        let mut rc = s3_config(r.path(), &endpoint);
        rc.role = tovlog_storage::replica::Role::Reader;
        let reader = Storage::open(rc).await.expect("reader");
        assert!(read_all(&reader, BASE, BASE + 2 * HOUR).await.is_empty());
        for round in 1..=2 {
            fill(&writer, 5 * round, round as i64).await;
            writer.flush().await.expect("flush");
            reader.follow().await.expect("follow");
            assert_eq!(
                read_all(&reader, BASE, BASE + 2 * HOUR).await,
                read_all(&writer, BASE, BASE + 2 * HOUR).await
            );
            assert_eq!(label_answers(&reader), label_answers(&writer));
        }
        assert_eq!(label_answers(&reader).0.len(), 10);
        assert!(matches!(
            reader
                .append(TENANT, vec![stream(&[("app", "x")], &[(BASE, "no")])])
                .await,
            Err(tovlog_storage::Error::ReadOnly(_))
        ));
        assert!(matches!(
            reader
                .put_object("x", bytes::Bytes::from_static(b"1"))
                .await,
            Err(tovlog_storage::Error::ReadOnly(_))
        ));
        // The reader took no lease and wrote nothing: the writer's shutdown releases it.
        writer.shutdown().await.expect("shutdown");
        reader.shutdown().await.expect("reader shutdown");
        assert!(!s3_root
            .path()
            .join(BUCKET)
            .join("logs/writer.lease.json")
            .exists());
        server.abort();
    }
}

mod rebuild {
    //! The label index rebuilt from the bucket's label objects, at a size that shows its cost.
    use super::*;
    use tovlog_storage::config::{LocalStoreConfig, ObjectStoreConfig};

    /// `TOVLOG_REBUILD_STREAMS` streams (default 10,000) flushed by one node; a node with an
    /// empty data directory on the same chunk directory finds every one. Prints the time.
    // The printed time is the test's report (docs/operations.md quotes it).
    #[allow(clippy::print_stderr)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_data_dir_rebuilds_the_label_index_of_every_stream() {
        let n: usize = std::env::var("TOVLOG_REBUILD_STREAMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let chunks = tempfile::tempdir().expect("tempdir");
        let on = |dir: &Path| {
            let mut c = config(dir);
            c.object_store = ObjectStoreConfig::Local(LocalStoreConfig {
                path: Some(chunks.path().to_path_buf()),
            });
            c
        };
        let first = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(on(first.path())).await.expect("open");
        for batch in 0..n.div_ceil(1000) {
            let streams = (batch * 1000..((batch + 1) * 1000).min(n))
                .map(|i| {
                    let pod = format!("pod-{i:06}");
                    let app = format!("app-{}", i % 50);
                    stream(
                        &[
                            ("app", app.as_str()),
                            ("pod", pod.as_str()),
                            ("env", "prod"),
                        ],
                        &[(BASE + i as i64, "line")],
                    )
                })
                .collect();
            storage.append(TENANT, streams).await.expect("append");
        }
        storage.shutdown().await.expect("shutdown");
        drop(storage);

        let second = tempfile::tempdir().expect("tempdir");
        let started = std::time::Instant::now();
        let storage = Storage::open(on(second.path())).await.expect("open empty");
        let elapsed = started.elapsed();
        eprintln!(
            "label index rebuilt from the bucket: {n} streams in {:.3} s (open included)",
            elapsed.as_secs_f64()
        );
        let all = storage
            .series(TENANT, &[], BASE, BASE + HOUR)
            .expect("series");
        assert_eq!(all.len(), n);
        let one = storage
            .series(TENANT, &[m("app", MatchOp::Eq, "app-7")], BASE, BASE + HOUR)
            .expect("series");
        assert_eq!(one.len(), (0..n).filter(|i| i % 50 == 7).count());
        assert_eq!(storage.metrics().indexed_streams, n as u64);
        storage.shutdown().await.expect("shutdown");
    }
}
