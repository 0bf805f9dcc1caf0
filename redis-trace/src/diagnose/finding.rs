//! What a check finds: a [`Finding`] of some [`Severity`], with its evidence and fix.
//! `diagnose` prints them; the report (`report`) lists them as risk findings.

/// One thing found, with the evidence behind it and what to do about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub title: String,
    pub evidence: Vec<String>,
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Finding {
    pub(super) fn new(
        severity: Severity,
        title: impl Into<String>,
        evidence: Vec<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            title: title.into(),
            evidence,
            fix: fix.into(),
        }
    }
}

impl Severity {
    /// The severity as the report's Markdown writes it: "Critical", "Warning", "Info".
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        }
    }
}
