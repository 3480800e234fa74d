//! TODO: owned by the LogQL parser work.
use crate::ast::Expr;

/// Canonical text of a query.
pub fn format(expr: &Expr) -> String {
    format!("{expr:?}")
}
