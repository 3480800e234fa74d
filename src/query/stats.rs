//! Query statistics: counters the execution nodes bump while a query runs, and their
//! encoding as Loki's `data.stats` object (the keys Grafana reads).
//!
//! tovlog has no ingesters or chunk caches: everything is read by this process from the
//! head and the chunk files, so the figures are reported under `querier.store` and the
//! `ingester` section is zero, as Loki reports for a query served only from storage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// Counters shared by the execution nodes of one query.
#[derive(Debug, Default)]
pub struct StatsCollector {
    /// Rows read from storage (before any line filter).
    pub lines_scanned: AtomicU64,
    /// Bytes of lines read from storage.
    pub bytes_scanned: AtomicU64,
    /// Bytes of structured metadata read (names plus values).
    pub metadata_bytes_scanned: AtomicU64,
    /// Rows that passed the whole pipeline.
    pub post_filter_lines: AtomicU64,
    /// Duplicates removed when merging entries.
    pub duplicates: AtomicU64,
    /// Storage scans run (one per time window / range aggregation leaf).
    pub scans: AtomicU64,
    /// Streams resolved by the label index.
    pub streams: AtomicU64,
}

impl StatsCollector {
    /// A new shared collector.
    pub fn new() -> Arc<StatsCollector> {
        Arc::new(StatsCollector::default())
    }

    /// Add to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Freeze the counters with the query's wall time and returned entries.
    pub fn snapshot(&self, exec_time: Duration, entries_returned: u64) -> QueryStats {
        QueryStats {
            lines: self.lines_scanned.load(Ordering::Relaxed),
            bytes: self.bytes_scanned.load(Ordering::Relaxed),
            metadata_bytes: self.metadata_bytes_scanned.load(Ordering::Relaxed),
            post_filter_lines: self.post_filter_lines.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            scans: self.scans.load(Ordering::Relaxed),
            exec_time,
            entries_returned,
        }
    }
}

/// The final figures of one query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Lines read.
    pub lines: u64,
    /// Line bytes read.
    pub bytes: u64,
    /// Structured metadata bytes read.
    pub metadata_bytes: u64,
    /// Lines that passed the pipeline.
    pub post_filter_lines: u64,
    /// Duplicates removed.
    pub duplicates: u64,
    /// Storage scans run.
    pub scans: u64,
    /// Wall time of the query.
    pub exec_time: Duration,
    /// Entries (log queries) or samples returned.
    pub entries_returned: u64,
}

impl QueryStats {
    /// Loki's `stats` object.
    pub fn to_json(&self) -> Value {
        let secs = self.exec_time.as_secs_f64();
        let per_sec = |n: u64| -> u64 {
            if secs > 0.0 {
                (n as f64 / secs) as u64
            } else {
                0
            }
        };
        let total_bytes = self.bytes + self.metadata_bytes;
        let store = json!({
            "totalChunksRef": self.scans,
            "totalChunksDownloaded": self.scans,
            "chunksDownloadTime": 0,
            "queryReferencedStructuredMetadata": self.metadata_bytes > 0,
            "chunk": {
                "headChunkBytes": 0,
                "headChunkLines": 0,
                "decompressedBytes": self.bytes,
                "decompressedLines": self.lines,
                "compressedBytes": 0,
                "totalDuplicates": self.duplicates,
                "postFilterLines": self.post_filter_lines,
                "headChunkStructuredMetadataBytes": 0,
                "decompressedStructuredMetadataBytes": self.metadata_bytes,
            },
            "chunkRefsFetchTime": 0,
            "congestionControlLatency": 0,
            "pipelineWrapperFilteredLines": 0,
        });
        let empty_store = json!({
            "totalChunksRef": 0,
            "totalChunksDownloaded": 0,
            "chunksDownloadTime": 0,
            "queryReferencedStructuredMetadata": false,
            "chunk": {
                "headChunkBytes": 0,
                "headChunkLines": 0,
                "decompressedBytes": 0,
                "decompressedLines": 0,
                "compressedBytes": 0,
                "totalDuplicates": 0,
                "postFilterLines": 0,
                "headChunkStructuredMetadataBytes": 0,
                "decompressedStructuredMetadataBytes": 0,
            },
            "chunkRefsFetchTime": 0,
            "congestionControlLatency": 0,
            "pipelineWrapperFilteredLines": 0,
        });
        json!({
            "summary": {
                "bytesProcessedPerSecond": per_sec(total_bytes),
                "linesProcessedPerSecond": per_sec(self.lines),
                "totalBytesProcessed": total_bytes,
                "totalLinesProcessed": self.lines,
                "totalStructuredMetadataBytesProcessed": self.metadata_bytes,
                "execTime": secs,
                "queueTime": 0,
                "subqueries": 0,
                "totalEntriesReturned": self.entries_returned,
                "splits": self.scans,
                "shards": 1,
                "totalPostFilterLines": self.post_filter_lines,
            },
            "querier": { "store": store },
            "ingester": {
                "totalReached": 0,
                "totalChunksMatched": 0,
                "totalBatches": 0,
                "totalLinesSent": 0,
                "store": empty_store,
            },
            "cache": {
                "chunk": cache_json(),
                "index": cache_json(),
                "result": cache_json(),
                "statsResult": cache_json(),
                "volumeResult": cache_json(),
                "seriesResult": cache_json(),
                "labelResult": cache_json(),
                "instantMetricResult": cache_json(),
            },
        })
    }
}

/// A cache section: tovlog has no query caches, so all zero.
fn cache_json() -> Value {
    json!({
        "entriesFound": 0,
        "entriesRequested": 0,
        "entriesStored": 0,
        "bytesReceived": 0,
        "bytesSent": 0,
        "requests": 0,
        "downloadTime": 0,
        "queryLengthServed": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_land_under_loki_keys() {
        let c = StatsCollector::new();
        StatsCollector::add(&c.lines_scanned, 1000);
        StatsCollector::add(&c.bytes_scanned, 50_000);
        StatsCollector::add(&c.post_filter_lines, 10);
        StatsCollector::add(&c.scans, 2);
        let s = c.snapshot(Duration::from_millis(500), 10);
        let j = s.to_json();
        assert_eq!(j["summary"]["totalLinesProcessed"], 1000);
        assert_eq!(j["summary"]["totalBytesProcessed"], 50_000);
        assert_eq!(j["summary"]["linesProcessedPerSecond"], 2000);
        assert_eq!(j["summary"]["bytesProcessedPerSecond"], 100_000);
        assert_eq!(j["summary"]["execTime"], 0.5);
        assert_eq!(j["summary"]["totalEntriesReturned"], 10);
        assert_eq!(j["querier"]["store"]["chunk"]["decompressedLines"], 1000);
        assert_eq!(j["querier"]["store"]["chunk"]["postFilterLines"], 10);
        assert_eq!(j["querier"]["store"]["totalChunksRef"], 2);
        assert_eq!(j["ingester"]["totalReached"], 0);
    }

    #[test]
    fn zero_time_gives_zero_rates() {
        let s = QueryStats::default();
        let j = s.to_json();
        assert_eq!(j["summary"]["bytesProcessedPerSecond"], 0);
        assert_eq!(j["summary"]["execTime"], 0.0);
    }
}
