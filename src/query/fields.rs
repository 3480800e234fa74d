//! Field statistics of compacted files: what `| json` gives each row, recorded per block by
//! the compactor (`tovlog_storage::textindex`), and the numeric label filters of a query
//! that let a scan skip blocks where no row can pass them.
//!
//! `{job="api"} | json | duration_ms > 1000` over a day reads every line and parses it,
//! although the slow requests sit in a few blocks: per block, the smallest and largest
//! `duration_ms` rule out the others without reading them.

use std::cell::RefCell;
use std::sync::Arc;

use tovlog_logql::ast::{CmpOp, Stage};
use tovlog_logql::pipeline::{parse_go_float, LabelsBuilder, NumericBound, Pipeline};
use tovlog_storage::schema::FieldExtractor;
use tovlog_storage::textindex::{FieldBound, FieldOp};

/// Labels of the JSON error a walk sets; not fields.
const ERROR_LABELS: [&str; 2] = ["__error__", "__error_details__"];

/// The extractor the server gives storage: the labels a full `| json` walk gives a row
/// with its structured metadata and no stream labels (stream labels are constant per
/// stream; [`bounds`] leaves out the labels a selected stream shadows). Values that Go's
/// `strconv.ParseFloat` (the numeric label filter's conversion) reads are numbers.
pub fn json_field_extractor() -> Result<FieldExtractor, tovlog_logql::Error> {
    // Checked once here, so the per-thread copies below cannot fail.
    Pipeline::new(&[Stage::Json(Vec::new())])?;
    Ok(Arc::new(|line, metadata, out| {
        thread_local! {
            static STATE: RefCell<Option<WalkState>> = const { RefCell::new(None) };
        }
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            let state = match &mut *state {
                Some(s) => s,
                None => match WalkState::new() {
                    Some(s) => state.insert(s),
                    None => return,
                },
            };
            state.fields(line, metadata, out);
        });
    }))
}

/// One compaction thread's pipeline and scratch space.
struct WalkState {
    pipeline: Pipeline,
    lb: LabelsBuilder,
    metadata: Vec<(String, String)>,
    labels: Vec<(String, String)>,
}

impl WalkState {
    fn new() -> Option<WalkState> {
        Some(WalkState {
            pipeline: Pipeline::new(&[Stage::Json(Vec::new())]).ok()?,
            lb: LabelsBuilder::new(),
            metadata: Vec::new(),
            labels: Vec::new(),
        })
    }

    fn fields(
        &mut self,
        line: &str,
        metadata: &[(&str, &str)],
        out: &mut dyn FnMut(&str, Option<f64>),
    ) {
        let number = |v: &str| parse_go_float(v).ok();
        // A line that is not an object fails `| json` before it sets a label: the row
        // has its metadata only (the walk would cost the same answer).
        if !line.trim_start().starts_with('{') {
            for (k, v) in metadata {
                out(k, number(v));
            }
            return;
        }
        self.metadata.truncate(metadata.len());
        for (i, (k, v)) in metadata.iter().enumerate() {
            match self.metadata.get_mut(i) {
                Some(slot) => {
                    slot.0.clear();
                    slot.0.push_str(k);
                    slot.1.clear();
                    slot.1.push_str(v);
                }
                None => self.metadata.push(((*k).to_string(), (*v).to_string())),
            }
        }
        self.lb.reset(&[], &self.metadata);
        // `| json` keeps every line (a failed walk marks an error and keeps what it set).
        let _ = self.pipeline.process(0, line, &mut self.lb);
        self.lb.labels_into(&mut self.labels);
        for (k, v) in &self.labels {
            if !ERROR_LABELS.contains(&k.as_str()) {
                out(k, number(v));
            }
        }
    }
}

/// The storage bounds of a pipeline's numeric `| json` filters
/// ([`Pipeline::json_numeric_bounds`]) that no selected stream label shadows: a stream
/// label `k` decides `k` instead of the line, and shifts the line's `k` to `k_extracted`,
/// which the statistics record as `k`.
pub fn bounds(pipeline: &Pipeline, shadowed: &dyn Fn(&str) -> bool) -> Vec<FieldBound> {
    pipeline
        .json_numeric_bounds()
        .iter()
        .filter(|b| !b.label.ends_with("_extracted") && !shadowed(&b.label))
        .filter_map(storage_bound)
        .collect()
}

fn storage_bound(b: &NumericBound) -> Option<FieldBound> {
    let op = match b.op {
        CmpOp::Eq => FieldOp::Eq,
        CmpOp::Gt => FieldOp::Gt,
        CmpOp::Ge => FieldOp::Ge,
        CmpOp::Lt => FieldOp::Lt,
        CmpOp::Le => FieldOp::Le,
        CmpOp::Neq => return None,
    };
    Some(FieldBound {
        name: b.label.clone(),
        op,
        value: b.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str, metadata: &[(&str, &str)]) -> Vec<(String, Option<f64>)> {
        let Ok(f) = json_field_extractor() else {
            panic!("no extractor")
        };
        let mut out = Vec::new();
        f(line, metadata, &mut |k, v| out.push((k.to_string(), v)));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn rows_report_what_json_sets() {
        assert_eq!(
            fields(
                r#"{"duration_ms":103.9,"status":"200","user":{"id":7},"tags":[1],"x":null,"ok":true}"#,
                &[("trace_id", "abc")]
            ),
            vec![
                ("duration_ms".into(), Some(103.9)),
                ("ok".into(), None),
                ("status".into(), Some(200.0)),
                ("trace_id".into(), None),
                ("user_id".into(), Some(7.0)),
            ]
        );
        // Metadata shadows the parsed label, which becomes `<k>_extracted`.
        assert_eq!(
            fields(r#"{"n":5}"#, &[("n", "9")]),
            vec![("n".into(), Some(9.0)), ("n_extracted".into(), Some(5.0))]
        );
        // Not an object: metadata only. A broken object keeps what came before the error.
        assert_eq!(fields("n=5", &[("m", "1")]), vec![("m".into(), Some(1.0))]);
        assert_eq!(fields(r#"{"a":1,"b":"#, &[]), vec![("a".into(), Some(1.0))]);
    }
}
