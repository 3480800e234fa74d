//! Executes a parsed tree against one entry, with Go's `text/template` semantics: truth,
//! `missingkey=zero` label lookup (a missing label is ""), lazy `and`/`or`, argument type
//! checks against Go signatures, and Go-shaped error messages
//! (`template: line:1:3: executing "line" at <trunc>: ...`).

use std::borrow::Cow;

use super::funcs::{Func, Kind};
use super::parse::{Arg, Branch, Cmd, Node, Number, Operand, Pipe, TemplateCall, Tree};
use super::printf;
use super::value::Value;
use super::TemplateContext;

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct Exec<'a, 'o> {
    name: &'a str,
    src: &'a str,
    ctx: &'a TemplateContext<'a>,
    /// `$` (slot 0): the label map.
    root: Value<'a>,
    /// Declared variables by slot; index 0 is unused (`$` is `root`). Empty, so not
    /// allocated, for templates without variables.
    vars: Vec<Value<'a>>,
    /// Argument stack shared by all function calls of this execution.
    args: Vec<Value<'a>>,
    /// Range iterations so far, against [`MAX_RANGE_ITERATIONS`].
    iterations: u64,
    /// Named templates, for `{{template}}`.
    tree: &'a Tree,
    /// Nesting of `{{template}}` calls, against [`MAX_TEMPLATE_DEPTH`].
    depth: usize,
    out: &'o mut String,
}

type EResult<T> = Result<T, String>;

/// Nesting allowed for `{{template}}` calls. Go allows 100000 frames; ours recurse on the
/// native stack, so the limit is lower.
const MAX_TEMPLATE_DEPTH: usize = 10;

/// Range iterations allowed per execution (all loops together).
const MAX_RANGE_ITERATIONS: u64 = 1_000_000;

/// Runs `tree` and appends its output to `out`.
pub(crate) fn execute<'a>(
    name: &'a str,
    src: &'a str,
    tree: &'a Tree,
    ctx: &'a TemplateContext<'a>,
    out: &mut String,
) -> EResult<()> {
    execute_with_root(name, src, tree, ctx, Value::Labels(ctx.labels), out)
}

/// [`execute`] with `root` as the dot and `$` instead of the label map (Prometheus' alert
/// templates see a struct of labels, value and external labels).
pub(crate) fn execute_with_root<'a>(
    name: &'a str,
    src: &'a str,
    tree: &'a Tree,
    ctx: &'a TemplateContext<'a>,
    root: Value<'a>,
    out: &mut String,
) -> EResult<()> {
    let vars = if tree.slots > 1 {
        vec![Value::Nil; tree.slots]
    } else {
        Vec::new()
    };
    let mut ex = Exec {
        name,
        src,
        ctx,
        root: root.clone(),
        vars,
        args: Vec::new(),
        iterations: 0,
        tree,
        depth: 0,
        out,
    };
    ex.walk(&tree.root, &root).map(|_| ())
}

impl<'a> Exec<'a, '_> {
    fn var(&self, slot: usize) -> Value<'a> {
        if slot == 0 {
            return self.root.clone();
        }
        self.vars.get(slot).cloned().unwrap_or(Value::Nil)
    }

    fn set_var(&mut self, slot: usize, v: Value<'a>) {
        if let Some(var) = self.vars.get_mut(slot) {
            *var = v;
        }
    }

    /// Go's location prefix for an execution error at `op`.
    fn err_at(&self, op: &Operand, msg: impl std::fmt::Display) -> String {
        self.err_span(op.start, op.end, msg)
    }

    fn err_span(&self, start: usize, end: usize, msg: impl std::fmt::Display) -> String {
        let before = &self.src[..start.min(self.src.len())];
        let line = 1 + before.matches('\n').count();
        let col = match before.rfind('\n') {
            Some(nl) => start - nl - 1,
            None => start,
        };
        let text = self.src.get(start..end).unwrap_or("").trim();
        format!(
            "template: {}:{line}:{col}: executing \"{}\" at <{text}>: {msg}",
            self.name, self.name
        )
    }

    fn walk(&mut self, list: &'a [Node], dot: &Value<'a>) -> EResult<Flow> {
        for node in list {
            match node {
                Node::Text(s) => self.out.push_str(s),
                Node::Action(pipe) => {
                    let v = self.eval_pipe(pipe, dot, true)?;
                    if pipe.decl.is_empty() {
                        match v {
                            // Go prints a missing (invalid) value this way.
                            Value::Nil => self.out.push_str("<no value>"),
                            v => printf::write_value(self.out, &v),
                        }
                    }
                }
                Node::If(b) => {
                    let v = self.eval_pipe(&b.pipe, dot, true)?;
                    let list = if v.truthy() { &b.list } else { &b.else_list };
                    match self.walk(list, dot)? {
                        Flow::Normal => {}
                        f => return Ok(f),
                    }
                }
                Node::With(b) => {
                    let v = self.eval_pipe(&b.pipe, dot, true)?;
                    let flow = if v.truthy() {
                        self.walk(&b.list, &v)?
                    } else {
                        self.walk(&b.else_list, dot)?
                    };
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(b) => self.range(b, dot)?,
                Node::Template(call) => self.call_template(call, dot)?,
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn range(&mut self, b: &'a Branch, dot: &Value<'a>) -> EResult<()> {
        let v = self.eval_pipe(&b.pipe, dot, false)?;
        let mut any = false;
        match &v {
            Value::List(l) => {
                for (i, e) in l.iter().enumerate() {
                    any = true;
                    if self.iterate(b, Value::Int(i as i64), e.clone())? {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                for (k, e) in m.iter() {
                    any = true;
                    if self.iterate(b, Value::string(k.clone()), e.clone())? {
                        break;
                    }
                }
            }
            Value::Labels(l) => {
                let l: &'a dyn super::LabelLookup = *l;
                for (k, e) in l.all() {
                    any = true;
                    if self.iterate(b, Value::str(k), Value::str(e))? {
                        break;
                    }
                }
            }
            Value::Int(n) | Value::Int64(n) => {
                if b.pipe.decl.len() > 1 {
                    return Err(format!(
                        "template: {}: can't use {n} to iterate over more than one variable",
                        self.name
                    ));
                }
                for i in 0..*n {
                    any = true;
                    if self.iterate(b, Value::Int(i), Value::Int(i))? {
                        break;
                    }
                }
            }
            // Go: ranging over nothing runs the else branch.
            Value::Nil => {}
            other => {
                let mut s = String::new();
                printf::write_value(&mut s, other);
                return Err(format!(
                    "template: {}: range can't iterate over {s}",
                    self.name
                ));
            }
        }
        if !any {
            self.walk(&b.else_list, dot)?;
        }
        Ok(())
    }

    /// `{{template "name" pipeline}}`: runs a named template with the pipeline as its dot
    /// and `$`, in its own variable scope.
    fn call_template(&mut self, call: &'a TemplateCall, dot: &Value<'a>) -> EResult<()> {
        let (root, slots) = match self.tree.defs.get(&call.name) {
            Some(def) => (&def.root, def.slots),
            None if call.name == self.name => (&self.tree.root, self.tree.slots),
            None => {
                return Err(self.err_span(
                    call.pos,
                    call.pos,
                    format!("template {} not defined", printf::quote(&call.name, false)),
                ))
            }
        };
        let new_dot = match &call.pipe {
            Some(p) => self.eval_pipe(p, dot, true)?,
            None => Value::Nil,
        };
        if self.depth >= MAX_TEMPLATE_DEPTH {
            return Err(self.err_span(
                call.pos,
                call.pos,
                format!("exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})"),
            ));
        }
        let vars = if slots > 1 {
            vec![Value::Nil; slots]
        } else {
            Vec::new()
        };
        let saved_vars = std::mem::replace(&mut self.vars, vars);
        let saved_root = std::mem::replace(&mut self.root, new_dot.clone());
        self.depth += 1;
        let result = self.walk(root, &new_dot);
        self.depth -= 1;
        self.vars = saved_vars;
        self.root = saved_root;
        result.map(|_| ())
    }

    /// One range iteration; returns true on `{{break}}`.
    fn iterate(&mut self, b: &'a Branch, key: Value<'a>, elem: Value<'a>) -> EResult<bool> {
        self.iterations += 1;
        if self.iterations > MAX_RANGE_ITERATIONS {
            // Not in Go: a guard so one entry cannot pin a query thread (`range 1e12`).
            return Err(format!(
                "template: {}: more than {MAX_RANGE_ITERATIONS} range iterations",
                self.name
            ));
        }
        match b.pipe.decl.as_slice() {
            [] => {}
            [e] => self.set_var(*e, elem.clone()),
            [k, e, ..] => {
                self.set_var(*k, key);
                self.set_var(*e, elem.clone());
            }
        }
        Ok(matches!(self.walk(&b.list, &elem)?, Flow::Break))
    }

    fn eval_pipe(&mut self, pipe: &'a Pipe, dot: &Value<'a>, set_decl: bool) -> EResult<Value<'a>> {
        let mut last: Option<Value<'a>> = None;
        for cmd in &pipe.cmds {
            last = Some(self.eval_cmd(cmd, dot, last)?);
        }
        let v = last.unwrap_or(Value::Nil);
        if set_decl {
            for slot in &pipe.decl {
                self.set_var(*slot, v.clone());
            }
        }
        Ok(v)
    }

    fn eval_cmd(
        &mut self,
        cmd: &'a Cmd,
        dot: &Value<'a>,
        last: Option<Value<'a>>,
    ) -> EResult<Value<'a>> {
        let Some(first) = cmd.args.first() else {
            return Ok(Value::Nil);
        };
        let rest = &cmd.args[1..];
        if let Arg::Func(f) = &first.arg {
            return self.call(*f, first, cmd, rest, dot, last);
        }
        let has_args = !rest.is_empty() || last.is_some();
        match &first.arg {
            Arg::Field(chain) => self.chain(first, dot.clone(), chain, has_args),
            Arg::Var { slot, chain } => {
                let base = self.var(*slot);
                self.chain(first, base, chain, has_args)
            }
            Arg::Chain { inner, chain } => {
                let base = self.eval_operand(inner, dot)?;
                self.chain(first, base, chain, has_args)
            }
            Arg::Nil => Err(self.err_at(first, "nil is not a command")),
            _ if has_args => Err(self.err_at(
                first,
                format!(
                    "can't give argument to non-function {}",
                    self.src.get(first.start..first.end).unwrap_or("").trim()
                ),
            )),
            _ => self.eval_operand(first, dot),
        }
    }

    /// Walks a field chain from `base`; the last field may not take arguments (no methods).
    fn chain(
        &self,
        op: &Operand,
        base: Value<'a>,
        chain: &[String],
        has_args: bool,
    ) -> EResult<Value<'a>> {
        let mut v = base;
        for (k, name) in chain.iter().enumerate() {
            let last = k + 1 == chain.len();
            v = match v {
                Value::Labels(l) => {
                    if last && has_args {
                        return Err(
                            self.err_at(op, format!("{name} is not a method but has arguments"))
                        );
                    }
                    // missingkey=zero on map[string]string: a missing label is "".
                    Value::str(l.label(name).unwrap_or(""))
                }
                Value::Map(m) => {
                    if last && has_args {
                        return Err(
                            self.err_at(op, format!("{name} is not a method but has arguments"))
                        );
                    }
                    m.get(name).cloned().unwrap_or(Value::Nil)
                }
                Value::Time(t) if !has_args || !last => match time_method(&t, name) {
                    Some(v) => v,
                    None => {
                        return Err(self
                            .err_at(op, format!("can't evaluate field {name} in type time.Time")))
                    }
                },
                Value::Nil => {
                    return Err(
                        self.err_at(op, format!("nil pointer evaluating interface {{}}.{name}"))
                    )
                }
                other => {
                    return Err(self.err_at(
                        op,
                        format!("can't evaluate field {name} in type {}", other.type_name()),
                    ))
                }
            };
        }
        Ok(v)
    }

    /// The value of an operand used as an argument or alone.
    fn eval_operand(&mut self, op: &'a Operand, dot: &Value<'a>) -> EResult<Value<'a>> {
        match &op.arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(chain) => self.chain(op, dot.clone(), chain, false),
            Arg::Var { slot, chain } => {
                let base = self.var(*slot);
                self.chain(op, base, chain, false)
            }
            Arg::Chain { inner, chain } => {
                let base = self.eval_operand(inner, dot)?;
                self.chain(op, base, chain, false)
            }
            Arg::Func(f) => {
                let cmd_args: &[Operand] = &[];
                self.call_with(*f, op, None, cmd_args, dot, None)
            }
            Arg::Pipe(p) => self.eval_pipe(p, dot, true),
            Arg::Str(s) => Ok(Value::Str(Cow::Borrowed(s))),
            Arg::Num(n) => Ok(ideal(n)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Nil),
        }
    }

    /// Evaluates an argument for a parameter of `kind`, with Go's conversions and checks.
    fn eval_arg(&mut self, op: &'a Operand, kind: Kind, dot: &Value<'a>) -> EResult<Value<'a>> {
        let found = |s: &Self| s.src.get(op.start..op.end).unwrap_or("").trim().to_string();
        match (&op.arg, kind) {
            (_, Kind::Any) => self.eval_operand(op, dot),
            (Arg::Num(n), Kind::Int) => match n.int {
                Some(i) => Ok(Value::Int(i)),
                None => Err(self.err_at(op, format!("expected integer; found {}", found(self)))),
            },
            (Arg::Num(n), Kind::Float) => match n.float {
                Some(f) => Ok(Value::Float(f)),
                None => Err(self.err_at(op, format!("expected float; found {}", found(self)))),
            },
            (Arg::Num(_) | Arg::Bool(_), Kind::Str) => {
                Err(self.err_at(op, format!("expected string; found {}", found(self))))
            }
            (Arg::Str(_) | Arg::Bool(_), Kind::Int) => {
                Err(self.err_at(op, format!("expected integer; found {}", found(self))))
            }
            (Arg::Str(_) | Arg::Bool(_), Kind::Float) => {
                Err(self.err_at(op, format!("expected float; found {}", found(self))))
            }
            (Arg::Nil, _) => {
                Err(self.err_at(op, format!("cannot assign nil to {}", kind.go_name())))
            }
            _ => {
                let v = self.eval_operand(op, dot)?;
                self.check(op, v, kind)
            }
        }
    }

    /// Go's `validateType` for a computed value.
    fn check(&self, op: &Operand, v: Value<'a>, kind: Kind) -> EResult<Value<'a>> {
        let ok = matches!(
            (&v, kind),
            (_, Kind::Any)
                | (Value::Str(_), Kind::Str)
                | (Value::Int(_), Kind::Int)
                | (Value::Float(_), Kind::Float)
                | (Value::Time(_), Kind::Time)
        );
        if ok {
            Ok(v)
        } else if matches!(v, Value::Nil) {
            Err(self.err_at(op, format!("invalid value; expected {}", kind.go_name())))
        } else {
            Err(self.err_at(
                op,
                format!(
                    "wrong type for value; expected {}; got {}",
                    kind.go_name(),
                    v.type_name()
                ),
            ))
        }
    }

    fn call(
        &mut self,
        f: Func,
        fop: &'a Operand,
        cmd: &'a Cmd,
        args: &'a [Operand],
        dot: &Value<'a>,
        last: Option<Value<'a>>,
    ) -> EResult<Value<'a>> {
        self.call_with(f, fop, Some(cmd), args, dot, last)
    }

    fn call_with(
        &mut self,
        f: Func,
        fop: &'a Operand,
        cmd: Option<&'a Cmd>,
        args: &'a [Operand],
        dot: &Value<'a>,
        last: Option<Value<'a>>,
    ) -> EResult<Value<'a>> {
        let sig = f.sig();
        let n = args.len() + usize::from(last.is_some());
        let fixed = sig.params.len();
        if n < fixed || (sig.variadic.is_none() && n != fixed) {
            // Go's wording; for variadic functions it counts only the written arguments.
            let msg = if sig.variadic.is_some() {
                format!(
                    "wrong number of args for {}: want at least {fixed} got {}",
                    f.name(),
                    args.len()
                )
            } else {
                format!(
                    "wrong number of args for {}: want {fixed} got {n}",
                    f.name()
                )
            };
            return Err(self.err_at(fop, msg));
        }
        // `and`/`or` stop at the first operand that decides the result (Go ≥ 1.18).
        if matches!(f, Func::And | Func::Or) {
            let want = f == Func::Or;
            let mut v = Value::Nil;
            for op in args {
                v = self.eval_operand(op, dot)?;
                if v.truthy() == want {
                    return Ok(v);
                }
            }
            return Ok(last.unwrap_or(v));
        }
        // Arguments go on the shared stack; nested calls push above and pop back to `base`.
        let base = self.args.len();
        let filled = self.push_args(fop, &sig, args, dot, last, n);
        let result = match filled {
            Ok(()) => {
                let regex = cmd.and_then(|c| c.regex.as_ref());
                match f {
                    // Prometheus' `externalURL`/`pathPrefix` read the URL the data carries.
                    Func::ExternalUrl | Func::PathPrefix => {
                        let url = match &self.root {
                            Value::Map(m) => match m.get("ExternalURL") {
                                Some(Value::Str(s)) => s.to_string(),
                                _ => String::new(),
                            },
                            _ => String::new(),
                        };
                        Ok(if f == Func::ExternalUrl {
                            Value::string(url)
                        } else {
                            Value::string(super::funcs::url_path(&url))
                        })
                    }
                    _ => f.call(&mut self.args[base..], self.ctx, regex),
                }
            }
            Err(e) => {
                self.args.truncate(base);
                return Err(e);
            }
        };
        self.args.truncate(base);
        // Go reports a failing call at the whole command (`at <div 1 0>`).
        let (start, end) = match cmd.map(|c| c.args.as_slice()) {
            Some([first, .., last]) => (first.start, last.end),
            _ => (fop.start, fop.end),
        };
        result.map_err(|e| self.err_span(start, end, format!("error calling {}: {e}", f.name())))
    }

    fn push_args(
        &mut self,
        fop: &'a Operand,
        sig: &super::funcs::Sig,
        args: &'a [Operand],
        dot: &Value<'a>,
        last: Option<Value<'a>>,
        n: usize,
    ) -> EResult<()> {
        for (k, op) in args.iter().enumerate() {
            let v = self.eval_arg(op, sig.kind(k), dot)?;
            self.args.push(v);
        }
        if let Some(v) = last {
            let v = self.check(fop, v, sig.kind(n - 1))?;
            self.args.push(v);
        }
        Ok(())
    }
}

/// A number literal as an `interface{}` argument: float64 when written as a float, else int.
fn ideal<'a>(n: &Number) -> Value<'a> {
    match (n.int, n.float) {
        (Some(i), _) if !n.float_syntax => Value::Int(i),
        (_, Some(f)) => Value::Float(f),
        (Some(i), None) => Value::Int(i),
        (None, None) => Value::Nil,
    }
}

/// The argument-less `time.Time` methods with int/time results (`(__timestamp__).Unix`).
/// `Month`/`Weekday` (named types) and methods taking arguments are not supported.
fn time_method<'a>(t: &super::time::GoTime, name: &str) -> Option<Value<'a>> {
    Some(match name {
        "Unix" => Value::Int64(t.secs),
        "UnixMilli" => Value::Int64(t.unix_milli()),
        "UnixNano" => Value::Int64(t.unix_nano()),
        "UTC" => Value::Time(super::time::GoTime {
            offset: 0,
            utc: true,
            ..*t
        }),
        "Nanosecond" => Value::Int(i64::from(t.nsec)),
        "Year" => Value::Int(t.fields().year),
        "YearDay" => Value::Int(i64::from(t.fields().yday)),
        "Day" => Value::Int(i64::from(t.fields().day)),
        "Hour" => Value::Int(i64::from(t.fields().hour)),
        "Minute" => Value::Int(i64::from(t.fields().min)),
        "Second" => Value::Int(i64::from(t.fields().sec)),
        "String" => Value::string(t.go_string()),
        _ => return None,
    })
}
