//! Runtime values, modelled on the Go types Loki's templates meet: label values are
//! `string`, numbers `int`/`float64`, times `time.Time`, `fromJson` gives
//! `map[string]interface {}` / `[]interface {}`, and the dot is the label map.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::time::GoTime;
use super::LabelLookup;

/// A template value. Strings borrow from the labels, the line or the template when they can.
#[derive(Clone, Debug, Default)]
pub(crate) enum Value<'a> {
    /// Go's untyped nil / a missing interface value.
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    /// Go's `int64`, what sprig's integer math returns. Prints and compares like `Int`,
    /// but Go refuses it for an `int` parameter.
    Int64(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Time(GoTime),
    List(Rc<Vec<Value<'a>>>),
    Map(Rc<BTreeMap<String, Value<'a>>>),
    /// The label map (`.` at the top level, Go's `map[string]string`).
    Labels(&'a dyn LabelLookup),
}

impl std::fmt::Debug for dyn LabelLookup + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("labels")
    }
}

impl<'a> Value<'a> {
    pub fn str(s: &'a str) -> Value<'a> {
        Value::Str(Cow::Borrowed(s))
    }

    pub fn string(s: String) -> Value<'a> {
        Value::Str(Cow::Owned(s))
    }

    /// The Go type name, as `%T` and error messages print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Int64(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Time(_) => "time.Time",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Labels(_) => "map[string]string",
        }
    }

    /// Go's `truth`: non-zero numbers, non-empty strings/collections, true, any struct.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) | Value::Int64(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Time(_) => true,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Labels(l) => !l.all().is_empty(),
        }
    }

    /// Sprig's `empty`, used by `default`: like `!truthy`, but structs (times) are never empty.
    pub fn is_empty(&self) -> bool {
        !self.truthy()
    }

    /// Converts decoded JSON (from `fromJson`) to values; numbers become `float64` as in Go.
    pub fn from_json(v: serde_json::Value) -> Value<'a> {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::string(s),
            serde_json::Value::Array(a) => {
                Value::List(Rc::new(a.into_iter().map(Value::from_json).collect()))
            }
            serde_json::Value::Object(o) => Value::Map(Rc::new(
                o.into_iter()
                    .map(|(k, v)| (k, Value::from_json(v)))
                    .collect(),
            )),
        }
    }
}
