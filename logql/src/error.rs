//! LogQL errors. `Display` reproduces Loki's wording, because clients show it verbatim.

/// A LogQL error: always the user's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Syntax error with a 1-based position: `parse error at line 1, col 15: syntax error: unexpected …`.
    /// As in Loki, a position of line 0 and col 0 means "no position" and displays as
    /// `parse error : …`; line 0 with a column is kept as Loki prints it (its scanner
    /// forgets the line after multi-character tokens such as ranges and `|=`).
    #[error("{}", fmt_parse(*.line, *.col, .msg))]
    Parse {
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        col: usize,
        /// Message after the position.
        msg: String,
    },
    /// A pipeline stage that cannot be built: `parse error : stage '<stage>' : <msg>`.
    #[error("parse error : stage '{stage}' : {msg}")]
    Stage {
        /// The stage as Loki prints it (`|~ "(unclosed"`, `| line_format "{{ … }}"`).
        stage: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A semantic error; `0` is the complete message.
    #[error("{0}")]
    Validate(String),
    /// A template that does not parse or uses an unknown function.
    #[error("{0}")]
    Template(String),
}

impl Error {
    /// A position-less parse error, displayed as `parse error : {msg}` (Loki's `NewParseError(msg, 0, 0)`).
    pub fn parse_msg(msg: impl Into<String>) -> Error {
        Error::Parse {
            line: 0,
            col: 0,
            msg: msg.into(),
        }
    }
}

fn fmt_parse(line: usize, col: usize, msg: &str) -> String {
    if line == 0 && col == 0 {
        format!("parse error : {msg}")
    } else {
        format!("parse error at line {line}, col {col}: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn parse_error_display_matches_loki() {
        let e = Error::Parse {
            line: 1,
            col: 30,
            msg: "syntax error: unexpected )".into(),
        };
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 30: syntax error: unexpected )"
        );
        assert_eq!(
            Error::parse_msg("grouping not allowed for sum_over_time aggregation").to_string(),
            "parse error : grouping not allowed for sum_over_time aggregation"
        );
        let s = Error::Stage {
            stage: "|~ \"(x\"".into(),
            msg: "boom".into(),
        };
        assert_eq!(s.to_string(), "parse error : stage '|~ \"(x\"' : boom");
    }
}
