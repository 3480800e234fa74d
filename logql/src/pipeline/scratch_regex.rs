//! [`ScratchRegex`]: a regex searched with a cache each thread keeps, for the regexes a
//! pipeline runs on every entry (`|~`, `| regexp`, `=~` label filters).
//!
//! `regex::Regex` takes a search cache from a pool on every call; every thread but the
//! first to use the regex goes through a lock there, and queries run on many threads.
//! That was a sixth of the CPU of a `| regexp` query. The engine under `regex::Regex`
//! (`regex_automata::meta::Regex`) lets the caller own the cache instead: this module keeps
//! one per regex per thread. No crate offers a per-thread cache for it, hence this file.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;
use regex_automata::meta;
use regex_automata::util::captures::Captures;
use regex_automata::Input;

use crate::Error;

/// Regexes whose scratch a thread keeps, at most (the oldest is dropped past it).
const KEPT: usize = 32;

/// Source of [`ScratchRegex::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Search cache and capture slots per regex id.
    static SCRATCH: RefCell<Vec<(u64, meta::Cache, Captures)>> = const { RefCell::new(Vec::new()) };
}

/// A compiled regex; matches exactly as the `regex::Regex` it was built from.
#[derive(Debug, Clone)]
pub(crate) struct ScratchRegex {
    re: meta::Regex,
    /// Tells this regex's scratch apart in [`SCRATCH`] (never reused; clones share it,
    /// which is right: they are the same regex).
    id: u64,
}

impl ScratchRegex {
    /// The engine of `re`, built as `regex::Regex::new` builds it (same syntax options, a
    /// 10 MiB limit on the compiled program, 2 MiB of lazy DFA cache). `re` validated the
    /// pattern, so this fails only if the engine disagrees (with Loki's wording).
    pub(crate) fn new(re: &Regex) -> Result<ScratchRegex, Error> {
        let config = meta::Config::new()
            .nfa_size_limit(Some(10 * (1 << 20)))
            .hybrid_cache_capacity(2 * (1 << 20));
        let re = meta::Builder::new()
            .configure(config)
            .build(re.as_str())
            .map_err(|e| Error::Validate(format!("error parsing regexp: {e}")))?;
        Ok(ScratchRegex {
            re,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Whether the regex matches somewhere in `hay`.
    pub(crate) fn is_match(&self, hay: &str) -> bool {
        self.with_scratch(|cache, _| self.re.is_match_with(cache, &Input::new(hay)))
    }

    /// The span of every group of the leftmost-first match in `hay` (group 0 is the whole
    /// match; a group that took no part is `(0, 0)`, as Go reports it: empty) into `out`;
    /// `false` and `out` empty when there is no match.
    pub(crate) fn captures_into(&self, hay: &str, out: &mut Vec<(usize, usize)>) -> bool {
        out.clear();
        self.with_scratch(|cache, caps| {
            self.re.search_captures_with(cache, &Input::new(hay), caps);
            if !caps.is_match() {
                return false;
            }
            out.extend(
                (0..caps.group_len())
                    .map(|i| caps.get_group(i).map_or((0, 0), |s| (s.start, s.end))),
            );
            true
        })
    }

    /// Run `f` with this thread's cache and capture slots for this regex. A call nested in
    /// another's `f` (a regex run from inside a regex's search cannot happen today, but
    /// would otherwise panic) gets fresh ones.
    fn with_scratch<R>(&self, f: impl FnOnce(&mut meta::Cache, &mut Captures) -> R) -> R {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut kept) => {
                let at = match kept.iter().position(|(id, _, _)| *id == self.id) {
                    Some(at) => at,
                    None => {
                        if kept.len() >= KEPT {
                            kept.remove(0);
                        }
                        kept.push((self.id, self.re.create_cache(), self.re.create_captures()));
                        kept.len() - 1
                    }
                };
                let (_, cache, caps) = &mut kept[at];
                f(cache, caps)
            }
            Err(_) => f(&mut self.re.create_cache(), &mut self.re.create_captures()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(src: &str) -> (Regex, ScratchRegex) {
        let re = Regex::new(src).expect("valid");
        let scratch = ScratchRegex::new(&re).expect("builds");
        (re, scratch)
    }

    #[test]
    fn matches_and_captures_as_regex_does() {
        let hays = ["", "abc", "GET /x 200", "x\ny", "é GET", "POST  /a b"];
        for src in [
            r"(?P<m>[A-Z]+) (?P<p>\S+)",
            r"^(a)?(b)?c",
            r"(?s)x.y",
            r"x.y",
            r"\w+",
            r"é|(?i)get",
            "",
        ] {
            let (re, scratch) = both(src);
            let mut spans = Vec::new();
            for hay in hays {
                assert_eq!(scratch.is_match(hay), re.is_match(hay), "{src} on {hay:?}");
                let want: Option<Vec<(usize, usize)>> = re.captures(hay).map(|c| {
                    c.iter()
                        .map(|m| m.map_or((0, 0), |m| (m.start(), m.end())))
                        .collect()
                });
                let got = scratch
                    .captures_into(hay, &mut spans)
                    .then(|| spans.clone());
                assert_eq!(got, want, "{src} on {hay:?}");
            }
        }
    }

    /// Regexes past what a thread keeps take turns without mixing up their scratch, and
    /// a nested call gets its own.
    #[test]
    fn many_regexes_and_nested_calls() {
        let all: Vec<ScratchRegex> = (0..KEPT + 5)
            .map(|n| both(&format!("{}(x{n}y)", "(a?)".repeat(n % 7))).1)
            .collect();
        let mut spans = Vec::new();
        for round in 0..3 {
            for (n, re) in all.iter().enumerate().rev().skip(round) {
                assert!(re.captures_into(&format!("-- x{n}y --"), &mut spans));
                assert_eq!(spans.last(), Some(&(3, 5 + n.to_string().len())), "{n}");
            }
        }
        let (outer, inner) = (&all[0], &all[1]);
        let nested = outer.with_scratch(|_, _| inner.is_match("x1y") && outer.is_match("x0y"));
        assert!(nested);
    }
}
