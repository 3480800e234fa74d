//! Write-ahead log: durable appends with group commit, replay on open, and deletion of
//! segments whose entries are in chunk files.
//!
//! One writer thread owns the open segment. Appends hand it an encoded frame and wait on a
//! oneshot; the thread takes every frame that is queued (up to `max_batch_bytes`), writes
//! them with one `write`, runs one `fdatasync`, then acknowledges them all. Under load many
//! pushes share one fsync, which is what makes fsync-on ingestion fast.
//!
//! Recovery: [`Wal::open`] replays every segment in order; a frame that is cut short or
//! fails its checksum ends that segment, which is truncated there with a warning. New
//! writes always go to a fresh segment, so a replayed file is never appended to.
//!
//! A full disk: a failed `write` is cut back off the segment (`set_len` to the last
//! acknowledged byte, which frees space, never needs it), its pushes are refused, and the
//! next batch tries again, so ingest resumes by itself once space returns and no torn frame
//! sits between acknowledged ones. A failed `fdatasync` is different: what reached the disk
//! is then unknown (the kernel may have dropped the dirty pages), so the writer refuses
//! everything until a restart replays the segment. A segment that cannot be started (no
//! space for its header) is removed again and the current one goes on.

pub mod segment;

use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::model::PushStream;
use segment::{FRAME_HEADER, MAGIC, MAX_PAYLOAD};

enum Cmd {
    Append {
        frame: Vec<u8>,
        ack: oneshot::Sender<Result<u64>>,
    },
    Rotate {
        ack: oneshot::Sender<Result<u64>>,
    },
}

/// Handle to the write-ahead log.
pub struct Wal {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    bytes: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What replay found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    /// Segments read.
    pub segments: u64,
    /// Records handed to the callback.
    pub records: u64,
    /// Segments whose tail was cut off.
    pub truncated: u64,
}

impl Wal {
    /// Open the WAL in `dir`: replay existing segments through `apply(seq, tenant, streams)`
    /// in write order, then start the writer on a new segment.
    pub fn open(
        dir: &Path,
        config: &WalConfig,
        mut apply: impl FnMut(u64, String, Vec<PushStream>) -> Result<()>,
    ) -> Result<(Wal, ReplayStats)> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let segments = list_segments(dir)?;
        let mut stats = ReplayStats::default();
        let mut total_bytes = 0u64;
        for (seq, path) in &segments {
            stats.segments += 1;
            let (len, truncated) = replay_segment(path, *seq, &mut apply, &mut stats.records)?;
            if truncated {
                stats.truncated += 1;
            }
            total_bytes += len;
        }
        let next_seq = segments.last().map_or(1, |(seq, _)| seq + 1);
        let bytes = Arc::new(AtomicU64::new(total_bytes));
        let writer = Writer::create(dir.to_path_buf(), next_seq, config.clone(), bytes.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("tovlog-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_err(dir, e))?;
        if stats.segments > 0 {
            tracing::info!(
                segments = stats.segments,
                records = stats.records,
                truncated = stats.truncated,
                "WAL replayed"
            );
        }
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                bytes,
                thread: Mutex::new(Some(thread)),
            },
            stats,
        ))
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        let guard = self.tx.lock();
        let tx = guard.as_ref().ok_or(Error::Closed)?;
        tx.send(cmd).map_err(|_| Error::Closed)
    }

    /// Append an encoded frame ([`segment::encode_append`]); resolves once it is written
    /// (and fsynced when configured), with the sequence number of its segment.
    pub async fn append(&self, frame: Vec<u8>) -> Result<u64> {
        let (ack, rx) = oneshot::channel();
        self.send(Cmd::Append { frame, ack })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Close the current segment and start a new one; returns the new segment's sequence
    /// number. Every frame acknowledged before this call is in a segment with a smaller one.
    pub async fn rotate(&self) -> Result<u64> {
        let (ack, rx) = oneshot::channel();
        self.send(Cmd::Rotate { ack })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Delete the segments numbered below `seq` (their entries are durably in chunks).
    pub fn remove_segments_before(&self, seq: u64) -> Result<u64> {
        let mut removed = 0;
        for (s, path) in list_segments(&self.dir)? {
            if s >= seq {
                break;
            }
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            self.bytes.fetch_sub(
                len.min(self.bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            removed += 1;
        }
        Ok(removed)
    }

    /// Bytes currently in segment files.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stop the writer after it has handled everything queued.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("WAL writer thread panicked");
            }
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let item = item.map_err(|e| io_err(dir, e))?;
        if let Some(seq) = item
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_file_name)
        {
            out.push((seq, item.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Read `n` bytes; `Ok(false)` when the file ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replay one segment; returns its valid length and whether a torn tail was cut off.
fn replay_segment(
    path: &Path,
    seq: u64,
    apply: &mut impl FnMut(u64, String, Vec<PushStream>) -> Result<()>,
    records: &mut u64,
) -> Result<(u64, bool)> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    let mut valid = 0u64;
    let mut problem: Option<&'static str> = None;
    if !read_full(&mut reader, &mut magic).map_err(|e| io_err(path, e))? || &magic != MAGIC {
        problem = Some("missing segment header");
    } else {
        valid = MAGIC.len() as u64;
        let mut header = [0u8; FRAME_HEADER];
        let mut payload = Vec::new();
        loop {
            if !read_full(&mut reader, &mut header).map_err(|e| io_err(path, e))? {
                if valid != file_len {
                    problem = Some("frame header cut short");
                }
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_PAYLOAD || valid + (FRAME_HEADER + len) as u64 > file_len {
                problem = Some("frame runs past end of segment");
                break;
            }
            payload.resize(len, 0);
            if !read_full(&mut reader, &mut payload).map_err(|e| io_err(path, e))? {
                problem = Some("frame cut short");
                break;
            }
            if crc32fast::hash(&payload) != crc {
                problem = Some("frame checksum mismatch");
                break;
            }
            valid += (FRAME_HEADER + len) as u64;
            match segment::decode_append(&payload) {
                Ok((tenant, streams)) => {
                    *records += 1;
                    apply(seq, tenant, streams)?;
                }
                // The checksum held, so this is a record we cannot understand rather than a
                // torn write; skip it loudly instead of refusing to start.
                Err(e) => tracing::error!(
                    path = %path.display(),
                    offset = valid,
                    error = e.0,
                    "skipping undecodable WAL record"
                ),
            }
        }
    }
    if let Some(problem) = problem {
        tracing::warn!(
            path = %path.display(),
            valid_bytes = valid,
            file_bytes = file_len,
            problem,
            "truncating torn WAL tail"
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        file.set_len(valid).map_err(|e| io_err(path, e))?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        return Ok((valid, true));
    }
    Ok((valid, false))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    path: PathBuf,
    size: u64,
    config: WalConfig,
    bytes: Arc<AtomicU64>,
    /// Set after a failed sync, or a failed write that could not be cut back off: the file
    /// state is unknown, so refuse further writes.
    failed: Option<String>,
}

impl Writer {
    fn create(dir: PathBuf, seq: u64, config: WalConfig, bytes: Arc<AtomicU64>) -> Result<Writer> {
        let (file, path) = Self::new_segment(&dir, seq)?;
        bytes.fetch_add(MAGIC.len() as u64, Ordering::Relaxed);
        Ok(Writer {
            dir,
            seq,
            file,
            path,
            size: MAGIC.len() as u64,
            config,
            bytes,
            failed: None,
        })
    }

    fn new_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf)> {
        let path = dir.join(segment::segment_file_name(seq));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let started = file
            .write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(&path, e))
            // The new directory entry must be durable before anything in it is acknowledged.
            .and_then(|()| sync_dir(dir));
        if let Err(e) = started {
            // Gone again, so the next attempt can create it (it holds nothing).
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok((file, path))
    }

    fn rotate(&mut self) -> Result<u64> {
        let (file, path) = Self::new_segment(&self.dir, self.seq + 1)?;
        self.seq += 1;
        self.file = file;
        self.path = path;
        self.size = MAGIC.len() as u64;
        self.bytes.fetch_add(MAGIC.len() as u64, Ordering::Relaxed);
        Ok(self.seq)
    }

    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut buf: Vec<u8> = Vec::new();
        let mut acks: Vec<oneshot::Sender<Result<u64>>> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            let mut batch_bytes = 0u64;
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append { frame, ack } => {
                        batch_bytes += frame.len() as u64;
                        if buf.is_empty() {
                            buf = frame;
                        } else {
                            buf.extend_from_slice(&frame);
                        }
                        acks.push(ack);
                    }
                    Cmd::Rotate { ack } => {
                        self.commit(&mut buf, &mut acks);
                        let result = match &self.failed {
                            Some(msg) => Err(Error::Internal(msg.clone())),
                            None => self.rotate(),
                        };
                        let _ = ack.send(result);
                    }
                }
                if batch_bytes < self.config.max_batch_bytes.0 {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut buf, &mut acks);
            if self.size >= self.config.segment_size.0 && self.failed.is_none() {
                // Not fatal: the current segment goes on, and the next batch tries again.
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "WAL segment rotation failed");
                }
            }
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(error = %e, "final WAL sync failed");
        }
    }

    /// Remove whatever a failed write left after the last acknowledged byte and continue
    /// writing there.
    fn cut_back(&mut self) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.set_len(self.size)?;
        self.file.seek(SeekFrom::Start(self.size))?;
        Ok(())
    }

    /// Write the pending frames with one write and one sync, then acknowledge them.
    fn commit(&mut self, buf: &mut Vec<u8>, acks: &mut Vec<oneshot::Sender<Result<u64>>>) {
        if acks.is_empty() {
            return;
        }
        let result = match &self.failed {
            Some(msg) => Err(Error::Internal(format!(
                "WAL unavailable after earlier failure: {msg}"
            ))),
            None => match self.file.write_all(buf) {
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "WAL write failed");
                    if let Err(cut) = self.cut_back() {
                        tracing::error!(path = %self.path.display(), error = %cut, "WAL segment cannot be cut back after a failed write");
                        self.failed = Some(format!("{e}; cutting the segment back: {cut}"));
                    }
                    Err(io_err(&self.path, e))
                }
                Ok(()) => {
                    let synced = if self.config.fsync {
                        self.file.sync_data()
                    } else {
                        Ok(())
                    };
                    match synced {
                        Ok(()) => {
                            self.size += buf.len() as u64;
                            self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                            Ok(self.seq)
                        }
                        Err(e) => {
                            tracing::error!(path = %self.path.display(), error = %e, "WAL sync failed");
                            self.failed = Some(e.to_string());
                            Err(io_err(&self.path, e))
                        }
                    }
                }
            },
        };
        for ack in acks.drain(..) {
            let r = match &result {
                Ok(seq) => Ok(*seq),
                // Each waiter gets the I/O error with its kind (a full disk is told apart).
                Err(Error::Io { path, source }) => Err(Error::Io {
                    path: path.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                }),
                Err(e) => Err(Error::Internal(e.to_string())),
            };
            // A caller that went away no longer needs its answer.
            let _ = ack.send(r);
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, LabelSet};

    fn stream(line: &str, ts: i64) -> Vec<PushStream> {
        vec![PushStream {
            labels: LabelSet::new(vec![("job".into(), "a".into())]),
            entries: vec![Entry {
                ts_ns: ts,
                line: line.into(),
                metadata: vec![],
            }],
        }]
    }

    fn collect(dir: &Path) -> Result<(Vec<(u64, String)>, ReplayStats)> {
        let mut seen = Vec::new();
        let (wal, stats) = Wal::open(dir, &WalConfig::default(), |seq, _t, streams| {
            for s in streams {
                for e in s.entries {
                    seen.push((seq, e.line));
                }
            }
            Ok(())
        })?;
        wal.close();
        Ok((seen, stats))
    }

    #[tokio::test]
    async fn appends_replay_in_order_and_rotation_splits_segments() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let dir = tmp.path().join("wal");
        {
            let (wal, _) = Wal::open(&dir, &WalConfig::default(), |_, _, _| Ok(()))?;
            let s1 = wal
                .append(segment::encode_append("t", &stream("one", 1)))
                .await?;
            let new = wal.rotate().await?;
            let s2 = wal
                .append(segment::encode_append("t", &stream("two", 2)))
                .await?;
            assert!(s1 < new && s2 == new);
            wal.close();
        }
        let (seen, stats) = collect(&dir)?;
        assert_eq!(
            seen.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(stats.truncated, 0);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_durable() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let dir = tmp.path().join("wal");
        {
            let (wal, _) = Wal::open(&dir, &WalConfig::default(), |_, _, _| Ok(()))?;
            let wal = Arc::new(wal);
            let mut tasks = Vec::new();
            for i in 0..50 {
                let wal = wal.clone();
                tasks.push(tokio::spawn(async move {
                    wal.append(segment::encode_append("t", &stream(&format!("l{i}"), i)))
                        .await
                }));
            }
            for t in tasks {
                t.await.map_err(|e| Error::Internal(e.to_string()))??;
            }
            wal.close();
        }
        let (seen, _) = collect(&dir)?;
        assert_eq!(seen.len(), 50);
        Ok(())
    }

    #[tokio::test]
    async fn torn_tail_is_truncated() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| io_err(Path::new("tmp"), e))?;
        let dir = tmp.path().join("wal");
        {
            let (wal, _) = Wal::open(&dir, &WalConfig::default(), |_, _, _| Ok(()))?;
            wal.append(segment::encode_append("t", &stream("kept", 1)))
                .await?;
            wal.close();
        }
        let (_, path) = list_segments(&dir)?
            .into_iter()
            .last()
            .ok_or_else(|| Error::Internal("no segment".into()))?;
        let good_len = std::fs::metadata(&path)
            .map_err(|e| io_err(&path, e))?
            .len();
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        f.write_all(&[7, 0, 0, 0, 1, 2, 3, 4, 9, 9])
            .map_err(|e| io_err(&path, e))?;
        drop(f);
        let (seen, stats) = collect(&dir)?;
        assert_eq!(
            seen.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
            ["kept"]
        );
        assert_eq!(stats.truncated, 1);
        assert_eq!(
            std::fs::metadata(&path)
                .map_err(|e| io_err(&path, e))?
                .len(),
            good_len
        );
        Ok(())
    }
}
