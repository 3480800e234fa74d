//! The typed LogQL syntax tree produced by the parser and consumed by the formatter, the
//! validator, the pipeline and the query planner.
//!
//! A query is either a [`LogExpr`] (returns log lines: `streams`) or a [`SampleExpr`]
//! (returns numbers: `matrix`/`vector`/`scalar`). The types keep the two apart so the
//! planner never has to guess. Literal arithmetic is folded by the parser, so `2 ^ 3 - 1`
//! arrives here as `SampleExpr::Literal(7.0)`.
//!
//! Durations are kept as `i64` nanoseconds, byte sizes as `u64` bytes.

/// A complete LogQL query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A log query: selector plus pipeline; answers with log lines.
    Log(LogExpr),
    /// A metric query; answers with samples.
    Sample(SampleExpr),
}

/// `{a="b", …} | stage | stage …`
#[derive(Debug, Clone, PartialEq)]
pub struct LogExpr {
    /// The stream selector's matchers, in source order.
    pub selector: Vec<Matcher>,
    /// The pipeline stages, in source order.
    pub pipeline: Vec<Stage>,
}

/// One label matcher of a stream selector (or of `drop`/`keep`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Literal value, or the regex source for `=~`/`!~` (fully anchored when evaluated).
    pub value: String,
}

/// String match operators: `=`, `!=`, `=~`, `!~`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~` (regex, fully anchored)
    Re,
    /// `!~` (regex, fully anchored)
    Nre,
}

/// One stage of a log pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `|= "a"`, `!~ "b"`, `|= "a" or "b"`, `|= ip("…")`, `|> "<_> x"`.
    LineFilter(LineFilter),
    /// `| json` (empty list) or `| json a="x.y", b`.
    Json(Vec<LabelExtraction>),
    /// `| logfmt [--strict] [--keep-empty] [a="x", b]`.
    Logfmt {
        /// `--strict`: stop at the first malformed pair with `LogfmtParserErr`.
        strict: bool,
        /// `--keep-empty`: keep `k=` and bare keys as empty labels.
        keep_empty: bool,
        /// Explicit extractions; empty means "every key".
        params: Vec<LabelExtraction>,
    },
    /// `| regexp "<re with named groups>"`.
    Regexp(String),
    /// `| pattern "<a> x <_>"`.
    Pattern(String),
    /// `| unpack`.
    Unpack,
    /// `| a="b" and c > 1 …`.
    LabelFilter(LabelFilterExpr),
    /// `| line_format "template"`.
    LineFormat(String),
    /// `| label_format a=b, c="template"`.
    LabelFormat(Vec<LabelFormatOp>),
    /// `| decolorize`.
    Decolorize,
    /// `| drop a, b="x"`.
    Drop(Vec<LabelSelect>),
    /// `| keep a, b="x"`.
    Keep(Vec<LabelSelect>),
}

/// A line filter with its alternatives: `|= "a" or "b"` is one filter with two values.
/// The operator of the first alternative applies to all (Loki's rule); for the negative
/// operators `!= "a" or "b"` means "contains neither".
#[derive(Debug, Clone, PartialEq)]
pub struct LineFilter {
    /// The operator.
    pub op: LineFilterOp,
    /// One or more alternatives.
    pub values: Vec<LineFilterValue>,
}

/// Line filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineFilterOp {
    /// `|=` substring
    Contains,
    /// `!=` substring absent
    NotContains,
    /// `|~` unanchored RE2 regex
    Regex,
    /// `!~`
    NotRegex,
    /// `|>` pattern filter (`<_>` captures only)
    Pattern,
    /// `!>`
    NotPattern,
}

/// One alternative of a line filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LineFilterValue {
    /// A string literal (substring, regex source or pattern, depending on the operator).
    Str(String),
    /// `ip("…")`: single address, CIDR or `a-b` range. Only with `|=` / `!=`.
    Ip(String),
}

/// `name` or `name="expression"` in `json`/`logfmt` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelExtraction {
    /// Destination label.
    pub name: String,
    /// JSON path (`a.b[0]`, `["k"]`) or logfmt key. `None` means "same as `name`".
    pub expr: Option<String>,
}

/// A label filter expression tree. `a, b or c` parses as `a and (b or c)`;
/// `a and b or c` as `(a and b) or c` (Loki's precedence, see semantics doc §5).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFilterExpr {
    /// Both sides must hold. `via_comma` records whether the source used `,` (or
    /// whitespace) instead of `and`, because it changes precedence and the formatter
    /// must reproduce it.
    And {
        /// Left operand.
        lhs: Box<LabelFilterExpr>,
        /// Right operand.
        rhs: Box<LabelFilterExpr>,
        /// `true` when written with `,` or whitespace.
        via_comma: bool,
    },
    /// Either side holds.
    Or(Box<LabelFilterExpr>, Box<LabelFilterExpr>),
    /// A parenthesised group, kept so the formatter can print it back.
    Paren(Box<LabelFilterExpr>),
    /// `name = "str"`, `name =~ "re"` … (string literal only).
    String {
        /// Label name.
        name: String,
        /// Operator.
        op: MatchOp,
        /// Literal or regex source.
        value: String,
    },
    /// `name > 1.5`, `name == 200`.
    Number {
        /// Label name.
        name: String,
        /// Operator.
        op: CmpOp,
        /// The literal.
        value: f64,
    },
    /// `name > 250ms`.
    Duration {
        /// Label name.
        name: String,
        /// Operator.
        op: CmpOp,
        /// The literal, in nanoseconds.
        value_ns: i64,
    },
    /// `name > 1.5MB`.
    Bytes {
        /// Label name.
        name: String,
        /// Operator.
        op: CmpOp,
        /// The literal, in bytes.
        value: u64,
    },
    /// `name = ip("10.0.0.0/8")` or `name != ip(…)`.
    Ip {
        /// Label name.
        name: String,
        /// `true` for `!=`.
        negated: bool,
        /// Address, CIDR or range text.
        value: String,
    },
}

/// Numeric comparison operators of label filters and binary expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==` (label filters also accept `=`)
    Eq,
    /// `!=`
    Neq,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// One operation of `label_format`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelFormatOp {
    /// Destination label.
    pub dst: String,
    /// Where the value comes from.
    pub src: LabelFormatSrc,
}

/// Source of a `label_format` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelFormatSrc {
    /// `dst=src`: rename (the source label is removed).
    Rename(String),
    /// `dst="{{ template }}"`.
    Template(String),
}

/// A label named in `drop`/`keep`, optionally with a value matcher (`b="x"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelSelect {
    /// Label name.
    pub name: String,
    /// Optional matcher on the value (`=`, `!=`, `=~`, `!~`).
    pub matcher: Option<(MatchOp, String)>,
}

/// A metric (sample) expression.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleExpr {
    /// `count_over_time({…}[5m])` and friends.
    Range(RangeAggregation),
    /// `sum by (a) (…)`, `topk(3, …)`, `sort(…)`.
    Vector(VectorAggregation),
    /// `a + b`, `a > bool 2`, `a / on(x) group_left b`.
    Binary(BinaryExpr),
    /// A number literal (after folding).
    Literal(f64),
    /// `vector(n)`.
    VectorLiteral(f64),
    /// `label_replace(expr, "dst", "replacement", "src", "regex")`.
    LabelReplace(LabelReplace),
}

/// `op([param,] log_range) [by|without (…)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeAggregation {
    /// The function.
    pub op: RangeOp,
    /// The φ of `quantile_over_time(φ, …)`; `None` for other functions.
    pub param: Option<f64>,
    /// The log range it aggregates.
    pub range: LogRange,
    /// `by`/`without` grouping (legal only for some functions).
    pub grouping: Option<Grouping>,
}

/// `{…} | pipeline [| unwrap …] [range] [offset d]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRange {
    /// Selector and pipeline.
    pub log: LogExpr,
    /// Window length in ns.
    pub range_ns: i64,
    /// `offset`, in ns (0 when absent).
    pub offset_ns: i64,
    /// `| unwrap …` with its post-unwrap filters.
    pub unwrap: Option<Unwrap>,
}

/// `| unwrap [conv(]label[)] [| post filters]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    /// Conversion applied to the label value.
    pub conv: UnwrapConv,
    /// Label to unwrap.
    pub label: String,
    /// Label filters after the unwrap (`| unwrap x | __error__=""`).
    pub post_filters: Vec<LabelFilterExpr>,
}

/// Unwrap conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnwrapConv {
    /// Plain float parse.
    None,
    /// `duration(x)`: Go duration → seconds.
    Duration,
    /// `duration_seconds(x)`: same as `duration`.
    DurationSeconds,
    /// `bytes(x)`: humanized size → bytes.
    Bytes,
}

/// Range aggregation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeOp {
    /// `count_over_time`
    CountOverTime,
    /// `rate`
    Rate,
    /// `rate_counter`
    RateCounter,
    /// `bytes_over_time`
    BytesOverTime,
    /// `bytes_rate`
    BytesRate,
    /// `avg_over_time`
    AvgOverTime,
    /// `sum_over_time`
    SumOverTime,
    /// `min_over_time`
    MinOverTime,
    /// `max_over_time`
    MaxOverTime,
    /// `stdvar_over_time`
    StdvarOverTime,
    /// `stddev_over_time`
    StddevOverTime,
    /// `quantile_over_time`
    QuantileOverTime,
    /// `first_over_time`
    FirstOverTime,
    /// `last_over_time`
    LastOverTime,
    /// `absent_over_time`
    AbsentOverTime,
}

/// `by (a, b)` or `without (a, b)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grouping {
    /// `true` for `without`.
    pub without: bool,
    /// The label names (may be empty: `by ()`).
    pub labels: Vec<String>,
}

/// Vector aggregation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk`
    Topk,
    /// `bottomk`
    Bottomk,
    /// `sort`
    Sort,
    /// `sort_desc`
    SortDesc,
}

/// `op [by|without (…)] ([param,] expr)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorAggregation {
    /// The function.
    pub op: VectorOp,
    /// `k` of `topk`/`bottomk`.
    pub param: Option<f64>,
    /// The aggregated expression.
    pub expr: Box<SampleExpr>,
    /// Grouping, prefix or suffix form alike.
    pub grouping: Option<Grouping>,
}

/// Binary operators, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `unless`
    Unless,
    /// `==`
    Eq,
    /// `!=`
    Neq,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

/// `lhs op [bool] [on|ignoring (…) [group_left|group_right (…)]] rhs`.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    /// Operator.
    pub op: BinOp,
    /// Left operand.
    pub lhs: Box<SampleExpr>,
    /// Right operand.
    pub rhs: Box<SampleExpr>,
    /// `bool` modifier of comparisons.
    pub return_bool: bool,
    /// `on`/`ignoring` and `group_left`/`group_right`.
    pub matching: Option<VectorMatching>,
}

/// Vector matching clause of a binary expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VectorMatching {
    /// `true` for `on (…)`, `false` for `ignoring (…)`.
    pub on: bool,
    /// The labels listed.
    pub labels: Vec<String>,
    /// `group_left (…)` / `group_right (…)`.
    pub group: Option<GroupModifier>,
}

/// Many-to-one / one-to-many matching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupModifier {
    /// `true` for `group_left`, `false` for `group_right`.
    pub left: bool,
    /// Extra labels to copy from the "one" side.
    pub include: Vec<String>,
}

/// `label_replace(expr, dst, replacement, src, regex)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelReplace {
    /// Input vector.
    pub expr: Box<SampleExpr>,
    /// Destination label.
    pub dst: String,
    /// Replacement with `$1`-style references.
    pub replacement: String,
    /// Source label.
    pub src: String,
    /// Regex (anchored at both ends when evaluated).
    pub regex: String,
}

impl Expr {
    /// `true` for metric queries.
    pub fn is_sample(&self) -> bool {
        matches!(self, Expr::Sample(_))
    }
}

impl RangeOp {
    /// The LogQL function name.
    pub fn name(self) -> &'static str {
        match self {
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
            RangeOp::AbsentOverTime => "absent_over_time",
        }
    }
}

impl VectorOp {
    /// The LogQL function name.
    pub fn name(self) -> &'static str {
        match self {
            VectorOp::Sum => "sum",
            VectorOp::Avg => "avg",
            VectorOp::Count => "count",
            VectorOp::Min => "min",
            VectorOp::Max => "max",
            VectorOp::Stddev => "stddev",
            VectorOp::Stdvar => "stdvar",
            VectorOp::Topk => "topk",
            VectorOp::Bottomk => "bottomk",
            VectorOp::Sort => "sort",
            VectorOp::SortDesc => "sort_desc",
        }
    }
}
