//! [`PatternSet`]: many `|>` pattern filters tested against a line in one pass.
//!
//! Loki's pattern test walks a pattern's literals left to right, each found at its first
//! occurrence after the previous one (a literal after a `<_>` must not be found right
//! there: captures are not empty), and at the end requires the rest of the line to be
//! empty exactly when the pattern ends with a literal. The walk's state after a prefix of
//! literals is just an offset, so patterns sharing leading literals share that work: the
//! set is a trie of literal sequences, and a line descends it once. Mined patterns of a
//! stream share most of their text, so this costs a fraction of testing each filter.
//!
//! ```text
//!  "<_> - - [<_>] \"GET <_> HTTP/1.1\" <_>"     root(capture first)
//!  "<_> - - [<_>] \"POST <_> HTTP/1.1\" <_>"      └ " - - [" ─ "] \"" ─┬ "GET " ─ " HTTP/1.1\" " ●
//!                                                                     └ "POST " ─ " HTTP/1.1\" " ●
//! ```

use memchr::memmem;

use super::tokenize::PLACEHOLDER;

#[derive(Debug)]
struct Node {
    /// Next literal and the node after it.
    children: Vec<(memmem::Finder<'static>, usize)>,
    /// Patterns whose last literal leads here, and whether they end with a capture.
    ends: Vec<(usize, bool)>,
}

impl Node {
    fn new() -> Node {
        Node {
            children: Vec::new(),
            ends: Vec::new(),
        }
    }
}

/// A set of `|>` patterns (only `<_>` captures, none consecutive, at least one literal)
/// matched together, with the semantics of the `|>` line filter.
#[derive(Debug)]
pub struct PatternSet {
    nodes: Vec<Node>,
    /// Root of the patterns starting with a capture (node 0) and of those starting with a
    /// literal (node 1).
    len: usize,
}

const CAPTURE_ROOT: usize = 0;
const LITERAL_ROOT: usize = 1;

impl PatternSet {
    /// The set of `patterns`; bit `i` of a match is `patterns[i]`. A pattern without any
    /// literal never matches.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> PatternSet {
        let mut set = PatternSet {
            nodes: vec![Node::new(), Node::new()],
            len: patterns.len(),
        };
        for (i, p) in patterns.iter().enumerate() {
            set.insert(i, p.as_ref());
        }
        set
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set has no pattern.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn insert(&mut self, index: usize, pattern: &str) {
        let parts: Vec<&str> = pattern.split(PLACEHOLDER).collect();
        let starts_with_capture = parts.first().is_some_and(|p| p.is_empty());
        let ends_with_capture = parts.len() > 1 && parts.last().is_some_and(|p| p.is_empty());
        let literals: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        if literals.is_empty() {
            return;
        }
        let mut node = if starts_with_capture {
            CAPTURE_ROOT
        } else {
            LITERAL_ROOT
        };
        for lit in literals {
            let existing = self.nodes[node]
                .children
                .iter()
                .find(|(f, _)| f.needle() == lit.as_bytes())
                .map(|(_, n)| *n);
            node = match existing {
                Some(n) => n,
                None => {
                    self.nodes.push(Node::new());
                    let n = self.nodes.len() - 1;
                    let finder = memmem::Finder::new(lit.as_bytes()).into_owned();
                    self.nodes[node].children.push((finder, n));
                    n
                }
            };
        }
        self.nodes[node].ends.push((index, ends_with_capture));
    }

    /// Call `hit` with the index of every pattern matching `line`.
    pub fn matches(&self, line: &str, mut hit: impl FnMut(usize)) {
        let b = line.as_bytes();
        if b.is_empty() {
            // An empty line only matches an empty pattern, which has no literal.
            return;
        }
        self.visit(CAPTURE_ROOT, b, 0, false, &mut hit);
        self.visit(LITERAL_ROOT, b, 0, true, &mut hit);
    }

    fn visit(
        &self,
        node: usize,
        b: &[u8],
        off: usize,
        may_touch: bool,
        hit: &mut impl FnMut(usize),
    ) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        for &(pattern, ends_with_capture) in &n.ends {
            if ends_with_capture == (off != b.len()) {
                hit(pattern);
            }
        }
        for (finder, child) in &n.children {
            let Some(rest) = b.get(off..) else { continue };
            match finder.find(rest) {
                Some(0) if !may_touch => {}
                Some(j) => self.visit(*child, b, off + j + finder.needle().len(), false, hit),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::filter;
    use proptest::prelude::*;

    fn hits(set: &PatternSet, line: &str) -> Vec<usize> {
        let mut out = Vec::new();
        set.matches(line, |i| out.push(i));
        out.sort_unstable();
        out
    }

    #[test]
    fn shared_prefixes_match_like_single_filters() {
        let patterns = [
            r#"<_> - - [<_>] "GET <_> HTTP/1.1" <_>"#,
            r#"<_> - - [<_>] "POST <_> HTTP/1.1" <_>"#,
            r#"<_> - - [<_>] "GET <_>"#,
            "foo <_>",
            "<_> bar",
            "<_>bar<_>",
        ];
        let set = PatternSet::new(&patterns);
        let lines = [
            r#"1.2.3.4 - - [x] "GET /a HTTP/1.1" 200"#,
            r#"1.2.3.4 - - [x] "POST /a HTTP/1.1" 200"#,
            "foo bar baz",
            "x foo bar",
            " bar ",
            "",
        ];
        for line in lines {
            let want: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| filter(p).is_some_and(|f| f.matches(line)))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(hits(&set, line), want, "{line:?}");
        }
        assert_eq!(hits(&set, lines[1]), vec![1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The set agrees with the `|>` filter of each pattern on every line.
        #[test]
        fn set_agrees_with_the_line_filter(
            pats in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(vec!["a", "b", " ", "ab", "<_>"]), 1..6),
                1..6),
            line in proptest::collection::vec(proptest::sample::select(vec!['a', 'b', ' ']), 0..16),
        ) {
            let patterns: Vec<String> = pats
                .iter()
                .map(|p| crate::patterns::collapse_placeholders(&p.concat()))
                .collect();
            let line: String = line.into_iter().collect();
            let set = PatternSet::new(&patterns);
            let got = hits(&set, &line);
            let want: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    // `filter` refuses patterns without a letter; test those with the
                    // chain directly.
                    let chain = filter(p).or_else(|| {
                        crate::pipeline::LineFilterChain::new(&[crate::ast::LineFilter {
                            op: crate::ast::LineFilterOp::Pattern,
                            values: vec![crate::ast::LineFilterValue::Str((*p).clone())],
                        }])
                        .ok()
                    });
                    !p.replace(PLACEHOLDER, "").is_empty()
                        && chain.is_some_and(|c| c.matches(&line))
                })
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, want, "patterns {:?} line {:?}", patterns, line);
        }
    }
}
