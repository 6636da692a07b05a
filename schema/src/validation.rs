//! A custom object checked against its version's `openAPIV3Schema`, as Kubernetes' custom
//! resource strategy checks it on create and update:
//!
//! 1. the OpenAPI schema, as kube-openapi's validator walks it (types, `nullable`, formats,
//!    `enum`, `pattern`, bounds, `multipleOf`, lengths in runes, item and property counts,
//!    `required`, `uniqueItems`, `allOf`/`anyOf`/`oneOf`/`not`), with its messages
//!    (`spec.replicas in body must be of type integer: "string"`);
//! 2. embedded resources (`x-kubernetes-embedded-resource`): `apiVersion`, `kind`, `metadata`;
//! 3. `set` and `map` lists without duplicates;
//! 4. the CEL rules of `x-kubernetes-validations`, unless step 1–3 found errors that make them
//!    meaningless (a wrong type, a missing required field, ...), as Kubernetes skips them.
//!
//! On update, errors in parts of the object that did not change are dropped ("validation
//! ratcheting", on by default since Kubernetes 1.30): an object stored before its schema was
//! tightened can still be updated elsewhere. Old and new values are paired as Kubernetes pairs
//! them: by property name, by map key, and by key fields for `map` lists; items of other lists
//! are not paired. The same pairing gives transition rules their `oldSelf`.
//!
//! `apiVersion`, `kind` and `metadata` of the custom object itself are the caller's to check.
//! Where Kubernetes names no field (a failed `anyOf`, ...), errors name `<nil>` as it does.
//!
//! One difference: where a node that did not change has both transition rules and other
//! rules, errors of the other rules are kept rather than ratcheted, because the CEL module
//! reports per node whether it uses `oldSelf`, not per rule.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::celrules::{self, Compiler, NodeContext, NodeRules};
use crate::error::{ErrorKind, FieldError};
use crate::formats;
use crate::gofmt;
use crate::listtype;
use crate::meta;
use crate::path;
use crate::pattern;
use crate::structural::{Additional, Items, Schema};

/// A schema ready to validate objects: its patterns and CEL rules compiled once.
pub struct Validator {
    schema: Schema,
    root: Compiled,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// The compiled parts of one schema node, in the shape of the schema.
#[derive(Default)]
struct Compiled {
    pattern: Option<Result<Regex, String>>,
    rules: Option<Box<dyn NodeRules>>,
    /// Whether this node or one below it (on the structural spine) has rules.
    rules_below: bool,
    properties: BTreeMap<String, Compiled>,
    additional: Option<Box<Compiled>>,
    items: Option<Box<Compiled>>,
    item_list: Vec<Compiled>,
    all_of: Vec<Compiled>,
    any_of: Vec<Compiled>,
    one_of: Vec<Compiled>,
    not: Option<Box<Compiled>>,
}

/// Validates `obj` (and, on update, against `old`) with a [`Validator`] built for the call;
/// the errors of building it (CEL rules that do not compile) are returned instead.
pub fn validate(schema: &Schema, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match Validator::new(schema.clone()) {
        Ok(v) => v.validate(obj, old),
        Err(errs) => errs,
    }
}

impl Validator {
    /// Compiles `schema` (a version's `openAPIV3Schema`); errors of CEL rules name schema
    /// paths under `openAPIV3Schema`.
    pub fn new(schema: Schema) -> Result<Validator, Vec<FieldError>> {
        Validator::new_at(schema, "openAPIV3Schema")
    }

    /// As [`Validator::new`], with errors named under `path` (for a CRD,
    /// `spec.versions[0].schema.openAPIV3Schema`).
    pub fn new_at(schema: Schema, path: &str) -> Result<Validator, Vec<FieldError>> {
        Validator::with_compiler(schema, path, &celrules::compile)
    }

    pub(crate) fn with_compiler(
        schema: Schema,
        path: &str,
        compile: &Compiler,
    ) -> Result<Validator, Vec<FieldError>> {
        let mut errs = Vec::new();
        let root = build(&schema, Place::root(path), compile, &mut errs);
        if errs.is_empty() {
            Ok(Validator { schema, root })
        } else {
            Err(errs)
        }
    }

    /// A validator whose CEL rules that do not compile are left out.
    pub(crate) fn lenient(schema: Schema, path: &str) -> Validator {
        let mut ignored = Vec::new();
        let root = build(&schema, Place::root(path), &celrules::compile, &mut ignored);
        Validator { schema, root }
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Whether the schema has `x-kubernetes-validations` rules anywhere.
    pub fn has_rules(&self) -> bool {
        self.root.rules_below
    }

    /// Validates a whole custom object: on create with `old` `None`, on update with the stored
    /// object as `old`.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let res = run(
            &self.schema,
            &self.root,
            Some(&self.schema),
            "",
            obj,
            old,
            true,
        );
        let mut errs = to_field_errors(res.errs, "");
        meta::validate_embedded("", obj, &self.schema, &mut errs);
        let lists = listtype::validate_lists(&self.schema, obj);
        // A list that already held duplicates may keep them on update.
        if !lists.is_empty()
            && old.is_none_or(|o| listtype::validate_lists(&self.schema, o).is_empty())
        {
            errs.extend(lists);
        }
        self.rules(obj, old, &mut errs);
        errs
    }

    /// Validates an update of the `status` subresource: the status against the schema of
    /// `status` (errors under `status.`), list uniqueness and CEL rules of the whole object.
    pub fn validate_status(&self, obj: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let (Some(status), Some(s), Some(c)) = (
            obj.get("status"),
            self.schema.properties.get("status"),
            self.root.properties.get("status"),
        ) {
            let old_status = old.get("status");
            let res = run(s, c, Some(s), "", status, old_status, true);
            errs.extend(to_field_errors(res.errs, "status"));
        }
        let lists = listtype::validate_lists(&self.schema, obj);
        if !lists.is_empty() && listtype::validate_lists(&self.schema, old).is_empty() {
            errs.extend(lists);
        }
        self.rules(obj, Some(old), &mut errs);
        errs
    }

    fn rules(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        if !self.root.rules_below {
            return;
        }
        if errs.iter().any(blocks_rules) {
            errs.push(FieldError::new(
                ErrorKind::Invalid,
                "<nil>",
                Some(Value::Null),
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
            return;
        }
        let anchor = old.map(|o| (&self.schema, obj, o));
        cel(&self.schema, &self.root, "", obj, old, anchor, true, errs);
    }

    /// Checks a `default` value against this (sub)schema, as Kubernetes checks defaults when a
    /// CRD is written: errors under `prefix` (the default's schema path); CEL rules see the
    /// value both as an update from itself and as a creation.
    pub(crate) fn check_default(&self, prefix: &str, value: &Value) -> Vec<FieldError> {
        let res = run(&self.schema, &self.root, None, "", value, None, false);
        let errs = to_field_errors(res.errs, prefix);
        if !errs.is_empty() || !self.root.rules_below {
            return errs;
        }
        let mut out = Vec::new();
        cel(
            &self.schema,
            &self.root,
            prefix,
            value,
            Some(value),
            None,
            false,
            &mut out,
        );
        if out.is_empty() {
            cel(
                &self.schema,
                &self.root,
                prefix,
                value,
                None,
                None,
                false,
                &mut out,
            );
        }
        out
    }
}

/// Kubernetes skips CEL rules when the object has errors of these kinds.
fn blocks_rules(e: &FieldError) -> bool {
    matches!(
        e.kind,
        ErrorKind::NotSupported
            | ErrorKind::Required
            | ErrorKind::TooLong
            | ErrorKind::TooMany
            | ErrorKind::TypeInvalid
    )
}

/// Where the compilation walk is: the node's schema path, whether it is on the structural
/// spine (rules compile only there), and its rules' context.
struct Place {
    path: String,
    spine: bool,
    ctx: NodeContext,
}

impl Place {
    fn root(path: &str) -> Place {
        Place {
            path: path.to_string(),
            spine: true,
            ctx: NodeContext {
                resource_root: true,
                cardinality: Some(1),
                uncorrelatable: None,
            },
        }
    }
}

fn build(s: &Schema, at: Place, compile: &Compiler, errs: &mut Vec<FieldError>) -> Compiled {
    let p = at.path.as_str();
    let mut c = Compiled {
        pattern: s
            .pattern
            .as_deref()
            .filter(|x| !x.is_empty())
            .map(pattern::compile),
        ..Compiled::default()
    };
    if at.spine && !s.validations.is_empty() {
        match compile(s, p, &at.ctx) {
            Ok(rules) => c.rules = Some(rules),
            Err(e) => errs.extend(e),
        }
    }
    // Children of lists and maps occur as often as the list or map allows, times this node.
    let many = match (s.type_.as_deref(), &s.additional_properties) {
        (Some("array"), _) => s.max_items,
        (Some("object"), Some(Additional::Schema(_))) => s.max_properties,
        _ => Some(1),
    };
    let cardinality = at
        .ctx
        .cardinality
        .zip(many)
        .map(|(a, b)| a.saturating_mul(b));
    let child = |path: String, sub: &Schema, spine: bool, unpaired: Option<String>| Place {
        path,
        spine: at.spine && spine,
        ctx: NodeContext {
            resource_root: sub.embedded_resource,
            cardinality,
            uncorrelatable: at.ctx.uncorrelatable.clone().or(unpaired),
        },
    };
    for (k, prop) in &s.properties {
        let q = path::key(&path::child(p, "properties"), k);
        let sub = build(prop, child(q, prop, true, None), compile, errs);
        c.properties.insert(k.clone(), sub);
    }
    if let Some(Additional::Schema(ap)) = &s.additional_properties {
        let q = path::child(p, "additionalProperties");
        c.additional = Some(Box::new(build(ap, child(q, ap, true, None), compile, errs)));
    }
    match &s.items {
        Some(Items::Schema(is)) => {
            // Only `map` lists pair old and new items.
            let unpaired = (s.list_type.as_deref() != Some("map")).then(|| p.to_string());
            let q = path::child(p, "items");
            c.items = Some(Box::new(build(
                is,
                child(q, is, true, unpaired),
                compile,
                errs,
            )));
        }
        Some(Items::List(list)) => {
            for (i, is) in list.iter().enumerate() {
                let q = path::index(&path::child(p, "items"), i);
                c.item_list
                    .push(build(is, child(q, is, false, None), compile, errs));
            }
        }
        None => {}
    }
    for (name, list, out) in [
        ("allOf", &s.all_of, &mut c.all_of),
        ("anyOf", &s.any_of, &mut c.any_of),
        ("oneOf", &s.one_of, &mut c.one_of),
    ] {
        for (i, sub) in list.iter().enumerate() {
            let q = path::index(&path::child(p, name), i);
            out.push(build(sub, child(q, sub, false, None), compile, errs));
        }
    }
    if let Some(not) = &s.not {
        let q = path::child(p, "not");
        c.not = Some(Box::new(build(
            not,
            child(q, not, false, None),
            compile,
            errs,
        )));
    }
    c.rules_below = c.rules.is_some()
        || c.properties.values().any(|x| x.rules_below)
        || c.additional.as_ref().is_some_and(|x| x.rules_below)
        || c.items.as_ref().is_some_and(|x| x.rules_below);
    c
}

// The OpenAPI walk, shaped after kube-openapi's SchemaValidator so that its errors come out
// the same: what is checked, in which order, with which path and message.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Code {
    InvalidType,
    Required,
    TooLong,
    TooShort,
    Pattern,
    Enum,
    MultipleOf,
    Max,
    Min,
    Unique,
    MaxItems,
    MinItems,
    TooFewProperties,
    TooManyProperties,
    Unallowed,
    MustBePositive,
}

/// One kube-openapi error: a validation error with a code, or a plain one (`code: None`),
/// which Kubernetes reports against the whole object.
#[derive(Debug)]
struct OErr {
    code: Option<Code>,
    name: String,
    value: Option<Value>,
    values: Vec<Value>,
    valid: Option<i64>,
    message: String,
}

impl OErr {
    fn new(code: Code, name: &str, value: Option<Value>, message: String) -> OErr {
        OErr {
            code: Some(code),
            name: name.to_string(),
            value,
            values: Vec::new(),
            valid: None,
            message,
        }
    }

    fn plain(message: String) -> OErr {
        OErr {
            code: None,
            name: String::new(),
            value: None,
            values: Vec::new(),
            valid: None,
            message,
        }
    }
}

/// Errors and kube-openapi's count of checks that passed, which picks the alternative whose
/// errors `anyOf`/`oneOf` report.
#[derive(Default, Debug)]
struct Res {
    errs: Vec<OErr>,
    matches: u32,
}

impl Res {
    fn merge(&mut self, other: Res) {
        self.errs.extend(other.errs);
        self.matches += other.matches;
    }

    fn err(e: OErr) -> Res {
        Res {
            errs: vec![e],
            matches: 0,
        }
    }

    fn pass() -> Res {
        Res {
            errs: Vec::new(),
            matches: 1,
        }
    }

    fn valid(&self) -> bool {
        self.errs.is_empty()
    }
}

/// kube-openapi's errors as Kubernetes turns them into field errors, under `prefix` ("" for
/// the whole object).
fn to_field_errors(errs: Vec<OErr>, prefix: &str) -> Vec<FieldError> {
    errs.into_iter()
        .map(|e| {
            let Some(code) = e.code else {
                return FieldError::new(
                    ErrorKind::Invalid,
                    path::shown(prefix),
                    Some(Value::String(String::new())),
                    e.message,
                );
            };
            let field = if !e.name.is_empty() && e.name != "." {
                path::shown(&path::child(
                    prefix,
                    e.name.strip_prefix('.').unwrap_or(&e.name),
                ))
            } else {
                path::shown(prefix)
            };
            let value = Some(e.value.clone().unwrap_or(Value::String(String::new())));
            match code {
                Code::Required => FieldError::new(ErrorKind::Required, field, None, ""),
                Code::Enum => {
                    let allowed: Vec<String> = e
                        .values
                        .iter()
                        .map(|v| match v {
                            Value::String(s) => gofmt::quote(s),
                            other => gofmt::quote(&gofmt::json(other)),
                        })
                        .collect();
                    let detail = if allowed.is_empty() {
                        String::new()
                    } else {
                        format!("supported values: {}", allowed.join(", "))
                    };
                    FieldError::new(
                        ErrorKind::NotSupported,
                        field,
                        Some(e.value.unwrap_or(Value::Null)),
                        detail,
                    )
                }
                Code::TooLong => {
                    let max = e.valid.unwrap_or(-1);
                    let detail = match max {
                        1 => "may not be more than 1 byte".to_string(),
                        m if m >= 0 => format!("may not be more than {m} bytes"),
                        _ => "value is too long".to_string(),
                    };
                    FieldError::new(ErrorKind::TooLong, field, None, detail)
                }
                Code::MaxItems | Code::TooManyProperties => {
                    let max = e.valid.unwrap_or(-1);
                    let detail = match max {
                        1 => "must have at most 1 item".to_string(),
                        m if m >= 0 => format!("must have at most {m} items"),
                        _ => "has too many items".to_string(),
                    };
                    FieldError::new(ErrorKind::TooMany, field, e.value, detail)
                }
                Code::InvalidType => {
                    FieldError::new(ErrorKind::TypeInvalid, field, value, e.message)
                }
                _ => FieldError::new(ErrorKind::Invalid, field, value, e.message),
            }
        })
        .collect()
}

/// How kube-openapi sees a decoded JSON value (Kubernetes decodes integral literals to int64
/// and every other number to float64).
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

fn num(v: &Value) -> Option<Num> {
    let n = v.as_number()?;
    Some(match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(0.0)),
    })
}

fn num_value(n: Num) -> Value {
    match n {
        Num::Int(i) => Value::from(i),
        Num::Float(f) => Value::from(f),
    }
}

/// The JSON type name kube-openapi infers for a value, with the Go format it infers.
fn type_of(v: &Value) -> (&'static str, &'static str) {
    match v {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
        Value::Number(_) => match num(v) {
            Some(Num::Int(_)) => ("integer", "int64"),
            _ => ("number", "float64"),
        },
    }
}

/// The node's types as kube-openapi sees them: `integer,string` for int-or-string.
fn types(s: &Schema) -> Vec<&str> {
    if s.int_or_string {
        return vec!["integer", "string"];
    }
    match s.type_.as_deref() {
        Some(t) if !t.is_empty() => vec![t],
        _ => Vec::new(),
    }
}

/// go-openapi's `IsFloat64AJSONInteger`: integral within JSON's safe range, or within a
/// relative 1e-9 of an integer.
fn is_json_integer(f: f64) -> bool {
    const MAX: f64 = 9_007_199_254_740_991.0;
    if f.is_nan() || f.is_infinite() || !(-MAX..=MAX).contains(&f) {
        return false;
    }
    let g = f.trunc();
    if f == g {
        return true;
    }
    let diff = (f - g).abs();
    if g == 0.0 {
        return diff < 1e-9 * f64::MIN_POSITIVE;
    }
    diff / (f.abs() + g.abs()).min(f64::MAX) < 1e-9
}

fn invalid_type(name: &str, ty: &str, shown: &str) -> OErr {
    OErr::new(
        Code::InvalidType,
        name,
        Some(Value::String(shown.to_string())),
        format!(
            "{name} in body must be of type {ty}: {}",
            gofmt::quote(shown)
        ),
    )
}

fn type_check(s: &Schema, p: &str, data: &Value) -> Res {
    let tys = types(s);
    if data.is_null() {
        if !tys.is_empty() && !tys.contains(&"null") && !s.nullable {
            return Res::err(invalid_type(p, &tys.join(","), "null"));
        }
        return Res::pass();
    }
    let format = formats::effective(s).unwrap_or("");
    let (sch_type, go_format) = type_of(data);
    let is_float_int = sch_type == "number"
        && num(data).is_some_and(|n| matches!(n, Num::Float(f) if is_json_integer(f)))
        && tys.contains(&"integer");
    let is_int_float = sch_type == "integer" && tys.contains(&"number");
    let stringy = data.is_string() || data.is_array();
    let numeric_type = tys.contains(&"number") || tys.contains(&"integer");
    // A declared format names the expected type for non-string values.
    let format_fits =
        tys.contains(&sch_type) || go_format == format || is_float_int || is_int_float;
    if !(stringy || format.is_empty() || format_fits) {
        return Res::err(invalid_type(p, format, go_format));
    }
    // kube-openapi accepts strings and lists for any non-numeric type that has a format.
    if !(numeric_type || format.is_empty()) && stringy {
        return Res::pass();
    }
    if !(tys.contains(&sch_type) || is_float_int || is_int_float) {
        return Res::err(invalid_type(p, &tys.join(","), sch_type));
    }
    Res::pass()
}

/// Go's `reflect` conversion of the value to the enum entry's type, then deep equality: an
/// integer matches a float entry of the same value, a float matches an integer entry after
/// truncation, and an integer matches the one-rune string of its code point.
fn enum_matches(data: &Value, entry: &Value) -> bool {
    if data.is_null() || entry.is_null() {
        return false;
    }
    match (num(data), num(entry)) {
        (Some(Num::Int(a)), Some(Num::Int(b))) => return a == b,
        (Some(Num::Int(a)), Some(Num::Float(b))) => return (a as f64) == b,
        (Some(Num::Float(a)), Some(Num::Int(b))) => return (a as i64) == b,
        (Some(Num::Float(a)), Some(Num::Float(b))) => return a == b,
        _ => {}
    }
    if let (Some(Num::Int(i)), Value::String(s)) = (num(data), entry) {
        let c = u32::try_from(i)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}');
        return s.chars().eq(std::iter::once(c));
    }
    data == entry
}

fn enum_check(s: &Schema, p: &str, data: &Value) -> Res {
    let Some(entries) = s.enum_.as_ref().filter(|e| !e.is_empty()) else {
        return Res::pass();
    };
    if entries.iter().any(|e| enum_matches(data, e)) {
        return Res::pass();
    }
    let mut e = OErr::new(
        Code::Enum,
        p,
        Some(data.clone()),
        format!(
            "{p} in body should be one of {}",
            gofmt::plain(&Value::Array(entries.clone()))
        ),
    );
    e.values = entries.clone();
    Res::err(e)
}

fn string_check(s: &Schema, c: &Compiled, p: &str, data: &str) -> Res {
    let runes = data.chars().count() as u64;
    let shown = Some(Value::String(data.to_string()));
    if let Some(max) = s.max_length {
        if runes > max {
            let mut e = OErr::new(
                Code::TooLong,
                p,
                shown,
                format!("{p} in body should be at most {max} chars long"),
            );
            e.valid = i64::try_from(max).ok();
            return Res::err(e);
        }
    }
    if let Some(min) = s.min_length {
        if runes < min {
            let mut e = OErr::new(
                Code::TooShort,
                p,
                shown,
                format!("{p} in body should be at least {min} chars long"),
            );
            e.valid = i64::try_from(min).ok();
            return Res::err(e);
        }
    }
    if let (Some(pat), Some(compiled)) = (s.pattern.as_deref(), &c.pattern) {
        let failed = match compiled {
            Ok(re) => (!re.is_match(data)).then(|| pat.to_string()),
            Err(e) => Some(format!("{pat}, but pattern is invalid: {e}")),
        };
        if let Some(shown_pattern) = failed {
            return Res::err(OErr::new(
                Code::Pattern,
                p,
                shown,
                format!("{p} in body should match '{shown_pattern}'"),
            ));
        }
    }
    Res::pass()
}

fn format_check(p: &str, format: &str, data: &str) -> Res {
    if formats::check(format, data) {
        return Res::pass();
    }
    Res::err(invalid_type(p, format, data))
}

/// kube-openapi's `IsValueValidAgainstRange`: whether the number fits the node's type and
/// format (`int32`, `float`), as text.
fn range_error(val: Num, type_name: &str, format: &str, prefix: &str, p: &str) -> Option<OErr> {
    let rep = match val {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => format!("{f}"),
    };
    let ok = match (type_name, format) {
        ("integer", "int32") => rep.parse::<i32>().is_ok(),
        ("integer", _) => rep.parse::<i64>().is_ok(),
        (_, "float") => rep
            .parse::<f64>()
            .is_ok_and(|f| f.abs() <= f64::from(f32::MAX)),
        _ => true,
    };
    if ok {
        return None;
    }
    Some(OErr::plain(if format.is_empty() {
        format!("{prefix} value must be of type {type_name} (default format) in {p}")
    } else {
        format!("{prefix} value must be of type {type_name} with format {format} in {p}")
    }))
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

fn multiple_of(p: &str, data: Num, factor: f64, native: bool) -> Option<OErr> {
    let shown = Some(num_value(data));
    match (native, data) {
        (true, Num::Int(d)) => {
            let f = factor as i64;
            if f <= 0 {
                return Some(OErr::new(
                    Code::MustBePositive,
                    p,
                    Some(Value::from(f)),
                    format!("factor MultipleOf declared for {p} must be positive: {f}"),
                ));
            }
            (d % f != 0).then(|| {
                OErr::new(
                    Code::MultipleOf,
                    p,
                    shown,
                    format!("{p} in body should be a multiple of {f}"),
                )
            })
        }
        _ => {
            let d = as_f64(data);
            if factor <= 0.0 {
                return Some(OErr::new(
                    Code::MustBePositive,
                    p,
                    Some(Value::from(factor)),
                    format!(
                        "factor MultipleOf declared for {p} must be positive: {}",
                        gofmt::float(factor)
                    ),
                ));
            }
            let mult = if factor < 1.0 {
                1.0 / factor * d
            } else {
                d / factor
            };
            (!is_json_integer(mult)).then(|| {
                OErr::new(
                    Code::MultipleOf,
                    p,
                    shown,
                    format!(
                        "{p} in body should be a multiple of {}",
                        gofmt::float(factor)
                    ),
                )
            })
        }
    }
}

fn bound(
    p: &str,
    data: Num,
    limit: f64,
    exclusive: bool,
    native: bool,
    upper: bool,
) -> Option<OErr> {
    let shown = Some(num_value(data));
    let (failed, limit_text) = match (native, data) {
        (true, Num::Int(d)) => {
            let l = limit as i64;
            let failed = if upper {
                if exclusive {
                    d >= l
                } else {
                    d > l
                }
            } else if exclusive {
                d <= l
            } else {
                d < l
            };
            (failed, l.to_string())
        }
        _ => {
            let d = as_f64(data);
            let failed = if upper {
                if exclusive {
                    d >= limit
                } else {
                    d > limit
                }
            } else if exclusive {
                d <= limit
            } else {
                d < limit
            };
            (failed, gofmt::float(limit))
        }
    };
    if !failed {
        return None;
    }
    let words = match (upper, exclusive) {
        (true, false) => "less than or equal to",
        (true, true) => "less than",
        (false, false) => "greater than or equal to",
        (false, true) => "greater than",
    };
    let code = if upper { Code::Max } else { Code::Min };
    Some(OErr::new(
        code,
        p,
        shown,
        format!("{p} in body should be {words} {limit_text}"),
    ))
}

fn number_check(s: &Schema, p: &str, data: Num) -> Res {
    // The type and format the number validator uses: only for a single declared type, and
    // only formats that belong to it.
    let (type_name, format) = match (s.int_or_string, s.type_.as_deref()) {
        (false, Some("integer")) => {
            let f = formats::effective(s).filter(|f| *f == "int32" || *f == "int64");
            ("integer", f.unwrap_or(""))
        }
        (false, Some("number")) => {
            let f = formats::effective(s).filter(|f| *f == "float" || *f == "double");
            ("number", f.unwrap_or(""))
        }
        _ => ("", ""),
    };
    let mut res = Res::default();
    if let Some(e) = range_error(data, type_name, format, "Checked", p) {
        res.errs.push(e);
    }
    let by_constraint = |limit: f64, prefix: &str, check: &dyn Fn(bool) -> Option<OErr>| {
        let mut out = Vec::new();
        let range = range_error(Num::Float(limit), type_name, format, prefix, p);
        let native = range.is_none();
        out.extend(range);
        out.extend(check(native));
        out
    };
    let mut multiple = Vec::new();
    let mut minimum = Vec::new();
    let mut maximum = Vec::new();
    if let Some(f) = s.multiple_of {
        multiple = by_constraint(f, "MultipleOf", &|native| multiple_of(p, data, f, native));
    }
    if let Some(max) = s.maximum {
        maximum = by_constraint(max, "Maximum boundary", &|native| {
            bound(p, data, max, s.exclusive_maximum, native, true)
        });
    }
    if let Some(min) = s.minimum {
        minimum = by_constraint(min, "Minimum boundary", &|native| {
            bound(p, data, min, s.exclusive_minimum, native, false)
        });
    }
    res.errs.extend(multiple);
    res.errs.extend(minimum);
    res.errs.extend(maximum);
    res.matches += 1;
    res
}

/// The schema of property `k` of the node `cs`, for pairing old and new values.
fn child_schema<'a>(cs: &'a Schema, k: &str) -> Option<&'a Schema> {
    cs.properties.get(k).or_else(|| cs.value_schema())
}

/// Kubernetes' `CachedDeepEqual`: whether `new` equals `old`, comparing only what the schema
/// pairs (properties and map keys with a schema, `map` list items by key, other lists whole).
pub(crate) fn unchanged(s: &Schema, new: &Value, old: &Value) -> bool {
    match (new, old) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Array(n), Value::Array(o)) => {
            if n.len() != o.len() {
                return false;
            }
            let is_map_list = s.type_.as_deref() == Some("array")
                && s.list_type.as_deref() == Some("map")
                && !s.list_map_keys.is_empty();
            if !is_map_list {
                return n == o;
            }
            let Some(is) = s.item_schema() else {
                return n.is_empty();
            };
            n.iter().all(|item| {
                listtype::correlate(s, o, item).is_some_and(|oi| unchanged(is, item, oi))
            })
        }
        (Value::Object(n), Value::Object(o)) => {
            n.len() == o.len()
                && n.iter().all(|(k, v)| match (o.get(k), child_schema(s, k)) {
                    (Some(ov), Some(cs)) => unchanged(cs, v, ov),
                    _ => false,
                })
        }
        (Value::Array(_), _)
        | (_, Value::Array(_))
        | (Value::Object(_), _)
        | (_, Value::Object(_)) => false,
        _ => new == old,
    }
}

/// The old value paired with property `k` of an object at `p`.
fn old_for_key<'a>(
    cs: Option<&Schema>,
    p: &str,
    old: Option<&'a Value>,
    k: &str,
) -> Option<&'a Value> {
    // Kubernetes never pairs the custom object's own apiVersion and kind.
    if p.is_empty() && (k == "apiVersion" || k == "kind") {
        return None;
    }
    child_schema(cs?, k)?;
    old?.as_object()?.get(k)
}

#[allow(clippy::too_many_arguments)]
fn run(
    s: &Schema,
    c: &Compiled,
    cs: Option<&Schema>,
    p: &str,
    data: &Value,
    old: Option<&Value>,
    ratchet_self: bool,
) -> Res {
    let mut res = Res::default();
    if data.is_null() {
        res.merge(type_check(s, p, data));
        res.merge(enum_check(s, p, data));
    } else {
        if !types(s).is_empty() || formats::effective(s).is_some() {
            res.merge(type_check(s, p, data));
            res.matches += 1;
        }
        res.merge(schema_props(s, c, cs, p, data, old));
        res.matches += 1;
        if let Value::String(text) = data {
            res.merge(string_check(s, c, p, text));
            res.matches += 1;
            if let Some(f) = formats::effective(s).filter(|f| formats::is_string_format(f)) {
                res.merge(format_check(p, f, text));
                res.matches += 1;
            }
        }
        if let Some(n) = num(data) {
            res.merge(number_check(s, p, n));
            res.matches += 1;
        }
        if let Value::Array(items) = data {
            res.merge(slice_check(s, c, cs, p, items, old));
            res.matches += 1;
        }
        res.merge(enum_check(s, p, data));
        res.matches += 1;
        if let Value::Object(m) = data {
            res.merge(object_check(s, c, cs, p, m, old));
            res.matches += 1;
        }
        res.matches += 1;
    }
    if ratchet_self && !res.valid() {
        if let (Some(cs), Some(o)) = (cs, old) {
            if unchanged(cs, data, o) {
                res.errs.clear();
            }
        }
    }
    res
}

fn composite(p: &str, text: &str) -> OErr {
    OErr::plain(format!("{} {text}", gofmt::quote(p)))
}

fn schema_props(
    s: &Schema,
    c: &Compiled,
    cs: Option<&Schema>,
    p: &str,
    data: &Value,
    old: Option<&Value>,
) -> Res {
    let mut main = Res::default();
    let sub = |i: usize, list: &[Schema], compiled: &[Compiled]| -> Res {
        match (list.get(i), compiled.get(i)) {
            (Some(x), Some(cx)) => run(x, cx, cs, p, data, old, false),
            _ => Res::pass(),
        }
    };
    if !s.any_of.is_empty() {
        let mut best: Option<Res> = None;
        let mut success: Option<Res> = None;
        for i in 0..s.any_of.len() {
            let r = sub(i, &s.any_of, &c.any_of);
            if r.valid() {
                best = None;
                success = Some(r);
                break;
            }
            if best.as_ref().is_none_or(|b| r.matches > b.matches) {
                best = Some(r);
            }
        }
        if success.is_none() {
            main.errs
                .push(composite(p, "must validate at least one schema (anyOf)"));
        }
        if let Some(b) = best.or(success) {
            main.merge(b);
        }
    }
    if !s.one_of.is_empty() {
        let mut best: Option<Res> = None;
        let mut success: Option<Res> = None;
        let mut validated = 0;
        for i in 0..s.one_of.len() {
            let r = sub(i, &s.one_of, &c.one_of);
            if r.valid() {
                validated += 1;
                best = None;
                success.get_or_insert(r);
                continue;
            }
            if validated == 0 && best.as_ref().is_none_or(|b| r.matches > b.matches) {
                best = Some(r);
            }
        }
        if validated != 1 {
            let more = if validated == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {validated} valid alternatives")
            };
            main.errs.push(composite(
                p,
                &format!("must validate one and only one schema (oneOf). {more}"),
            ));
            if let Some(b) = best {
                main.merge(b);
            }
        } else if let Some(ok) = success {
            main.merge(ok);
        }
    }
    if !s.all_of.is_empty() {
        let mut validated = 0;
        for i in 0..s.all_of.len() {
            let r = sub(i, &s.all_of, &c.all_of);
            if r.valid() {
                validated += 1;
            }
            main.merge(r);
        }
        if validated != s.all_of.len() {
            let more = if validated == 0 {
                ". None validated"
            } else {
                ""
            };
            main.errs.push(composite(
                p,
                &format!("must validate all the schemas (allOf){more}"),
            ));
        }
    }
    if let (Some(not), Some(cnot)) = (&s.not, &c.not) {
        if run(not, cnot, cs, p, data, old, false).valid() {
            main.errs
                .push(composite(p, "must not validate the schema (not)"));
        }
    }
    main.matches += 1;
    main
}

fn slice_check(
    s: &Schema,
    c: &Compiled,
    cs: Option<&Schema>,
    p: &str,
    items: &[Value],
    old: Option<&Value>,
) -> Res {
    let mut res = Res::default();
    match (&s.items, &c.items) {
        (Some(Items::Schema(is)), Some(ci)) => {
            let item_cs = cs.and_then(Schema::item_schema);
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let item_old = match (cs, old_items) {
                    (Some(cs), Some(o)) if item_cs.is_some() => listtype::correlate(cs, o, item),
                    _ => None,
                };
                res.merge(run(
                    is,
                    ci,
                    item_cs,
                    &format!("{p}[{i}]"),
                    item,
                    item_old,
                    true,
                ));
            }
        }
        (Some(Items::List(list)), _) => {
            for (i, (is, ci)) in list.iter().zip(&c.item_list).enumerate() {
                if let Some(item) = items.get(i) {
                    res.merge(run(is, ci, None, &format!("{p}[{i}]"), item, None, true));
                }
            }
        }
        _ => {}
    }
    let size = items.len() as u64;
    let counts = Counts {
        noun: "items",
        too_few: Code::MinItems,
        too_many: Code::MaxItems,
    };
    counts.check(p, size, s.min_items, s.max_items, &mut res.errs);
    if s.unique_items {
        let dup = items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].iter().any(|b| b == a));
        if dup {
            res.errs.push(OErr::new(
                Code::Unique,
                p,
                None,
                format!("{p} in body shouldn't contain duplicates"),
            ));
        }
    }
    res.matches += 1;
    res
}

/// The bounds on how many items or properties a node holds (`minItems`/`maxItems`,
/// `minProperties`/`maxProperties`), worded as kube-openapi words them.
struct Counts {
    noun: &'static str,
    too_few: Code,
    too_many: Code,
}

impl Counts {
    fn check(&self, p: &str, size: u64, min: Option<u64>, max: Option<u64>, out: &mut Vec<OErr>) {
        let noun = self.noun;
        let bounds = [
            (min.filter(|min| size < *min), self.too_few, "at least"),
            (max.filter(|max| size > *max), self.too_many, "at most"),
        ];
        for (limit, code, words) in bounds {
            if let Some(limit) = limit {
                let mut e = OErr::new(
                    code,
                    p,
                    Some(Value::from(size)),
                    format!("{p} in body should have {words} {limit} {noun}"),
                );
                e.valid = i64::try_from(limit).ok();
                out.push(e);
            }
        }
    }
}

fn object_check(
    s: &Schema,
    c: &Compiled,
    cs: Option<&Schema>,
    p: &str,
    m: &Map<String, Value>,
    old: Option<&Value>,
) -> Res {
    let mut res = Res::default();
    let size = m.len() as u64;
    let counts = Counts {
        noun: "properties",
        too_few: Code::TooFewProperties,
        too_many: Code::TooManyProperties,
    };
    counts.check(p, size, s.min_properties, s.max_properties, &mut res.errs);
    let child = |k: &str, sub: &Schema, csub: &Compiled, name: String, v: &Value| -> Res {
        let sub_cs = cs.and_then(|cs| child_schema(cs, k));
        let sub_old = old_for_key(cs, p, old, k);
        run(sub, csub, sub_cs, &name, v, sub_old, true)
    };
    if let Some(Additional::Bool(false)) = &s.additional_properties {
        for k in m.keys().filter(|k| !s.properties.contains_key(*k)) {
            res.errs.push(OErr::new(
                Code::Unallowed,
                p,
                Some(Value::String(k.clone())),
                format!("{p}.{k} in body is a forbidden property"),
            ));
        }
    } else if let (Some(Additional::Schema(ap)), Some(cap)) =
        (&s.additional_properties, &c.additional)
    {
        for (k, v) in m.iter().filter(|(k, _)| !s.properties.contains_key(*k)) {
            res.merge(child(k, ap, cap, format!("{p}.{k}"), v));
        }
    }
    for (k, ps) in &s.properties {
        if let (Some(v), Some(cp)) = (m.get(k), c.properties.get(k)) {
            let name = if p.is_empty() {
                k.clone()
            } else {
                format!("{p}.{k}")
            };
            res.merge(child(k, ps, cp, name, v));
        }
    }
    for k in &s.required {
        if !m.contains_key(k) {
            let name = format!("{p}.{k}");
            let msg = format!("{name} in body is required");
            res.errs.push(OErr::new(Code::Required, &name, None, msg));
        }
    }
    res.matches += 1;
    res
}

/// Where Kubernetes decides whether a rule's errors are ratcheted: the nearest node, at or
/// above the current one, whose old value is paired (its schema, new and old value).
type Anchor<'a> = Option<(&'a Schema, &'a Value, &'a Value)>;

#[allow(clippy::too_many_arguments)]
fn cel<'a>(
    s: &'a Schema,
    c: &Compiled,
    field: &str,
    value: &'a Value,
    old: Option<&'a Value>,
    anchor: Anchor<'a>,
    at_root: bool,
    out: &mut Vec<FieldError>,
) {
    // Rules see only present, non-null values.
    if value.is_null() || !c.rules_below {
        return;
    }
    if let Some(rules) = &c.rules {
        let mut errs = Vec::new();
        rules.check(field, value, old, &mut errs);
        // Kubernetes names the custom object itself `<nil>`.
        for e in errs.iter_mut().filter(|e| e.field.is_empty()) {
            e.field = path::shown("");
        }
        if !errs.is_empty() && !rules.has_transition_rules() {
            if let Some((a, new, was)) = anchor {
                if unchanged(a, new, was) {
                    errs.clear();
                }
            }
        }
        out.extend(errs);
    }
    let child_anchor =
        |k: Option<&str>, sub: &'a Schema, v: &'a Value, sub_old: Option<&'a Value>| {
            if at_root && matches!(k, Some("apiVersion" | "kind")) {
                return None;
            }
            match sub_old {
                Some(o) => Some((sub, v, o)),
                None => anchor,
            }
        };
    match value {
        Value::Object(m) => {
            let old_map = old.and_then(Value::as_object);
            if let (Some(Additional::Schema(ap)), Some(cap)) =
                (&s.additional_properties, &c.additional)
            {
                for (k, v) in m {
                    let sub_old = old_map.and_then(|o| o.get(k));
                    let a = child_anchor(Some(k), ap, v, sub_old);
                    cel(ap, cap, &path::key(field, k), v, sub_old, a, false, out);
                }
            }
            for (k, v) in m {
                if let (Some(ps), Some(cp)) = (s.properties.get(k), c.properties.get(k)) {
                    let sub_old = old_map.and_then(|o| o.get(k));
                    let a = child_anchor(Some(k), ps, v, sub_old);
                    cel(ps, cp, &path::child(field, k), v, sub_old, a, false, out);
                }
            }
        }
        Value::Array(items) => {
            if let (Some(is), Some(ci)) = (s.item_schema(), &c.items) {
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let sub_old = old_items.and_then(|o| listtype::correlate(s, o, item));
                    let a = child_anchor(None, is, item, sub_old);
                    cel(is, ci, &path::index(field, i), item, sub_old, a, false, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use serde_json::json;
    use std::sync::Arc;

    fn schema(v: Value) -> Schema {
        Schema::parse(&v).unwrap()
    }

    fn object(props: Value) -> Schema {
        schema(
            json!({"type": "object", "properties": {"spec": {"type": "object", "properties": props}}}),
        )
    }

    fn errs(s: &Schema, obj: Value) -> Vec<String> {
        validate(s, &obj, None)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn update(s: &Schema, obj: Value, old: Value) -> Vec<String> {
        validate(s, &obj, Some(&old))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn types_are_checked_with_kube_openapi_messages() {
        let s = object(json!({
            "replicas": {"type": "integer"}, "ratio": {"type": "number"},
            "name": {"type": "string"}, "on": {"type": "boolean"},
            "list": {"type": "array", "items": {"type": "string"}}, "obj": {"type": "object"}
        }));
        assert_eq!(
            errs(&s, json!({"spec": {"replicas": "3"}})),
            vec!["spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"replicas": 1.5}})),
            vec![
                "spec.replicas: Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\"",
                "<nil>: Invalid value: \"\": Checked value must be of type integer (default format) in spec.replicas"
            ]
        );
        assert!(errs(&s, json!({"spec": {"replicas": 2.0, "ratio": 3}})).is_empty());
        assert_eq!(
            errs(&s, json!({"spec": {"name": 5, "on": "yes", "list": {}, "obj": []}})),
            vec![
                "spec.list: Invalid value: \"object\": spec.list in body must be of type array: \"object\"",
                "spec.name: Invalid value: \"integer\": spec.name in body must be of type string: \"integer\"",
                "spec.obj: Invalid value: \"array\": spec.obj in body must be of type object: \"array\"",
                "spec.on: Invalid value: \"string\": spec.on in body must be of type boolean: \"string\"",
            ]
        );
        let e = validate(&s, &json!({"spec": {"name": 5}}), None);
        assert_eq!(e[0].kind, ErrorKind::TypeInvalid);
        assert_eq!(e[0].field, "spec.name");
    }

    #[test]
    fn nulls_need_nullable() {
        let s = object(
            json!({"a": {"type": "string"}, "b": {"type": "string", "nullable": true},
                              "c": {"x-kubernetes-preserve-unknown-fields": true}}),
        );
        assert_eq!(
            errs(&s, json!({"spec": {"a": null, "b": null, "c": null}})),
            vec![
                "spec.a: Invalid value: \"null\": spec.a in body must be of type string: \"null\""
            ]
        );
    }

    #[test]
    fn int_or_string() {
        let s = object(json!({"port": {"x-kubernetes-int-or-string": true,
                                       "anyOf": [{"type": "integer"}, {"type": "string"}]}}));
        assert!(errs(&s, json!({"spec": {"port": 80}})).is_empty());
        assert!(errs(&s, json!({"spec": {"port": "http"}})).is_empty());
        let e = errs(&s, json!({"spec": {"port": true}}));
        assert_eq!(
            e[0],
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\""
        );
        assert_eq!(
            e[1],
            "<nil>: Invalid value: \"\": \"spec.port\" must validate at least one schema (anyOf)"
        );
        assert_eq!(
            e[2],
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer: \"boolean\""
        );
    }

    #[test]
    fn enums_report_supported_values() {
        let s = object(
            json!({"size": {"type": "string", "enum": ["small", "large"]},
                              "level": {"type": "integer", "enum": [1, 2]}}),
        );
        assert_eq!(
            errs(&s, json!({"spec": {"size": "huge"}})),
            vec!["spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\""]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"level": 3}})),
            vec!["spec.level: Unsupported value: 3: supported values: \"1\", \"2\""]
        );
        assert!(errs(&s, json!({"spec": {"size": "small", "level": 2}})).is_empty());
        // As in Go: a float is converted to the integer type of the entry.
        assert_eq!(
            errs(&s, json!({"spec": {"level": 2.5}})),
            vec![
                "spec.level: Invalid value: \"number\": spec.level in body must be of type integer: \"number\"",
                "<nil>: Invalid value: \"\": Checked value must be of type integer (default format) in spec.level"
            ]
        );
    }

    #[test]
    fn string_rules() {
        let s = object(json!({
            "name": {"type": "string", "pattern": "^[a-z]+$"},
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 2},
            "both": {"type": "string", "maxLength": 2, "pattern": "^x"}
        }));
        assert_eq!(
            errs(&s, json!({"spec": {"name": "X"}})),
            vec!["spec.name: Invalid value: \"X\": spec.name in body should match '^[a-z]+$'"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"short": "abcd"}})),
            vec!["spec.short: Too long: may not be more than 3 bytes"]
        );
        // Lengths count runes.
        assert!(errs(&s, json!({"spec": {"short": "äöü"}})).is_empty());
        assert_eq!(
            errs(&s, json!({"spec": {"long": "a"}})),
            vec!["spec.long: Invalid value: \"a\": spec.long in body should be at least 2 chars long"]
        );
        // Only the first string error is reported.
        assert_eq!(
            errs(&s, json!({"spec": {"both": "abc"}})),
            vec!["spec.both: Too long: may not be more than 2 bytes"]
        );
    }

    #[test]
    fn number_bounds() {
        let s = object(json!({
            "count": {"type": "integer", "maximum": 10, "minimum": 1},
            "excl": {"type": "integer", "maximum": 10, "exclusiveMaximum": true,
                     "minimum": 0, "exclusiveMinimum": true},
            "ratio": {"type": "number", "maximum": 1.5},
            "even": {"type": "integer", "multipleOf": 2},
            "step": {"type": "number", "multipleOf": 0.5},
            "small": {"type": "integer", "format": "int32"}
        }));
        assert_eq!(
            errs(&s, json!({"spec": {"count": 11}})),
            vec!["spec.count: Invalid value: 11: spec.count in body should be less than or equal to 10"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"count": 0}})),
            vec!["spec.count: Invalid value: 0: spec.count in body should be greater than or equal to 1"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"excl": 10}})),
            vec!["spec.excl: Invalid value: 10: spec.excl in body should be less than 10"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"excl": 0}})),
            vec!["spec.excl: Invalid value: 0: spec.excl in body should be greater than 0"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"ratio": 2.25}})),
            vec!["spec.ratio: Invalid value: 2.25: spec.ratio in body should be less than or equal to 1.5"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"even": 3}})),
            vec!["spec.even: Invalid value: 3: spec.even in body should be a multiple of 2"]
        );
        assert!(errs(&s, json!({"spec": {"even": 4, "step": 1.5}})).is_empty());
        assert_eq!(
            errs(&s, json!({"spec": {"step": 1.25}})),
            vec!["spec.step: Invalid value: 1.25: spec.step in body should be a multiple of 0.5"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"small": 3000000000i64}})),
            vec!["<nil>: Invalid value: \"\": Checked value must be of type integer with format int32 in spec.small"]
        );
    }

    #[test]
    fn formats() {
        let s = object(json!({
            "when": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "made": {"type": "string", "format": "made-up"},
            "num": {"type": "integer", "format": "int64"}
        }));
        assert_eq!(
            errs(&s, json!({"spec": {"when": "yesterday", "ip": "1.2.3"}})),
            vec![
                "spec.ip: Invalid value: \"1.2.3\": spec.ip in body must be of type ipv4: \"1.2.3\"",
                "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\""
            ]
        );
        assert!(errs(
            &s,
            json!({"spec": {"when": "2024-01-02T03:04:05Z", "ip": "10.0.0.1",
                                          "made": "anything", "num": 5}})
        )
        .is_empty());
        // A declared format names the type in the message.
        assert_eq!(
            errs(&s, json!({"spec": {"num": "5"}})),
            vec!["spec.num: Invalid value: \"string\": spec.num in body must be of type integer: \"string\""]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"num": true}})),
            vec!["spec.num: Invalid value: \"\": spec.num in body must be of type int64: \"\""]
        );
    }

    #[test]
    fn arrays_and_objects() {
        let s = object(json!({
            "tags": {"type": "array", "maxItems": 4, "minItems": 1, "items": {"type": "string"}},
            "labels": {"type": "object", "maxProperties": 2, "minProperties": 1,
                       "additionalProperties": {"type": "string"}},
            "closed": {"type": "object", "additionalProperties": false}
        }));
        assert_eq!(
            errs(&s, json!({"spec": {"tags": ["a", "b", "c", "d", "e"]}})),
            vec!["spec.tags: Too many: 5: must have at most 4 items"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"tags": []}})),
            vec!["spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"tags": ["a", 1]}})),
            vec!["spec.tags[1]: Invalid value: \"integer\": spec.tags[1] in body must be of type string: \"integer\""]
        );
        assert_eq!(
            errs(
                &s,
                json!({"spec": {"labels": {"a": "1", "b": "2", "c": "3"}}})
            ),
            vec!["spec.labels: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"labels": {"a": 1}}})),
            vec!["spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\""]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"closed": {"x": 1}}})),
            vec![
                "spec.closed: Invalid value: \"x\": spec.closed.x in body is a forbidden property"
            ]
        );
    }

    #[test]
    fn required_fields() {
        let s = schema(json!({
            "type": "object", "required": ["spec"],
            "properties": {"spec": {"type": "object", "required": ["x", "y"],
                                    "properties": {"x": {"type": "string"}, "y": {"type": "string"}}}}
        }));
        assert_eq!(
            errs(&s, json!({"apiVersion": "a/v1", "kind": "K"})),
            vec!["spec: Required value"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"y": "1"}})),
            vec!["spec.x: Required value"]
        );
        let e = validate(&s, &json!({"spec": {}}), None);
        assert_eq!(e.len(), 2);
        assert!(e.iter().all(|e| e.kind == ErrorKind::Required));
    }

    #[test]
    fn root_metadata_restrictions_are_checked() {
        let s = schema(json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}}}
        }}));
        assert_eq!(
            errs(&s, json!({"metadata": {"name": "too-long"}})),
            vec!["metadata.name: Too long: may not be more than 5 bytes"]
        );
    }

    #[test]
    fn value_validations() {
        let s = object(json!({
            "one": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
            "all": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
            "not": {"type": "string", "not": {"enum": ["forbidden"]}}
        }));
        assert!(errs(&s, json!({"spec": {"one": {"a": "x"}}})).is_empty());
        assert_eq!(
            errs(&s, json!({"spec": {"one": {"a": "x", "b": "y"}}})),
            vec!["<nil>: Invalid value: \"\": \"spec.one\" must validate one and only one schema (oneOf). Found 2 valid alternatives"]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"one": {}}})),
            vec![
                "<nil>: Invalid value: \"\": \"spec.one\" must validate one and only one schema (oneOf). Found none valid",
                "spec.one.a: Required value"
            ]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"all": 9}})),
            vec![
                "spec.all: Invalid value: 9: spec.all in body should be less than or equal to 5",
                "<nil>: Invalid value: \"\": \"spec.all\" must validate all the schemas (allOf)"
            ]
        );
        assert_eq!(
            errs(&s, json!({"spec": {"not": "forbidden"}})),
            vec!["<nil>: Invalid value: \"\": \"spec.not\" must not validate the schema (not)"]
        );
    }

    #[test]
    fn embedded_resources_and_lists_are_part_of_validation() {
        let s = object(json!({
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                         "x-kubernetes-preserve-unknown-fields": true},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
        }));
        assert_eq!(
            errs(
                &s,
                json!({"spec": {"template": {"kind": "Pod"}, "tags": ["a", "a"]}})
            ),
            vec![
                "spec.template.apiVersion: Required value",
                "spec.tags[1]: Duplicate value: \"a\""
            ]
        );
    }

    #[test]
    fn unchanged_parts_are_ratcheted_on_update() {
        let s = object(json!({
            "name": {"type": "string", "maxLength": 3},
            "other": {"type": "string"},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string", "maxLength": 1}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "required": ["name"], "properties": {
                          "name": {"type": "string"}, "port": {"type": "integer", "maximum": 100}}}}
        }));
        let old = json!({"spec": {"name": "toolong", "other": "a", "tags": ["xx"],
                                  "ports": [{"name": "a", "port": 500}, {"name": "b", "port": 1}]}});
        // Only `other` changed: the old violations stay acceptable.
        let new = json!({"spec": {"name": "toolong", "other": "b", "tags": ["xx"],
                                  "ports": [{"name": "b", "port": 1}, {"name": "a", "port": 500}]}});
        assert!(update(&s, new, old.clone()).is_empty());
        // A changed field is validated.
        let new = json!({"spec": {"name": "longer", "other": "a", "tags": ["xx"],
                                  "ports": [{"name": "a", "port": 500}, {"name": "b", "port": 1}]}});
        assert_eq!(
            update(&s, new, old.clone()),
            vec!["spec.name: Too long: may not be more than 3 bytes"]
        );
        // Items of a set are not paired: a changed set is validated whole.
        let new = json!({"spec": {"name": "toolong", "other": "a", "tags": ["xx", "y"],
                                  "ports": [{"name": "a", "port": 500}, {"name": "b", "port": 1}]}});
        assert_eq!(
            update(&s, new, old.clone()),
            vec!["spec.tags[0]: Too long: may not be more than 1 byte"]
        );
        // Map-list items are paired by key.
        let new = json!({"spec": {"name": "toolong", "other": "a", "tags": ["xx"],
                                  "ports": [{"name": "a", "port": 500}, {"name": "b", "port": 200}]}});
        assert_eq!(
            update(&s, new, old.clone()),
            vec!["spec.ports[1].port: Invalid value: 200: spec.ports[1].port in body should be less than or equal to 100"]
        );
        // On create, everything is checked.
        assert_eq!(errs(&s, old).len(), 3);
    }

    #[test]
    fn duplicates_already_stored_are_tolerated_on_update() {
        let s = object(
            json!({"tags": {"type": "array", "x-kubernetes-list-type": "set",
                                       "items": {"type": "string"}}}),
        );
        let old = json!({"spec": {"tags": ["a", "a"]}});
        assert!(update(&s, json!({"spec": {"tags": ["a", "a", "b"]}}), old).is_empty());
        let old = json!({"spec": {"tags": ["a"]}});
        assert_eq!(
            update(&s, json!({"spec": {"tags": ["a", "a"]}}), old),
            vec!["spec.tags[1]: Duplicate value: \"a\""]
        );
    }

    #[test]
    fn status_updates_check_the_status_schema() {
        let s = schema(json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
        }}));
        let v = Validator::new(s).unwrap();
        let old = json!({"spec": {"x": "bad"}, "status": {"replicas": 1}});
        let e: Vec<String> = v
            .validate_status(
                &json!({"spec": {"x": "bad"}, "status": {"replicas": "two"}}),
                &old,
            )
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            e,
            vec!["status.replicas: Invalid value: \"string\": replicas in body must be of type integer: \"string\""]
        );
    }

    /// Rules for the walker's tests: `fail` fails always, `oldSelf` fails when the value
    /// changed (a transition rule); every call is recorded.
    struct Fake {
        rules: Vec<String>,
        calls: Calls,
    }

    impl NodeRules for Fake {
        fn check(
            &self,
            field: &str,
            value: &Value,
            old: Option<&Value>,
            out: &mut Vec<FieldError>,
        ) {
            self.calls
                .lock()
                .push((field.to_string(), value.clone(), old.cloned()));
            for rule in &self.rules {
                let failed = match rule.as_str() {
                    "fail" => true,
                    "oldSelf" => old.is_some_and(|o| o != value),
                    _ => false,
                };
                if failed {
                    out.push(FieldError::new(
                        ErrorKind::Invalid,
                        path::shown(field),
                        None,
                        rule.clone(),
                    ));
                }
            }
        }

        fn has_transition_rules(&self) -> bool {
            self.rules.iter().any(|r| r == "oldSelf")
        }
    }

    type Calls = Arc<Mutex<Vec<(String, Value, Option<Value>)>>>;
    type Contexts = Arc<Mutex<Vec<(String, NodeContext)>>>;

    fn fake(s: Schema) -> (Result<Validator, Vec<FieldError>>, Calls, Contexts) {
        let calls: Calls = Arc::default();
        let contexts: Contexts = Arc::default();
        let (c, x) = (calls.clone(), contexts.clone());
        let compile = move |node: &Schema,
                            p: &str,
                            ctx: &NodeContext|
              -> Result<Box<dyn NodeRules>, Vec<FieldError>> {
            x.lock().push((p.to_string(), ctx.clone()));
            let rules: Vec<String> = node.validations.iter().map(|r| r.rule.clone()).collect();
            let at = |i: usize| format!("{p}.x-kubernetes-validations[{i}].rule");
            if let Some(i) = rules.iter().position(|r| r == "broken") {
                let e = FieldError::new(ErrorKind::Invalid, at(i), None, "compilation failed");
                return Err(vec![e]);
            }
            // As the CEL module does: no `oldSelf` where old values are not paired.
            if let (Some(within), Some(i)) = (
                &ctx.uncorrelatable,
                rules.iter().position(|r| r == "oldSelf"),
            ) {
                return Err(vec![FieldError::new(
                    ErrorKind::Invalid,
                    at(i),
                    Some(Value::String(rules[i].clone())),
                    format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {within}"),
                )]);
            }
            Ok(Box::new(Fake {
                rules,
                calls: c.clone(),
            }))
        };
        let v = Validator::with_compiler(s, "openAPIV3Schema", &compile);
        (v, calls, contexts)
    }

    fn fake_validator(s: Schema) -> (Result<Validator, Vec<FieldError>>, Calls) {
        let (v, calls, _) = fake(s);
        (v, calls)
    }

    #[test]
    fn rules_compile_knowing_their_place() {
        let s = schema(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "pass"}],
            "properties": {"spec": {"type": "object", "properties": {
                "list": {"type": "array", "maxItems": 10, "items": {
                    "type": "object", "x-kubernetes-validations": [{"rule": "pass"}],
                    "properties": {"m": {"type": "object", "maxProperties": 3,
                        "additionalProperties": {"type": "string",
                            "x-kubernetes-validations": [{"rule": "pass"}]}}}}},
                "free": {"type": "array", "items": {"type": "string",
                    "x-kubernetes-validations": [{"rule": "pass"}]}},
                "byKey": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["k"], "maxItems": 2,
                          "items": {"type": "object", "required": ["k"],
                                    "properties": {"k": {"type": "string"}},
                                    "x-kubernetes-validations": [{"rule": "oldSelf"}]}},
                "tmpl": {"type": "object", "x-kubernetes-embedded-resource": true,
                         "x-kubernetes-preserve-unknown-fields": true,
                         "x-kubernetes-validations": [{"rule": "pass"}]}
            }}}
        }));
        let (v, _, contexts) = fake(s);
        assert!(v.is_ok());
        let contexts = contexts.lock().clone();
        let ctx = |p: &str| {
            contexts
                .iter()
                .find(|c| c.0 == p)
                .map(|c| c.1.clone())
                .unwrap()
        };
        let list = "openAPIV3Schema.properties[spec].properties[list]";
        let at = |resource_root, cardinality, uncorrelatable: Option<&str>| NodeContext {
            resource_root,
            cardinality,
            uncorrelatable: uncorrelatable.map(String::from),
        };
        assert_eq!(ctx("openAPIV3Schema"), at(true, Some(1), None));
        assert_eq!(
            ctx(&format!("{list}.items")),
            at(false, Some(10), Some(list))
        );
        assert_eq!(
            ctx(&format!("{list}.items.properties[m].additionalProperties")),
            at(false, Some(30), Some(list))
        );
        assert_eq!(
            ctx("openAPIV3Schema.properties[spec].properties[free].items").cardinality,
            None
        );
        assert_eq!(
            ctx("openAPIV3Schema.properties[spec].properties[byKey].items"),
            at(false, Some(2), None)
        );
        assert!(ctx("openAPIV3Schema.properties[spec].properties[tmpl]").resource_root);
    }

    fn rules_schema() -> Schema {
        schema(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "pass"}],
            "properties": {"spec": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "x-kubernetes-validations": [{"rule": "fail"}]},
                    "labels": {"type": "object", "additionalProperties": {
                        "type": "string", "x-kubernetes-validations": [{"rule": "oldSelf"}]}},
                    "byName": {"type": "array", "x-kubernetes-list-type": "map",
                               "x-kubernetes-list-map-keys": ["name"],
                               "items": {"type": "object", "required": ["name"],
                                         "x-kubernetes-validations": [{"rule": "oldSelf"}],
                                         "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}},
                    "plain": {"type": "array", "items": {"type": "string",
                              "x-kubernetes-validations": [{"rule": "pass"}]}}
                }
            }}
        }))
    }

    #[test]
    fn rules_run_at_every_node_with_paired_old_values() {
        let (v, calls) = fake_validator(rules_schema());
        let v = v.unwrap();
        assert!(v.has_rules());
        let old = json!({"spec": {"count": 1, "labels": {"a": "1"},
                                  "byName": [{"name": "x", "v": 1}], "plain": ["p"]}});
        let new = json!({"spec": {"count": 1, "labels": {"a": "2", "b": "1"},
                                  "byName": [{"name": "y", "v": 0}, {"name": "x", "v": 2}], "plain": ["p"]}});
        let e: Vec<String> = v
            .validate(&new, Some(&old))
            .iter()
            .map(ToString::to_string)
            .collect();
        // `count` did not change: its failing (non-transition) rule is ratcheted.
        assert_eq!(
            e,
            vec![
                "spec.labels[a]: Invalid value: oldSelf",
                "spec.byName[1]: Invalid value: oldSelf"
            ]
        );
        let calls = calls.lock().clone();
        let find = |f: &str| calls.iter().find(|c| c.0 == f).cloned();
        assert_eq!(find("").map(|c| c.2.is_some()), Some(true));
        assert_eq!(find("spec.labels[a]").and_then(|c| c.2), Some(json!("1")));
        assert_eq!(find("spec.labels[b]").map(|c| c.2), Some(None));
        assert_eq!(find("spec.byName[0]").map(|c| c.2), Some(None));
        assert_eq!(
            find("spec.byName[1]").and_then(|c| c.2),
            Some(json!({"name": "x", "v": 1}))
        );
        // Items of lists that are not map lists have no old value.
        assert_eq!(find("spec.plain[0]").map(|c| c.2), Some(None));
    }

    #[test]
    fn rules_at_the_root_name_nil() {
        let s = schema(json!({"type": "object", "x-kubernetes-validations": [{"rule": "fail"}]}));
        let (v, _) = fake_validator(s);
        let e: Vec<String> = v
            .unwrap()
            .validate(&json!({}), None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(e, vec!["<nil>: Invalid value: fail"]);
    }

    #[test]
    fn rules_fail_on_create_and_skip_nulls() {
        let (v, calls) = fake_validator(rules_schema());
        let v = v.unwrap();
        let e: Vec<String> = v
            .validate(&json!({"spec": {"count": 1}}), None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(e, vec!["spec.count: Invalid value: fail"]);
        calls.lock().clear();
        let s = object(json!({"n": {"type": "integer", "nullable": true,
                                    "x-kubernetes-validations": [{"rule": "fail"}]}}));
        let (v, calls) = fake_validator(s);
        assert!(v
            .unwrap()
            .validate(&json!({"spec": {"n": null}}), None)
            .is_empty());
        assert!(calls.lock().is_empty());
    }

    #[test]
    fn rules_are_skipped_when_the_object_is_invalid() {
        let (v, calls) = fake_validator(rules_schema());
        let e: Vec<String> = v
            .unwrap()
            .validate(&json!({"spec": {"count": "one"}}), None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            e,
            vec![
                "spec.count: Invalid value: \"string\": spec.count in body must be of type integer: \"string\"",
                "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"
            ]
        );
        assert!(calls.lock().is_empty());
    }

    #[test]
    fn rule_compilation_errors_and_uncorrelatable_transition_rules() {
        let s = object(
            json!({"x": {"type": "string", "x-kubernetes-validations": [{"rule": "broken"}]}}),
        );
        let e = fake_validator(s).0.unwrap_err();
        assert_eq!(
            e[0].field,
            "openAPIV3Schema.properties[spec].properties[x].x-kubernetes-validations[0].rule"
        );
        let s = object(json!({"list": {"type": "array", "items": {
            "type": "object", "x-kubernetes-validations": [{"rule": "pass"}, {"rule": "oldSelf"}]}}}));
        let e: Vec<String> = fake_validator(s)
            .0
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            e,
            vec!["openAPIV3Schema.properties[spec].properties[list].items.x-kubernetes-validations[1].rule: Invalid value: \"oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within openAPIV3Schema.properties[spec].properties[list]"]
        );
    }

    #[test]
    fn validators_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Validator>();
    }

    #[test]
    fn patterns_mean_what_go_means() {
        let s = object(json!({"digits": {"type": "string", "pattern": "^\\d+$"},
                              "brace": {"type": "string", "pattern": "^a{$"}}));
        assert!(errs(&s, json!({"spec": {"digits": "123", "brace": "a{"}})).is_empty());
        assert_eq!(
            errs(&s, json!({"spec": {"digits": "١٢٣"}})),
            vec!["spec.digits: Invalid value: \"١٢٣\": spec.digits in body should match '^\\d+$'"]
        );
    }

    #[test]
    fn kubernetes_own_expectations() {
        // Cases from apiextensions-apiserver's validation tests.
        let s = schema(
            json!({"type": "object", "properties": {"field": {"x-kubernetes-int-or-string": true}}}),
        );
        for (v, t) in [
            (json!(true), "boolean"),
            (json!(1.5), "number"),
            (json!([]), "array"),
            (json!({}), "object"),
            (Value::Null, "null"),
        ] {
            assert_eq!(
                errs(&s, json!({"field": v})),
                vec![format!("field: Invalid value: \"{t}\": field in body must be of type integer,string: \"{t}\"")]
            );
        }
        let s = schema(json!({"type": "object", "properties": {"field": {
            "type": "object", "required": ["nestedint", "nestedstring"],
            "properties": {"nestedint": {"type": "integer", "enum": [1, 2]},
                           "nestedstring": {"type": "string", "enum": ["a", "b"]}}}}}));
        assert_eq!(
            errs(&s, json!({"field": {"nestedint": "x", "nestedstring": true}})),
            vec![
                "field.nestedint: Invalid value: \"string\": field.nestedint in body must be of type integer: \"string\"",
                "field.nestedint: Unsupported value: \"x\": supported values: \"1\", \"2\"",
                "field.nestedstring: Invalid value: \"boolean\": field.nestedstring in body must be of type string: \"boolean\"",
                "field.nestedstring: Unsupported value: true: supported values: \"a\", \"b\"",
            ]
        );
        let s = schema(json!({"type": "object", "properties": {
            "intSixtyFour": {"type": "integer", "format": "int64"},
            "floatThreeTwo": {"type": "number", "format": "float"}}}));
        assert_eq!(
            errs(&s, json!({"intSixtyFour": 1.0145709240540254e19})),
            vec![
                "intSixtyFour: Invalid value: \"float64\": intSixtyFour in body must be of type int64: \"float64\"",
                "<nil>: Invalid value: \"\": Checked value must be of type integer with format int64 in intSixtyFour",
            ]
        );
        assert_eq!(
            errs(&s, json!({"floatThreeTwo": 3.7431e38})),
            vec!["<nil>: Invalid value: \"\": Checked value must be of type number with format float in floatThreeTwo"]
        );
        assert!(errs(&s, json!({"floatThreeTwo": f64::from(f32::MAX)})).is_empty());
        let s = schema(
            json!({"type": "object", "properties": {"fieldX": {"type": "string", "format": "k8s-long-name"}}}),
        );
        assert_eq!(
            errs(&s, json!({"fieldX": "a.-"})),
            vec!["fieldX: Invalid value: \"a.-\": fieldX in body must be of type k8s-long-name: \"a.-\""]
        );
    }

    #[test]
    fn json_integers_follow_go_openapi() {
        assert!(is_json_integer(3.0));
        assert!(is_json_integer(-3.0));
        assert!(!is_json_integer(2.5));
        assert!(!is_json_integer(1e300));
        assert!(is_json_integer(1.0 + 1e-12));
    }
}
