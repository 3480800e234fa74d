//! The Drain clustering itself: a fixed-depth prefix tree over token sequences whose leaves
//! hold clusters (templates), after Loki's `pkg/pattern/drain`.
//!
//! ```text
//! root ─ token count ─ 1st token ─ 2nd token ─ … (at most depth − 2 levels) ─ leaf: [cluster ids]
//! ```
//!
//! A line is routed by its token count and then its first tokens (a token with a digit goes
//! to the `<_>` child; a node holds at most `max_children` children, the last slot being
//! `<_>`). At the leaf the most similar cluster (share of equal tokens, placeholders not
//! counted; ties to the one with more placeholders) takes the line when the similarity is
//! at least `similarity_threshold`, and every token where they differ becomes `<_>`;
//! otherwise the line starts a new cluster. Clusters beyond `max_clusters` evict the least
//! recently used one, and a miner evicting more than a quarter of what it adds stops
//! learning (Loki's limiter).

use std::collections::HashMap;

use super::tokenize::{Tokens, PLACEHOLDER};

/// Settings of a Drain miner (Loki's defaults in [`DrainConfig::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    /// Depth of the prefix tree, counting the root and the token-count level.
    pub depth: usize,
    /// Least similarity for a line to join a cluster.
    pub similarity_threshold: f64,
    /// Most children of a tree node.
    pub max_children: usize,
    /// Most live clusters; the least recently used is evicted beyond.
    pub max_clusters: usize,
    /// Evicted / added ratio above which the miner stops learning.
    pub max_eviction_ratio: f64,
    /// Lines with fewer tokens are not mined.
    pub min_tokens: usize,
    /// JSON messages with fewer tokens are not mined (see the module docs of `patterns`).
    pub min_json_tokens: usize,
    /// Lines with more tokens are not mined.
    pub max_tokens: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            depth: 30,
            similarity_threshold: 0.3,
            max_children: 15,
            max_clusters: 300,
            max_eviction_ratio: 0.25,
            min_tokens: 4,
            min_json_tokens: 2,
            max_tokens: 80,
        }
    }
}

/// One cluster: its template and how many lines it took.
#[derive(Debug, Clone)]
pub struct Cluster {
    tokens: Vec<Box<str>>,
    separators: Vec<Box<str>>,
    wrapped: bool,
    size: u64,
    last_used: u64,
}

impl Cluster {
    /// Lines the cluster took while learning.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The template's tokens (`<_>` where lines differed).
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|t| &**t)
    }

    /// The pattern text: tokens joined with the separators of the cluster's first line
    /// (JSON messages wrapped in `<_>`), runs of `<_>` collapsed into one.
    pub fn pattern(&self) -> String {
        let mut s = String::new();
        if self.wrapped {
            s.push_str(PLACEHOLDER);
        }
        if let Some(first) = self.separators.first() {
            s.push_str(first);
        }
        for (i, t) in self.tokens.iter().enumerate() {
            s.push_str(t);
            if let Some(sep) = self.separators.get(i + 1) {
                s.push_str(sep);
            }
        }
        if self.wrapped {
            s.push_str(PLACEHOLDER);
        }
        collapse_placeholders(&s)
    }
}

/// Collapse every run of consecutive `<_>` into one (a `|>` pattern may not have two
/// captures in a row).
pub fn collapse_placeholders(s: &str) -> String {
    let double = "<_><_>";
    if !s.contains(double) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(PLACEHOLDER) {
        out.push_str(&rest[..i + PLACEHOLDER.len()]);
        rest = &rest[i + PLACEHOLDER.len()..];
        while let Some(r) = rest.strip_prefix(PLACEHOLDER) {
            rest = r;
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Default)]
struct Node {
    /// Scanned linearly: at most `max_children` entries.
    children: Vec<(Box<str>, usize)>,
    clusters: Vec<usize>,
}

impl Node {
    fn child(&self, key: &str) -> Option<usize> {
        self.children
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, n)| *n)
    }
}

/// A Drain miner for one stream and level.
#[derive(Debug)]
pub struct Drain {
    config: DrainConfig,
    /// First level of the tree: node by token count.
    by_length: HashMap<usize, usize>,
    nodes: Vec<Node>,
    clusters: Vec<Option<Cluster>>,
    live: usize,
    tick: u64,
    added: u64,
    evicted: u64,
    blocked: bool,
}

impl Drain {
    /// A new, empty miner.
    pub fn new(config: DrainConfig) -> Drain {
        Drain {
            // At least 3, as Loki requires: the root, the length level and one token level.
            config: DrainConfig {
                depth: config.depth.max(3),
                ..config
            },
            by_length: HashMap::new(),
            nodes: Vec::new(),
            clusters: Vec::new(),
            live: 0,
            tick: 0,
            added: 0,
            evicted: 0,
            blocked: false,
        }
    }

    /// Whether the miner stopped learning because it evicts too much (a stream whose lines
    /// do not form patterns).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The live clusters.
    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.iter().flatten()
    }

    fn max_node_depth(&self) -> usize {
        self.config.depth - 2
    }

    /// Learn from one tokenized line. Returns the id of the cluster that took it, or `None`
    /// when the line is not mined (token count out of bounds, miner blocked).
    pub fn train(&mut self, line: &str, tokens: &Tokens) -> Option<usize> {
        if self.blocked {
            return None;
        }
        if self.added > 0
            && self.evicted as f64 / self.added as f64 > self.config.max_eviction_ratio
        {
            self.blocked = true;
            return None;
        }
        self.added += 1;
        let n = tokens.tokens.len();
        let min = if tokens.wrapped {
            self.config.min_json_tokens
        } else {
            self.config.min_tokens
        };
        if n < min.max(1) || n > self.config.max_tokens {
            return None;
        }
        match self.tree_search(line, tokens) {
            Some(id) => {
                self.tick += 1;
                let tick = self.tick;
                let cluster = self.clusters.get_mut(id)?.as_mut()?;
                for (i, t) in cluster.tokens.iter_mut().enumerate() {
                    if **t != *tokens.token(line, i) {
                        *t = PLACEHOLDER.into();
                    }
                }
                cluster.size += 1;
                cluster.last_used = tick;
                Some(id)
            }
            None => {
                self.tick += 1;
                let cluster = Cluster {
                    tokens: (0..n).map(|i| tokens.token(line, i).into()).collect(),
                    separators: tokens
                        .separators
                        .iter()
                        .map(|s| s.text(line).into())
                        .collect(),
                    wrapped: tokens.wrapped,
                    size: 1,
                    last_used: self.tick,
                };
                let id = self.clusters.len();
                self.clusters.push(Some(cluster));
                self.live += 1;
                if self.live > self.config.max_clusters {
                    self.evict_oldest(id);
                }
                self.add_to_tree(id);
                Some(id)
            }
        }
    }

    /// Drop the least recently used cluster other than `keep`.
    fn evict_oldest(&mut self, keep: usize) {
        let oldest = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != keep)
            .filter_map(|(i, c)| c.as_ref().map(|c| (c.last_used, i)))
            .min();
        if let Some((_, i)) = oldest {
            self.clusters[i] = None;
            self.live -= 1;
            self.evicted += 1;
        }
    }

    fn is_live(&self, id: usize) -> bool {
        matches!(self.clusters.get(id), Some(Some(_)))
    }

    /// The cluster a line belongs to, if any is similar enough.
    fn tree_search(&mut self, line: &str, tokens: &Tokens) -> Option<usize> {
        let n = tokens.tokens.len();
        let mut node = *self.by_length.get(&n)?;
        for i in 0..n {
            // The root's child (the token count) is depth 1: token `i` is at depth i + 1.
            let depth = i + 1;
            if depth >= self.max_node_depth() || depth == n {
                break;
            }
            let current = &self.nodes[node];
            node = current
                .child(tokens.token(line, i))
                .or_else(|| current.child(PLACEHOLDER))?;
        }
        self.fast_match(node, line, tokens)
    }

    /// The most similar live cluster of leaf `node`, if similar enough. Every candidate
    /// counts as used (Loki reads them through its LRU cache).
    fn fast_match(&mut self, node: usize, line: &str, tokens: &Tokens) -> Option<usize> {
        let mut best: Option<(f64, usize, usize)> = None; // (similarity, params, id)
        let ids = self.nodes[node].clusters.clone();
        for id in ids {
            let Some(Some(cluster)) = self.clusters.get_mut(id) else {
                continue;
            };
            self.tick += 1;
            cluster.last_used = self.tick;
            let (similarity, params) = similarity(cluster, line, tokens);
            let better = match best {
                None => true,
                Some((s, p, _)) => similarity > s || (similarity == s && params > p),
            };
            if better {
                best = Some((similarity, params, id));
            }
        }
        best.filter(|(s, _, _)| *s >= self.config.similarity_threshold)
            .map(|(_, _, id)| id)
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn add_child(&mut self, parent: usize, key: &str) -> usize {
        let child = self.new_node();
        self.nodes[parent].children.push((key.into(), child));
        child
    }

    /// Insert cluster `id` into the tree along its tokens.
    fn add_to_tree(&mut self, id: usize) {
        let Some(Some(cluster)) = self.clusters.get(id) else {
            return;
        };
        let tokens: Vec<Box<str>> = cluster.tokens.clone();
        let n = tokens.len();
        let mut node = match self.by_length.get(&n) {
            Some(&node) => node,
            None => {
                let node = self.new_node();
                self.by_length.insert(n, node);
                node
            }
        };
        let max_depth = self.max_node_depth();
        let max_children = self.config.max_children;
        for (i, token) in tokens.iter().enumerate() {
            let depth = i + 1;
            if depth >= max_depth || depth >= n {
                break;
            }
            node = match self.nodes[node].child(token) {
                Some(child) => child,
                None => {
                    let param = self.nodes[node].child(PLACEHOLDER);
                    let count = self.nodes[node].children.len();
                    if has_numbers(token) {
                        // Tokens with digits share the placeholder path.
                        match param {
                            Some(p) => p,
                            None => self.add_child(node, PLACEHOLDER),
                        }
                    } else {
                        match param {
                            Some(p) if count >= max_children => p,
                            Some(_) => self.add_child(node, token),
                            None if count + 1 < max_children => self.add_child(node, token),
                            None => self.add_child(node, PLACEHOLDER),
                        }
                    }
                }
            };
        }
        // Leaf: forget evicted clusters, then add this one.
        let live: Vec<usize> = self.nodes[node]
            .clusters
            .iter()
            .copied()
            .filter(|&c| self.is_live(c))
            .collect();
        self.nodes[node].clusters = live;
        self.nodes[node].clusters.push(id);
    }
}

/// Share of equal tokens (placeholders in the template not counted as equal) and the
/// number of placeholders.
fn similarity(cluster: &Cluster, line: &str, tokens: &Tokens) -> (f64, usize) {
    let mut equal = 0usize;
    let mut params = 0usize;
    for (i, t) in cluster.tokens.iter().enumerate() {
        if &**t == PLACEHOLDER {
            params += 1;
        } else if **t == *tokens.token(line, i) {
            equal += 1;
        }
    }
    let n = cluster.tokens.len().max(1);
    (equal as f64 / n as f64, params)
}

/// Whether a token has a numeric character (Go's `unicode.IsNumber`).
fn has_numbers(s: &str) -> bool {
    s.chars().any(char::is_numeric)
}

#[cfg(test)]
mod tests {
    use super::super::tokenize::{tokenize, LineFormat};
    use super::*;

    fn learn(config: DrainConfig, format: LineFormat, lines: &[&str]) -> Vec<(String, u64)> {
        let mut d = Drain::new(config);
        let mut t = Tokens::default();
        for l in lines {
            if tokenize(format, l, &mut t) {
                d.train(l, &t);
            }
        }
        let mut out: Vec<(String, u64)> = d.clusters().map(|c| (c.pattern(), c.size())).collect();
        out.sort();
        out
    }

    #[test]
    fn varying_fields_become_placeholders() {
        let lines = [
            "user 1001 logged in from 10.0.0.1",
            "user 1002 logged in from 10.0.0.2",
            "user 1003 logged in from 10.0.0.3",
            "disk /dev/sda1 is 91% full",
            "disk /dev/sdb1 is 97% full",
        ];
        let got = learn(DrainConfig::default(), LineFormat::Unknown, &lines);
        assert_eq!(
            got,
            vec![
                ("disk <_> is <_>% full".to_string(), 2),
                ("user <_> logged in from <_>".to_string(), 3),
            ]
        );
    }

    #[test]
    fn the_tree_routes_by_leading_tokens() {
        // Only the last token differs: same leaf, 4 of 5 tokens equal.
        let got = learn(
            DrainConfig::default(),
            LineFormat::Unknown,
            &["a b c d e", "a b c d x"],
        );
        assert_eq!(got, vec![("a b c d <_>".to_string(), 2)]);
        // A different word before the last token takes another branch.
        let got = learn(
            DrainConfig::default(),
            LineFormat::Unknown,
            &["a b c d e", "a x c d e"],
        );
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn similarity_threshold_decides_at_the_leaf() {
        // Tokens with digits share the `<_>` branch, so these reach the same leaf.
        // 2 equal tokens of 5 (0.4) reach the 0.3 threshold.
        let got = learn(
            DrainConfig::default(),
            LineFormat::Unknown,
            &["1 2 3 d e", "5 6 7 d e"],
        );
        assert_eq!(got, vec![("<_> <_> <_> d e".to_string(), 2)]);
        // 0 of 5 do not.
        let got = learn(
            DrainConfig::default(),
            LineFormat::Unknown,
            &["1 2 3 4 e", "5 6 7 8 x"],
        );
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn short_and_long_lines_are_skipped() {
        let long = "w ".repeat(81);
        let got = learn(
            DrainConfig::default(),
            LineFormat::Unknown,
            &["a b c", long.trim_end()],
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn json_messages_are_wrapped() {
        let lines = [
            r#"{"level":"info","message":"read Game","id":1}"#,
            r#"{"level":"info","message":"read User","id":2}"#,
            r#"{"level":"info","message":"x","id":3}"#,
        ];
        let got = learn(DrainConfig::default(), LineFormat::Json, &lines);
        assert_eq!(got, vec![("<_>read <_>".to_string(), 2)]);
    }

    #[test]
    fn logfmt_time_keys_are_placeholders() {
        let lines = [
            "ts=1 level=info msg=\"request done\" path=/a1 status=200",
            "ts=2 level=info msg=\"request done\" path=/b2 status=200",
        ];
        let got = learn(DrainConfig::default(), LineFormat::Logfmt, &lines);
        assert_eq!(
            got,
            vec![(
                "ts=<_> level=info msg=\"request done\" path=<_> status=200".to_string(),
                2
            )]
        );
    }

    #[test]
    fn clusters_are_bounded_and_eviction_blocks() {
        let config = DrainConfig {
            max_clusters: 2,
            ..DrainConfig::default()
        };
        let mut d = Drain::new(config);
        let mut t = Tokens::default();
        let lines: Vec<String> = (0..20)
            .map(|i| format!("w{i}a w{i}b w{i}c w{i}d"))
            .collect();
        for l in &lines {
            if tokenize(LineFormat::Unknown, l, &mut t) {
                d.train(l, &t);
            }
        }
        assert!(d.clusters().count() <= 2);
        assert!(d.is_blocked());
    }

    #[test]
    fn placeholder_runs_collapse() {
        assert_eq!(collapse_placeholders("a<_><_><_>b<_><_>"), "a<_>b<_>");
        assert_eq!(collapse_placeholders("<_> <_>"), "<_> <_>");
        assert_eq!(collapse_placeholders("plain"), "plain");
    }
}
