//! TODO: the per-entry log pipeline.
