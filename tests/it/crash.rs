//! Crash safety (enabled with the query engine).
