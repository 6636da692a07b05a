//! Kubernetes' JSONPath, as CRD printer columns (`additionalPrinterColumns[].jsonPath`) and
//! the scale subresource (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`)
//! use it (k8s.io/client-go/util/jsonpath): `.spec.replicas`, `.metadata.labels.app`,
//! `.spec['a.b']`, `.spec.items[*].name`, `.spec.items[0:2]`, `..name`,
//! `.status.conditions[?(@.type=="Ready")].status`.
//!
//! [`parse`] reads a path (with or without the `{...}` kubectl puts around it);
//! [`JsonPath::eval`] finds what it selects in an object, nothing where a key is missing
//! (printer columns show such cells empty). [`validate_printer_column_path`] and
//! [`validate_scale_paths`] are the checks a CRD write makes on these paths, and
//! [`simple_path`] splits a scale path into the keys it names.

use serde_json::Value;

use crate::error::{ErrorKind, FieldError};

/// A parsed JSONPath.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name`, `['name']`.
    Field(String),
    /// `.*`, `[*]`.
    Wildcard,
    /// `..name`, `..*` (`None`).
    Recursive(Option<String>),
    /// `[0]`, `[-1]`.
    Index(i64),
    /// `[start:end:step]`.
    Slice(Option<i64>, Option<i64>, Option<i64>),
    /// `['a','b']`, `[0,2]`.
    Union(Vec<Step>),
    /// `[?(@.a == "x")]`.
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Operand,
    /// The comparison, or `None` for an existence test (`[?(@.a)]`).
    cmp: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `@...`, relative to the element.
    Current(Vec<Step>),
    /// `$...`, from the root.
    Root(Vec<Step>),
    Literal(Value),
}

/// Parses `path`: a JSONPath such as `.spec.replicas`, optionally inside `{}`.
pub fn parse(path: &str) -> Result<JsonPath, String> {
    let trimmed = path.trim();
    let inner = match trimmed.strip_prefix('{') {
        Some(rest) => rest
            .strip_suffix('}')
            .ok_or_else(|| format!("unclosed action in {path:?}"))?,
        None => trimmed,
    };
    let mut p = Parser { src: inner, pos: 0 };
    p.skip_root();
    let steps = p.steps(false)?;
    if p.pos < p.src.len() {
        return Err(format!(
            "unrecognized character in action: {:?}",
            p.rest().chars().next().unwrap_or(' ')
        ));
    }
    Ok(JsonPath { steps })
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn skip_root(&mut self) {
        if self.rest().starts_with('$') {
            self.pos += 1;
        }
    }

    /// Steps until the end, or (inside a filter) until something that is not a step.
    fn steps(&mut self, in_filter: bool) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        loop {
            if self.eat("..") {
                if self.eat("*") {
                    steps.push(Step::Recursive(None));
                } else {
                    let name = self.name()?;
                    steps.push(Step::Recursive(Some(name)));
                }
            } else if self.eat(".") {
                if self.eat("*") {
                    steps.push(Step::Wildcard);
                } else if self.peek().is_none() && steps.is_empty() && !in_filter {
                    // `.` alone: the whole object.
                    break;
                } else {
                    let name = self.name()?;
                    steps.push(Step::Field(name));
                }
            } else if self.eat("[") {
                steps.push(self.bracket()?);
            } else if self.peek().is_none() || in_filter {
                break;
            } else if steps.is_empty() {
                // kubectl accepts a leading name without the dot (`{spec.replicas}`)
                let name = self.name()?;
                steps.push(Step::Field(name));
            } else {
                break;
            }
        }
        Ok(steps)
    }

    /// A field name after `.`: up to the next `.`, `[`, or character that ends a path;
    /// `\.` stands for a dot within the name.
    fn name(&mut self) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c == '\\' {
                let mut chars = self.rest().chars();
                chars.next();
                match chars.next() {
                    Some(escaped) => {
                        out.push(escaped);
                        self.pos += 1 + escaped.len_utf8();
                        continue;
                    }
                    None => return Err("unterminated escape in field name".to_owned()),
                }
            }
            if matches!(
                c,
                '.' | '['
                    | ']'
                    | '('
                    | ')'
                    | ','
                    | '='
                    | '!'
                    | '<'
                    | '>'
                    | ' '
                    | '}'
                    | '{'
                    | '|'
                    | '&'
            ) {
                break;
            }
            out.push(c);
            self.pos += c.len_utf8();
        }
        if out.is_empty() {
            return Err(format!("invalid field name in {:?}", self.src));
        }
        Ok(out)
    }

    /// The inside of `[...]`, the `[` read.
    fn bracket(&mut self) -> Result<Step, String> {
        self.skip_spaces();
        if self.eat("?") {
            self.skip_spaces();
            if !self.eat("(") {
                return Err("expected ( after ? in filter".to_owned());
            }
            let filter = self.filter()?;
            self.skip_spaces();
            if !self.eat(")") {
                return Err("unclosed filter: expected )".to_owned());
            }
            self.close()?;
            return Ok(Step::Filter(Box::new(filter)));
        }
        if self.eat("*") {
            self.close()?;
            return Ok(Step::Wildcard);
        }
        let mut parts = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek() {
                Some(q @ ('\'' | '"')) => parts.push(Step::Field(self.quoted(q)?)),
                Some(c) if c == '-' || c == ':' || c.is_ascii_digit() => {
                    parts.push(self.index_or_slice()?)
                }
                _ => return Err(format!("invalid array index or key in {:?}", self.src)),
            }
            self.skip_spaces();
            if !self.eat(",") {
                break;
            }
        }
        self.close()?;
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Step::Union(parts)
        })
    }

    fn close(&mut self) -> Result<(), String> {
        self.skip_spaces();
        if self.eat("]") {
            Ok(())
        } else {
            Err(format!("unterminated array in {:?}", self.src))
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    }),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(format!("unterminated string in {:?}", self.src))
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text = &self.src[start..self.pos];
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("invalid array index {text}"))
    }

    fn index_or_slice(&mut self) -> Result<Step, String> {
        let first = self.int()?;
        if !self.eat(":") {
            return first
                .map(Step::Index)
                .ok_or_else(|| format!("invalid array index in {:?}", self.src));
        }
        let end = self.int()?;
        let step = if self.eat(":") { self.int()? } else { None };
        if step == Some(0) {
            return Err("step cannot be 0".to_owned());
        }
        Ok(Step::Slice(first, end, step))
    }

    fn filter(&mut self) -> Result<Filter, String> {
        self.skip_spaces();
        let left = self.operand()?;
        self.skip_spaces();
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(s, _)| self.eat(s))
        .map(|(_, op)| op);
        let cmp = match op {
            Some(op) => {
                self.skip_spaces();
                Some((op, self.operand()?))
            }
            None => None,
        };
        Ok(Filter { left, cmp })
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.peek() {
            Some('@') => {
                self.pos += 1;
                Ok(Operand::Current(self.steps(true)?))
            }
            Some('$') => {
                self.pos += 1;
                Ok(Operand::Root(self.steps(true)?))
            }
            Some(q @ ('\'' | '"')) => Ok(Operand::Literal(Value::String(self.quoted(q)?))),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
                {
                    self.pos += 1;
                }
                let text = &self.src[start..self.pos];
                if let Ok(i) = text.parse::<i64>() {
                    return Ok(Operand::Literal(Value::from(i)));
                }
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(|n| Operand::Literal(Value::Number(n)))
                    .ok_or_else(|| format!("invalid number {text}"))
            }
            _ => {
                for (word, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    if self.eat(word) {
                        return Ok(Operand::Literal(v));
                    }
                }
                Err(format!("unrecognized filter operand in {:?}", self.src))
            }
        }
    }
}

impl JsonPath {
    /// What the path selects in `obj`, in document order; empty where a key is missing or
    /// an index out of range.
    pub fn eval(&self, obj: &Value) -> Vec<Value> {
        apply(&self.steps, obj, obj).into_iter().cloned().collect()
    }
}

fn apply<'a>(steps: &[Step], root: &'a Value, start: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![start];
    for step in steps {
        let mut next = Vec::new();
        for v in current {
            select(step, root, v, &mut next);
        }
        current = next;
    }
    current
}

fn select<'a>(step: &Step, root: &'a Value, v: &'a Value, out: &mut Vec<&'a Value>) {
    match step {
        Step::Field(name) => {
            if let Some(child) = v.as_object().and_then(|m| m.get(name)) {
                out.push(child);
            }
        }
        Step::Wildcard => children(v, out),
        Step::Recursive(name) => recurse(name.as_deref(), v, out),
        Step::Index(i) => {
            if let Some(items) = v.as_array() {
                let len = items.len() as i64;
                let at = if *i < 0 { len + i } else { *i };
                if (0..len).contains(&at) {
                    out.push(&items[at as usize]);
                }
            }
        }
        Step::Slice(start, end, step) => {
            if let Some(items) = v.as_array() {
                slice(items, *start, *end, step.unwrap_or(1), out);
            }
        }
        Step::Union(parts) => {
            for part in parts {
                select(part, root, v, out);
            }
        }
        Step::Filter(filter) => {
            let mut candidates = Vec::new();
            children(v, &mut candidates);
            out.extend(candidates.into_iter().filter(|c| matches(filter, root, c)));
        }
    }
}

/// The items of a list, or the values of a map in key order (as Go's JSONPath sorts them).
fn children<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => out.extend(items.iter()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.extend(keys.into_iter().filter_map(|k| map.get(k)));
        }
        _ => {}
    }
}

fn recurse<'a>(name: Option<&str>, v: &'a Value, out: &mut Vec<&'a Value>) {
    match name {
        Some(n) => {
            if let Some(child) = v.as_object().and_then(|m| m.get(n)) {
                out.push(child);
            }
        }
        None => children(v, out),
    }
    let mut kids = Vec::new();
    children(v, &mut kids);
    for kid in kids {
        recurse(name, kid, out);
    }
}

fn slice<'a>(
    items: &'a [Value],
    start: Option<i64>,
    end: Option<i64>,
    step: i64,
    out: &mut Vec<&'a Value>,
) {
    let len = items.len() as i64;
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
    if step > 0 {
        let (mut i, end) = (norm(start.unwrap_or(0)), norm(end.unwrap_or(len)));
        while i < end {
            out.push(&items[i as usize]);
            i += step;
        }
    } else {
        let mut i = start.map_or(len - 1, |s| norm(s).min(len - 1));
        let end = end.map_or(-1, norm);
        while i > end && i >= 0 {
            out.push(&items[i as usize]);
            i += step;
        }
    }
}

fn operand<'a>(o: &'a Operand, root: &'a Value, current: &'a Value) -> Option<&'a Value> {
    match o {
        Operand::Current(steps) => apply(steps, root, current).into_iter().next(),
        Operand::Root(steps) => apply(steps, root, root).into_iter().next(),
        Operand::Literal(v) => Some(v),
    }
}

fn matches(f: &Filter, root: &Value, current: &Value) -> bool {
    let Some(left) = operand(&f.left, root, current) else {
        return false;
    };
    let Some((op, right)) = &f.cmp else {
        return true;
    };
    let Some(right) = operand(right, root, current) else {
        return false;
    };
    let ordering = match (left, right) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == b => Some(std::cmp::Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (Op::Eq, o) => o == Some(std::cmp::Ordering::Equal),
        (Op::Ne, o) => o != Some(std::cmp::Ordering::Equal),
        (Op::Lt, Some(o)) => o.is_lt(),
        (Op::Le, Some(o)) => o.is_le(),
        (Op::Gt, Some(o)) => o.is_gt(),
        (Op::Ge, Some(o)) => o.is_ge(),
        (_, None) => false,
    }
}

/// The keys a simple path (`.spec.replicas`) names, as the scale subresource reads and
/// writes them; refused with Kubernetes' wording when it is not one.
pub fn simple_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let Some(rest) = path.strip_prefix('.') else {
        return Err("must be a simple json path starting with .".to_owned());
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(rest.split('.').map(str::to_owned).collect())
}

/// The checks of an `additionalPrinterColumns[].jsonPath` at `field`
/// (`spec.versions[0].additionalPrinterColumns[0].JSONPath`).
pub fn validate_printer_column_path(path: &str, field: &str) -> Vec<FieldError> {
    if path.is_empty() {
        return vec![FieldError::new(ErrorKind::Required, field, None, "")];
    }
    let mut errs = simple_path_errors(path, field);
    if errs.is_empty() {
        if let Err(e) = parse(path) {
            errs.push(FieldError::new(
                ErrorKind::Invalid,
                field,
                Some(Value::String(path.to_owned())),
                e,
            ));
        }
    }
    errs
}

fn simple_path_errors(path: &str, field: &str) -> Vec<FieldError> {
    match simple_path(path) {
        Ok(_) => Vec::new(),
        Err(detail) => vec![FieldError::new(
            ErrorKind::Invalid,
            field,
            Some(Value::String(path.to_owned())),
            detail,
        )],
    }
}

/// The checks of a scale subresource's paths at `field` (`spec.versions[0].subresources`):
/// `specReplicasPath` under `.spec`, `statusReplicasPath` under `.status`, and
/// `labelSelectorPath`, when set, under either.
pub fn validate_scale_paths(
    spec_replicas: &str,
    status_replicas: &str,
    label_selector: Option<&str>,
    field: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut check = |path: &str, name: &str, prefixes: &[&str], message: &str, required: bool| {
        let at = format!("{field}.scale.{name}");
        if path.is_empty() {
            if required {
                errs.push(FieldError::new(ErrorKind::Required, at, None, ""));
            }
            return;
        }
        let simple = simple_path_errors(path, &at);
        if !simple.is_empty() {
            errs.extend(simple);
        } else if !prefixes.iter().any(|p| path.starts_with(p)) {
            errs.push(FieldError::new(
                ErrorKind::Invalid,
                at,
                Some(Value::String(path.to_owned())),
                message,
            ));
        }
    };
    check(
        spec_replicas,
        "specReplicasPath",
        &[".spec."],
        "should be a json path under .spec",
        true,
    );
    check(
        status_replicas,
        "statusReplicasPath",
        &[".status."],
        "should be a json path under .status",
        true,
    );
    if let Some(selector) = label_selector {
        check(
            selector,
            "labelSelectorPath",
            &[".spec.", ".status."],
            "should be a json path under either .spec or .status",
            false,
        );
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Value {
        json!({
            "metadata": {"name": "w", "labels": {"app": "web", "a.b": "dotted"}},
            "spec": {
                "replicas": 3,
                "a.b": {"c": 1},
                "items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}],
            },
            "status": {"conditions": [
                {"type": "Progressing", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]},
        })
    }

    fn eval(path: &str) -> Vec<Value> {
        parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .eval(&obj())
    }

    #[test]
    fn fields_and_brackets() {
        assert_eq!(eval(".spec.replicas"), vec![json!(3)]);
        assert_eq!(eval("{.spec.replicas}"), vec![json!(3)]);
        assert_eq!(eval("$.spec.replicas"), vec![json!(3)]);
        assert_eq!(eval(".metadata.labels.app"), vec![json!("web")]);
        assert_eq!(eval(".spec['a.b'].c"), vec![json!(1)]);
        assert_eq!(eval(r#".metadata.labels["a.b"]"#), vec![json!("dotted")]);
        assert_eq!(eval(r".metadata.labels.a\.b"), vec![json!("dotted")]);
        assert!(eval(".spec.missing").is_empty());
        assert!(eval(".spec.replicas.deeper").is_empty());
        assert_eq!(eval(".").len(), 1);
    }

    #[test]
    fn lists_indexes_slices_and_wildcards() {
        assert_eq!(
            eval(".spec.items[*].name"),
            vec![json!("a"), json!("b"), json!("c")]
        );
        assert_eq!(eval(".spec.items[0].name"), vec![json!("a")]);
        assert_eq!(eval(".spec.items[-1].name"), vec![json!("c")]);
        assert!(eval(".spec.items[5].name").is_empty());
        assert_eq!(eval(".spec.items[0:2].name"), vec![json!("a"), json!("b")]);
        assert_eq!(eval(".spec.items[::2].name"), vec![json!("a"), json!("c")]);
        assert_eq!(eval(".spec.items[0,2].n"), vec![json!(1), json!(3)]);
        assert_eq!(
            eval(".metadata.labels.*"),
            vec![json!("dotted"), json!("web")]
        );
        assert_eq!(
            eval("..name"),
            vec![json!("w"), json!("a"), json!("b"), json!("c")]
        );
    }

    #[test]
    fn filters() {
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type != 'Ready')].type"),
            vec![json!("Progressing")]
        );
        assert_eq!(
            eval(".spec.items[?(@.n > 1)].name"),
            vec![json!("b"), json!("c")]
        );
        assert_eq!(eval(".spec.items[?(@.n <= 1)].name"), vec![json!("a")]);
        assert_eq!(eval(".spec.items[?(@.name)].n").len(), 3);
        assert!(eval(".spec.items[?(@.nosuch)].n").is_empty());
    }

    #[test]
    fn bad_paths_are_errors() {
        for bad in [
            ".spec[",
            ".spec.items[?(@.a == )]",
            ".spec.items[x]",
            "{.spec",
            ".spec.items[0",
            ".spec['x]",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn simple_paths_for_scale() {
        assert_eq!(
            simple_path(".spec.replicas"),
            Ok(vec!["spec".to_owned(), "replicas".to_owned()])
        );
        assert_eq!(
            simple_path("spec.replicas"),
            Err("must be a simple json path starting with .".to_owned())
        );
        assert_eq!(simple_path(""), Err("must not be empty".to_owned()));
        let render = |errs: Vec<FieldError>| -> Vec<String> {
            errs.iter()
                .map(|e| format!("{}: {:?}: {}", e.field, e.value, e.detail))
                .collect()
        };
        assert!(validate_scale_paths(
            ".spec.replicas",
            ".status.replicas",
            Some(".status.selector"),
            "s"
        )
        .is_empty());
        assert_eq!(
            render(validate_scale_paths(
                ".status.replicas",
                ".spec.replicas",
                Some(".metadata.x"),
                "s"
            )),
            vec![
                r#"s.scale.specReplicasPath: Some(String(".status.replicas")): should be a json path under .spec"#,
                r#"s.scale.statusReplicasPath: Some(String(".spec.replicas")): should be a json path under .status"#,
                r#"s.scale.labelSelectorPath: Some(String(".metadata.x")): should be a json path under either .spec or .status"#,
            ]
        );
        let errs = validate_scale_paths("", "status.replicas", None, "s");
        assert_eq!(errs[0].kind, ErrorKind::Required);
        assert_eq!(errs[1].detail, "must be a simple json path starting with .");
        assert!(validate_printer_column_path(".spec.replicas", "c").is_empty());
        assert!(validate_printer_column_path(
            r#".status.conditions[?(@.type=="Ready")].status"#,
            "c"
        )
        .is_empty());
        assert_eq!(
            validate_printer_column_path("spec", "c")[0].detail,
            "must be a simple json path starting with ."
        );
        assert_eq!(
            validate_printer_column_path("", "c")[0].kind,
            ErrorKind::Required
        );
        assert_eq!(validate_printer_column_path(".spec[", "c").len(), 1);
    }
}
