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

/// The schema of an item or map value of the given kind, as Kubernetes' cost tests name
/// them (`number`, `duration`, `int-or-string`, ...).
fn scalar(kind: &str) -> Value {
    match kind {
        "duration" | "date" | "date-time" => json!({"type": "string", "format": kind}),
        "int-or-string" => json!({"x-kubernetes-int-or-string": true}),
        other => json!({"type": other}),
    }
}

fn with_rule(mut s: Value, rule: &str) -> Value {
    s["x-kubernetes-validations"] = json!([{"rule": rule}]);
    s
}

fn array_of(items: Value, max: Option<u64>) -> Value {
    let mut s = json!({"type": "array", "items": items});
    if let Some(m) = max {
        s["maxItems"] = json!(m);
    }
    s
}

fn map_of(values: Value, max: Option<u64>) -> Value {
    let mut s = json!({"type": "object", "additionalProperties": values});
    if let Some(m) = max {
        s["maxProperties"] = json!(m);
    }
    s
}

fn string_max(max: Option<u64>) -> Value {
    let mut s = json!({"type": "string"});
    if let Some(m) = max {
        s["maxLength"] = json!(m);
    }
    s
}

fn object_with_required() -> Value {
    json!({
        "type": "object",
        "required": ["required"],
        "properties": {"required": {"type": "string"}, "optional": {"type": "string"}}
    })
}

/// The estimate of the one rule of `s`; `u64::MAX` when it is refused for cost.
fn static_cost(s: Value) -> u64 {
    match Rules::compile(&schema(s), "") {
        Ok(rules) => rules.rules[0].static_cost,
        Err(errs) if errs[0].detail.contains("exceeds budget") => u64::MAX,
        Err(errs) => panic!("{errs:?}"),
    }
}

/// The estimates of Kubernetes' own cost tests (compilation_test.go `TestCostEstimation`):
/// each schema without bounds, and with them (0: not asserted there either).
#[test]
fn static_cost_matches_kubernetes_estimates() {
    type Gen = Box<dyn Fn(Option<u64>) -> Value>;
    let arr = |kind: &'static str| -> Gen { Box::new(move |m| array_of(scalar(kind), m)) };
    let map = |kind: &'static str| -> Gen { Box::new(move |m| map_of(scalar(kind), m)) };
    let string: Gen = Box::new(string_max);
    let cases: Vec<(Gen, &str, u64, u64, u64)> = vec![
        (arr("number"), "self.all(x, true)", 4718591, 10, 32),
        (arr("string"), "self.all(x, true)", 3145727, 20, 62),
        (arr("boolean"), "self.all(x, true)", 1887437, 5, 17),
        (
            Box::new(|m| array_of(array_of(scalar("number"), None), m)),
            "self.all(x, true)",
            3145727,
            100,
            302,
        ),
        (
            Box::new(|m| array_of(object_with_required(), m)),
            "self.all(x, true)",
            555128,
            50,
            152,
        ),
        (map("number"), "self.all(x, true)", 1348169, 10, 32),
        (map("number"), "has(self.x)", 0, 100, 0),
        (map("string"), "self.all(x, true)", 1179647, 3, 11),
        (map("boolean"), "self.all(x, true)", 943718, 100, 302),
        (
            Box::new(|m| string_max(m)),
            "self.contains('test')",
            314574,
            10,
            5,
        ),
        (
            Box::new(|m| string_max(m)),
            "self.startsWith('test')",
            2,
            15,
            2,
        ),
        (
            Box::new(|m| string_max(m)),
            r#"size(self + "hello") > size("hello")"#,
            314578,
            4,
            7,
        ),
        (arr("number"), "self[1] == 0.0", 2, 5000, 2),
        (arr("string"), "self[1] == self[1]", 314577, 8, 314577),
        (
            arr("number"),
            "self.all(x, self.all(y, self.all(z, true)))",
            u64::MAX,
            10,
            3552,
        ),
        (
            arr("number"),
            "self.all(x, self.all(y, true))",
            u64::MAX,
            10,
            352,
        ),
        (string, r#"self.matches("x")"#, 314574, 50, 22),
        (
            Box::new(|m| string_max(m)),
            r#""".matches("(((((((((())))))))))[0-9]")"#,
            7,
            10,
            7,
        ),
        (
            Box::new(|m| string_max(m)),
            r#"self.matches("")"#,
            1,
            100,
            1,
        ),
        (
            Box::new(|m| {
                let mut s = map_of(string_max(m), m);
                s["maxProperties"] = m.map_or(Value::Null, |m| json!(m));
                s
            }),
            "self.all(x, x.contains(self[x]))",
            2752507,
            10,
            72,
        ),
        (arr("number"), "self[3] == 0.0", 2, 0, 2),
        (map("number"), r#"self["x"] == 0.0"#, 2, 0, 2),
        (Box::new(|m| string_max(m)), r#"self == "x""#, 2, 0, 1),
        (arr("int-or-string"), "self.all(x, true)", 4718591, 10, 32),
        (arr("int-or-string"), "self[0] == 5", 3, 10, 3),
        (arr("boolean"), "self[0] == false", 2, 25, 2),
        (
            Box::new(|m| array_of(object_with_required(), m)),
            "self[0] == null",
            2,
            422,
            2,
        ),
        (
            Box::new(|m| array_of(array_of(scalar("number"), None), m)),
            "self[0][0] == -1.0",
            3,
            51,
            3,
        ),
        (
            Box::new(|m| array_of(map_of(scalar("number"), None), m)),
            "self.all(x, x.y == 25.2)",
            6291452,
            12,
            74,
        ),
        (
            Box::new(|m| array_of(map_of(scalar("number"), None), m)),
            "self[0].x > 2.0",
            4,
            3000,
            4,
        ),
        (arr("duration"), "self.all(x, true)", 2359295, 5, 17),
        (arr("duration"), "self[0].getHours() == 2", 4, 525, 4),
        (arr("date"), "self.all(x, true)", 725936, 15, 47),
        (arr("date"), "self[2].getDayOfMonth() == 13", 4, 42, 4),
        (arr("date-time"), "self.all(x, true)", 428963, 25, 77),
        (map("int-or-string"), "self.all(x, true)", 1348169, 15, 47),
        (
            Box::new(|m| map_of(object_with_required(), m)),
            "self.all(x, true)",
            428963,
            20,
            62,
        ),
    ];
    for (gen, rule, unbounded, max, bounded) in cases {
        let calc = static_cost(with_rule(gen(None), rule));
        if unbounded == 0 {
            continue;
        }
        if unbounded == u64::MAX {
            assert_eq!(calc, u64::MAX, "{rule} should exceed the limit");
        } else {
            assert_eq!(calc, unbounded, "{rule} without bounds");
        }
        assert_eq!(
            static_cost(with_rule(gen(Some(max)), rule)),
            bounded,
            "{rule} with bound {max}"
        );
    }
}
