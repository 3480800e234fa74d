//! LogQL errors. `Display` reproduces Loki's wording, because clients show it verbatim.

/// A LogQL error: always the user's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Syntax error with a 1-based position: `parse error at line 1, col 15: syntax error: unexpected …`.
    #[error("parse error at line {line}, col {col}: {msg}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// Message after the position.
        msg: String,
    },
    /// A stage that failed to build: `parse error : stage 'regexp' : …`? Loki words vary; `msg` is complete.
    #[error("{0}")]
    Validate(String),
    /// A template that does not parse or uses an unknown function.
    #[error("{0}")]
    Template(String),
}
