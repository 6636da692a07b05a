//! Label and field selectors in their query-string forms (`app=web,tier in (fe,be),!canary`,
//! `spec.nodeName=n1,status.phase!=Running`).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::{Error, Result};

use crate::storage::cached::Cached;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    let mut causes = Vec::new();
    crate::validation::qualified_name("", k, &mut causes);
    causes.is_empty()
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v.as_bytes()[0].is_ascii_alphanumeric()
                && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))))
}

impl LabelSelector {
    /// Parses the query-string form.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::bad_request(format!("unable to parse requirement: {why}"));
        let mut reqs = Vec::new();
        for part in split_top(text) {
            let set_op = [" notin ", " in "].iter().find_map(|op| {
                part.find(op)
                    .map(|i| (op.trim(), &part[..i], part[i + op.len()..].trim()))
            });
            let req = if let Some((op, key, rest)) = set_op {
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(&format!("found '{rest}', expected: '('")))?;
                let vals: BTreeSet<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let key = key.trim().to_string();
                if op == "in" {
                    LabelReq::In(key, vals)
                } else {
                    LabelReq::NotIn(key, vals)
                }
            } else if let Some(k) = part.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| {
                    bad(&format!(
                        "for 'gt', 'lt' operators, the value must be an integer: {v}"
                    ))
                })?;
                LabelReq::Gt(k.trim().into(), n)
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| {
                    bad(&format!(
                        "for 'gt', 'lt' operators, the value must be an integer: {v}"
                    ))
                })?;
                LabelReq::Lt(k.trim().into(), n)
            } else {
                LabelReq::Exists(part.trim().to_string())
            };
            let (key, vals): (&str, Vec<&str>) = match &req {
                LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => (k, vec![v]),
                LabelReq::In(k, vs) | LabelReq::NotIn(k, vs) => {
                    (k, vs.iter().map(String::as_str).collect())
                }
                LabelReq::Exists(k)
                | LabelReq::NotExists(k)
                | LabelReq::Gt(k, _)
                | LabelReq::Lt(k, _) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(bad(&format!("invalid label key \"{key}\"")));
            }
            if let Some(v) = vals.iter().find(|v| !valid_value(v)) {
                return Err(bad(&format!("invalid label value: \"{v}\"")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Whether a cached object's labels match.
    pub fn matches_cached(&self, c: &Cached) -> bool {
        self.0.is_empty() || self.matches_with(|k| c.label(k))
    }

    fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// What field selectors may name of a type's objects beyond `metadata.name` and
/// `metadata.namespace`, and how to read them.
pub trait SelectableFields {
    /// The fields, in the order cached objects index them.
    fn selectable(&self) -> &[String];
    /// The value of one of them.
    fn field_value(&self, obj: &Value, field: &str) -> String;
}

fn meta_field(obj: &Value, field: &str) -> String {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A field a selector names.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Name,
    Namespace,
    /// The type's selectable field with this index.
    Selectable(usize),
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(Field, bool, String)>);

impl FieldSelector {
    /// Parses and checks the fields against what the resource supports.
    pub fn parse(text: &str, r: &dyn SelectableFields) -> Result<Self> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(Error::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                f => Field::Selectable(r.selectable().iter().position(|x| x == f).ok_or_else(
                    || Error::bad_request(format!("field label not supported: {f}")),
                )?),
            };
            reqs.push((field, eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The exact name this selector pins, if any (`metadata.name=x`).
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| *f == Field::Name && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether a cached object matches.
    pub fn matches_cached(&self, c: &Cached) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let have = match field {
                Field::Name => c.name.as_str(),
                Field::Namespace => c.namespace.as_str(),
                Field::Selectable(n) => c.field(*n),
            };
            (have == want) == *eq
        })
    }

    /// Whether an object matches.
    pub fn matches(&self, r: &dyn SelectableFields, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let have = match field {
                Field::Name => meta_field(obj, "name"),
                Field::Namespace => meta_field(obj, "namespace"),
                Field::Selectable(n) => r.field_value(obj, &r.selectable()[*n]),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "fe", "n": "5"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web,tier!=be"));
        assert!(m("tier in (fe,be)"));
        assert!(!m("tier notin (fe)"));
        assert!(m("app"));
        assert!(m("!canary"));
        assert!(!m("!app"));
        assert!(m("n>3"));
        assert!(!m("n<3"));
        assert!(m(""));
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_selector_on_pods() {
        let r = crate::registry::builtin("", "pods").unwrap();
        let r = &*r;
        let o = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("spec.nodeName=n1", r)
            .unwrap()
            .matches(r, &o));
        assert!(
            FieldSelector::parse("status.phase!=Pending,metadata.name=a", r)
                .unwrap()
                .matches(r, &o)
        );
        assert!(!FieldSelector::parse("spec.nodeName=", r)
            .unwrap()
            .matches(r, &o));
        assert!(FieldSelector::parse("spec.hostNetwork=false", r)
            .unwrap()
            .matches(r, &o));
        assert_eq!(
            FieldSelector::parse("spec.bogus=1", r).unwrap_err().code(),
            400
        );
        let c = Cached::from_value(r, &o, 1);
        assert!(
            FieldSelector::parse("spec.nodeName=n1,metadata.namespace=d", r)
                .unwrap()
                .matches_cached(&c)
        );
        assert!(!FieldSelector::parse("status.phase=Pending", r)
            .unwrap()
            .matches_cached(&c));
    }

    proptest::proptest! {
        #[test]
        fn any_selector_text_parses_or_is_refused(text in ".*") {
            let r = crate::registry::builtin("", "pods").unwrap();
            let o = json!({"metadata": {"name": "a", "labels": {"x": "y"}}});
            if let Ok(sel) = LabelSelector::parse(&text) {
                let _ = sel.matches(&o);
            }
            if let Ok(sel) = FieldSelector::parse(&text, &*r) {
                let _ = sel.matches(&*r, &o);
            }
        }

        #[test]
        fn generated_label_selectors_parse(
            key in "([a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?)?/)?[a-z]([a-z0-9_.-]{0,20}[a-z0-9])?",
            value in "([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,20}[a-zA-Z0-9])?)?",
        ) {
            for text in [format!("{key}={value}"), format!("{key}!={value}"), format!("!{key}"),
                         format!("{key} in ({value},z)"), key.clone()] {
                proptest::prop_assert!(LabelSelector::parse(&text).is_ok(), "{}", text);
            }
        }
    }
}
