//! Opening chunk files for DataFusion's Parquet scan with their footers and page indexes
//! parsed once per process, not once per query.
//!
//! DataFusion's `CachedParquetFileReaderFactory` keeps footers in a [`FileMetadataCache`],
//! but its scan first asks for the footer without the page index and loads the index
//! separately on every open, so the cached entry never holds it. [`ChunkReaders`] asks for
//! both at once: the cached entry then has the page index and the scan's own load finds it
//! present. Chunk files are immutable under their path, so a cached footer never goes
//! stale; entries of deleted files age out of the least-recently-used cache.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion_common::error::Result as DfResult;
use datafusion_datasource::PartitionedFile;
use datafusion_datasource_parquet::CachedParquetFileReaderFactory;
use datafusion_datasource_parquet::ParquetFileReaderFactory;
use datafusion_execution::cache::cache_manager::FileMetadataCache;
use datafusion_execution::cache::default_cache::DefaultCache;
use datafusion_physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

/// Opens chunk files through a shared cache of their footers with page indexes.
#[derive(Debug)]
pub struct ChunkReaders {
    inner: CachedParquetFileReaderFactory,
}

impl ChunkReaders {
    /// Readers of files in `store`, caching up to `cache_bytes` of parsed footers.
    pub fn new(store: Arc<dyn ObjectStore>, cache_bytes: usize) -> ChunkReaders {
        let cache: Arc<FileMetadataCache> =
            Arc::new(DefaultCache::new(cache_bytes).with_name("chunk footers"));
        ChunkReaders {
            inner: CachedParquetFileReaderFactory::new(store, cache),
        }
    }
}

impl ParquetFileReaderFactory for ChunkReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn AsyncFileReader + Send>> {
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(WithPageIndex { inner }))
    }
}

/// A reader whose footer always comes with the page index (see the module doc).
struct WithPageIndex {
    inner: Box<dyn AsyncFileReader + Send>,
}

impl AsyncFileReader for WithPageIndex {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.inner.get_metadata(Some(&options)).await }.boxed()
    }
}

/// A chunk file opened through a [`ParquetFileReaderFactory`] (the scans' own, with its
/// cached footers), for code that reads it with parquet's stream reader rather than a plan
/// (parquet implements its reader trait for boxed readers that are not `Send` only).
pub(crate) struct OpenedFile(Box<dyn AsyncFileReader + Send>);

impl OpenedFile {
    /// Open chunk file `path` of `size` bytes.
    pub(crate) fn open(
        readers: &dyn ParquetFileReaderFactory,
        path: &str,
        size: u64,
    ) -> DfResult<OpenedFile> {
        let reader = readers.create_reader(
            0,
            PartitionedFile::new(path, size),
            None,
            &ExecutionPlanMetricsSet::new(),
        )?;
        Ok(OpenedFile(reader))
    }
}

impl AsyncFileReader for OpenedFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use object_store::local::LocalFileSystem;
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStoreExt, PutPayload};
    use parquet::arrow::ArrowWriter;

    fn parquet_bytes() -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..10_000))],
        )
        .unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    }

    #[tokio::test]
    async fn footers_are_parsed_once_and_keep_their_page_index() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let data = parquet_bytes();
        let size = data.len() as u64;
        store
            .put(&ObjectPath::from("t/c1.parquet"), PutPayload::from(data))
            .await
            .unwrap();
        let readers = ChunkReaders::new(store, 1 << 20);
        let metrics = ExecutionPlanMetricsSet::new();
        let open = |partition: usize| {
            readers
                .create_reader(
                    partition,
                    PartitionedFile::new("t/c1.parquet", size),
                    None,
                    &metrics,
                )
                .unwrap()
        };
        // The scan's first request: the footer without the page index.
        let skip = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Skip);
        let mut first = open(0);
        let a = first.get_metadata(Some(&skip)).await.unwrap();
        assert!(a.column_index().is_some(), "page index not loaded");
        assert!(a.offset_index().is_some(), "offset index not loaded");
        // Another query's reader gets the same parsed footer.
        let mut second = open(1);
        let b = second.get_metadata(Some(&skip)).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "footer parsed again");
        // Reads still go to the file.
        let head = second.get_bytes(0..4).await.unwrap();
        assert_eq!(&head[..], b"PAR1");
    }
}
