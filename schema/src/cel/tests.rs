//! Rules compiled and run as a CRD would have them.

use super::*;
use serde_json::json;

fn schema(v: Value) -> Schema {
    Schema::parse(&v).unwrap()
}

fn run(s: &Value, value: Value) -> Vec<String> {
    let rules = Rules::compile(&schema(s.clone()), "spec.validation.openAPIV3Schema")
        .unwrap_or_else(|e| panic!("{e:#?}"));
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
        (Box::new(string_max), "self.contains('test')", 314574, 10, 5),
        (Box::new(string_max), "self.startsWith('test')", 2, 15, 2),
        (
            Box::new(string_max),
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
            Box::new(string_max),
            r#""".matches("(((((((((())))))))))[0-9]")"#,
            7,
            10,
            7,
        ),
        (Box::new(string_max), r#"self.matches("")"#, 1, 100, 1),
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
        (Box::new(string_max), r#"self == "x""#, 2, 0, 1),
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

fn compile_errors(s: Value) -> Vec<String> {
    match Rules::compile(&schema(s), "spec.validation.openAPIV3Schema") {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(render).collect(),
    }
}

fn run_old(s: &Value, value: Value, old: Option<Value>) -> Vec<String> {
    let rules = Rules::compile(&schema(s.clone()), "").unwrap();
    let mut out = Vec::new();
    rules.check("spec", &value, old.as_ref(), &mut out);
    out.iter().map(render).collect()
}

#[test]
fn the_default_message_names_the_rule_and_scalars_print_their_value() {
    let s = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self == 'baz'"}]},
            "count": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 1", "message": "  too small  "}]}
        },
        "x-kubernetes-validations": [{"rule": "has(self.name)"}]
    });
    assert_eq!(
        run(&s, json!({})),
        vec!["spec: Invalid value: failed rule: has(self.name)"]
    );
    let name = Rules::compile(&schema(s["properties"]["name"].clone()), "").unwrap();
    let mut out = Vec::new();
    name.check("spec.name", &json!("bar"), None, &mut out);
    assert_eq!(
        out.iter().map(render).collect::<Vec<_>>(),
        vec![r#"spec.name: Invalid value: "bar": failed rule: self == 'baz'"#]
    );
    let count = Rules::compile(&schema(s["properties"]["count"].clone()), "").unwrap();
    out.clear();
    count.check("spec.count", &json!(1), None, &mut out);
    assert_eq!(
        out.iter().map(render).collect::<Vec<_>>(),
        vec!["spec.count: Invalid value: 1: too small"]
    );
}

#[test]
fn message_expressions_build_the_message_and_fall_back_on_the_message() {
    let s = json!({
        "type": "object",
        "properties": {"replicas": {"type": "integer"}, "name": {"type": "string", "maxLength": 64}},
        "x-kubernetes-validations": [
            {"rule": "self.replicas < 10", "messageExpression": "'too many replicas for ' + self.name"},
            {"rule": "self.replicas > 100", "message": "static", "messageExpression": "self.name"},
        ]
    });
    assert_eq!(
        run(&s, json!({"replicas": 12, "name": ""})),
        vec![
            "spec: Invalid value: too many replicas for",
            "spec: Invalid value: static"
        ],
        "messages are trimmed, and an empty one falls back on message"
    );
    assert_eq!(
        run(&s, json!({"replicas": 12, "name": "named"}))[1],
        "spec: Invalid value: named"
    );
    // The message expression cannot be evaluated (no such key): the static message, or
    // the default one.
    assert_eq!(
        run(&s, json!({"replicas": 12})),
        vec![
            "spec: Invalid value: failed rule: self.replicas < 10",
            "spec: Invalid value: static"
        ]
    );
    // `string(int)` has no size bound, so a message built with it is refused for cost, as
    // Kubernetes refuses it.
    let unbounded = json!({"type": "integer", "x-kubernetes-validations": [
        {"rule": "self < 10", "messageExpression": "'x is ' + string(self)"}]});
    assert_eq!(
        compile_errors(unbounded),
        vec!["spec.validation.openAPIV3Schema.x-kubernetes-validations[0].messageExpression: Forbidden: estimated messageExpression cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"]
    );
}

#[test]
fn reasons_and_field_paths_shape_the_error() {
    let s = json!({
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
        },
        "x-kubernetes-validations": [
            {"rule": "has(self.a)", "reason": "FieldValueRequired", "fieldPath": ".a", "message": "a is required"},
            {"rule": "self.a != 'x'", "reason": "FieldValueForbidden", "message": "no x"},
            {"rule": "self.a != 'dup'", "reason": "FieldValueDuplicate", "fieldPath": ".labels['a.b']"},
            {"rule": "self.a != 'inv'", "reason": "FieldValueInvalid", "message": "invalid"},
        ]
    });
    assert_eq!(
        run(&s, json!({}))[0],
        "spec.a: Required value: a is required"
    );
    assert_eq!(run(&s, json!({"a": "x"})), vec!["spec: Forbidden: no x"]);
    assert_eq!(
        run(&s, json!({"a": "dup"})),
        vec!["spec.labels[a.b]: Duplicate value"]
    );
    assert_eq!(
        run(&s, json!({"a": "inv"})),
        vec!["spec: Invalid value: invalid"]
    );
}

#[test]
fn bad_rule_fields_are_refused_with_kubernetes_wording() {
    let s = |rule: Value| json!({"type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-validations": [rule]});
    let p = "spec.validation.openAPIV3Schema.x-kubernetes-validations[0]";
    assert_eq!(
        compile_errors(s(json!({"rule": "  "}))),
        vec![format!("{p}.rule: Required value: rule is not specified")]
    );
    assert_eq!(
        compile_errors(s(json!({"rule": "true", "message": "a\nb"}))),
        vec![format!(
            "{p}.message: Invalid value: \"a\\nb\": must not contain line breaks"
        )]
    );
    assert_eq!(
        compile_errors(s(json!({"rule": "true &&\ntrue"}))),
        vec![format!(
            "{p}.message: Required value: message must be specified if rule contains line breaks"
        )]
    );
    assert_eq!(
        compile_errors(s(json!({"rule": "true", "reason": "Nope"}))),
        vec![format!(
            "{p}.reason: Unsupported value: \"Nope\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""
        )]
    );
    assert_eq!(
        compile_errors(s(json!({"rule": "true", "fieldPath": ".b"}))),
        vec![format!(
            "{p}.fieldPath: Invalid value: \".b\": must be a valid path"
        )]
    );
    assert_eq!(
        compile_errors(s(json!({"rule": "true", "messageExpression": " "}))),
        vec![format!("{p}.messageExpression: Required value: messageExpression must be non-empty if specified")]
    );
    assert_eq!(
        compile_errors(s(json!({"rule": "true", "optionalOldSelf": true}))),
        vec![format!("{p}.optionalOldSelf: Invalid value: true: may not be set if oldSelf is not used in rule")]
    );
}

#[test]
fn compilation_errors_point_at_the_problem_as_cel_go_does() {
    let s = |rule: &str| {
        json!({"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "number"}},
               "x-kubernetes-validations": [{"rule": rule}]})
    };
    let p = "spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule";
    assert_eq!(
        compile_errors(s("self.nosuch == 'x'")),
        vec![format!(
            "{p}: Invalid value: {{\"rule\":\"self.nosuch == 'x'\"}}: compilation failed: ERROR: <input>:1:5: undefined field 'nosuch'\n | self.nosuch == 'x'\n | ....^"
        )]
    );
    let syntax = compile_errors(s("self.a ==")).join("");
    assert!(
        syntax.contains("compilation failed: ERROR: <input>:1:10: Syntax error:"),
        "{syntax}"
    );
    assert!(compile_errors(s("self.a"))
        .join("")
        .ends_with(": cel expression must evaluate to a bool"));
    assert!(compile_errors(s("self.n == 1"))
        .join("")
        .contains("found no matching overload for '_==_' applied to '(double, int)'"));
    assert!(compile_errors(s("self.a.startsWith(1)"))
        .join("")
        .contains("found no matching overload for 'startsWith' applied to 'string.(int)'"));
    assert!(compile_errors(s("nosuch(self.a)"))
        .join("")
        .contains("undeclared reference to 'nosuch' (in container '')"));
    assert!(compile_errors(s("self.a['b'] == 'c'"))
        .join("")
        .contains("found no matching overload for '_[_]'"));
    assert!(compile_errors(s("has(self.z)"))
        .join("")
        .contains("undefined field 'z'"));
    let mut bad_message = s("true");
    bad_message["x-kubernetes-validations"][0]["messageExpression"] = json!("1");
    assert!(
        compile_errors(bad_message.clone())
            .join("")
            .contains("messageExpression[0]")
            || compile_errors(bad_message.clone())
                .join("")
                .contains(".messageExpression: Invalid value: ")
    );
    assert!(compile_errors(bad_message)
        .join("")
        .ends_with("messageExpression must evaluate to a string"));
}

#[test]
fn numbers_are_doubles_and_integers_ints_whatever_the_json_says() {
    let s = json!({
        "type": "object",
        "properties": {"n": {"type": "number"}, "i": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "type(self.n) == double && self.n == 1.0"},
            {"rule": "type(self.i) == int && self.i + 1 == 2"},
            {"rule": "self.n < self.i + 1", "message": "cross-type comparisons work"},
        ]
    });
    assert!(run(&s, json!({"n": 1, "i": 1})).is_empty());
    let s = json!({"type": "object", "properties": {"i": {"type": "integer"}},
                   "x-kubernetes-validations": [{"rule": "self.i + 1 > 0"}, {"rule": "1 / (self.i - self.i) == 0"}]});
    assert_eq!(
        run(&s, json!({"i": i64::MAX})),
        vec![
            r#"spec: Invalid value: "object": integer overflow evaluating rule: self.i + 1 > 0"#,
            r#"spec: Invalid value: "object": division by zero evaluating rule: 1 / (self.i - self.i) == 0"#,
        ]
    );
}

#[test]
fn missing_fields_are_evaluation_errors() {
    let s = json!({"type": "object", "properties": {"a": {"type": "string"}},
                   "x-kubernetes-validations": [{"rule": "self.a == 'x'", "message": "a must be x"}]});
    assert_eq!(
        run(&s, json!({})),
        vec![r#"spec: Invalid value: "object": no such key: a evaluating rule: a must be x"#]
    );
}

#[test]
fn reserved_words_and_odd_names_are_escaped() {
    let s = json!({
        "type": "object",
        "properties": {
            "namespace": {"type": "string"},
            "in": {"type": "integer"},
            "a-b": {"type": "string"},
            "x.y/z": {"type": "string"},
            "a__b": {"type": "string"},
            "1st": {"type": "string"},
        },
        "x-kubernetes-validations": [
            {"rule": "self.__namespace__ == 'ns' && self.__in__ == 1"},
            {"rule": "self.a__dash__b == 'dash' && self.x__dot__y__slash__z == 'dot'"},
            {"rule": "self.a__underscores__b == 'u' && has(self.__namespace__)"},
        ]
    });
    let good =
        json!({"namespace": "ns", "in": 1, "a-b": "dash", "x.y/z": "dot", "a__b": "u", "1st": "?"});
    assert!(run(&s, good).is_empty());
    let hidden = json!({"type": "object", "properties": {"1st": {"type": "string"}},
                        "x-kubernetes-validations": [{"rule": "has(self.1st)"}]});
    assert!(
        !compile_errors(hidden).is_empty(),
        "a name that cannot be escaped is not visible"
    );
}

#[test]
fn int_or_string_is_dynamic() {
    let s = json!({
        "type": "object",
        "properties": {"port": {"x-kubernetes-int-or-string": true}},
        "x-kubernetes-validations": [{
            "rule": "type(self.port) == int ? self.port < 65536 : self.port.matches('^[a-z]+$')",
            "message": "bad port"
        }]
    });
    assert!(run(&s, json!({"port": 80})).is_empty());
    assert!(run(&s, json!({"port": "http"})).is_empty());
    assert_eq!(
        run(&s, json!({"port": 70000})),
        vec!["spec: Invalid value: bad port"]
    );
    assert_eq!(
        run(&s, json!({"port": "HTTP"})),
        vec!["spec: Invalid value: bad port"]
    );
    let wrong = json!({"type": "object", "properties": {"port": {"x-kubernetes-int-or-string": true}},
                       "x-kubernetes-validations": [{"rule": "self.port.startsWith('a')"}]});
    assert_eq!(
        run(&wrong, json!({"port": 5})),
        vec![
            r#"spec: Invalid value: "object": 'no such overload': call arguments did not match a supported operator, function or macro signature for rule: self.port.startsWith('a')"#
        ]
    );
}

#[test]
fn transition_rules_need_an_old_value_unless_old_self_is_optional() {
    let s = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "x-kubernetes-validations": [
            {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
            {"rule": "oldSelf.hasValue() || self.name.startsWith('new-')", "optionalOldSelf": true, "message": "new names start with new-"},
            {"rule": "oldSelf.orValue(self).name.size() <= self.name.size()", "optionalOldSelf": true, "message": "names only grow"},
        ]
    });
    let rules = Rules::compile(&schema(s.clone()), "").unwrap();
    assert!(rules.has_transition_rules());
    assert!(run_old(&s, json!({"name": "new-a"}), None).is_empty());
    assert_eq!(
        run_old(&s, json!({"name": "a"}), None),
        vec!["spec: Invalid value: new names start with new-"]
    );
    assert_eq!(
        run_old(&s, json!({"name": "b"}), Some(json!({"name": "abc"}))),
        vec![
            "spec: Invalid value: name is immutable",
            "spec: Invalid value: names only grow"
        ]
    );
    assert!(run_old(&s, json!({"name": "abc"}), Some(json!({"name": "abc"}))).is_empty());
    let plain = json!({"type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-validations": [{"rule": "has(self.a)"}]});
    assert!(!Rules::compile(&schema(plain), "")
        .unwrap()
        .has_transition_rules());
}

#[test]
fn old_self_is_refused_where_old_values_cannot_be_paired() {
    let s = json!({"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]});
    let opts = CompileOptions {
        uncorrelatable: Some("spec.validation.openAPIV3Schema.properties[list].items".to_owned()),
        ..CompileOptions::default()
    };
    let errs = Rules::compile_with(&schema(s), "p", &opts).unwrap_err();
    assert_eq!(
        render(&errs[0]),
        "p.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within spec.validation.openAPIV3Schema.properties[list].items"
    );
}

#[test]
fn resource_roots_see_apiversion_kind_and_metadata_name() {
    let s = json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"prefix": {"type": "string"}}}},
        "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith(self.spec.prefix) && self.kind == 'Widget'", "message": "name must start with the prefix"}]
    });
    let root = CompileOptions {
        resource_root: true,
        ..CompileOptions::default()
    };
    let rules = Rules::compile_with(&schema(s.clone()), "", &root).unwrap();
    let obj = |name: &str| json!({"apiVersion": "x/v1", "kind": "Widget", "metadata": {"name": name, "uid": "u"}, "spec": {"prefix": "web-"}});
    let mut out = Vec::new();
    rules.check("", &obj("web-1"), None, &mut out);
    assert!(out.is_empty(), "{out:?}");
    rules.check("", &obj("db-1"), None, &mut out);
    assert_eq!(
        out.iter().map(render).collect::<Vec<_>>(),
        vec![": Invalid value: name must start with the prefix"]
    );
    assert!(
        compile_errors(s)
            .join("")
            .contains("undefined field 'metadata'"),
        "not a root: no metadata"
    );
    let labels = json!({"type": "object", "x-kubernetes-validations": [{"rule": "has(self.metadata.labels)"}]});
    assert!(
        Rules::compile_with(&schema(labels), "", &root).unwrap_err()[0]
            .detail
            .contains("undefined field 'labels'")
    );
    let embedded = json!({"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true,
                          "x-kubernetes-validations": [{"rule": "self.kind != ''"}]});
    assert!(
        Rules::compile(&schema(embedded), "").is_ok(),
        "an embedded resource is a root of itself"
    );
}

#[test]
fn macros_and_library_functions_work_on_objects() {
    let s = json!({
        "type": "object",
        "properties": {
            "items": {"type": "array", "maxItems": 10, "items": {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 20}, "mem": {"type": "string", "maxLength": 10}}}},
            "tags": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 10}},
            "labels": {"type": "object", "maxProperties": 10, "additionalProperties": {"type": "string", "maxLength": 10}},
            "created": {"type": "string", "format": "date-time"},
            "timeout": {"type": "string", "format": "duration"},
            "endpoint": {"type": "string", "maxLength": 100},
            "nick": {"type": "string", "maxLength": 10},
        },
        "x-kubernetes-validations": [
            {"rule": "self.items.all(i, i.name != '')"},
            {"rule": "self.items.exists_one(i, i.name == 'main')"},
            {"rule": "self.items.map(i, i.name).isSorted()"},
            {"rule": "self.items.filter(i, quantity(i.mem).isGreaterThan(quantity('1Gi'))).size() == 0"},
            {"rule": "self.tags.join(',') == 'a,b' && self.tags.indexOf('b') == 1"},
            {"rule": "self.labels.all(k, k.lowerAscii() == k && self.labels[k].size() < 5)"},
            {"rule": "'app' in self.labels && self.labels['app'].upperAscii() == 'WEB'"},
            {"rule": "self.created < timestamp('2030-01-01T00:00:00Z') && self.timeout <= duration('1h')"},
            {"rule": "isURL(self.endpoint) && url(self.endpoint).getHostname() == 'example.com'"},
            {"rule": "self.endpoint.find('[0-9]+') == '8080'"},
            {"rule": "cel.bind(n, size(self.items), n > 0 && n < 10)"},
            {"rule": "self.?nick.orValue('none') == 'none'"},
        ]
    });
    let good = json!({
        "items": [{"name": "main", "mem": "512Mi"}, {"name": "side", "mem": "1Gi"}],
        "tags": ["a", "b"],
        "labels": {"app": "web"},
        "created": "2024-05-01T10:00:00Z",
        "timeout": "30m",
        "endpoint": "https://example.com:8080/x",
    });
    assert_eq!(run(&s, good.clone()), Vec::<String>::new());
    let mut bad = good;
    bad["items"][1]["mem"] = json!("2Gi");
    bad["items"][0]["name"] = json!("zzz");
    assert_eq!(
        run(&s, bad),
        vec![
            "spec: Invalid value: failed rule: self.items.exists_one(i, i.name == 'main')",
            "spec: Invalid value: failed rule: self.items.map(i, i.name).isSorted()",
            "spec: Invalid value: failed rule: self.items.filter(i, quantity(i.mem).isGreaterThan(quantity('1Gi'))).size() == 0",
        ]
    );
}

#[test]
fn unbounded_nested_loops_are_refused_for_cost() {
    let s = json!({"type": "array", "items": {"type": "string"},
                   "x-kubernetes-validations": [{"rule": "self.all(x, self.all(y, x == y))"}]});
    assert_eq!(
        compile_errors(s),
        vec!["spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"]
    );
    let bounded = json!({"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 64},
                         "x-kubernetes-validations": [{"rule": "self.all(x, self.all(y, x == y))"}]});
    assert!(compile_errors(bounded).is_empty());
}

#[test]
fn the_cost_is_multiplied_by_how_often_the_node_occurs() {
    // ~1.05M per evaluation: fine once, too much under a list of 10 or an unbounded one.
    let s = json!({"type": "array", "maxItems": 200000, "items": {"type": "integer"},
                   "x-kubernetes-validations": [{"rule": "self.all(x, x > 0)"}]});
    assert!(Rules::compile(&schema(s.clone()), "").is_ok());
    let ten = CompileOptions {
        cardinality: Some(10),
        ..CompileOptions::default()
    };
    let errs = Rules::compile_with(&schema(s.clone()), "", &ten).unwrap_err();
    assert_eq!(
        errs[0].detail,
        "estimated rule cost exceeds budget by factor of 1.000002x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    );
    let unbounded = CompileOptions {
        cardinality: None,
        ..CompileOptions::default()
    };
    assert!(errs[0].detail.contains("exceeds budget"));
    assert!(
        Rules::compile_with(&schema(s), "", &unbounded).unwrap_err()[0]
            .detail
            .contains("more than 100x")
    );
}

#[test]
fn the_crd_total_is_limited_too() {
    let s = json!({"type": "array", "maxItems": 1900000, "items": {"type": "integer"},
                   "x-kubernetes-validations": [{"rule": "self.all(x, x > 0)"}]});
    // 9.5M: under the limit of one rule; eleven of them are over that of a CRD.
    let rules = Rules::compile(&schema(s), "root").unwrap();
    let mut total = TotalCost::default();
    for _ in 0..11 {
        total.observe(&rules);
    }
    assert!(total.total() > STATIC_ESTIMATED_CRD_COST_LIMIT);
    let errs: Vec<String> = total
        .errors("spec.validation.openAPIV3Schema")
        .iter()
        .map(render)
        .collect();
    assert_eq!(errs.len(), 5, "the four most expensive, and the total");
    assert_eq!(errs[0], "root.x-kubernetes-validations[0].rule: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema");
    assert!(errs[4].starts_with("spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1.045000x"), "{}", errs[4]);
}

#[test]
fn a_rule_too_costly_for_one_call_is_cancelled() {
    let s = json!({"type": "array", "maxItems": 1000000, "items": {"type": "integer"},
                   "x-kubernetes-validations": [{"rule": "self.all(x, x > 0)"}, {"rule": "size(self) > 0"}]});
    let rules = Rules::compile_with(&schema(s), "", &CompileOptions::default());
    // 5M: allowed statically (under 10M) but over the 1M per-call limit for a long list.
    let rules = match rules {
        Ok(r) => r,
        Err(e) => panic!("{e:?}"),
    };
    let mut out = Vec::new();
    rules.check("spec.list", &json!(vec![1; 1000]), None, &mut out);
    assert!(out.is_empty(), "a short list costs little: {out:?}");
    let long = json!(vec![1; 250_000]);
    rules.check("spec.list", &long, None, &mut out);
    assert_eq!(
        out.iter().map(render).collect::<Vec<_>>(),
        vec![
            r#"spec.list: Invalid value: "array": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: self.all(x, x > 0)"#
        ]
    );
}

#[test]
fn an_object_has_one_runtime_budget() {
    let s = json!({"type": "array", "maxItems": 100000, "items": {"type": "integer"},
                   "x-kubernetes-validations": [{"rule": "self.all(x, x > 0)"}, {"rule": "self.all(x, x < 100)"}]});
    let rules = Rules::compile(&schema(s), "").unwrap();
    let value = json!(vec![1; 10_000]);
    // Each rule costs 5 per item here, 50,002 in all.
    let mut budget = Budget::with_limit(120_000);
    let mut out = Vec::new();
    rules.check_with_budget("spec.list", &value, None, &mut budget, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(budget.remaining(), 120_000 - 2 * 50_002);
    rules.check_with_budget("spec.other", &value, None, &mut budget, &mut out);
    assert_eq!(
        out.iter().map(render).collect::<Vec<_>>(),
        vec![
            r#"spec.other: Invalid value: "array": validation failed due to running out of cost budget, no further validation rules will be run"#
        ]
    );
    assert!(budget.is_exhausted());
    out.clear();
    rules.check_with_budget("spec.third", &value, None, &mut budget, &mut out);
    assert!(
        out.is_empty(),
        "once spent, nothing more runs or is reported"
    );
}

#[test]
fn expressions_evaluate_json() {
    let e = Expression::compile(
        "object.spec.replicas > 2 && request.user.startsWith('system:')",
        &["object", "request"],
    )
    .unwrap();
    assert_eq!(e.return_type(), "bool");
    let object = json!({"spec": {"replicas": 3}});
    let request = json!({"user": "system:admin"});
    assert_eq!(
        e.evaluate_bool(&[("object", &object), ("request", &request)]),
        Ok(true)
    );
    let e = Expression::compile("object.spec.items.map(i, i * 2)", &["object"]).unwrap();
    assert_eq!(
        e.evaluate(&[("object", &json!({"spec": {"items": [1, 2]}}))]),
        Ok(json!([2, 4]))
    );
    let e = Expression::compile("{'a': [1.5, 'x', null, true]}", &[]).unwrap();
    assert_eq!(e.evaluate(&[]), Ok(json!({"a": [1.5, "x", null, true]})));
    assert!(Expression::compile("nosuch.x", &["object"])
        .unwrap_err()
        .contains("undeclared reference to 'nosuch'"));
    let e = Expression::compile("object.missing", &["object"]).unwrap();
    assert_eq!(
        e.evaluate(&[("object", &json!({}))]),
        Err("no such key: missing".to_owned())
    );
}

#[test]
fn expressions_are_bounded_by_the_per_call_limit() {
    let e = Expression::compile(
        "object.items.all(x, object.items.all(y, x == y))",
        &["object"],
    )
    .unwrap();
    let small = json!({"items": [1, 1, 1]});
    assert_eq!(e.evaluate_bool(&[("object", &small)]), Ok(true));
    let big = json!({"items": vec![1; 2000]});
    assert!(e.cost(&[("object", &big)]) > PER_CALL_LIMIT);
    assert_eq!(
        e.evaluate(&[("object", &big)]),
        Err("operation cancelled: actual cost limit exceeded".to_owned())
    );
    let unbounded = Expression::compile("lists.range(1000000).map(x, x).size() > 0", &[]).unwrap();
    assert!(
        unbounded.evaluate(&[]).is_err(),
        "a list of unknown size costs too much"
    );
}

#[test]
fn optional_old_self_in_a_loop_sees_the_old_value() {
    let s = json!({
        "type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 10},
        "x-kubernetes-validations": [{
            "rule": "self.all(x, !oldSelf.hasValue() || size(oldSelf.value()) <= size(self))",
            "optionalOldSelf": true, "message": "the list may only grow"
        }]
    });
    assert!(run_old(&s, json!(["a", "b"]), None).is_empty());
    assert!(run_old(&s, json!(["a", "b"]), Some(json!(["a"]))).is_empty());
    assert_eq!(
        run_old(&s, json!(["c"]), Some(json!(["a", "b"]))),
        vec!["spec: Invalid value: the list may only grow"]
    );
    // `oldSelf.value()` has no size bound in Kubernetes' estimate: looking through it in a
    // loop is refused, as Kubernetes refuses it.
    let costly = json!({
        "type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 10},
        "x-kubernetes-validations": [{"rule": "self.all(x, !oldSelf.hasValue() || x in oldSelf.value())", "optionalOldSelf": true}]
    });
    assert!(compile_errors(costly)[0].contains("estimated rule cost exceeds budget"));
}

/// Rules as people write them: each must compile, and hold on the object.
#[test]
fn common_rules_compile_and_hold() {
    let s = json!({
        "type": "object",
        "properties": {
            "s": {"type": "string", "maxLength": 16},
            "i": {"type": "integer"},
            "d": {"type": "number"},
            "b": {"type": "boolean"},
            "list": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 8}},
            "map": {"type": "object", "maxProperties": 8, "additionalProperties": {"type": "string", "maxLength": 8}},
            "obj": {"type": "object", "properties": {"f": {"type": "string", "maxLength": 8}}},
            "objs": {"type": "array", "maxItems": 8, "items": {"type": "object", "properties": {"f": {"type": "string", "maxLength": 8}}}},
            "ts": {"type": "string", "format": "date-time"},
            "dur": {"type": "string", "format": "duration"},
            "raw": {"type": "string", "format": "byte", "maxLength": 16},
        }
    });
    let value = json!({
        "s": "a", "i": 4, "d": 0.5, "b": true,
        "list": ["a", "b"], "map": {"k": "v"}, "obj": {"f": "x"}, "objs": [{"f": "x"}, {"f": "y"}],
        "ts": "2024-01-02T03:04:05Z", "dur": "90s", "raw": "aGk=",
    });
    let rules = [
        "self.s == 'a' && size(self.s) == 1 && self.s.size() == 1",
        "self.s.startsWith('a') && self.s.endsWith('a') && self.s.contains('a') && self.s.matches('^a$')",
        "self.list.size() == 2 && self.list[0] == 'a' && 'a' in self.list",
        "self.list.exists(x, x == 'b') && self.list.all(x, x.size() == 1)",
        "self.map.size() == 1 && self.map['k'] == 'v' && 'k' in self.map && has(self.map.k)",
        "self.map.all(k, self.map[k] != '')",
        "self.i % 2 == 0 && self.i * 2 > 1 && -self.i < 0 && self.i - 1 == 3",
        "self.d / 2.0 > 0.1 && double(self.i) > 0.5 && int(self.d) >= 0 && uint(self.i) > 0u",
        "self.d < self.i && self.i > self.d",
        "string(self.b) == 'true' && (self.b || !self.b)",
        "self.b ? self.i > 0 : self.i <= 0",
        "self.list + ['c'] == ['a', 'b', 'c'] && self.s + 'x' == 'ax'",
        "self.ts > timestamp('2000-01-01T00:00:00Z') && self.ts - duration('1h') < self.ts",
        "self.dur > duration('1m') && self.dur.getSeconds() == 90 && self.ts.getFullYear() == 2024",
        "self.raw == b'hi' && size(self.raw) == 2",
        "self.list.map(x, x + '!').exists(y, y == 'a!') && self.list.filter(x, x != 'a').size() == 1",
        "dyn(self.i) == 4 && type(self.s) == string && type(self.i) == int",
        "self.obj.f == 'x' && has(self.obj.f) && self.obj == self.obj",
        "self.objs.all(o, has(o.f)) && self.objs.exists(o, o.f == 'y') && self.objs[1].f == 'y'",
        "self.s.lowerAscii() == 'a' && self.s.upperAscii() == 'A' && self.s.trim() == 'a'",
        "self.s.split(',').size() == 1 && self.s.replace('a', 'b') == 'b' && self.s.substring(0, 1) == 'a'",
        "self.s.indexOf('a') == 0 && self.s.lastIndexOf('a') == 0 && self.s.charAt(0) == 'a'",
        "self.list.join('') == 'ab' && self.list.join() == 'ab' && self.list.isSorted()",
        "[1, 2].sum() == 3 && [1, 2].max() == 2 && [1, 2].min() == 1 && self.list.indexOf('b') == 1",
        "self.s.findAll('a').size() == 1 && self.s.find('a') == 'a'",
        "optional.of(1).hasValue() && optional.none().orValue(2) == 2",
        "self.?obj.?f.orValue('') == 'x' && self.map[?'k'].orValue('') == 'v' && !self.map[?'z'].hasValue()",
        "[1, 2, 3].exists_one(x, x == 2) && {'a': 1}['a'] == 1 && self.i in [1, 4]",
        "self.list == ['a', 'b'] && self.map == {'k': 'v'}",
        "sets.contains(self.list, ['a']) && sets.intersects(self.list, ['b', 'z'])",
        "'%s-%d'.format([self.s, self.i]) == 'a-4'",
        "cel.bind(first, self.list[0], first == 'a')",
        "self.list.sort() == ['a', 'b'] && self.list.reverse() == ['b', 'a'] && self.list.distinct().size() == 2",
        "self.list.slice(0, 1) == ['a'] && [[1], [2]].flatten() == [1, 2]",
        "quantity('1').add(1).isInteger() && url('https://x.io').getHost() == 'x.io'",
    ];
    for rule in rules {
        let mut with = s.clone();
        with["x-kubernetes-validations"] = json!([{"rule": rule}]);
        let compiled =
            Rules::compile(&schema(with), "").unwrap_or_else(|e| panic!("{rule}: {e:#?}"));
        let mut out = Vec::new();
        compiled.check("spec", &value, None, &mut out);
        assert!(out.is_empty(), "{rule}: {out:#?}");
    }
}

/// Compiled rules are shared by the request handlers of a server.
#[test]
fn compiled_rules_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Rules>();
    shared::<SchemaRules>();
    shared::<Expression>();
    let s = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                   "x-kubernetes-validations": [{"rule": "self.a > 0"}]});
    let rules = std::sync::Arc::new(Rules::compile(&schema(s), "").unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let rules = rules.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                rules.check("spec", &json!({"a": i}), None, &mut out);
                out.len()
            })
        })
        .collect();
    let failures: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(failures, vec![1, 0, 0, 0]);
}

/// A rule is request input: no rule text may crash the server. Deep nesting is refused as
/// cel-go refuses it; just under the limit, a rule compiles and runs on an ordinary
/// thread's stack.
#[test]
fn hostile_rules_are_refused_not_fatal() {
    let chain = |n: usize| vec!["self.a"; n].join(" + ");
    let hostile = [
        format!("{}1{} == 1", "(".repeat(5000), ")".repeat(5000)),
        format!("{}1{} == []", "[".repeat(3000), "]".repeat(3000)),
        format!("{} == ''", chain(30_000)),
        format!("self.a{} == ''", ".lowerAscii()".repeat(20_000)),
        "x".repeat(100_001),
        "\u{0}".to_owned(),
        "'\\".to_owned(),
        "1 +".repeat(2000),
    ];
    for rule in hostile {
        let s = json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 4}},
                       "x-kubernetes-validations": [{"rule": rule, "message": "m"}]});
        let Err(errs) = Rules::compile(&schema(s), "") else {
            panic!("{} should be refused", &rule[..40.min(rule.len())]);
        };
        assert!(
            errs[0]
                .detail
                .starts_with("compilation failed: ERROR: <input>:"),
            "{}",
            &errs[0].detail[..200.min(errs[0].detail.len())]
        );
    }
    // `!!` cancels out as the parser reads it, in cel-go too: no depth at all.
    let s = json!({"type": "object", "x-kubernetes-validations": [{"rule": format!("{}true", "!".repeat(5000)), "message": "m"}]});
    assert!(Rules::compile(&schema(s), "").is_ok());
    let s = json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 1}},
                   "x-kubernetes-validations": [{"rule": format!("({}).size() > 0", chain(240)), "message": "m"}]});
    let rules = Rules::compile(&schema(s), "").unwrap_or_else(|e| panic!("{e:?}"));
    let mut out = Vec::new();
    rules.check("spec", &json!({"a": "x"}), None, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let deep = format!("{} == ''", chain(300));
    let s = json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 1}},
                   "x-kubernetes-validations": [{"rule": deep, "message": "m"}]});
    assert!(Rules::compile(&schema(s), "").unwrap_err()[0]
        .detail
        .contains("expression recursion limit exceeded: 250"));
}

fn policy_env(record: bool) -> Env {
    let request = schema(json!({"type": "object", "properties": {
        "operation": {"type": "string"},
        "when": {"type": "string", "format": "date-time"},
        "options": {"x-kubernetes-preserve-unknown-fields": true},
    }}));
    let env = Env::new(vec![
        ("object".to_owned(), InputType::Dyn),
        ("request".to_owned(), InputType::Schema(Box::new(request))),
    ]);
    if record {
        env.with_record("variables")
    } else {
        env
    }
}

#[test]
fn env_types_inputs_by_their_schema() {
    let env = policy_env(false);
    let e = env.compile("request.nosuch == 'x'").unwrap_err();
    assert!(e.contains("undefined field 'nosuch'"), "{e}");
    let e = env.compile("request.operation == 1").unwrap_err();
    assert!(e.contains("found no matching overload for '_==_'"), "{e}");
    // An untyped node is dyn, not left out.
    assert!(env.compile("request.options.dryRun == ['All']").is_ok());
    // Values are read through the schema: a date-time is a timestamp.
    let e = env
        .compile("request.when < timestamp('2030-01-01T00:00:00Z') && object.x == 1")
        .unwrap();
    assert_eq!(e.return_type(), "bool");
    let object = json!({"x": 1});
    let request = json!({"operation": "CREATE", "when": "2024-05-01T10:00:00Z"});
    let act = Activation::new(&env, &[("object", &object), ("request", &request)], &[]).unwrap();
    assert_eq!(act.evaluate(&e), Ok(json!(true)));
    // A typed input that does not fit its schema is refused when bound.
    let bad = json!({"operation": 3});
    assert!(Activation::new(&env, &[("request", &bad)], &[]).is_err());
    // null binds whatever the type.
    let act = Activation::new(
        &env,
        &[("object", &Value::Null), ("request", &Value::Null)],
        &[],
    )
    .unwrap();
    assert_eq!(
        act.evaluate(&env.compile("object == null").unwrap()),
        Ok(json!(true))
    );
}

#[test]
fn composited_variables_are_lazy_and_ordered() {
    let mut env = policy_env(true);
    let mut vars = Vec::new();
    for (name, source) in [
        ("n", "object.n"),
        ("double", "variables.n * 2"),
        ("broken", "object.nosuch"),
        ("later", "variables.undefinedYet"),
    ] {
        let expression = env.compile(source);
        env.add_variable(name, expression.as_ref().ok());
        vars.push(Composited {
            name: name.to_owned(),
            expression,
        });
    }
    assert!(vars[3]
        .expression
        .as_ref()
        .unwrap_err()
        .contains("undefined field 'undefinedYet'"));
    assert!(env
        .compile("variables.nope == 1")
        .unwrap_err()
        .contains("undefined field 'nope'"));
    let object = json!({"n": 21});
    let act = Activation::new(&env, &[("object", &object)], &vars).unwrap();
    let e = env
        .compile("variables.double == 42 && variables.n == 21")
        .unwrap();
    assert_eq!(e.return_type(), "bool");
    assert_eq!(act.evaluate(&e), Ok(json!(true)));
    let spent = act.spent();
    // Evaluated once per activation: a second use costs only the expression itself.
    assert_eq!(act.evaluate(&e), Ok(json!(true)));
    assert!(act.spent() < spent * 2, "{} {}", act.spent(), spent);
    // Not named, not evaluated: the broken variable fails only where it is used.
    let e = env.compile("variables.broken == 1").unwrap();
    assert_eq!(
        act.evaluate(&e),
        Err("composited variable \"broken\" fails to evaluate: no such key: nosuch".to_owned())
    );
    let e = env.compile("variables.later == 1").unwrap();
    let err = act.evaluate(&e).unwrap_err();
    assert!(
        err.starts_with("composited variable \"later\" fails to compile: ERROR: <input>:1:10: undefined field 'undefinedYet'"),
        "{err}"
    );
    let e = env
        .compile("has(variables.n) && !has(variables.broken)")
        .unwrap();
    assert_eq!(act.evaluate(&e), Ok(json!(true)));
}
