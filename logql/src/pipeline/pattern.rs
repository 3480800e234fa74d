//! Loki's pattern language (`<name>` captures, `<_>` anonymous captures, everything else
//! literal), used by the `pattern` parser stage and the `|>`/`!>` line filters.

use memchr::memmem;

#[derive(Debug, Clone)]
enum Node {
    /// A capture; `None` for `<_>`.
    Capture(Option<String>),
    /// Literal text, with how to find it.
    Literal(Literal),
}

/// Needles up to this length are found by their least common byte (see [`Literal`]).
const SHORT_LITERAL: usize = 8;

/// A literal of a pattern.
///
/// Pattern literals are mostly a few bytes (`" "`, `"] \""`, `" - - ["`), searched for
/// several times in every line, each found within a few dozen bytes. memmem's SIMD
/// searcher pays a set-up per call that costs more than such a search (a third of the
/// `pattern` stage on access-log lines), so a short literal is found by searching for its
/// least common byte (`swar::find_byte`) and checked in place; longer ones keep memmem.
#[derive(Debug, Clone)]
struct Literal {
    needle: Box<[u8]>,
    /// Index in `needle` of the byte searched for.
    rare: usize,
    /// memmem's searcher for literals longer than [`SHORT_LITERAL`].
    long: Option<Box<memmem::Finder<'static>>>,
}

/// How common a byte is in log text, lower is rarer (a coarse ranking: the choice only
/// has to avoid spaces and letters).
fn commonness(b: u8) -> u8 {
    match b {
        b' ' => 9,
        b'a'..=b'z' | b'0'..=b'9' => 8,
        b'A'..=b'Z' => 6,
        b'-' | b'.' | b'/' | b':' | b'_' | b',' | b'=' => 5,
        b'"' => 4,
        _ => 2,
    }
}

impl Literal {
    fn new(needle: &[u8]) -> Literal {
        let rare = (0..needle.len())
            .min_by_key(|&i| commonness(needle[i]))
            .unwrap_or(0);
        let long = (needle.len() > SHORT_LITERAL)
            .then(|| Box::new(memmem::Finder::new(needle).into_owned()));
        Literal {
            needle: needle.into(),
            rare,
            long,
        }
    }

    fn needle(&self) -> &[u8] {
        &self.needle
    }

    /// Offset of the first occurrence of the literal in `hay`.
    fn find(&self, hay: &[u8]) -> Option<usize> {
        if let Some(f) = &self.long {
            return f.find(hay);
        }
        let (n, k) = (self.needle.len(), self.rare);
        let byte = *self.needle.get(k)?;
        // An occurrence starting at `s` has `byte` at `s + k`: candidates in increasing
        // order of `s`, so the first that matches is the first occurrence.
        let mut from = k;
        while from < hay.len() {
            let p = from + super::swar::find_byte(&hay[from..], byte)?;
            let s = p - k;
            // A byte loop: slice equality calls `memcmp`, which costs more than these
            // few bytes.
            if let Some(at) = hay.get(s..s + n) {
                if at.iter().zip(self.needle.iter()).all(|(a, b)| a == b) {
                    return Some(s);
                }
            }
            from = p + 1;
        }
        None
    }
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    nodes: Vec<Node>,
    names: Vec<String>,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl Pattern {
    fn lex(src: &str) -> Vec<Node> {
        let b = src.as_bytes();
        let mut nodes = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'<' && i + 1 < b.len() && is_ident_start(b[i + 1]) {
                let mut j = i + 2;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                if j < b.len() && b[j] == b'>' {
                    if !lit.is_empty() {
                        nodes.push(Node::Literal(Literal::new(&lit)));
                        lit.clear();
                    }
                    let name = &src[i + 1..j];
                    nodes.push(Node::Capture(if name == "_" {
                        None
                    } else {
                        Some(name.to_string())
                    }));
                    i = j + 1;
                    continue;
                }
            }
            lit.push(b[i]);
            i += 1;
        }
        if !lit.is_empty() {
            nodes.push(Node::Literal(Literal::new(&lit)));
        }
        nodes
    }

    fn check_consecutive(nodes: &[Node]) -> Result<(), String> {
        for w in nodes.windows(2) {
            if let (Node::Capture(a), Node::Capture(b)) = (&w[0], &w[1]) {
                let show = |c: &Option<String>| format!("<{}>", c.as_deref().unwrap_or("_"));
                return Err(format!(
                    "found consecutive capture '{}{}': invalid expression",
                    show(a),
                    show(b)
                ));
            }
        }
        Ok(())
    }

    /// A pattern for the `pattern` parser: at least one named capture, no consecutive
    /// captures, unique names.
    pub(crate) fn for_parser(src: &str) -> Result<Pattern, String> {
        let nodes = Self::lex(src);
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Capture(Some(name)) => Some(name.clone()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return Err("at least one capture is required".into());
        }
        Self::check_consecutive(&nodes)?;
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("duplicate capture name ({n}): invalid expression"));
            }
        }
        Ok(Pattern { nodes, names })
    }

    /// A pattern for `|>`/`!>`: only `<_>` captures, none consecutive.
    pub(crate) fn for_filter(src: &str) -> Result<Pattern, String> {
        let nodes = Self::lex(src);
        Self::check_consecutive(&nodes)?;
        for n in &nodes {
            if let Node::Capture(Some(name)) = n {
                return Err(format!("named captures are not allowed: found '<{name}>'"));
            }
        }
        Ok(Pattern {
            nodes,
            names: Vec::new(),
        })
    }

    /// The named captures, in order.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Extract the named captures of `line` (Loki's `Matches`). A leading literal must
    /// start the line; a literal that cannot be found makes the current capture take the
    /// rest of the line. Writes the byte ranges of the captured values in name order
    /// (possibly fewer) into `out`, a buffer the caller reuses.
    pub(crate) fn captures(&self, line: &str, out: &mut Vec<(usize, usize)>) {
        out.clear();
        // `input` is always a suffix of `line`: its start offset is the length difference.
        let at = |s: &str| line.len() - s.len();
        if line.is_empty() || self.nodes.is_empty() {
            return;
        }
        let mut input = line;
        let mut nodes = &self.nodes[..];
        if let Node::Literal(f) = &nodes[0] {
            if !input.as_bytes().starts_with(f.needle()) {
                return;
            }
            input = &input[f.needle().len()..];
            nodes = &nodes[1..];
        }
        if nodes.is_empty() {
            return;
        }
        while !nodes.is_empty() {
            let Node::Capture(name) = &nodes[0] else {
                // Lexing alternates captures and literals after the first node.
                return;
            };
            if nodes.len() == 1 {
                if name.is_some() {
                    out.push((at(input), line.len()));
                }
                return;
            }
            let Node::Literal(f) = &nodes[1] else {
                return;
            };
            nodes = &nodes[2..];
            match f.find(input.as_bytes()) {
                None => {
                    if name.is_some() {
                        out.push((at(input), line.len()));
                    }
                    return;
                }
                Some(i) => {
                    // Literal boundaries fall on char boundaries: the needle is valid UTF-8.
                    let end = i + f.needle().len();
                    if name.is_some() {
                        out.push((at(input), at(input) + i));
                    }
                    input = &input[end..];
                }
            }
        }
    }

    /// Loki's `Test` (the `|>` filter): literals found in order with non-empty gaps; a
    /// trailing literal must end the line, a trailing capture must capture something.
    pub(crate) fn test(&self, line: &[u8]) -> bool {
        if line.is_empty() || self.nodes.is_empty() {
            return line.is_empty() && self.nodes.is_empty();
        }
        let mut off = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            let Node::Literal(f) = n else { continue };
            let Some(j) = f.find(&line[off..]) else {
                return false;
            };
            if i != 0 && j == 0 {
                return false;
            }
            off += j + f.needle().len();
        }
        let ends_with_capture = matches!(self.nodes.last(), Some(Node::Capture(_)));
        ends_with_capture == (off != line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Short literals found by their rare byte agree with memmem on every input, long
        /// ones go to memmem itself (the alphabet makes partial matches frequent).
        #[test]
        fn literal_finds_what_memmem_finds(
            needle in proptest::collection::vec(proptest::sample::select(b" -[]\"a".to_vec()), 1..12),
            hay in proptest::collection::vec(proptest::sample::select(b" -[]\"ab".to_vec()), 0..80),
        ) {
            prop_assert_eq!(Literal::new(&needle).find(&hay), memmem::find(&hay, &needle));
        }
    }

    #[test]
    fn literal_rare_byte_choice() {
        assert_eq!(Literal::new(b" - - [").rare, 5);
        assert_eq!(Literal::new(b"\" ").rare, 0);
        assert_eq!(Literal::new(b" ").rare, 0);
        assert_eq!(Literal::new(b"level=").rare, 5);
        let l = Literal::new(b"a needle");
        assert!(l.long.is_none());
        assert_eq!(l.find(b"in a needle"), Some(3));
        assert!(Literal::new(b"a longer needle").long.is_some());
    }

    #[test]
    fn missing_literal_makes_capture_take_the_rest() -> Result<(), String> {
        let p = Pattern::for_parser("<a> x <b> y")?;
        let mut out = Vec::new();
        let line = "1 x 2 z";
        p.captures(line, &mut out);
        let got: Vec<&str> = out.iter().map(|&(a, b)| &line[a..b]).collect();
        assert_eq!(got, vec!["1", "2 z"]);
        assert_eq!(p.names(), &["a".to_string(), "b".to_string()]);
        Ok(())
    }

    #[test]
    fn leading_literal_must_start_line() -> Result<(), String> {
        let p = Pattern::for_parser("[<_>] <level> [<c>]")?;
        let mut out = Vec::new();
        let line = "[2024] INFO [main] rest";
        p.captures(line, &mut out);
        let got: Vec<&str> = out.iter().map(|&(a, b)| &line[a..b]).collect();
        assert_eq!(got, vec!["INFO", "main"]);
        p.captures("x[2024] INFO [main]", &mut out);
        assert!(out.is_empty());
        Ok(())
    }

    #[test]
    fn parser_validation() {
        assert!(Pattern::for_parser("<a><b>").is_err());
        assert!(Pattern::for_parser("<_> foo").is_err());
        assert!(Pattern::for_parser("<a> <a>").is_err());
        assert!(Pattern::for_filter("<a> foo").is_err());
    }

    #[test]
    fn filter_test_semantics() -> Result<(), String> {
        let p = Pattern::for_filter("<_> Rolled new log segment <_>")?;
        assert!(p.test(b"[x] Rolled new log segment at 5"));
        assert!(!p.test(b"Rolled new log segment at 5"));
        assert!(!p.test(b"[x] Rolled new log segment "));
        let q = Pattern::for_filter("<_> bar")?;
        assert!(!q.test(b"foo bar baz"));
        assert!(q.test(b"foo bar"));
        let e = Pattern::for_filter("")?;
        assert!(e.test(b""));
        assert!(!e.test(b"x"));
        Ok(())
    }
}
