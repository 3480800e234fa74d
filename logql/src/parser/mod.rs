//! TODO: the nom parser.
use crate::{ast::Expr, Error};

/// Parse a query into an AST (no semantic validation).
pub fn parse_expr(_query: &str) -> Result<Expr, Error> {
    Err(Error::Parse {
        line: 1,
        col: 1,
        msg: "syntax error: parser not implemented".into(),
    })
}
