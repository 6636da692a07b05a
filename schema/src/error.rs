//! Field-level problems, as Kubernetes' `field.Error` reports them.

use serde_json::Value;

/// What kind of problem a field has (Kubernetes' `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `FieldValueRequired`: a required field is missing.
    Required,
    /// `FieldValueInvalid`: a value is malformed or out of range.
    Invalid,
    /// `FieldValueTypeInvalid`: a value has the wrong type.
    TypeInvalid,
    /// `FieldValueNotSupported`: a value is not one of the allowed ones.
    NotSupported,
    /// `FieldValueDuplicate`: a value repeats one that must be unique.
    Duplicate,
    /// `FieldValueForbidden`: a field may not be set.
    Forbidden,
    /// `FieldValueTooLong`: a value is too long.
    TooLong,
    /// `FieldValueTooMany`: a list or map has too many items.
    TooMany,
    /// `InternalError`: something went wrong that is not the value's fault.
    Internal,
}

/// One field-level problem.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What kind.
    pub kind: ErrorKind,
    /// The field's path as Kubernetes prints it: `spec.ports[0].port`, `spec.labels[app]`.
    pub field: String,
    /// The bad value, where Kubernetes prints one.
    pub value: Option<Value>,
    /// The detail after the kind's standard words.
    pub detail: String,
}

impl FieldError {
    /// A problem of `kind` at `field`.
    pub fn new(
        kind: ErrorKind,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }
}
