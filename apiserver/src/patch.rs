//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes' strategic merge
//! patch, whose lists merge by key where the Kubernetes types say so (containers by `name`,
//! container ports by `containerPort`, service ports by `port`, conditions by `type`, ...).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The patch formats a PATCH request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type for a Content-Type.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a JSON patch document.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<()> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| Error::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(doc, &p).map_err(|e| {
        Error::api_unprocessable(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })
}

/// Applies a JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) -> Result<()> {
    if !patch.is_object() {
        return Err(Error::bad_request("merge patch must be a JSON object"));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

/// Applies a JSON, merge or strategic-merge patch. Server-side apply needs field ownership and
/// lives in `crate::apply`; here an apply body is merged like a merge patch.
pub fn apply_patch(doc: &mut Value, ptype: PatchType, body: &Value) -> Result<()> {
    match ptype {
        PatchType::Json => json_patch(doc, body),
        PatchType::Merge | PatchType::Apply => merge_patch(doc, body),
        PatchType::Strategic => strategic_merge(doc, body),
    }
}

/// How a list field merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    Replace,
    Key(&'static str),
    Primitive,
}

/// The merge strategy of list `field` reached by `path` (the keys above it).
pub(crate) fn list_strategy(path: &[String], field: &str) -> ListStrategy {
    let parent = path.last().map(String::as_str).unwrap_or("");
    let in_container = path.iter().any(|p| {
        matches!(
            p.as_str(),
            "containers" | "initContainers" | "ephemeralContainers"
        )
    });
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::Key("name"),
        "env" if in_container => ListStrategy::Key("name"),
        "volumeMounts" => ListStrategy::Key("mountPath"),
        "volumeDevices" => ListStrategy::Key("devicePath"),
        "ports" if in_container => ListStrategy::Key("containerPort"),
        "ports" if parent == "spec" && path.len() == 1 => ListStrategy::Key("port"),
        "conditions" if parent == "status" => ListStrategy::Key("type"),
        "addresses" if parent == "status" => ListStrategy::Key("type"),
        "hostAliases" => ListStrategy::Key("ip"),
        "podIPs" | "hostIPs" if parent == "status" => ListStrategy::Key("ip"),
        "ownerReferences" if parent == "metadata" => ListStrategy::Key("uid"),
        "topologySpreadConstraints" => ListStrategy::Key("topologyKey"),
        // Webhook configurations' webhooks, and the match conditions of webhooks and
        // admission policies.
        "webhooks" if path.is_empty() => ListStrategy::Key("name"),
        "matchConditions" => ListStrategy::Key("name"),
        "finalizers" if parent == "metadata" => ListStrategy::Primitive,
        "podCIDRs" => ListStrategy::Primitive,
        _ => ListStrategy::Replace,
    }
}

/// Applies a strategic merge patch to `doc`.
pub fn strategic_merge(doc: &mut Value, patch: &Value) -> Result<()> {
    let Value::Object(p) = patch else {
        return Err(Error::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    merge_map(doc.as_object_mut().expect("object"), p, &mut Vec::new())
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<()> {
    if let Some(d) = patch.get("$patch").and_then(Value::as_str) {
        match d {
            "replace" => {
                *orig = strip_directives(patch);
                return Ok(());
            }
            "delete" => {
                orig.clear();
                return Ok(());
            }
            "merge" => {}
            other => return Err(Error::bad_request(format!("unknown patch type: {other}"))),
        }
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (orig.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            orig.remove(k);
            continue;
        }
        match pv {
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.remove(k);
                    continue;
                }
                let entry = orig
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                path.push(k.clone());
                let r = merge_map(entry.as_object_mut().expect("object"), pm, path);
                path.pop();
                r?;
            }
            Value::Array(pl) => {
                let strategy = list_strategy(path, k);
                let order = patch
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                let existing = orig.remove(k);
                path.push(k.clone());
                let merged = merge_list(existing, pl, strategy, order, path);
                path.pop();
                orig.insert(k.clone(), merged?);
            }
            other => {
                orig.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(
    existing: Option<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    order: Option<&Vec<Value>>,
    path: &mut Vec<String>,
) -> Result<Value> {
    let replace_all = patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let mut list = match existing {
        Some(Value::Array(a)) if !replace_all => a,
        _ => Vec::new(),
    };
    match strategy {
        ListStrategy::Replace => {
            return Ok(Value::Array(patch.iter().map(strip_value).collect()));
        }
        ListStrategy::Primitive => {
            for item in patch {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListStrategy::Key(key) => {
            for item in patch {
                let Some(im) = item.as_object() else {
                    return Err(Error::bad_request(format!(
                        "list item in field {} must be an object with merge key {key}",
                        path.join(".")
                    )));
                };
                if im.get("$patch").and_then(Value::as_str) == Some("replace") && im.len() == 1 {
                    continue;
                }
                let Some(kv) = im.get(key) else {
                    return Err(Error::bad_request(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let pos = list.iter().position(|o| o.get(key) == Some(kv));
                if im.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(p) = pos {
                        list.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => {
                        if let Some(o) = list[p].as_object_mut() {
                            merge_map(o, im, path)?;
                        }
                    }
                    None => list.push(strip_value(item)),
                }
            }
        }
    }
    if let Some(order) = order {
        let rank = |v: &Value| -> usize {
            let probe = match strategy {
                ListStrategy::Key(k) => v.get(k).cloned().unwrap_or(Value::Null),
                _ => v.clone(),
            };
            order
                .iter()
                .position(|o| match strategy {
                    ListStrategy::Key(k) => o.get(k) == Some(&probe),
                    _ => *o == probe,
                })
                .unwrap_or(usize::MAX)
        };
        list.sort_by_key(rank);
    }
    Ok(Value::Array(list))
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
pub(crate) mod arbitrary {
    //! Arbitrary JSON documents, for property tests of what reads request bodies.

    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// Any JSON value, keys drawn mostly from Kubernetes' own field names (and the strategic
    /// merge directives) so that patches reach the code that treats them specially.
    pub fn json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            proptest::sample::select(vec![
                "metadata",
                "spec",
                "status",
                "name",
                "containers",
                "ports",
                "env",
                "volumes",
                "volumeMounts",
                "conditions",
                "finalizers",
                "ownerReferences",
                "labels",
                "$patch",
                "$retainKeys",
                "$deleteFromPrimitiveList/finalizers",
                "$setElementOrder/containers",
                "op",
                "path",
                "value",
                "from",
                "image",
                "containerPort",
                "port",
                "type",
                "uid",
                "mountPath",
            ])
            .prop_map(String::from),
            "[a-z$/]{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                proptest::sample::select(vec![
                    "add",
                    "remove",
                    "replace",
                    "move",
                    "copy",
                    "test",
                    "/spec",
                    "/metadata/name",
                    "/spec/containers/0",
                    "/x/-",
                    "replace",
                    "delete",
                    "merge",
                    "c",
                ])
                .prop_map(String::from),
                ".{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_patch_applies_or_is_refused(patch in arbitrary::json(), doc in arbitrary::json()) {
            let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "finalizers": ["a"], "ownerReferences": [{"uid": "u"}]},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                         "env": [{"name": "A", "value": "1"}]}]}});
            for target in [pod, doc] {
                for ptype in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
                    let mut d = target.clone();
                    if let Err(e) = apply_patch(&mut d, ptype, &patch) {
                        prop_assert!(e.code() < 500, "{:?}: {}", ptype, e);
                    }
                }
            }
        }
    }
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}}});
        strategic_merge(&mut d, &p).unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["image"], "a:2");
        assert_eq!(c[0]["env"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn webhooks_and_match_conditions_merge_by_name() {
        let mut d = json!({"webhooks": [
            {"name": "a.example.com", "timeoutSeconds": 10,
             "matchConditions": [{"name": "x", "expression": "true"}]},
            {"name": "b.example.com"}]});
        let p = json!({"webhooks": [{"name": "a.example.com", "timeoutSeconds": 5,
            "matchConditions": [{"name": "y", "expression": "false"}]}]});
        strategic_merge(&mut d, &p).unwrap();
        let w = d["webhooks"].as_array().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0]["timeoutSeconds"], 5);
        assert_eq!(w[0]["matchConditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn delete_directive_and_null() {
        let mut d = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let p = json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]},
            "spec": {"ports": [{"port": 443, "$patch": "delete"}]}});
        strategic_merge(&mut d, &p).unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(d["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(d["spec"]["ports"], json!([{"port": 80, "name": "http"}]));
    }

    #[test]
    fn unkeyed_lists_replace() {
        let mut d = json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "args": ["1", "2"]}]}});
        let p = json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "args": ["3"]}]}});
        strategic_merge(&mut d, &p).unwrap();
        assert_eq!(d["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(d["spec"]["containers"][0]["args"], json!(["3"]));
    }

    #[test]
    fn set_element_order_is_honoured_and_stripped() {
        let mut d = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x"}]}});
        strategic_merge(&mut d, &p).unwrap();
        assert_eq!(
            d["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a", "image": "x"}])
        );
    }
}
