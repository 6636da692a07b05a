//! The CEL view of a schema: which fields a rule can name, with which types, and how large
//! each value can be (Kubernetes' `DeclType`, built by `SchemaDeclType`).
//!
//! The sizes are what the cost estimate multiplies: `maxItems`, `maxProperties` and
//! `maxLength` where the schema sets them, and otherwise as many elements as the largest
//! request (3 MiB) could hold, given the smallest serialized form of one element.

use std::collections::BTreeMap;

use crate::structural::Schema;

/// The largest request the API server accepts, which bounds every unbounded list, map and
/// string in the cost estimate (Kubernetes' `MaxRequestSizeBytes`).
pub const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

const MIN_STRING_SIZE: u64 = 2;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_NUMBER_SIZE: u64 = 1;
const MIN_DURATION_SIZE_JSON: u64 = 3;
const MAX_DURATION_SIZE_JSON: u64 = 32;
const JSON_DATE_SIZE: u64 = 12;
const MIN_DATETIME_SIZE_JSON: u64 = 21;
const MAX_DATETIME_SIZE_JSON: u64 = 32;

/// Index of a node in [`Decls`].
pub(crate) type NodeId = usize;

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// An object with declared properties, by their CEL (escaped) names.
    Object(BTreeMap<String, Field>),
    /// A list; `list_type` and `map_keys` as the schema sets them.
    List {
        elem: NodeId,
        list_type: Option<String>,
        map_keys: Vec<String>,
    },
    /// A map with string keys (`additionalProperties`).
    Map {
        elem: NodeId,
    },
    String,
    Bytes,
    Int,
    Double,
    Bool,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`: a `dyn` that is an int or a string.
    IntOrString,
    /// A node without a type, where the view takes those as `dyn` (see
    /// [`Decls::untyped_as_dyn`]): any JSON.
    Any,
}

/// One property of an object node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    /// The property's name in JSON.
    pub json_name: String,
    pub node: NodeId,
}

/// One node of the CEL view of a schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// The most elements (items, properties, bytes of a string) the value can have, as
    /// Kubernetes' `MaxElements`; 0 for scalars and objects.
    pub max_elements: u64,
    /// The fewest bytes the value takes in JSON.
    pub min_size: u64,
    pub nullable: bool,
}

/// The CEL view of one schema, nodes in an arena.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Decls {
    pub nodes: Vec<Node>,
    /// Whether a node without a type is `dyn` (any JSON) rather than left out: so for the
    /// inputs of admission policies, never for a CRD's rules, where Kubernetes leaves such
    /// nodes out.
    pub untyped_as_dyn: bool,
}

impl Decls {
    /// Builds the view of `schema`, returning its root; `None` when the schema cannot be
    /// seen from CEL at all (a node with no type, only `x-kubernetes-preserve-unknown-fields`).
    /// At a resource root (a custom resource, or an embedded resource), `apiVersion`,
    /// `kind` and `metadata.name`/`metadata.generateName` are always visible.
    pub fn build(schema: &Schema, resource_root: bool) -> Option<(Decls, NodeId)> {
        let mut decls = Decls::default();
        let root = decls.add(schema, resource_root)?;
        Some((decls, root))
    }

    /// Adds the view of another schema (not a resource root), returning its root.
    pub fn add_root(&mut self, schema: &Schema) -> Option<NodeId> {
        self.add(schema, false)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn add(&mut self, s: &Schema, resource_root: bool) -> Option<NodeId> {
        if s.int_or_string {
            let max = match s.max_length {
                Some(n) => n.saturating_mul(4),
                None => MAX_REQUEST_SIZE_BYTES - 2,
            };
            return Some(self.push(Node {
                kind: Kind::IntOrString,
                max_elements: max,
                min_size: 1,
                nullable: s.nullable,
            }));
        }
        let with_meta;
        let s = if resource_root {
            with_meta = with_type_and_object_meta(s);
            &with_meta
        } else {
            s
        };
        let Some(type_) = s.type_.as_deref() else {
            return self.untyped_as_dyn.then(|| {
                self.push(Node {
                    kind: Kind::Any,
                    max_elements: MAX_REQUEST_SIZE_BYTES,
                    min_size: 1,
                    nullable: true,
                })
            });
        };
        let node = match type_ {
            "array" => {
                let items = s.item_schema()?;
                let elem = self.add(items, items.embedded_resource)?;
                let max = match s.max_items {
                    Some(n) => n,
                    None => (MAX_REQUEST_SIZE_BYTES - 2) / (self.nodes[elem].min_size + 1),
                };
                Node {
                    kind: Kind::List {
                        elem,
                        list_type: s.list_type.clone(),
                        map_keys: s.list_map_keys.clone(),
                    },
                    max_elements: max,
                    min_size: 2,
                    nullable: s.nullable,
                }
            }
            "object" => {
                if let Some(values) = s.value_schema() {
                    let elem = self.add(values, values.embedded_resource)?;
                    let max = match s.max_properties {
                        Some(n) => n,
                        None => (MAX_REQUEST_SIZE_BYTES - 2) / (self.nodes[elem].min_size + 6),
                    };
                    Node {
                        kind: Kind::Map { elem },
                        max_elements: max,
                        min_size: 2,
                        nullable: s.nullable,
                    }
                } else {
                    let mut fields = BTreeMap::new();
                    let mut min_size = 2u64;
                    for (name, prop) in &s.properties {
                        let Some(child) = self.add(prop, prop.embedded_resource) else {
                            continue;
                        };
                        if let Some(escaped) = escape(name) {
                            fields.insert(
                                escaped,
                                Field {
                                    json_name: name.clone(),
                                    node: child,
                                },
                            );
                        }
                        if s.required.iter().any(|r| r == name) && prop.default.is_none() {
                            min_size = min_size
                                .saturating_add(name.len() as u64 + self.nodes[child].min_size + 4);
                        }
                    }
                    Node {
                        kind: Kind::Object(fields),
                        max_elements: 0,
                        min_size,
                        nullable: s.nullable,
                    }
                }
            }
            "string" => {
                let unbounded = |fallback: u64| match s.max_length {
                    Some(n) => n.saturating_mul(4),
                    None => fallback,
                };
                let (kind, max, min) = match s.format.as_deref() {
                    Some("byte") => (
                        Kind::Bytes,
                        s.max_length.unwrap_or(MAX_REQUEST_SIZE_BYTES - 2),
                        MIN_STRING_SIZE,
                    ),
                    Some("duration") => (
                        Kind::Duration,
                        MAX_DURATION_SIZE_JSON,
                        MIN_DURATION_SIZE_JSON,
                    ),
                    Some("date") => (Kind::Timestamp, JSON_DATE_SIZE, JSON_DATE_SIZE),
                    Some("date-time") => (
                        Kind::Timestamp,
                        MAX_DATETIME_SIZE_JSON,
                        MIN_DATETIME_SIZE_JSON,
                    ),
                    _ => {
                        let longest_enum = s.enum_.as_ref().map(|values| {
                            values
                                .iter()
                                .filter_map(|v| v.as_str())
                                .map(|v| v.len() as u64)
                                .max()
                                .unwrap_or(0)
                        });
                        let max = match (s.max_length, longest_enum) {
                            (None, Some(longest))
                                if !s.enum_.as_ref().is_none_or(Vec::is_empty) =>
                            {
                                longest
                            }
                            _ => unbounded(MAX_REQUEST_SIZE_BYTES - 2),
                        };
                        (Kind::String, max, MIN_STRING_SIZE)
                    }
                };
                Node {
                    kind,
                    max_elements: max,
                    min_size: min,
                    nullable: s.nullable,
                }
            }
            "boolean" => scalar(Kind::Bool, MIN_BOOL_SIZE, s.nullable),
            "number" => scalar(Kind::Double, MIN_NUMBER_SIZE, s.nullable),
            "integer" => scalar(Kind::Int, MIN_NUMBER_SIZE, s.nullable),
            _ => return None,
        };
        Some(self.push(node))
    }
}

fn scalar(kind: Kind, min_size: u64, nullable: bool) -> Node {
    Node {
        kind,
        max_elements: 0,
        min_size,
        nullable,
    }
}

/// `schema` with `apiVersion`, `kind` and `metadata.name`/`metadata.generateName` declared,
/// as every resource has them (Kubernetes' `WithTypeAndObjectMeta`).
pub(crate) fn with_type_and_object_meta(s: &Schema) -> Schema {
    let is = |name: &str, ty: &str| {
        s.properties
            .get(name)
            .is_some_and(|p| p.type_.as_deref() == Some(ty))
    };
    let meta_has = |name: &str| {
        s.properties.get("metadata").is_some_and(|m| {
            m.properties
                .get(name)
                .is_some_and(|p| p.type_.as_deref() == Some("string"))
        })
    };
    if is("kind", "string")
        && is("apiVersion", "string")
        && is("metadata", "object")
        && meta_has("name")
        && meta_has("generateName")
    {
        return s.clone();
    }
    let string = Schema {
        type_: Some("string".to_owned()),
        ..Schema::default()
    };
    let mut out = s.clone();
    out.properties.insert("kind".to_owned(), string.clone());
    out.properties
        .insert("apiVersion".to_owned(), string.clone());
    let mut metadata = Schema {
        type_: Some("object".to_owned()),
        ..Schema::default()
    };
    metadata
        .properties
        .insert("name".to_owned(), string.clone());
    metadata
        .properties
        .insert("generateName".to_owned(), string);
    out.properties.insert("metadata".to_owned(), metadata);
    out
}

const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL name of a property, as Kubernetes escapes it: CEL reserved words become
/// `__word__`, and `__`, `.`, `-`, `/` become `__underscores__`, `__dot__`, `__dash__`,
/// `__slash__`. `None` when the name cannot be a CEL identifier at all (it starts with a
/// digit, or has another character outside `[a-zA-Z0-9_]`); such properties are not
/// visible to rules.
pub fn escape(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    if first.is_ascii_digit() {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_as_kubernetes_does() {
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escape("in").as_deref(), Some("__in__"));
        assert_eq!(escape("foo").as_deref(), Some("foo"));
        assert_eq!(escape("a.b").as_deref(), Some("a__dot__b"));
        assert_eq!(escape("a-b/c").as_deref(), Some("a__dash__b__slash__c"));
        assert_eq!(escape("a__b").as_deref(), Some("a__underscores__b"));
        assert_eq!(escape("a_b").as_deref(), Some("a_b"));
        assert_eq!(escape("1a"), None);
        assert_eq!(escape("a b"), None);
        assert_eq!(escape(""), None);
    }

    #[test]
    fn sizes_come_from_the_schema_or_the_request_limit() {
        let s = Schema::parse(&json!({
            "type": "object",
            "properties": {
                "bounded": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 10}},
                "unbounded": {"type": "array", "items": {"type": "integer"}},
                "e": {"type": "string", "enum": ["a", "abc"]},
                "x": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "u": {"x-kubernetes-preserve-unknown-fields": true},
            }
        }))
        .unwrap();
        let (decls, root) = Decls::build(&s, false).unwrap();
        let Kind::Object(fields) = &decls.node(root).kind else {
            panic!("object")
        };
        let bounded = decls.node(fields["bounded"].node);
        assert_eq!(bounded.max_elements, 5);
        let Kind::List { elem, .. } = bounded.kind else {
            panic!("list")
        };
        assert_eq!(decls.node(elem).max_elements, 40);
        assert_eq!(
            decls.node(fields["unbounded"].node).max_elements,
            (MAX_REQUEST_SIZE_BYTES - 2) / 2
        );
        assert_eq!(decls.node(fields["e"].node).max_elements, 3);
        assert!(fields.contains_key("x"));
        assert!(
            !fields.contains_key("u"),
            "a node without a type is invisible"
        );
    }

    #[test]
    fn resource_roots_see_metadata_name() {
        let s =
            Schema::parse(&json!({"type": "object", "properties": {"spec": {"type": "object"}}}))
                .unwrap();
        let (decls, root) = Decls::build(&s, true).unwrap();
        let Kind::Object(fields) = &decls.node(root).kind else {
            panic!("object")
        };
        assert!(fields.contains_key("apiVersion") && fields.contains_key("kind"));
        let Kind::Object(meta) = &decls.node(fields["metadata"].node).kind else {
            panic!("object")
        };
        assert!(meta.contains_key("name") && meta.contains_key("generateName"));
        let (decls, root) = Decls::build(&s, false).unwrap();
        let Kind::Object(fields) = &decls.node(root).kind else {
            panic!("object")
        };
        assert!(!fields.contains_key("metadata"));
    }
}
