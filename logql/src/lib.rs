//! LogQL for tovlog: lexer and parser (nom), typed AST, validation with Loki's errors,
//! canonical formatter, the Go `text/template` engine used by `line_format`/`label_format`,
//! and the per-entry log pipeline (line filters, parsers, label filters, formatters).
//!
//! This crate does no I/O and knows nothing of HTTP or storage.
//!
//! ```
//! let expr = tovlog_logql::parse(r#"sum by (host) (count_over_time({job="nginx"} |= "GET" [5m]))"#).unwrap();
//! assert!(expr.is_sample());
//! ```
#![warn(missing_docs)]

pub mod ast;
pub mod error;
pub mod eval;
pub mod format;
pub mod lexer;
pub mod parser;
pub mod patterns;
pub mod pipeline;
pub mod template;
pub mod validate;

pub use error::Error;

/// Parse and validate a LogQL query, as Loki does before running it.
pub fn parse(query: &str) -> Result<ast::Expr, Error> {
    let expr = parser::parse_expr(query)?;
    validate::validate(&expr)?;
    Ok(expr)
}
