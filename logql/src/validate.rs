//! TODO
use crate::{ast::Expr, Error};

/// Check a parsed expression with Loki's semantic rules.
pub fn validate(_expr: &Expr) -> Result<(), Error> {
    Ok(())
}
