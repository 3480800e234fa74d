//! Redaction at ingest: per-tenant rules that replace secrets in log lines and in structured
//! metadata values with `<redacted:KIND>` after validation and before the entries reach the WAL,
//! so a password or token a service logged by mistake is never written to disk, flushed into a
//! chunk, compacted or shipped to object storage. Stream labels are left alone (docs/redaction.md).
//!
//! ```text
//!  text ──► fold ASCII case ──► trigger words (Aho-Corasick, SIMD prefilter) ──► woken patterns only
//!       └─► card scan (skips 13 bytes at a time to digit runs; IIN prefix, Luhn)
//!       └─► custom regexes (always; the regex crate's own literal prefilters)
//! ```
//!
//! A text with no trigger word and no long digit run costs the two scans and no allocation
//! (the folded copy goes to a buffer reused for the whole push); only a text a rule actually
//! changes is copied.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, Input, MatchKind, Span};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use tovlog_storage::PushStream;

/// A built-in kind of secret (its name is the `KIND` of `<redacted:KIND>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Values of password-like keys (`password=`, `"token": "…"`, `client_secret: …`) and the
    /// password of a URL's user info (`postgres://user:PASSWORD@host`).
    Password,
    /// `Authorization: Bearer|Basic|Token …` credentials and bare `Bearer <token>`.
    Bearer,
    /// Well-known API key shapes (Stripe, GitHub, Slack, Google, GitLab, OpenAI, Anthropic) and
    /// long key material after `api_key=`.
    ApiKey,
    /// AWS access key ids (`AKIA…`, `ASIA…`) and `aws_secret_access_key` values.
    AwsKey,
    /// Payment card numbers: 13–19 digits (spaces or dashes allowed) with a card network's
    /// prefix that pass the Luhn check.
    CreditCard,
}

impl Builtin {
    /// Every built-in kind, in the order they are applied.
    pub const ALL: [Builtin; 5] = [
        Builtin::AwsKey,
        Builtin::ApiKey,
        Builtin::Bearer,
        Builtin::CreditCard,
        Builtin::Password,
    ];

    /// The kind's name in configuration, markers and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Password => "password",
            Builtin::Bearer => "bearer",
            Builtin::ApiKey => "api_key",
            Builtin::AwsKey => "aws_key",
            Builtin::CreditCard => "credit_card",
        }
    }
}

/// A user-defined rule: the whole match of `regex`, or its first capture group that took part
/// in the match, becomes `<redacted:NAME>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Rule name: 1–64 characters of `[A-Za-z0-9_]`, unique among the rules of a tenant.
    pub name: String,
    /// Regular expression (Rust `regex` syntax, as LogQL's `|~`); must not match the empty text.
    pub regex: String,
}

/// `limits_config.redaction`: which rules run, for every tenant and per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// Redact at all. Default **false**: Loki stores lines verbatim, and so does tovlog unless
    /// asked.
    pub enabled: bool,
    /// Built-in kinds to apply. Default all five: `password, bearer, api_key, aws_key,
    /// credit_card`.
    pub builtin: Vec<Builtin>,
    /// Custom rules, applied before the built-ins in the order given. Default none.
    pub custom: Vec<CustomRule>,
    /// Per-tenant overrides by tenant id: each key given replaces the default's. Default none.
    pub tenants: BTreeMap<String, RedactionOverride>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            enabled: false,
            builtin: Builtin::ALL.to_vec(),
            custom: Vec::new(),
            tenants: BTreeMap::new(),
        }
    }
}

/// One tenant's changes to the default rules; an absent key keeps the default's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionOverride {
    /// Replaces `enabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replaces `builtin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Vec<Builtin>>,
    /// Replaces `custom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<Vec<CustomRule>>,
}

/// A rule that cannot be compiled, naming the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The regex does not compile.
    #[error("{key} ({name}): invalid regex: {source}")]
    Regex {
        /// Dotted key of the rule.
        key: String,
        /// Rule name.
        name: String,
        /// Cause.
        #[source]
        source: Box<regex::Error>,
    },
    /// The regex matches the empty text, so it would redact nothing between every character.
    #[error("{key} ({name}): regex {regex:?} matches the empty string")]
    EmptyMatch {
        /// Dotted key of the rule.
        key: String,
        /// Rule name.
        name: String,
        /// The regex.
        regex: String,
    },
    /// The name is empty, too long, has other characters than `[A-Za-z0-9_]`, or is taken.
    #[error("{key}: rule name {name:?} {why}")]
    Name {
        /// Dotted key of the rule.
        key: String,
        /// Rule name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// The compiled rules of every tenant.
#[derive(Debug)]
pub struct Redactor {
    default: Option<Arc<RuleSet>>,
    tenants: HashMap<String, Option<Arc<RuleSet>>>,
}

impl Redactor {
    /// Compile `config`; an invalid custom rule is an error naming its key.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        let catalogue = Catalogue::new();
        // Rules are compiled even where they are off, so a broken rule fails at startup rather
        // than on the day someone turns it on.
        let default_rules = Arc::new(RuleSet::new(
            &catalogue,
            &config.builtin,
            &config.custom,
            "limits_config.redaction.custom",
        )?);
        let default = config.enabled.then(|| default_rules.clone());
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        for (tenant, o) in &config.tenants {
            let rules = if o.builtin.is_none() && o.custom.is_none() {
                default_rules.clone()
            } else {
                Arc::new(RuleSet::new(
                    &catalogue,
                    o.builtin.as_deref().unwrap_or(&config.builtin),
                    o.custom.as_deref().unwrap_or(&config.custom),
                    &format!("limits_config.redaction.tenants.{tenant}.custom"),
                )?)
            };
            tenants.insert(
                tenant.clone(),
                o.enabled.unwrap_or(config.enabled).then_some(rules),
            );
        }
        Ok(Redactor { default, tenants })
    }

    /// The rules for `tenant`, or `None` when redaction is off for it.
    pub fn for_tenant(&self, tenant: &str) -> Option<&Arc<RuleSet>> {
        match self.tenants.get(tenant) {
            Some(rules) => rules.as_ref(),
            None => self.default.as_ref(),
        }
    }
}

/// The rules of one tenant, compiled: custom rules first, then the built-ins in
/// [`Builtin::ALL`] order. Counts are per rule, indexed as [`RuleSet::rule_names`].
#[derive(Debug)]
pub struct RuleSet {
    custom: Vec<Rule>,
    builtin: Vec<Arc<Rule>>,
    /// Trigger words of the enabled built-in patterns, [`fold`]ed, searched in folded text;
    /// `None` when no enabled pattern has one.
    triggers: Option<Triggers>,
    /// For each trigger word, the pattern bits it wakes.
    trigger_bits: Vec<u64>,
    /// Pattern bits that run on every text (the card scan).
    always: u64,
    /// Every enabled pattern bit, to stop the trigger scan early.
    all: u64,
}

impl RuleSet {
    fn new(
        catalogue: &Catalogue,
        builtin: &[Builtin],
        custom: &[CustomRule],
        key: &str,
    ) -> Result<RuleSet, RedactError> {
        let mut names: Vec<&str> = Vec::new();
        let mut custom_rules = Vec::with_capacity(custom.len());
        for (i, c) in custom.iter().enumerate() {
            let key = format!("{key}[{i}]");
            let bad_name = |why| RedactError::Name {
                key: key.clone(),
                name: c.name.clone(),
                why,
            };
            if c.name.is_empty()
                || c.name.len() > 64
                || !c
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(bad_name("must be 1-64 characters of [A-Za-z0-9_]"));
            }
            if names.contains(&c.name.as_str()) || Builtin::ALL.iter().any(|b| b.name() == c.name) {
                return Err(bad_name(
                    "is already taken by another rule or a built-in kind",
                ));
            }
            names.push(&c.name);
            let re = RegexBuilder::new(&c.regex)
                .build()
                .map_err(|source| RedactError::Regex {
                    key: key.clone(),
                    name: c.name.clone(),
                    source: Box::new(source),
                })?;
            if re.is_match("") {
                return Err(RedactError::EmptyMatch {
                    key,
                    name: c.name.clone(),
                    regex: c.regex.clone(),
                });
            }
            custom_rules.push(Rule {
                name: c.name.clone(),
                marker: marker(&c.name),
                key_name: None,
                patterns: vec![Pattern::Regex(RegexPattern {
                    bit: 0,
                    re,
                    accept: any,
                    json_value: false,
                    needs: None,
                })],
            });
        }
        let builtin: Vec<Arc<Rule>> = Builtin::ALL
            .iter()
            .filter(|b| builtin.contains(b))
            .map(|b| catalogue.rule(*b))
            .collect();
        let mut all = 0u64;
        let mut always = 0u64;
        for rule in &builtin {
            for p in &rule.patterns {
                all |= p.bit();
                if matches!(p, Pattern::Cards) {
                    always |= p.bit();
                }
            }
        }
        let (words, trigger_bits): (Vec<Vec<u8>>, Vec<u64>) = TRIGGERS
            .iter()
            .filter(|(_, bits)| bits & all != 0)
            .map(|(w, bits)| (w.bytes().map(fold).collect(), bits & all))
            .unzip();
        let triggers = (!words.is_empty()).then(|| Triggers::new(&words));
        Ok(RuleSet {
            custom: custom_rules,
            builtin,
            triggers,
            trigger_bits,
            always,
            all,
        })
    }

    /// Rule names (the `rule` label of the redaction counter), in count order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.custom
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.builtin.iter().map(|r| r.name.as_str()))
    }

    /// How many rules (the length of a counts slice).
    pub fn len(&self) -> usize {
        self.custom.len() + self.builtin.len()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A fresh pass: zero counts and an empty scratch buffer, for one push.
    pub fn pass(&self) -> Pass {
        Pass {
            counts: vec![0; self.len()],
            folded: Vec::new(),
        }
    }

    /// Redact every line and structured metadata value of `streams` in place.
    pub fn redact_streams(&self, streams: &mut [PushStream], pass: &mut Pass) {
        for stream in streams {
            for e in &mut stream.entries {
                if let Some(line) = self.redact_text(&e.line, pass) {
                    e.line = line;
                }
                for (name, value) in &mut e.metadata {
                    if let Some(v) = self.redact_metadata(name, value, pass) {
                        *value = v;
                    }
                }
            }
        }
    }

    /// The patterns `text` wakes: trigger words present, plus the always-on scans.
    fn wake(&self, text: &str, folded: &mut Vec<u8>) -> u64 {
        let mut bits = self.always;
        let Some(triggers) = &self.triggers else {
            return bits;
        };
        folded.clear();
        folded.extend(text.bytes().map(fold));
        let mut at = 0;
        // Restarting one byte after each hit finds every word even where two overlap.
        while let Some((word, start)) = triggers.find(folded, at) {
            bits |= self.trigger_bits[word];
            if bits == self.all {
                break;
            }
            at = start + 1;
        }
        bits
    }

    /// `text` with every secret replaced, or `None` when no rule changed it (no allocation).
    pub fn redact_text(&self, text: &str, pass: &mut Pass) -> Option<String> {
        let mut out: Option<String> = None;
        for (rule, count) in self.custom.iter().zip(pass.counts.iter_mut()) {
            if let Some(s) = rule.apply(out.as_deref().unwrap_or(text), u64::MAX, count) {
                out = Some(s);
            }
        }
        let bits = self.wake(text, &mut pass.folded);
        if bits == 0 {
            return out;
        }
        let counts = pass.counts.get_mut(self.custom.len()..).unwrap_or_default();
        for (rule, count) in self.builtin.iter().zip(counts.iter_mut()) {
            if let Some(s) = rule.apply(out.as_deref().unwrap_or(text), bits, count) {
                out = Some(s);
            }
        }
        out
    }

    /// A structured metadata value with secrets replaced, or `None` when unchanged. A value
    /// whose name is itself secret-like (`password`, `api_key`, `authorization`,
    /// `aws_secret_access_key`, …) is replaced whole; any other value is redacted as a text.
    pub fn redact_metadata(&self, name: &str, value: &str, pass: &mut Pass) -> Option<String> {
        let bits = self.wake(name, &mut pass.folded);
        if bits & !self.always != 0 && !value.is_empty() && !value.starts_with(MARKER_PREFIX) {
            let offset = self.custom.len();
            for (i, rule) in self.builtin.iter().enumerate() {
                if let Some(key) = &rule.key_name {
                    if rule.bits() & bits != 0 && key.is_match(name) {
                        if let Some(c) = pass.counts.get_mut(offset + i) {
                            *c += 1;
                        }
                        return Some(rule.marker.clone());
                    }
                }
            }
        }
        self.redact_text(value, pass)
    }
}

/// The state of redacting one push: replacements per rule, and a scratch buffer reused for
/// every text.
#[derive(Debug)]
pub struct Pass {
    counts: Vec<u64>,
    folded: Vec<u8>,
}

impl Pass {
    /// Replacements made by each rule, in [`RuleSet::rule_names`] order.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// The search for trigger words in folded text. Case-sensitive search of folded words rather
/// than the automaton's own ASCII case-insensitivity, because only a case-sensitive search gets
/// the SIMD (Teddy) searcher; and Teddy's 16-bucket ("fat") form, because with two dozen words
/// the 8-bucket form confirms so many false candidates that it is three times slower.
#[derive(Debug)]
enum Triggers {
    /// Teddy, where the CPU has it (x86-64 with AVX2 or SSSE3, aarch64).
    Packed(packed::Searcher),
    /// Elsewhere.
    Automaton(AhoCorasick),
}

impl Triggers {
    fn new(words: &[Vec<u8>]) -> Triggers {
        let packed = |fat| {
            packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .only_teddy_fat(fat)
                .builder()
                .extend(words)
                .build()
        };
        match packed(Some(true)).or_else(|| packed(None)) {
            Some(s) => Triggers::Packed(s),
            None => Triggers::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(words)
                    .expect("the trigger words are a few short literals"),
            ),
        }
    }

    /// The first word found in `hay[at..]`: its index and start.
    fn find(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        if at >= hay.len() {
            return None;
        }
        match self {
            Triggers::Packed(s) => s
                .find_in(hay, Span::from(at..hay.len()))
                .map(|m| (m.pattern().as_usize(), m.start())),
            Triggers::Automaton(ac) => ac
                .find(Input::new(hay).span(at..hay.len()))
                .map(|m| (m.pattern().as_usize(), m.start())),
        }
    }
}

/// The byte the trigger search compares: ASCII letters to lower case by setting bit 5. Other
/// bytes may change too (`@` becomes `` ` ``, `_` becomes DEL); the words fold alike, so folding
/// can only wake a pattern needlessly, never miss one.
fn fold(b: u8) -> u8 {
    b | 0x20
}

/// Every marker starts so; a value already redacted by an earlier rule is left alone.
const MARKER_PREFIX: &str = "<redacted:";

fn marker(name: &str) -> String {
    format!("{MARKER_PREFIX}{name}>")
}

/// One rule: a name, its marker, the patterns that find its secrets, and for metadata a
/// regex over the metadata name that makes the whole value secret.
#[derive(Debug)]
struct Rule {
    name: String,
    marker: String,
    key_name: Option<Regex>,
    patterns: Vec<Pattern>,
}

impl Rule {
    fn bits(&self) -> u64 {
        self.patterns.iter().fold(0, |b, p| b | p.bit())
    }

    /// Apply the patterns among `woken` in turn; `None` when nothing changed.
    fn apply(&self, text: &str, woken: u64, count: &mut u64) -> Option<String> {
        let mut out: Option<String> = None;
        for p in &self.patterns {
            if p.bit() != 0 && woken & p.bit() == 0 {
                continue;
            }
            let cur = out.as_deref().unwrap_or(text);
            let changed = match p {
                Pattern::Regex(r) => r.apply(cur, &self.marker, count),
                Pattern::Cards => cards::redact(cur, &self.marker, count),
            };
            if changed.is_some() {
                out = changed;
            }
        }
        out
    }
}

#[derive(Debug)]
enum Pattern {
    Regex(RegexPattern),
    /// The card scan (a regex cannot check Luhn).
    Cards,
}

impl Pattern {
    fn bit(&self) -> u64 {
        match self {
            Pattern::Regex(r) => r.bit,
            Pattern::Cards => 1 << CARD,
        }
    }
}

#[derive(Debug)]
struct RegexPattern {
    /// This pattern's wake bit; 0 for custom rules, which always run.
    bit: u64,
    re: Regex,
    /// Second look at a candidate secret (e.g. `null` is no password).
    accept: fn(&str) -> bool,
    /// The secret may be an unquoted JSON value (`"token":123`): keep the line valid JSON by
    /// quoting the marker when the key was quoted.
    json_value: bool,
    /// A byte every match contains, checked with `memchr` before the regex runs (`@` of a
    /// URL's user info: most texts with `://` have none).
    needs: Option<u8>,
}

impl RegexPattern {
    fn apply(&self, text: &str, marker: &str, count: &mut u64) -> Option<String> {
        if let Some(b) = self.needs {
            memchr::memchr(b, text.as_bytes())?;
        }
        // The cheap question first: no match, no allocation.
        self.re.find(text)?;
        let mut out = String::new();
        let mut last = 0;
        let mut n = 0u64;
        for caps in self.re.captures_iter(text) {
            let Some(whole) = caps.get(0) else { continue };
            let target = (1..caps.len()).find_map(|i| caps.get(i)).unwrap_or(whole);
            let secret = target.as_str();
            if secret.is_empty() || secret.starts_with(MARKER_PREFIX) || !(self.accept)(secret) {
                continue;
            }
            let quote = if self.json_value {
                json_quote(&text[whole.start()..target.start()])
            } else {
                ""
            };
            if out.is_empty() {
                out.reserve(text.len() + marker.len());
            }
            out.push_str(&text[last..target.start()]);
            out.push_str(quote);
            out.push_str(marker);
            out.push_str(quote);
            last = target.end();
            n += 1;
        }
        if n == 0 {
            return None;
        }
        out.push_str(&text[last..]);
        *count += n;
        Some(out)
    }
}

/// The quote to wrap an unquoted value's marker in: `"` (or `\"` inside an escaped JSON
/// string) when the key before it was quoted, nothing otherwise.
fn json_quote(key_and_separator: &str) -> &'static str {
    match key_and_separator.as_bytes().last() {
        Some(b'"' | b'\'') | None => "",
        _ if key_and_separator.contains("\\\"") => "\\\"",
        _ if key_and_separator.contains('"') => "\"",
        _ => "",
    }
}

fn any(_: &str) -> bool {
    true
}

/// A password-like value, not a JSON literal or an already masked one.
fn password_value(v: &str) -> bool {
    !(v.eq_ignore_ascii_case("null")
        || v.eq_ignore_ascii_case("true")
        || v.eq_ignore_ascii_case("false")
        || v.bytes().all(|b| b == b'*'))
}

/// A bare `Bearer X` is a token only when X looks like one (a digit, or long), so prose such
/// as "missing bearer credentials" is kept.
fn token_like(v: &str) -> bool {
    v.len() >= 8 && (v.len() >= 24 || v.bytes().any(|b| b.is_ascii_digit()))
}

// Wake bits of the built-in patterns.
const PASSWORD_KV: u32 = 0;
const PASSWORD_URL: u32 = 1;
const BEARER_HEADER: u32 = 2;
const BEARER_BARE: u32 = 3;
const API_KEY_SHAPES: u32 = 4;
const API_KEY_GENERIC: u32 = 5;
const AWS_KEY_ID: u32 = 6;
const AWS_SECRET: u32 = 7;
const CARD: u32 = 8;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Trigger words (lower case) and the patterns each wakes. A pattern runs on a text only when
/// one of its words is in it, so every word must be a substring of anything the pattern can
/// match. The words are parts whose first three bytes are rare in logs (`ssw` rather than
/// `pass`, `key` rather than `api_key`, which every `/api/…` path would start), and few: the
/// SIMD search confirms each place such a prefix occurs, and its cost grows with the number of
/// words.
const TRIGGERS: &[(&str, u64)] = &[
    ("ssw", bit(PASSWORD_KV)),
    ("pwd", bit(PASSWORD_KV)),
    ("ecret", bit(PASSWORD_KV)),
    ("token", bit(PASSWORD_KV)),
    (
        "key",
        bit(PASSWORD_KV) | bit(API_KEY_GENERIC) | bit(AWS_SECRET),
    ),
    ("://", bit(PASSWORD_URL)),
    ("rization", bit(BEARER_HEADER)),
    ("bearer", bit(BEARER_BARE)),
    ("_live_", bit(API_KEY_SHAPES)),
    ("_test_", bit(API_KEY_SHAPES)),
    ("ghp_", bit(API_KEY_SHAPES)),
    ("gho_", bit(API_KEY_SHAPES)),
    ("ghu_", bit(API_KEY_SHAPES)),
    ("ghs_", bit(API_KEY_SHAPES)),
    ("ghr_", bit(API_KEY_SHAPES)),
    ("_pat_", bit(API_KEY_SHAPES)),
    ("xox", bit(API_KEY_SHAPES)),
    ("aiza", bit(API_KEY_SHAPES)),
    ("glpat-", bit(API_KEY_SHAPES)),
    ("k-proj-", bit(API_KEY_SHAPES)),
    ("k-ant-", bit(API_KEY_SHAPES)),
    ("kia", bit(AWS_KEY_ID)),
    ("sia", bit(AWS_KEY_ID)),
];

/// The value after a key and `:` or `=`: double-quoted (JSON escapes), single-quoted,
/// backslash-quoted (a JSON document inside a JSON string), or bare up to whitespace, a quote,
/// `,`, `;`, `&`, `}` or `]`. Exactly one of its four groups takes part in a match.
const VALUE: &str = r#"(?:\\?["'])?\s*[:=]\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|\\"((?:[^"\\]|\\[^"])*)\\"|([^\s"',;&}\]\\]+))"#;

/// Key endings that make a value a password (matched case-insensitively at the end of the key:
/// `db_password`, `X-Auth-Token`, `client_secret`, `refresh_token`, `apiKey`).
const PASSWORD_KEYS: &str = r"(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|private[_-]?key)";

/// The built-in rules, compiled once per [`Redactor`] and shared by every tenant's set.
struct Catalogue {
    rules: Vec<(Builtin, Arc<Rule>)>,
}

impl Catalogue {
    fn new() -> Catalogue {
        let re = |s: &str| Regex::new(s).expect("built-in redaction regexes are valid");
        let pat = |b: u32, s: &str, accept: fn(&str) -> bool, json_value: bool| {
            Pattern::Regex(RegexPattern {
                bit: bit(b),
                re: re(s),
                accept,
                json_value,
                needs: (b == PASSWORD_URL).then_some(b'@'),
            })
        };
        let rule = |kind: Builtin, key_name: Option<&str>, patterns: Vec<Pattern>| {
            (
                kind,
                Arc::new(Rule {
                    name: kind.name().to_string(),
                    marker: marker(kind.name()),
                    key_name: key_name.map(re),
                    patterns,
                }),
            )
        };
        let rules = vec![
            rule(
                Builtin::AwsKey,
                Some(r"(?i)secret_?access_?key$"),
                vec![
                    pat(
                        AWS_KEY_ID,
                        r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
                        any,
                        false,
                    ),
                    pat(
                        AWS_SECRET,
                        &format!(r"(?i)secret_?access_?key{VALUE}"),
                        password_value,
                        true,
                    ),
                ],
            ),
            rule(
                Builtin::ApiKey,
                Some(r"(?i)api_?key$"),
                vec![
                    pat(
                        API_KEY_SHAPES,
                        concat!(
                            r"(?-u:\b)(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}",
                            r"|gh[pousr]_[0-9A-Za-z]{36,}",
                            r"|github_pat_[0-9A-Za-z_]{22,}",
                            r"|xox[baprs]-[0-9A-Za-z-]{10,}",
                            r"|AIza[0-9A-Za-z_-]{35}",
                            r"|glpat-[0-9A-Za-z_-]{20,}",
                            r"|sk-(?:proj|ant)-[0-9A-Za-z_-]{20,})",
                        ),
                        any,
                        false,
                    ),
                    pat(
                        API_KEY_GENERIC,
                        r#"(?i)api[_-]?key(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?([0-9A-Za-z+/_-]{16,}={0,2})"#,
                        any,
                        true,
                    ),
                ],
            ),
            rule(
                Builtin::Bearer,
                Some(r"(?i)authorization$"),
                vec![
                    pat(
                        BEARER_HEADER,
                        r#"(?i)authorization(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?(?:bearer|basic|token)\s+([0-9A-Za-z._~+/-]+=*)"#,
                        any,
                        false,
                    ),
                    pat(
                        BEARER_BARE,
                        r"(?i)(?-u:\b)bearer\s+([0-9A-Za-z._~+/-]+=*)",
                        token_like,
                        false,
                    ),
                ],
            ),
            rule(Builtin::CreditCard, None, vec![Pattern::Cards]),
            rule(
                Builtin::Password,
                Some(&format!("(?i){PASSWORD_KEYS}$")),
                vec![
                    pat(
                        PASSWORD_KV,
                        &format!("(?i){PASSWORD_KEYS}{VALUE}"),
                        password_value,
                        true,
                    ),
                    pat(
                        PASSWORD_URL,
                        r"(?i)(?-u:\b)[a-z][a-z0-9+.-]*://[^\s:/@?#]*:([^\s/@?#]+)@",
                        any,
                        false,
                    ),
                ],
            ),
        ];
        Catalogue { rules }
    }

    fn rule(&self, kind: Builtin) -> Arc<Rule> {
        self.rules
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r.clone())
            .expect("the catalogue has every built-in kind")
    }
}

/// Payment card numbers. A regex finds digit runs but cannot check Luhn, so this is a
/// hand-written scan of the bytes.
mod cards {
    /// Most digit groups a run is split into (a card has at most 19 digits).
    const MAX_GROUPS: usize = 19;

    /// `text` with every card number replaced by `marker`, or `None`.
    pub(super) fn redact(text: &str, marker: &str, count: &mut u64) -> Option<String> {
        let mut out: Option<String> = None;
        let mut last = 0;
        for_each(text.as_bytes(), |start, end| {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len() + marker.len()));
            o.push_str(&text[last..start]);
            o.push_str(marker);
            last = end;
            *count += 1;
        });
        let mut o = out?;
        o.push_str(&text[last..]);
        Some(o)
    }

    /// Bytes a run is made of.
    fn in_run(c: u8) -> bool {
        c.is_ascii_digit() || c == b' ' || c == b'-'
    }

    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// The high bit of each of the first (low) and last four bytes of a word.
    const FIRST4: u64 = 0x0000_0000_8080_8080;
    const LAST4: u64 = 0x8080_8080_0000_0000;

    /// The high bit of each byte of `w` that is a run byte, computed on all eight bytes at
    /// once (SWAR) with no carry between bytes.
    fn run_bytes(w: u64) -> u64 {
        // Digits XOR 0x30 are exactly the bytes 0..=9.
        let t = w ^ (0x30 * LOW);
        let digit = !(((t | HIGH) - 10 * LOW) | t) & HIGH;
        let zero = |z: u64| !(((z & !HIGH) + !HIGH) | z) & HIGH;
        digit | zero(w ^ (b' ' as u64 * LOW)) | zero(w ^ (b'-' as u64 * LOW))
    }

    /// Call `found(start, end)` for each card number in `b`, in order. A run is digits joined
    /// by single spaces or dashes, not glued to a word, a decimal point, a sign or a dash
    /// chain (UUIDs); within it, the longest stretch of whole groups with 13–19 digits, a card
    /// network's prefix and a valid Luhn sum is a card.
    pub(super) fn for_each(b: &[u8], mut found: impl FnMut(usize, usize)) {
        // A run has 13 bytes or more, so it covers two consecutive 4-byte quarters of the
        // 8-byte grid whole. The scan looks at eight bytes at a time for two such quarters
        // made only of run bytes, and only there looks at single bytes.
        let mut floor = 0; // bytes below were looked at already
        let mut prev_full = false; // the quarter before `k` is all run bytes
        let mut k = 0;
        while k < b.len() {
            let word = match b.get(k..k + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(w) => w,
                None => {
                    // The last bytes, padded with zeros (not run bytes).
                    let mut w = [0u8; 8];
                    let tail = b.get(k..).unwrap_or_default();
                    w[..tail.len()].copy_from_slice(tail);
                    w
                }
            };
            let mut flags = run_bytes(u64::from_le_bytes(word));
            if floor > k {
                flags &= !((1u64 << ((floor - k) * 8)) - 1);
            }
            let first = flags & FIRST4 == FIRST4;
            let last = flags & LAST4 == LAST4;
            let hit = if prev_full && first {
                Some(k - 4)
            } else if first && last {
                Some(k)
            } else {
                None
            };
            prev_full = last;
            if let Some(at) = hit {
                let mut start = at;
                while start > floor && in_run(b[start - 1]) {
                    start -= 1;
                }
                let mut end = at;
                while end < b.len() && in_run(b[end]) {
                    end += 1;
                }
                runs(b, start, end, &mut found);
                floor = end;
                prev_full = false;
                k = end - end % 8;
                continue;
            }
            k += 8;
        }
    }

    /// The digit runs within `b[from..to]`, a stretch of digits, spaces and dashes.
    fn runs(b: &[u8], from: usize, to: usize, found: &mut impl FnMut(usize, usize)) {
        let mut i = from;
        while i < to {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            let mut digits = 0;
            let mut j = i;
            loop {
                while j < to && b[j].is_ascii_digit() {
                    j += 1;
                    digits += 1;
                }
                if j + 1 < to && b[j + 1].is_ascii_digit() {
                    // `b[j]` is a single space or dash between two digits.
                    j += 1;
                } else {
                    break;
                }
            }
            i = j;
            if digits >= 13 && free_before(b, start) && free_after(b, j) {
                cards_in(b, start, j, found);
            }
        }
    }

    /// The cards among the digit groups of the run `b[start..end]`.
    fn cards_in(b: &[u8], start: usize, end: usize, found: &mut impl FnMut(usize, usize)) {
        let mut groups = [(0usize, 0usize); MAX_GROUPS];
        let mut n = 0;
        let mut g = start;
        for k in start..=end {
            if b.get(k).is_none_or(|c| k == end || !c.is_ascii_digit()) {
                if n < MAX_GROUPS {
                    groups[n] = (g, k);
                    n += 1;
                }
                g = k + 1;
            }
        }
        let mut s = 0;
        while s < n {
            let mut best = None;
            let mut digits = 0;
            for (e, g) in groups.iter().enumerate().take(n).skip(s) {
                digits += g.1 - g.0;
                if digits > 19 {
                    break;
                }
                if digits >= 13 && is_card(&b[groups[s].0..g.1], digits) {
                    best = Some(e);
                }
            }
            match best {
                Some(e) => {
                    found(groups[s].0, groups[e].1);
                    s = e + 1;
                }
                None => s += 1,
            }
        }
    }

    fn free_before(b: &[u8], start: usize) -> bool {
        match start.checked_sub(1).map(|p| b[p]) {
            None => true,
            Some(c) => !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-')),
        }
    }

    fn free_after(b: &[u8], end: usize) -> bool {
        match b.get(end) {
            None => true,
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-') => false,
            Some(b'.' | b',') => !b.get(end + 1).is_some_and(u8::is_ascii_digit),
            Some(_) => true,
        }
    }

    /// Digits of `span` (separators skipped) have a network's prefix and length and pass Luhn.
    fn is_card(span: &[u8], digits: usize) -> bool {
        let mut prefix = 0u32;
        let mut seen = 0;
        for &c in span {
            if c.is_ascii_digit() && seen < 4 {
                prefix = prefix * 10 + u32::from(c - b'0');
                seen += 1;
            }
        }
        let two = prefix / 100;
        let network = match prefix / 1000 {
            // Visa.
            4 => matches!(digits, 13 | 16 | 19),
            // Mastercard 51–55 (and Maestro 50, 56–59).
            5 => (16..=19).contains(&digits),
            // Mastercard 2221–2720.
            2 => (2221..=2720).contains(&prefix) && digits == 16,
            // Amex 34/37; Diners 30, 36, 38, 39; JCB 35.
            3 => match two {
                34 | 37 => digits == 15,
                35 => (16..=19).contains(&digits),
                30 | 36 | 38 | 39 => (14..=19).contains(&digits),
                _ => false,
            },
            // Discover, UnionPay, Maestro.
            6 => (16..=19).contains(&digits),
            _ => false,
        };
        network && luhn(span)
    }

    fn luhn(span: &[u8]) -> bool {
        let mut sum = 0u32;
        let mut double = false;
        for &c in span.iter().rev() {
            if !c.is_ascii_digit() {
                continue;
            }
            let mut d = u32::from(c - b'0');
            if double {
                d *= 2;
                if d > 9 {
                    d -= 9;
                }
            }
            sum += d;
            double = !double;
        }
        sum.is_multiple_of(10)
    }
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
