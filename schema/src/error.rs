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

impl ErrorKind {
    /// The words Kubernetes prints for the kind (`Required value`, `Invalid value`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Required => "Required value",
            ErrorKind::Invalid | ErrorKind::TypeInvalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::Internal => "Internal error",
        }
    }

    /// The `reason` of a Status cause (`FieldValueInvalid`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::Internal => "InternalError",
        }
    }
}

impl FieldError {
    /// The message without the field, as Kubernetes' `ErrorBody` prints it (the `message` of
    /// a Status cause): `Invalid value: "x": must be ...`, `Required value`.
    pub fn body(&self) -> String {
        let mut s = self.kind.as_str().to_string();
        let prints_value = matches!(
            self.kind,
            ErrorKind::Invalid
                | ErrorKind::TypeInvalid
                | ErrorKind::NotSupported
                | ErrorKind::Duplicate
                | ErrorKind::TooMany
        );
        if prints_value {
            if let Some(v) = &self.value {
                s.push_str(": ");
                s.push_str(&match v {
                    Value::String(x) => crate::gofmt::quote(x),
                    Value::Number(n) => crate::gofmt::number(n),
                    Value::Bool(b) => b.to_string(),
                    other => crate::gofmt::json(other),
                });
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    /// `field: body`, as Kubernetes' `field.Error.Error()` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// Errors joined as Kubernetes' `ErrorList.ToAggregate()` prints them: the one error alone,
/// several as `[a, b]`, repeated texts once. This is the message of a `NonStructuralSchema`
/// condition and the tail of a 422's message (`Widget.example.com "w" is invalid: ...`).
pub fn aggregate(errs: &[FieldError]) -> String {
    let mut texts: Vec<String> = Vec::new();
    for e in errs {
        let t = e.to_string();
        if !texts.contains(&t) {
            texts.push(t);
        }
    }
    match texts.len() {
        1 => texts.remove(0),
        _ => format!("[{}]", texts.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_print_as_kubernetes_prints_them() {
        let e = FieldError::new(
            ErrorKind::TypeInvalid,
            "spec.replicas",
            Some(json!("string")),
            "spec.replicas in body must be of type integer: \"string\"",
        );
        assert_eq!(
            e.to_string(),
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
        );
        let e = FieldError::new(ErrorKind::Required, "spec.x", None, "");
        assert_eq!(e.to_string(), "spec.x: Required value");
        let e = FieldError::new(
            ErrorKind::TooMany,
            "spec.tags",
            Some(json!(5)),
            "must have at most 4 items",
        );
        assert_eq!(
            e.to_string(),
            "spec.tags: Too many: 5: must have at most 4 items"
        );
        let e = FieldError::new(
            ErrorKind::Duplicate,
            "spec.l[1]",
            Some(json!({"name": "a"})),
            "",
        );
        assert_eq!(
            e.to_string(),
            "spec.l[1]: Duplicate value: {\"name\":\"a\"}"
        );
        let e = FieldError::new(ErrorKind::Invalid, "<nil>", Some(Value::Null), "x");
        assert_eq!(e.to_string(), "<nil>: Invalid value: null: x");
        let e = FieldError::new(
            ErrorKind::TooLong,
            "spec.n",
            Some(json!("abc")),
            "may not be more than 2 bytes",
        );
        assert_eq!(
            e.to_string(),
            "spec.n: Too long: may not be more than 2 bytes"
        );
    }

    #[test]
    fn aggregates_print_as_kubernetes_prints_them() {
        let a = FieldError::new(ErrorKind::Required, "spec.a", None, "");
        let b = FieldError::new(ErrorKind::Forbidden, "spec.b", None, "no");
        assert_eq!(
            aggregate(std::slice::from_ref(&a)),
            "spec.a: Required value"
        );
        assert_eq!(
            aggregate(&[a.clone(), b, a]),
            "[spec.a: Required value, spec.b: Forbidden: no]"
        );
    }
}
