//! Server-side apply and field ownership (`metadata.managedFields`, `FieldsV1`).
//!
//! Each manager owns a set of field paths. An apply by manager M with configuration C:
//! conflicts when another manager owns a path of C whose live value C would change (unless
//! `force`, which takes the path over); removes the fields M applied before but no longer
//! applies and nobody else owns; merges C into the live object (lists merge by key where the
//! Kubernetes types say so); and makes M the owner of exactly C's paths. Ordinary updates
//! record their changed fields for their manager (operation `Update`), so an apply that would
//! undo someone's `kubectl scale` or `kubectl edit` conflicts, as in Kubernetes.

use std::collections::BTreeSet;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::patch::{list_strategy, ListStrategy};
use crate::request::WriteOpts;

/// One step of a field path, as FieldsV1 spells it (`f:name`, `k:{"name":"c"}`, `v:"x"`).
type Path = Vec<String>;

/// How a list merges under server-side apply: Kubernetes' `x-kubernetes-list-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole.
    Atomic,
    /// A set of scalars (`v:` items).
    Set,
    /// Items told apart by these keys (`k:` items).
    Map(Vec<String>),
}

/// Where a type says how its lists merge: the built-in types' strategic-merge keys, or a
/// custom resource's schema.
pub trait ListTypes: Send + Sync {
    /// The list type of `field` reached by `parents` (the field names above it).
    fn list_type(&self, parents: &[String], field: &str) -> ListType;
}

/// The built-in types' lists: strategic merge patch's merge keys, and for ports the protocol
/// as well — a container's or Service's port 53 over UDP and over TCP are two items.
pub struct BuiltinLists;

impl ListTypes for BuiltinLists {
    fn list_type(&self, parents: &[String], field: &str) -> ListType {
        match list_strategy(parents, field) {
            ListStrategy::Key(k @ ("containerPort" | "port")) => {
                ListType::Map(vec![k.to_string(), "protocol".to_string()])
            }
            ListStrategy::Key(k) => ListType::Map(vec![k.to_string()]),
            ListStrategy::Primitive => ListType::Set,
            ListStrategy::Replace => ListType::Atomic,
        }
    }
}

thread_local! {
    /// The list types of the type being applied, for the (synchronous) walk of one call.
    static LISTS: std::cell::RefCell<Option<Arc<dyn ListTypes>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `lists` as the list types the walk consults (the built-in ones when None).
fn with_lists<T>(lists: Option<&Arc<dyn ListTypes>>, f: impl FnOnce() -> T) -> T {
    let previous = LISTS.with(|l| l.replace(lists.cloned()));
    let out = f();
    LISTS.with(|l| *l.borrow_mut() = previous);
    out
}

fn list_type(parents: &[String], field: &str) -> ListType {
    LISTS.with(|l| match &*l.borrow() {
        Some(lists) => lists.list_type(parents, field),
        None => BuiltinLists.list_type(parents, field),
    })
}

/// The keys that tell a list's items apart (Kubernetes' `x-kubernetes-list-map-keys`).
#[derive(Clone)]
struct ListKeys(Vec<String>);

impl ListKeys {
    fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

fn list_keys(parents: &[String], field: &str) -> Option<ListKeys> {
    match list_type(parents, field) {
        ListType::Map(keys) => Some(ListKeys(keys)),
        _ => None,
    }
}

/// An item's value of list key `key`; a port's protocol defaults to TCP, as the API does.
fn key_value<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    static TCP: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!("TCP"));
    item.get(key).or_else(|| (key == "protocol").then(|| &*TCP))
}

/// An item's identity in its list (`{"containerPort":53,"protocol":"UDP"}`), or `None` when
/// it lacks a key.
fn item_key(item: &Value, keys: &ListKeys) -> Option<Map<String, Value>> {
    keys.iter()
        .map(|k| Some((k.to_string(), key_value(item, k)?.clone())))
        .collect()
}

/// Whether `item` is the one a `k:` step names.
fn is_item(item: &Value, want: &Map<String, Value>) -> bool {
    want.iter().all(|(k, v)| key_value(item, k) == Some(v))
}

/// Whether a list of scalars merges as a set.
fn is_set_list(parents: &[String], field: &str) -> bool {
    list_type(parents, field) == ListType::Set
}

fn skip_top(parents: &[String], k: &str) -> bool {
    (parents.is_empty() && matches!(k, "apiVersion" | "kind" | "status"))
        || (parents.len() == 1
            && parents[0] == "metadata"
            && matches!(
                k,
                "name"
                    | "namespace"
                    | "resourceVersion"
                    | "uid"
                    | "creationTimestamp"
                    | "generation"
                    | "managedFields"
                    | "selfLink"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
            ))
}

/// The FieldsV1 trie of every field of `v`: each leaf, each keyed list item (`k:` with `.`),
/// each member of a set list (`v:`); metadata the server owns is left out.
fn shape(v: &Value, parents: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Object(m) = v else { return out };
    for (k, child) in m {
        if skip_top(parents, k) {
            continue;
        }
        let node = match child {
            Value::Object(cm) if !cm.is_empty() => {
                parents.push(k.clone());
                let inner = shape(child, parents);
                parents.pop();
                if inner.is_empty() {
                    continue;
                }
                Value::Object(inner)
            }
            Value::Array(items) if list_keys(parents, k).is_some() => {
                let keys = list_keys(parents, k).expect("checked");
                parents.push(k.clone());
                let mut list = Map::new();
                for item in items {
                    let Some(id) = item_key(item, &keys) else {
                        continue;
                    };
                    let mut inner = shape(item, parents);
                    inner.insert(".".into(), json!({}));
                    list.insert(format!("k:{}", Value::Object(id)), Value::Object(inner));
                }
                parents.pop();
                if list.is_empty() {
                    continue;
                }
                Value::Object(list)
            }
            Value::Array(items) if is_set_list(parents, k) => {
                let set: Map<String, Value> = items
                    .iter()
                    .map(|i| (format!("v:{i}"), json!({})))
                    .collect();
                if set.is_empty() {
                    continue;
                }
                Value::Object(set)
            }
            _ => json!({}),
        };
        out.insert(format!("f:{k}"), node);
    }
    out
}

/// The field paths of an object.
pub fn field_set(v: &Value) -> BTreeSet<Path> {
    from_fields_v1(&Value::Object(shape(v, &mut Vec::new())))
}

/// Resolves a path to the value it names, if present.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for step in path {
        cur = if let Some(f) = step.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = step.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?.iter().find(|item| is_item(item, &want))?
        } else if let Some(x) = step.strip_prefix("v:") {
            let want: Value = serde_json::from_str(x).ok()?;
            cur.as_array()?.iter().find(|item| **item == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the value a path names.
fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for step in parent {
        let next = if let Some(f) = step.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = step.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|item| is_item(item, &want)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(want), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            a.retain(|item| !is_item(item, &want));
        }
    } else if let Some(x) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(x), cur.as_array_mut()) {
            a.retain(|item| *item != want);
        }
    }
}

/// FieldsV1 (a trie of path steps, `.` marking a node owned itself) from a set of paths.
pub fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            node = node
                .entry(step.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("trie nodes are objects");
        }
        if path.last().is_some_and(|s| s.starts_with("k:")) {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// The set of paths in a FieldsV1 trie.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| *k != ".").collect();
        if (children.is_empty() || m.contains_key(".")) && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, child) in children {
            prefix.push(k.clone());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    fields: BTreeSet<Path>,
    /// When the entry last changed; None = now.
    time: Option<String>,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .into(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    fields: e
                        .get("fieldsV1")
                        .map(from_fields_v1)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| canonical(obj, p))
                        .collect(),
                    time: e.get("time").and_then(Value::as_str).map(String::from),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `path` with each port item named by port and protocol, read from `live`: managed fields
/// written when ports were told apart by port alone (`k:{"port":53}`) name the same items as
/// today's (`k:{"port":53,"protocol":"UDP"}`), so an apply does not take them for fields it
/// left out.
fn canonical(live: &Value, path: Path) -> Path {
    let partial =
        |s: &String| s.starts_with("k:{\"") && s.contains("ort\":") && !s.contains("\"protocol\":");
    if !path.iter().any(partial) {
        return path;
    }
    let mut cur = Some(live);
    let mut names: Vec<String> = Vec::new();
    let mut out = Path::with_capacity(path.len());
    for step in path {
        if let Some(f) = step.strip_prefix("f:") {
            cur = cur.and_then(|c| c.get(f));
            names.push(f.to_string());
        } else if let Some(k) = step.strip_prefix("k:") {
            let want: Option<Map<String, Value>> = serde_json::from_str(k).ok();
            cur = cur
                .and_then(Value::as_array)
                .zip(want.as_ref())
                .and_then(|(items, want)| items.iter().find(|i| is_item(i, want)));
            let id = cur
                .zip(names.split_last())
                .and_then(|(item, (field, parents))| item_key(item, &list_keys(parents, field)?));
            if let Some(id) = id {
                out.push(format!("k:{}", Value::Object(id)));
                continue;
            }
        } else {
            cur = None;
        }
        out.push(step);
    }
    out
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time.clone().unwrap_or_else(|| now.clone()),
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Merges an applied configuration into the live object.
fn merge(live: &mut Value, cfg: &Value, parents: &mut Vec<String>) {
    let (Some(lm), Some(cm)) = (live.as_object_mut(), cfg.as_object()) else {
        *live = cfg.clone();
        return;
    };
    for (k, cv) in cm {
        if skip_top(parents, k) && !(parents.is_empty() && (k == "apiVersion" || k == "kind")) {
            continue;
        }
        match cv {
            Value::Object(_) => {
                let entry = lm.entry(k.clone()).or_insert_with(|| json!({}));
                if !entry.is_object() {
                    *entry = json!({});
                }
                parents.push(k.clone());
                merge(entry, cv, parents);
                parents.pop();
            }
            Value::Array(items) if list_keys(parents, k).is_some() => {
                let keys = list_keys(parents, k).expect("checked");
                let entry = lm.entry(k.clone()).or_insert_with(|| json!([]));
                if !entry.is_array() {
                    *entry = json!([]);
                }
                parents.push(k.clone());
                for item in items {
                    let list = entry.as_array_mut().expect("array");
                    let id = item_key(item, &keys);
                    match list
                        .iter_mut()
                        .find(|l| id.is_some() && item_key(l, &keys) == id)
                    {
                        Some(existing) => merge(existing, item, parents),
                        None => list.push(item.clone()),
                    }
                }
                parents.pop();
            }
            Value::Array(items) if is_set_list(parents, k) => {
                let entry = lm.entry(k.clone()).or_insert_with(|| json!([]));
                if let Some(list) = entry.as_array_mut() {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
            }
            Value::Null => {
                lm.remove(k);
            }
            other => {
                lm.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Applies configuration `cfg` (the request body) to `live` in place.
pub fn apply(
    live: &mut Value,
    cfg: &Value,
    opts: &WriteOpts,
    lists: Option<&Arc<dyn ListTypes>>,
) -> Result<()> {
    with_lists(lists, || apply_with(live, cfg, opts))
}

fn apply_with(live: &mut Value, cfg: &Value, opts: &WriteOpts) -> Result<()> {
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::bad_request("PATCH requests with apply content type (application/apply-patch+yaml) must have a field manager"))?;
    if !cfg.is_object() {
        return Err(Error::bad_request("apply configuration must be an object"));
    }
    for f in ["apiVersion", "kind"] {
        let (a, b) = (
            cfg.get(f).and_then(Value::as_str),
            live.get(f).and_then(Value::as_str),
        );
        if a.is_none() {
            return Err(Error::bad_request(format!(
                "{f} must be set in an apply configuration"
            )));
        }
        if a != b {
            return Err(Error::bad_request(format!(
                "{f} of the apply configuration ({}) does not match the object ({})",
                a.unwrap_or(""),
                b.unwrap_or("")
            )));
        }
    }
    let applied = field_set(cfg);
    let mut entries = read_entries(live);
    // Conflicts: another manager owns a path this apply would change.
    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for e in &entries {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in applied.intersection(&e.fields) {
            if lookup(live, p) != lookup(cfg, p) && !p.last().is_some_and(|s| s.starts_with("k:")) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !opts.force {
        // As structured-merge-diff prints a path: `.spec.ports[name="https"].port`, a set
        // member as `[="x"]`.
        let render = |p: &Path| {
            p.iter()
                .map(|s| {
                    if let Some(f) = s.strip_prefix("f:") {
                        return format!(".{f}");
                    }
                    if let Some(k) = s.strip_prefix("k:") {
                        if let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) {
                            let keys: Vec<String> =
                                keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            return format!("[{}]", keys.join(","));
                        }
                    }
                    match s.strip_prefix("v:") {
                        Some(v) => format!("[={v}]"),
                        None => format!("[{s}]"),
                    }
                })
                .collect::<String>()
        };
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, av, p)| format!("conflict with \"{m}\" using {av}: {}", render(p)))
            .collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, av, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {av}"), "field": render(p)}))
            .collect();
        let n = conflicts.len();
        let msg = if n == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
        };
        return Err(Error::conflict_message(
            msg,
            Some(json!({"causes": causes})),
        ));
    }
    // Forced: the conflicting paths change hands.
    for (m, _, p) in &conflicts {
        for e in entries.iter_mut().filter(|e| &e.manager == m) {
            e.fields.remove(p);
        }
    }
    // Fields this manager applied before and now leaves out, and nobody else owns, go.
    let previous = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut gone: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied.contains(*p) && !others.contains(*p))
        .collect();
    // Whole items first: a field inside an item that goes goes with it.
    gone.sort_by_key(|p| p.len());
    for p in gone {
        // A keyed item leaves only if nothing inside it is still owned.
        if p.last().is_some_and(|s| s.starts_with("k:"))
            && others.iter().any(|o| o.starts_with(p) && o.len() > p.len())
        {
            continue;
        }
        // An item that stays keeps its key fields: they are what names it.
        if let [.., item, field] = p.as_slice() {
            let key = item
                .strip_prefix("k:")
                .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok());
            if key.is_some_and(|k| field.strip_prefix("f:").is_some_and(|f| k.contains_key(f))) {
                continue;
            }
        }
        remove(live, p);
    }
    merge(live, cfg, &mut Vec::new());
    let api_version = cfg
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let time = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.fields == applied)
        .and_then(|e| e.time.clone());
    entries.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    entries.push(Entry {
        manager,
        operation: "Apply".into(),
        api_version,
        subresource: String::new(),
        fields: applied,
        time,
    });
    write_entries(live, &entries);
    Ok(())
}

/// The answer to an apply configuration naming fields its type lacks, as kube-apiserver's
/// structured merge diff gives it: the configuration cannot be made a typed object
/// (`.spec.foo: field not declared in schema`), with no status reason of its own (so a 500,
/// as in Kubernetes 1.33). `unknown` are the fields' paths in `obj`, the object the
/// configuration was merged into, which tells the list items' keys.
pub fn undeclared(
    (group, version, kind): (&str, &str, &str),
    obj: &Value,
    unknown: &[String],
    namespace: &str,
    name: &str,
    lists: Option<&Arc<dyn ListTypes>>,
) -> Error {
    let paths: Vec<String> = with_lists(lists, || {
        unknown
            .iter()
            .map(|p| format!("{}: field not declared in schema", smd_path(obj, p)))
            .collect()
    });
    let why = match paths.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    Error::failure_status(
        500,
        format!(
            "failed to create typed patch object ({namespace}/{name}; {group}/{version}, Kind={kind}): {why}"
        ),
    )
}

/// A field path (`spec.containers[0].foo`, keys as they are in `obj`) as structured merge diff
/// prints it: `.spec.containers[name="c"].foo`, a set's item as `[=value]`.
fn smd_path(obj: &Value, path: &str) -> String {
    let mut out = String::new();
    let mut cur = Some(obj);
    let mut fields: Vec<String> = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let (index, after) = r.split_once(']').unwrap_or((r, ""));
            let item = index
                .parse::<usize>()
                .ok()
                .and_then(|i| cur.and_then(|c| c.get(i)));
            let (field, parents) = fields
                .split_last()
                .map_or(("", &[][..]), |(f, p)| (f.as_str(), p));
            let keys = match (list_type(parents, field), item) {
                (ListType::Map(keys), Some(item)) => keys
                    .iter()
                    .map(|k| Some(format!("{k}={}", key_value(item, k)?)))
                    .collect::<Option<Vec<_>>>()
                    .map(|kv| format!("[{}]", kv.join(","))),
                (ListType::Set, Some(item)) => Some(format!("[={item}]")),
                _ => None,
            };
            out.push_str(&keys.unwrap_or_else(|| format!("[{index}]")));
            cur = item;
            rest = after;
            continue;
        }
        let r = rest.strip_prefix('.').unwrap_or(rest);
        // The longest key of the object the path goes on with (keys may hold dots).
        let key = cur
            .and_then(Value::as_object)
            .and_then(|o| {
                o.keys()
                    .filter(|k| {
                        r.starts_with(k.as_str())
                            && matches!(r[k.len()..].chars().next(), None | Some('.' | '['))
                    })
                    .max_by_key(|k| k.len())
                    .cloned()
            })
            .unwrap_or_else(|| r.split(['.', '[']).next().unwrap_or("").to_string());
        out.push('.');
        out.push_str(&key);
        cur = cur.and_then(|c| c.get(&key));
        rest = &r[key.len().min(r.len())..];
        fields.push(key);
    }
    out
}

/// Marks a create-by-apply: the new object's fields belong to the applying manager.
pub fn record_apply(
    obj: &mut Value,
    opts: &WriteOpts,
    lists: Option<&Arc<dyn ListTypes>>,
) -> Result<()> {
    with_lists(lists, || record_apply_with(obj, opts))
}

fn record_apply_with(obj: &mut Value, opts: &WriteOpts) -> Result<()> {
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::bad_request("PATCH requests with apply content type (application/apply-patch+yaml) must have a field manager"))?;
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fields = field_set(obj);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    write_entries(
        obj,
        &[Entry {
            manager,
            operation: "Apply".into(),
            api_version,
            subresource: String::new(),
            fields,
            time: None,
        }],
    );
    Ok(())
}

/// Records an ordinary write: the fields it changed now belong to `manager` (operation
/// `Update`), and to no one else.
pub fn record_update(
    next: &mut Value,
    old: Option<&Value>,
    manager: &str,
    subresource: &str,
    lists: Option<&Arc<dyn ListTypes>>,
) {
    with_lists(lists, || {
        record_update_with(next, old, manager, subresource)
    })
}

fn record_update_with(next: &mut Value, old: Option<&Value>, manager: &str, subresource: &str) {
    if old.is_none() && next.pointer("/metadata/managedFields").is_none() {
        // A new object: every field is this manager's.
        let fields = shape(next, &mut Vec::new());
        if fields.is_empty() {
            return;
        }
        let mut entry = json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": next.get("apiVersion").cloned().unwrap_or(Value::Null),
            "time": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "fieldsType": "FieldsV1",
            "fieldsV1": Value::Object(fields),
        });
        if !subresource.is_empty() {
            entry["subresource"] = json!(subresource);
        }
        if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("managedFields".into(), json!([entry]));
        }
        return;
    }
    let new_set = field_set(next);
    let old_set = old.map(field_set).unwrap_or_default();
    let changed: BTreeSet<Path> = new_set
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => !old_set.contains(*p) || lookup(o, p) != lookup(next, p),
        })
        .cloned()
        .collect();
    let mut entries = old.map(read_entries).unwrap_or_default();
    // Paths that no longer exist are owned by no one.
    for e in entries.iter_mut() {
        e.fields.retain(|p| new_set.contains(p));
    }
    if !changed.is_empty() {
        for e in entries.iter_mut() {
            e.fields.retain(|p| !changed.contains(p));
        }
        let api_version = next
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = None;
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version,
                subresource: subresource.into(),
                fields: changed,
                time: None,
            }),
        }
    }
    write_entries(next, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_apply_configuration_applies_or_is_refused(
            cfg in crate::patch::arbitrary::json(),
            // Stored objects are always JSON objects (bodies that are not are refused first).
            live in crate::patch::arbitrary::json()
                .prop_map(|v| if v.is_object() { v } else { json!({"spec": v}) }),
        ) {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "managedFields": [{"manager": "m", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}}}}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}});
            for mut target in [pod, live] {
                for (manager, force) in [("m", false), ("other", false), ("other", true)] {
                    if let Err(e) = apply(&mut target, &cfg, &opts(manager, force), None) {
                        prop_assert!(e.code() < 500, "{}", e);
                    }
                    let _ = record_apply(&mut target, &opts(manager, force), None);
                }
            }
        }
    }

    #[test]
    fn undeclared_fields_are_named_as_structured_merge_diff_names_them() {
        let obj = json!({"metadata": {"labels": {"a.b/c": "x"}},
            "spec": {"foo": 1, "template": {"spec": {"containers": [{"name": "web", "bogus": 1,
                "ports": [{"containerPort": 80, "what": 1}]}]}}}});
        assert_eq!(smd_path(&obj, "spec.foo"), ".spec.foo");
        assert_eq!(
            smd_path(&obj, "spec.template.spec.containers[0].bogus"),
            ".spec.template.spec.containers[name=\"web\"].bogus"
        );
        assert_eq!(
            smd_path(&obj, "spec.template.spec.containers[0].ports[0].what"),
            ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].what"
        );
        let r = ("apps", "v1", "Deployment");
        let e = undeclared(r, &obj, &["spec.foo".into()], "ns", "web", None);
        assert_eq!(e.code(), 500);
        assert_eq!(
            e.to_string(),
            "failed to create typed patch object (ns/web; apps/v1, Kind=Deployment): .spec.foo: field not declared in schema"
        );
        let two = undeclared(
            r,
            &obj,
            &["spec.foo".into(), "spec.bar".into()],
            "",
            "web",
            None,
        );
        assert!(two.to_string().ends_with(
            "(/web; apps/v1, Kind=Deployment): errors:\n  .spec.foo: field not declared in schema\n  .spec.bar: field not declared in schema"
        ));
    }

    fn opts(m: &str, force: bool) -> WriteOpts {
        WriteOpts {
            field_manager: Some(m.into()),
            force,
            ..Default::default()
        }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn one_pass_shape_equals_the_path_set() {
        let v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"a": "1"}, "finalizers": ["x", "y"],
                         "ownerReferences": [{"uid": "u1", "name": "o"}]},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "env": [],
                                     "args": ["1"], "resources": {}}],
                     "tolerations": [{"key": "k"}], "nodeSelector": {"z": "1"}},
            "status": {"phase": "Pending"}});
        assert_eq!(
            Value::Object(shape(&v, &mut Vec::new())),
            to_fields_v1(&field_set(&v))
        );
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(shape(&bare, &mut Vec::new()).is_empty());
        assert!(field_set(&bare).is_empty());
    }

    #[test]
    fn fields_v1_round_trip() {
        let set = field_set(&deploy(1, "a"));
        let back = from_fields_v1(&to_fields_v1(&set));
        assert_eq!(set, back);
        assert!(set.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
    }

    #[test]
    fn conflict_then_force() {
        let mut live = deploy(1, "a");
        record_apply(&mut live, &opts("alice", false), None).unwrap();
        // bob scales through an ordinary update
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(&mut scaled, Some(&live), "bob", "", None);
        // alice re-applies with replicas 1: conflict on .spec.replicas
        let err = apply(
            &mut scaled.clone(),
            &deploy(1, "a"),
            &opts("alice", false),
            None,
        )
        .unwrap_err();
        assert_eq!(err.code(), 409);
        assert!(err.to_string().contains("conflict with \"bob\""), "{err}");
        assert!(err.to_string().contains(".spec.replicas"));
        // forced, alice takes it back
        let mut forced = scaled.clone();
        apply(&mut forced, &deploy(1, "a"), &opts("alice", true), None).unwrap();
        assert_eq!(forced["spec"]["replicas"], 1);
    }

    #[test]
    fn dropped_fields_are_removed() {
        let mut live = deploy(1, "a");
        record_apply(&mut live, &opts("alice", false), None).unwrap();
        let mut cfg = deploy(1, "a");
        cfg["metadata"].as_object_mut().unwrap().remove("labels");
        apply(&mut live, &cfg, &opts("alice", false), None).unwrap();
        assert!(live["metadata"]
            .get("labels")
            .is_none_or(|l| l.as_object().unwrap().is_empty()));
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"][0]["image"],
            "a"
        );
    }

    #[test]
    fn ports_are_told_apart_by_port_and_protocol() {
        let dns = |image: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dns"},
                "spec": {"template": {"spec": {"containers": [{"name": "dns", "image": image,
                    "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                              {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                              {"name": "metrics", "containerPort": 9153}]}]}}}})
        };
        let mut live = dns("a");
        record_apply(&mut live, &opts("skiff", false), None).unwrap();
        // The same configuration applied again (a restart) changes nothing.
        apply(&mut live, &dns("a"), &opts("skiff", true), None).unwrap();
        let ports = &live["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(
            ports,
            &dns("a")["spec"]["template"]["spec"]["containers"][0]["ports"]
        );
        // The identity carries the protocol, TCP when it is left out.
        let fields = to_fields_v1(&field_set(&live)).to_string();
        assert!(
            fields.contains(r#"k:{\"containerPort\":53,\"protocol\":\"UDP\"}"#),
            "{fields}"
        );
        assert!(
            fields.contains(r#"k:{\"containerPort\":9153,\"protocol\":\"TCP\"}"#),
            "{fields}"
        );
        // A change to one of them reaches only that one.
        let mut cfg = dns("b");
        cfg["spec"]["template"]["spec"]["containers"][0]["ports"][1]["name"] = json!("dns-tcp2");
        apply(&mut live, &cfg, &opts("skiff", true), None).unwrap();
        let names: Vec<&str> = live["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["dns", "dns-tcp2", "metrics"]);
    }

    #[test]
    fn managed_fields_naming_ports_by_port_alone_still_name_them() {
        let svc = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns"},
                "spec": {"ports": [{"name": name, "port": 53, "protocol": "UDP"},
                                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}})
        };
        let mut live = svc("dns");
        // What an earlier version recorded: the ports keyed by `port` only.
        live["metadata"]["managedFields"] = json!([{"manager": "skiff", "operation": "Apply",
            "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":53}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}}}}}]);
        apply(&mut live, &svc("dns"), &opts("skiff", true), None).unwrap();
        assert_eq!(live["spec"], svc("dns")["spec"]);
    }
}
