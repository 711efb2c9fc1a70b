//! The record service's error type and the issues it carries (mapped to OperationOutcome at the edge).

use crate::store::StoreError;

/// OperationOutcome issue severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The operation failed.
    Error,
    /// The operation succeeded with a caveat.
    Warning,
    /// Informational.
    Information,
}

/// OperationOutcome issue type (a subset of `http://hl7.org/fhir/issue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueCode {
    /// `invalid`
    Invalid,
    /// `structure`
    Structure,
    /// `value`
    Value,
    /// `required`: a required element is missing.
    Required,
    /// `code-invalid`: a code outside its required value set.
    CodeInvalid,
    /// `not-found`
    NotFound,
    /// `deleted`
    Deleted,
    /// `conflict`
    Conflict,
    /// `duplicate`
    Duplicate,
    /// `not-supported`
    NotSupported,
    /// `forbidden`
    Forbidden,
    /// `business-rule`
    BusinessRule,
    /// `processing`
    Processing,
    /// `exception`
    Exception,
    /// `informational`
    Informational,
    /// `too-costly`
    TooCostly,
    /// `security`
    Security,
    /// `login`
    Login,
    /// `transient`: the server is busy or a resource is temporarily unavailable; retry.
    Transient,
}

impl IssueCode {
    /// The code as written in OperationOutcome.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Value => "value",
            IssueCode::Required => "required",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::NotFound => "not-found",
            IssueCode::Deleted => "deleted",
            IssueCode::Conflict => "conflict",
            IssueCode::Duplicate => "duplicate",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Forbidden => "forbidden",
            IssueCode::BusinessRule => "business-rule",
            IssueCode::Processing => "processing",
            IssueCode::Exception => "exception",
            IssueCode::Informational => "informational",
            IssueCode::TooCostly => "too-costly",
            IssueCode::Security => "security",
            IssueCode::Login => "login",
            IssueCode::Transient => "transient",
        }
    }
}

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Severity.
    pub severity: Severity,
    /// Issue type.
    pub code: IssueCode,
    /// A sentence a developer can act on.
    pub diagnostics: String,
    /// FHIRPath-like location of the problem, when there is one.
    pub expression: Option<String>,
}

impl Issue {
    /// An error issue.
    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Issue { severity: Severity::Error, code, diagnostics: diagnostics.into(), expression: None }
    }

    /// Sets the location.
    pub fn at(mut self, path: &str) -> Self {
        if !path.is_empty() {
            self.expression = Some(path.to_string());
        }
        self
    }
}

/// Why a record operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The request is malformed or the resource invalid (400).
    #[error("invalid request: {}", .0.first().map(|i| i.diagnostics.as_str()).unwrap_or("invalid"))]
    Invalid(Vec<Issue>),
    /// No such resource or version (404).
    #[error("{0} not found")]
    NotFound(String),
    /// The resource is deleted (410).
    #[error("{0} is deleted")]
    Gone(String),
    /// `If-Match` named another version (412).
    #[error("version conflict: current version is {current}, request named {expected}")]
    VersionConflict {
        /// The version the client expected.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// A conditional interaction matched more than one resource (412).
    #[error("the condition matched {0} resources; it must match at most one")]
    MultipleMatches(usize),
    /// The request conflicts with the state of the resource (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but cannot be applied, e.g. a failing JSON Patch (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The act is not allowed for this caller or on this record (403).
    #[error("{0}")]
    Forbidden(String),
    /// Storage failed (500); the message is for logs, not for clients.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The read's audit entry could not be written, so its result was withheld (503, fail
    /// closed); the message is for logs.
    #[error("audit trail unavailable: {0}")]
    Unaudited(String),
    /// Emergency read-only mode is on: nothing is written (503).
    #[error("the system is in emergency read-only mode: records can be read but not written")]
    ReadOnly,
}

impl RecordError {
    /// The FHIR REST status of this answer (the HTTP edge sends it; the audit trail records it
    /// for every caller).
    pub fn status(&self) -> u16 {
        match self {
            RecordError::Invalid(_) => 400,
            RecordError::NotFound(_) => 404,
            RecordError::Gone(_) => 410,
            RecordError::VersionConflict { .. } | RecordError::MultipleMatches(_) => 412,
            RecordError::Conflict(_) => 409,
            RecordError::Unprocessable(_) => 422,
            RecordError::Forbidden(_) => 403,
            RecordError::Store(e) if e.is_transient() => 503,
            RecordError::Store(_) => 500,
            RecordError::Unaudited(_) | RecordError::ReadOnly => 503,
        }
    }

    /// A 400 with a single issue.
    pub fn invalid(code: IssueCode, msg: impl Into<String>) -> Self {
        RecordError::Invalid(vec![Issue::error(code, msg)])
    }
}
