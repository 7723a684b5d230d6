//! A validation finding: the file, the field (a YAML path such as
//! `services.web.image`), what is wrong and what to do about it.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The stack the finding belongs to; `None` for repository-level files.
    pub stack: Option<String>,
    /// Repository-relative path of the file at fault.
    pub file: String,
    /// YAML path of the field at fault; empty for the whole file.
    pub field: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.field.is_empty() {
            write!(f, "{sev}: {}: {}", self.file, self.message)?;
        } else {
            write!(f, "{sev}: {}: {}: {}", self.file, self.field, self.message)?;
        }
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Collects findings for one file of one stack.
#[derive(Debug)]
pub struct Sink<'a> {
    pub stack: Option<&'a str>,
    pub file: String,
    pub out: &'a mut Vec<Finding>,
}

impl<'a> Sink<'a> {
    pub fn new(stack: Option<&'a str>, file: impl Into<String>, out: &'a mut Vec<Finding>) -> Self {
        Sink {
            stack,
            file: file.into(),
            out,
        }
    }

    pub fn error(
        &mut self,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Error, field.into(), message.into(), fix.into());
    }

    pub fn warn(
        &mut self,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Warning, field.into(), message.into(), fix.into());
    }

    fn push(&mut self, severity: Severity, field: String, message: String, fix: String) {
        self.out.push(Finding {
            severity,
            stack: self.stack.map(str::to_string),
            file: self.file.clone(),
            field,
            message,
            fix,
        });
    }
}

/// The key of `allowed` near enough to `key` to be what a typo meant
/// (Jaro-Winkler ≥ 0.85, the nearest), for a "did you mean".
pub fn nearest<'a>(key: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

/// Joins a YAML path: `join("services.web", "image")`.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}
