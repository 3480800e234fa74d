//! The Arrow schema of the logs table, defined once. Head snapshots, Parquet chunks and
//! the DataFusion table provider all use exactly this schema.
//!
//! | column      | type                         | meaning                                  |
//! |-------------|------------------------------|------------------------------------------|
//! | `stream_id` | UInt64, not null             | [`crate::StreamId`] (label fingerprint)  |
//! | `ts`        | Int64, not null              | entry timestamp, ns since the epoch      |
//! | `line`      | Utf8, not null               | the log line                             |
//! | `metadata`  | Map<Utf8, Utf8>, nullable    | structured metadata (`keys`, `values`)   |
//! | `line_flags`| UInt8, nullable              | the caller's [`LineClassifier`] of `line` |
//!
//! `line_flags` is written by compaction when the storage was opened with a classifier
//! (the query layer's facts about a line's shape, e.g. "a flat JSON object", that let it
//! read the line faster); null in the head, in flushed files, and in files of versions
//! without the column (their scans read it as null).

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// Column name of the stream id.
pub const STREAM_ID: &str = "stream_id";
/// Column name of the timestamp (ns).
pub const TS: &str = "ts";
/// Column name of the log line.
pub const LINE: &str = "line";
/// Column name of the structured metadata map.
pub const METADATA: &str = "metadata";
/// Column name of the line's flags (see the module doc).
pub const LINE_FLAGS: &str = "line_flags";

/// A `line_flags` column of `rows` nulls (nothing known): what the head and flushed files
/// hold, and what files written before the column existed are read with.
pub fn unknown_line_flags(rows: usize) -> arrow::array::ArrayRef {
    arrow::array::new_null_array(&DataType::UInt8, rows)
}

/// Computes `line_flags` of a line during compaction. Storage does not interpret the
/// bits; the function must be pure (same line, same flags).
pub type LineClassifier = Arc<dyn Fn(&str) -> u8 + Send + Sync>;

/// Reports the fields of a row for the block statistics of compacted files
/// ([`crate::textindex`]): given the line and its structured metadata, calls `out(name,
/// value)` for every field the caller's parser gives the row, with the value when it is a
/// number. Storage does not interpret lines; the function must be pure.
pub type FieldExtractor =
    Arc<dyn Fn(&str, &[(&str, &str)], &mut dyn FnMut(&str, Option<f64>)) + Send + Sync>;

/// The map entry struct type of the `metadata` column.
pub fn metadata_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    ))
}

/// [`logs_schema`] with `line` as Utf8View: what a scan built with
/// [`crate::scan::LogsTable::with_line_views`] returns.
pub fn logs_schema_line_views() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let base = logs_schema();
            let fields: Vec<Field> = base
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    LINE => Field::new(LINE, DataType::Utf8View, f.is_nullable()),
                    _ => f.as_ref().clone(),
                })
                .collect();
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// `batch` with each column cast to the type of the same-position field of `schema`
/// (same columns in the same order; columns of the right type are shared, not copied).
pub fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// The logs table schema.
pub fn logs_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(STREAM_ID, DataType::UInt64, false),
                Field::new(TS, DataType::Int64, false),
                Field::new(LINE, DataType::Utf8, false),
                Field::new(
                    METADATA,
                    DataType::Map(metadata_entries_field(), false),
                    true,
                ),
                Field::new(LINE_FLAGS, DataType::UInt8, true),
            ]))
        })
        .clone()
}
