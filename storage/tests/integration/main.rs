//! tovlog-storage's integration tests: one binary (each test binary links DataFusion, Parquet
//! and tantivy again, which costs minutes of a 2-core CI build), one module per subject.

mod common;
mod erase;
mod recovery_and_s3;
mod storage;
