//! Delete queries: the LogQL of a delete request (`{app="api"} |= "password" != "debug"`)
//! compiled into what storage's tombstones and compactor apply (stream matchers and a line
//! predicate). Storage knows no LogQL; it calls [`compile_delete`] through the
//! [`tovlog_storage::erase::DeleteCompiler`] the server installs at start-up, for new requests
//! and for the requests it reloads.
//!
//! The line predicate is the logql crate's [`LineFilterChain`], the code every query runs for
//! its line filters, so a line a delete removes is exactly a line the same filters select in
//! a query.

use std::sync::Arc;

use tovlog_logql::{
    ast::{Expr, Stage},
    pipeline::LineFilterChain,
};
use tovlog_storage::erase::{CompiledDelete, DeleteCompiler};

/// Loki's answer to a delete query it cannot parse (`pkg/compactor/deletion/util.go`).
pub const INVALID_QUERY: &str = "invalid query expression";

/// Compile a delete query: a stream selector with optional line filters (`|=`, `!=`, `|~`,
/// `!~`, `|>`, `!>`, `ip("…")`, `or` alternatives). Anything else is refused with Loki's
/// message; where Loki would accept a pipeline tovlog cannot apply to stored lines (parsers,
/// label filters, formatting), the message says so after Loki's text.
pub fn compile_delete(query: &str) -> Result<CompiledDelete, String> {
    let expr = tovlog_logql::parse(query).map_err(|_| INVALID_QUERY.to_owned())?;
    let Expr::Log(log) = expr else {
        return Err(INVALID_QUERY.to_owned());
    };
    let mut filters = Vec::with_capacity(log.pipeline.len());
    for stage in &log.pipeline {
        match stage {
            Stage::LineFilter(f) => filters.push(f.clone()),
            _ => {
                return Err(format!(
                    "{INVALID_QUERY}: a delete query is a stream selector with optional line filters (|=, !=, |~, !~, |>, !>) only"
                ))
            }
        }
    }
    let matchers = crate::query::convert_matchers(&log.selector).map_err(|e| e.to_string())?;
    let (line, needles) = if filters.is_empty() {
        (None, Vec::new())
    } else {
        let chain = LineFilterChain::new(&filters).map_err(|e| e.to_string())?;
        let needles = chain.required_substrings();
        let line: tovlog_storage::erase::LineMatch = Arc::new(move |l: &str| chain.matches(l));
        (Some(line), needles)
    };
    Ok(CompiledDelete {
        matchers,
        line,
        needles,
    })
}

/// [`compile_delete`] as storage's compiler.
pub fn delete_compiler() -> DeleteCompiler {
    Arc::new(compile_delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deletes(query: &str, line: &str) -> Result<bool, String> {
        let c = compile_delete(query)?;
        Ok(c.line.as_ref().is_none_or(|f| f(line)))
    }

    #[test]
    fn line_filters_select_the_deleted_lines_as_in_a_query() -> Result<(), String> {
        assert!(deletes(r#"{app="a"}"#, "anything")?);
        assert!(deletes(r#"{app="a"} |= "secret""#, "a secret here")?);
        assert!(!deletes(r#"{app="a"} |= "secret""#, "nothing here")?);
        assert!(deletes(r#"{app="a"} |= "secret" != "debug""#, "secret")?);
        assert!(!deletes(
            r#"{app="a"} |= "secret" != "debug""#,
            "debug secret"
        )?);
        assert!(deletes(r#"{app="a"} |~ "pass(word)?=\\w+""#, "pass=x")?);
        assert!(!deletes(
            r#"{app="a"} !~ "pass(word)?=\\w+""#,
            "password=x"
        )?);
        assert!(deletes(r#"{app="a"} |= "x" or "y""#, "y only")?);
        assert!(deletes(
            r#"{app="a"} |> "user <_> logged in""#,
            "user bob logged in"
        )?);
        assert!(deletes(
            r#"{app="a"} |= ip("10.0.0.0/8")"#,
            "from 10.1.2.3"
        )?);
        assert!(!deletes(
            r#"{app="a"} |= ip("10.0.0.0/8")"#,
            "from 11.1.2.3"
        )?);
        // The same filters, run the way a query runs its pipeline, agree on every line.
        let q = r#"{app="a"} |= "err" !~ "(?i)timeout""#;
        let tovlog_logql::ast::Expr::Log(log) =
            tovlog_logql::parse(q).map_err(|e| e.to_string())?
        else {
            return Err("not a log query".into());
        };
        let pipeline =
            tovlog_logql::pipeline::Pipeline::new(&log.pipeline).map_err(|e| e.to_string())?;
        for line in ["err", "err TIMEOUT", "ok", "error: Timeout", "errr"] {
            assert_eq!(
                deletes(q, line)?,
                pipeline.leading_line_filters().matches(line),
                "{line}"
            );
        }
        Ok(())
    }

    #[test]
    fn selector_matchers_are_kept() -> Result<(), String> {
        let c = compile_delete(r#"{app="a", env=~"prod|dev"} |= "x""#)?;
        assert_eq!(c.matchers.len(), 2);
        assert_eq!(c.matchers[0].name, "app");
        assert!(c.line.is_some());
        Ok(())
    }

    #[test]
    fn anything_but_a_selector_with_line_filters_is_refused() {
        for q in [
            "",
            "nope",
            r#"{app="a""#,
            r#"count_over_time({app="a"}[5m])"#,
            r#"{app=~".*"}"#,
        ] {
            assert_eq!(
                compile_delete(q).err().as_deref(),
                Some(INVALID_QUERY),
                "{q}"
            );
        }
        for q in [
            r#"{app="a"} | json"#,
            r#"{app="a"} |= "x" | logfmt | level="error""#,
            r#"{app="a"} | line_format "{{.x}}""#,
        ] {
            let err = compile_delete(q).err().unwrap_or_default();
            assert!(err.starts_with("invalid query expression: "), "{q}: {err}");
        }
    }
}
