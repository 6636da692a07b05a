//! Rules compiled and run as a CRD would have them.

use super::*;
use serde_json::json;

fn schema(v: Value) -> Schema {
    Schema::parse(&v).unwrap()
}

fn run(s: &Value, value: Value) -> Vec<String> {
    let rules = Rules::compile(&schema(s.clone()), "spec.validation.openAPIV3Schema").unwrap();
    let mut out = Vec::new();
    rules.check("spec", &value, None, &mut out);
    out.iter().map(render).collect()
}

fn render(e: &FieldError) -> String {
    let kind = match e.kind {
        ErrorKind::Invalid => "Invalid value",
        ErrorKind::Required => "Required value",
        ErrorKind::Forbidden => "Forbidden",
        ErrorKind::Duplicate => "Duplicate value",
        ErrorKind::NotSupported => "Unsupported value",
        _ => "other",
    };
    let mut s = format!("{}: {kind}", e.field);
    if let Some(v) = &e.value {
        s.push_str(&format!(": {v}"));
    }
    if !e.detail.is_empty() {
        s.push_str(&format!(": {}", e.detail));
    }
    s
}

#[test]
fn a_rule_that_holds_passes_and_one_that_fails_says_so() {
    let s = json!({
        "type": "object",
        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}]
    });
    assert!(run(&s, json!({"min": 1, "max": 2})).is_empty());
    assert_eq!(
        run(&s, json!({"min": 3, "max": 2})),
        vec!["spec: Invalid value: min must not exceed max"]
    );
}
