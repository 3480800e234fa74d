//! Log pattern mining for `/loki/api/v1/patterns`: Loki's Drain variant (tokenizers in
//! [`tokenize`], clustering in [`drain`]) and the rules that make the mined patterns usable
//! as `|>` line filters ([`filter`], [`select_disjoint`], [`PatternSet`] to test many at once).
//!
//! Drain (He et al., "Drain: An Online Log Parsing Approach with Fixed Depth Tree", ICWS
//! 2017) groups lines into templates where varying tokens become `<_>`. Loki's pattern
//! ingester runs a variant of it with its own tokenizers, limits and placeholder rules;
//! this module follows that behaviour. It is written here because no maintained Rust crate
//! implements Loki's variant (the `drain`-style crates on crates.io follow the original
//! paper or Drain3, with different tokenization, masking and output).
//!
//! Where tovlog departs from Loki, on purpose:
//! * patterns are joined from slices of the lines themselves (see [`tokenize`]), so a
//!   pattern is a valid `|>` filter of the lines it came from;
//! * a JSON line's message is mined from 2 tokens on (Loki needs 4 like any line, which
//!   leaves most JSON logs with short messages without a pattern): the `<_>` around the
//!   message stands for the rest of the line;
//! * a pattern whose literal text has no letter or digit (`<_> <_>`) is not reported: as a
//!   filter it matches nearly everything.

pub mod drain;
mod set;
pub mod tokenize;

pub use drain::{collapse_placeholders, Cluster, Drain, DrainConfig};
pub use set::PatternSet;
pub use tokenize::{tokenize, LineFormat, Tokens, MAX_LINE_LENGTH, PLACEHOLDER};

use crate::ast::{LineFilter, LineFilterOp, LineFilterValue};
use crate::pipeline::LineFilterChain;

/// Most patterns one answer tests every line against (the largest learned clusters);
/// match sets are `u128` bit masks.
pub const MAX_CANDIDATES: usize = 128;

/// The `|> "pattern"` filter of a pattern, or `None` when the pattern is not a valid
/// pattern filter (e.g. a line's literal `<name>` reads as a named capture) or carries no
/// letter or digit outside its placeholders.
pub fn filter(pattern: &str) -> Option<LineFilterChain> {
    let literal = pattern.replace(PLACEHOLDER, "");
    if !literal.chars().any(char::is_alphanumeric) {
        return None;
    }
    LineFilterChain::new(&[LineFilter {
        op: LineFilterOp::Pattern,
        values: vec![LineFilterValue::Str(pattern.to_owned())],
    }])
    .ok()
}

/// Choose patterns whose filters never match the same line, so that each line counts for
/// at most one reported pattern and each reported count is exactly what the pattern's
/// `|>` filter matches.
///
/// `sets` gives, for each distinct set of patterns matching a line (bit `i` = candidate
/// `i`), how many lines had exactly that set. Patterns are taken by decreasing number of
/// lines matched (ties: lower index first), each only when none of its lines is matched by
/// a pattern already taken: a general pattern is kept over the narrower ones it contains.
/// Returns the mask of the chosen patterns.
pub fn select_disjoint(candidates: usize, sets: &[(u128, u64)]) -> u128 {
    let n = candidates.min(MAX_CANDIDATES);
    let mut totals = vec![0u64; n];
    for &(mask, count) in sets {
        for (i, total) in totals.iter_mut().enumerate() {
            if mask & (1u128 << i) != 0 {
                *total += count;
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&i| totals[i] > 0).collect();
    order.sort_by(|&a, &b| totals[b].cmp(&totals[a]).then(a.cmp(&b)));
    let mut chosen = 0u128;
    for i in order {
        let bit = 1u128 << i;
        let clash = sets
            .iter()
            .any(|&(mask, count)| count > 0 && mask & bit != 0 && mask & chosen != 0);
        if !clash {
            chosen |= bit;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_loki_pattern_semantics() {
        let f = filter(r#"<_> - - [<_>] "GET <_> HTTP/1.1" <_>"#).unwrap();
        assert!(f.matches(r#"1.2.3.4 - - [x] "GET /a HTTP/1.1" 200 5"#));
        assert!(!f.matches(r#"1.2.3.4 - - [x] "POST /a HTTP/1.1" 200 5"#));
        assert!(filter("<_> <_>").is_none());
        assert!(filter("<_> <html> <_>").is_none());
        assert!(filter("<_>read <_>").is_some());
    }

    #[test]
    fn disjoint_selection_keeps_the_general_pattern() {
        // Pattern 0 matches 100 lines, 30 of which pattern 1 matches too; pattern 2 is
        // apart.
        let sets = [(0b001, 70), (0b011, 30), (0b100, 50)];
        assert_eq!(select_disjoint(3, &sets), 0b101);
        // Partial overlap: the larger of the two wins, its lines stay covered.
        let sets = [(0b01, 10), (0b11, 5), (0b10, 40)];
        assert_eq!(select_disjoint(2, &sets), 0b10);
        // No lines, nothing chosen.
        assert_eq!(select_disjoint(2, &[]), 0);
    }
}
