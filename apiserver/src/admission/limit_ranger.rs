//! LimitRanger: a new pod's containers (and init containers) get the namespace's
//! LimitRanges' default limits (`default`) and requests (`defaultRequest`) for what they leave
//! out, recorded in the `kubernetes.io/limit-ranger` annotation; then every container, and the
//! pod as a whole, must keep within each range's `min`, `max` and `maxLimitRequestRatio`
//! (`403`, `minimum cpu usage per Container is 100m, but request is 50m`). Claims must
//! request storage within their ranges.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LimitRange;
use serde_json::{json, Map, Value};
use skiff_rules::quantity::Format;
use skiff_rules::quota::{parse_list, ResourceList};
use skiff_rules::Quantity;

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{Error, Result};
use crate::registry::Objects;

/// The annotation saying what the plugin set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Kubernetes' `MaxMilliValue`: past it, values are compared in whole units.
const MAX_MILLI_VALUE: i64 = i64::MAX / 1000;

/// The plugin.
pub struct LimitRanger;

/// What the plugin looks at: new pods, and claims created or changed.
fn handled(a: &Attributes<'_>) -> Option<&'static str> {
    let r = a.resource;
    if !a.subresource.is_empty() || !r.group.is_empty() {
        return None;
    }
    match (r.plural.as_str(), a.operation) {
        ("pods", Operation::Create) => Some("pods"),
        ("persistentvolumeclaims", Operation::Create | Operation::Update) => {
            Some("persistentvolumeclaims")
        }
        _ => None,
    }
}

/// The namespace's LimitRanges, from the watch cache.
fn ranges(objs: &dyn Objects, ns: &str) -> Result<Vec<LimitRange>> {
    let Some(r) = objs.resource("", "v1", "limitranges") else {
        return Ok(Vec::new());
    };
    objs.cached_list(&r, Some(ns))
        .iter()
        .map(|c| {
            serde_json::from_slice(&c.json)
                .map_err(|e| Error::internal(format!("limit ranges: decoding: {e}")))
        })
        .collect()
}

fn wire_map(
    m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Vec<(String, String)> {
    m.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Fills in the container defaults of one LimitRange; returns what it set, as the
/// annotation words it (`cpu, memory request for container web`).
fn default_containers(pod: &mut Value, lr: &LimitRange) -> Vec<String> {
    let (mut limits, mut requests) = (Vec::new(), Vec::new());
    for item in lr.spec.iter().flat_map(|s| s.limits.iter()) {
        if item.type_ == "Container" {
            requests.extend(wire_map(item.default_request.as_ref()));
            limits.extend(wire_map(item.default.as_ref()));
        }
    }
    let mut notes = Vec::new();
    if limits.is_empty() && requests.is_empty() {
        return notes;
    }
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs.iter_mut().filter(|c| c.is_object()) {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut fill = |field: &str, defaults: &[(String, String)]| -> Vec<String> {
                if !c.get("resources").is_some_and(Value::is_object) {
                    c["resources"] = json!({});
                }
                let res = &mut c["resources"];
                if !res.get(field).is_some_and(Value::is_object) {
                    res[field] = json!({});
                }
                let mut set = Vec::new();
                if let Some(m) = res[field].as_object_mut() {
                    for (k, v) in defaults {
                        if !m.contains_key(k) {
                            m.insert(k.clone(), json!(v));
                            set.push(k.clone());
                        }
                    }
                }
                set.sort();
                set.dedup();
                set
            };
            let set_limits = fill("limits", &limits);
            let set_requests = fill("requests", &requests);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {what} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    notes
}

/// The three values compared, at a common precision: thousandths where all fit, else
/// whole units.
fn enforced_values(
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
    enforced: &Quantity,
) -> (i64, i64, i64) {
    let v = |q: Option<&Quantity>| q.map_or(0, Quantity::value);
    let m = |q: Option<&Quantity>| q.map_or(0, Quantity::milli_value);
    let (r, l, e) = (v(req), v(lim), enforced.value());
    if r <= MAX_MILLI_VALUE && l <= MAX_MILLI_VALUE && e <= MAX_MILLI_VALUE {
        (m(req), m(lim), enforced.milli_value())
    } else {
        (r, l, e)
    }
}

fn min_constraint(
    t: &str,
    name: &str,
    enforced: &Quantity,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let (r, l) = (req.get(name), lim.get(name));
    let (rv, lv, ev) = enforced_values(r, l, enforced);
    let Some(r) = r else {
        return Some(format!(
            "minimum {name} usage per {t} is {enforced}.  No request is specified"
        ));
    };
    if rv < ev {
        return Some(format!(
            "minimum {name} usage per {t} is {enforced}, but request is {r}"
        ));
    }
    match l {
        Some(l) if lv < ev => Some(format!(
            "minimum {name} usage per {t} is {enforced}, but limit is {l}"
        )),
        _ => None,
    }
}

fn max_constraint(
    t: &str,
    name: &str,
    enforced: &Quantity,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let (r, l) = (req.get(name), lim.get(name));
    let (rv, lv, ev) = enforced_values(r, l, enforced);
    let Some(l) = l else {
        return Some(format!(
            "maximum {name} usage per {t} is {enforced}.  No limit is specified"
        ));
    };
    if lv > ev {
        return Some(format!(
            "maximum {name} usage per {t} is {enforced}, but limit is {l}"
        ));
    }
    match r {
        Some(r) if rv > ev => Some(format!(
            "maximum {name} usage per {t} is {enforced}, but request is {r}"
        )),
        _ => None,
    }
}

fn max_request_constraint(
    t: &str,
    name: &str,
    enforced: &Quantity,
    req: &ResourceList,
) -> Option<String> {
    let r = req.get(name);
    let (rv, _, ev) = enforced_values(r, None, enforced);
    let Some(r) = r else {
        return Some(format!(
            "maximum {name} usage per {t} is {enforced}.  No request is specified"
        ));
    };
    (rv > ev).then(|| format!("maximum {name} usage per {t} is {enforced}, but request is {r}"))
}

fn ratio_constraint(
    t: &str,
    name: &str,
    enforced: &Quantity,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let (r, l) = (req.get(name), lim.get(name));
    let (rv, lv, _) = enforced_values(r, l, enforced);
    if r.is_none() || rv == 0 {
        return Some(format!("{name} max limit to request ratio per {t} is {enforced}, but no request is specified or request is 0"));
    }
    if l.is_none() || lv == 0 {
        return Some(format!("{name} max limit to request ratio per {t} is {enforced}, but no limit is specified or limit is 0"));
    }
    let observed = lv as f64 / rv as f64;
    let (cmp, max) = if enforced.value() <= MAX_MILLI_VALUE {
        (observed * 1000.0, enforced.milli_value() as f64)
    } else {
        (observed, enforced.value() as f64)
    };
    (cmp > max).then(|| {
        format!("{name} max limit to request ratio per {t} is {enforced}, but provided ratio is {observed:.6}")
    })
}

/// A container's requests and limits.
fn container_lists(c: &Value) -> (ResourceList, ResourceList) {
    let list = |f: &str| -> ResourceList {
        c.pointer(&format!("/resources/{f}"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str()?.parse().ok().map(|q| (k.clone(), q)))
                    .collect()
            })
            .unwrap_or_default()
    };
    (list("requests"), list("limits"))
}

/// The pod-wide sum of one list over the containers: a resource only when every container
/// names it; CPU in thousandths, everything else in whole units.
fn sum(inputs: &[ResourceList]) -> ResourceList {
    let mut keys: Vec<&String> = inputs.iter().flat_map(|i| i.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = ResourceList::new();
    for k in keys {
        if !inputs.iter().all(|i| i.contains_key(k)) {
            continue;
        }
        let total = if k == "cpu" {
            let t: i64 = inputs
                .iter()
                .map(|i| i[k].milli_value())
                .fold(0, i64::saturating_add);
            Quantity::from_milli(t)
        } else {
            let t: i64 = inputs
                .iter()
                .map(|i| i[k].value())
                .fold(0, i64::saturating_add);
            Quantity::from_value(t, Format::DecimalSI)
        };
        out.insert(k.clone(), total);
    }
    out
}

fn sorted(
    m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> ResourceList {
    parse_list(m)
}

/// Every way a pod breaks one LimitRange.
fn pod_violations(pod: &Value, lr: &LimitRange) -> Vec<String> {
    let list = |f: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (containers, inits) = (list("containers"), list("initContainers"));
    let mut errs = Vec::new();
    for item in lr.spec.iter().flat_map(|s| s.limits.iter()) {
        let t = item.type_.as_str();
        let (min, max, ratio) = (
            sorted(item.min.as_ref()),
            sorted(item.max.as_ref()),
            sorted(item.max_limit_request_ratio.as_ref()),
        );
        let mut check = |req: &ResourceList, lim: &ResourceList| {
            errs.extend(
                min.iter()
                    .filter_map(|(k, v)| min_constraint(t, k, v, req, lim)),
            );
            errs.extend(
                max.iter()
                    .filter_map(|(k, v)| max_constraint(t, k, v, req, lim)),
            );
            errs.extend(
                ratio
                    .iter()
                    .filter_map(|(k, v)| ratio_constraint(t, k, v, req, lim)),
            );
        };
        match t {
            "Container" => {
                for c in containers.iter().chain(inits.iter()) {
                    let (req, lim) = container_lists(c);
                    check(&req, &lim);
                }
            }
            "Pod" => {
                let lists: Vec<(ResourceList, ResourceList)> =
                    containers.iter().map(container_lists).collect();
                let reqs: Vec<ResourceList> = lists.iter().map(|(r, _)| r.clone()).collect();
                let lims: Vec<ResourceList> = lists.iter().map(|(_, l)| l.clone()).collect();
                let (mut req, mut lim) = (sum(&reqs), sum(&lims));
                // An init container runs alone: the pod needs the larger of the two.
                for c in &inits {
                    let (r, l) = container_lists(c);
                    for (target, from) in [(&mut req, r), (&mut lim, l)] {
                        for (k, v) in from {
                            match target.get(&k) {
                                Some(have) if *have >= v => {}
                                _ => {
                                    target.insert(k, v);
                                }
                            }
                        }
                    }
                }
                check(&req, &lim);
            }
            _ => {}
        }
    }
    errs
}

/// Every way a claim breaks one LimitRange: its storage request within `min` and `max`.
fn claim_violations(pvc: &Value, lr: &LimitRange) -> Vec<String> {
    let req: ResourceList = pvc
        .pointer("/spec/resources/requests")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str()?.parse().ok().map(|q| (k.clone(), q)))
                .collect()
        })
        .unwrap_or_default();
    let mut errs = Vec::new();
    for item in lr.spec.iter().flat_map(|s| s.limits.iter()) {
        let t = item.type_.as_str();
        if t != "PersistentVolumeClaim" {
            continue;
        }
        for (k, v) in sorted(item.min.as_ref()) {
            errs.extend(min_constraint(t, &k, &v, &req, &ResourceList::new()));
        }
        for (k, v) in sorted(item.max.as_ref()) {
            errs.extend(max_request_constraint(t, &k, &v, &req));
        }
    }
    errs
}

/// Several errors as Kubernetes aggregates them: one alone, else `[a, b]` (repeats once).
fn aggregate(errs: Vec<String>) -> Option<String> {
    let mut seen = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => None,
        1 => seen.pop(),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

#[async_trait::async_trait]
impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let (Some("pods"), Some(pod)) = (handled(a), obj) else {
            return Ok(());
        };
        for lr in ranges(objs, a.namespace)? {
            let notes = default_containers(pod, &lr);
            if notes.is_empty() {
                continue;
            }
            let meta = pod
                .as_object_mut()
                .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
            if let Some(meta) = meta.and_then(Value::as_object_mut) {
                let ann = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(
                        ANNOTATION.into(),
                        json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
                    );
                }
            }
        }
        Ok(())
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let (Some(kind), Some(o)) = (handled(a), obj) else {
            return Ok(());
        };
        if a.old
            .is_some_and(|old| old.pointer("/metadata/deletionTimestamp").is_some())
        {
            return Ok(());
        }
        for lr in ranges(objs, a.namespace)? {
            let errs = match kind {
                "pods" => pod_violations(o, &lr),
                _ => claim_violations(o, &lr),
            };
            if let Some(why) = aggregate(errs) {
                return Err(forbidden(a, obj, &why));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::auth::UserInfo;
    use crate::registry::builtin;

    fn range(limits: Value) -> Value {
        json!({"metadata": {"name": "lr", "namespace": "ns"}, "spec": {"limits": limits}})
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [{"name": "web", "image": "i", "resources": resources}]}})
    }

    async fn run(objs: &Fixed, mut p: Value) -> (Value, Result<()>) {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = Attributes {
            operation: Operation::Create,
            resource: &pods,
            subresource: "",
            namespace: "ns",
            name: "web",
            old: None,
            user: &user,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        };
        LimitRanger.admit(&a, Some(&mut p), objs).await.unwrap();
        let r = LimitRanger.validate(&a, Some(&p), objs).await;
        (p, r)
    }

    #[tokio::test]
    async fn defaults_fill_what_containers_leave_out_and_say_so() {
        let objs = Fixed::default().with(
            "limitranges",
            "ns",
            range(json!([{"type": "Container",
                "default": {"cpu": "500m", "memory": "256Mi"},
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}])),
        );
        let (p, r) = run(&objs, pod(json!({"requests": {"memory": "64Mi"}}))).await;
        r.unwrap();
        let res = &p["spec"]["containers"][0]["resources"];
        assert_eq!(res["requests"], json!({"memory": "64Mi", "cpu": "100m"}));
        assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container web; cpu, memory limit for container web"
        );
    }

    #[tokio::test]
    async fn bounds_refuse_with_kubernetes_words() {
        let objs = Fixed::default().with(
            "limitranges",
            "ns",
            range(json!([{"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "2"}}])),
        );
        let (_, r) = run(
            &objs,
            pod(json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}})),
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), 403);
        assert_eq!(
            e.to_string(),
            "pods \"web\" is forbidden: minimum cpu usage per Container is 100m, but request is 50m"
        );
        let (_, r) = run(
            &objs,
            pod(json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "3"}})),
        )
        .await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "pods \"web\" is forbidden: [minimum cpu usage per Container is 100m, but request is 50m, maximum cpu usage per Container is 2, but limit is 3]"
        );
    }

    #[test]
    fn ratios_and_pod_sums() {
        let lr: LimitRange = serde_json::from_value(range(json!([
            {"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"memory": "1Gi"}}])))
        .unwrap();
        let p = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "300m", "memory": "600Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "200m", "memory": "600Mi"}}}]}});
        assert_eq!(
            pod_violations(&p, &lr),
            vec![
                "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000"
                    .to_string(),
                "maximum memory usage per Pod is 1Gi, but limit is 1258291200".to_string(),
            ]
        );
        let claim: LimitRange = serde_json::from_value(range(json!([
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]))).unwrap();
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "20Gi"}}}});
        assert_eq!(
            claim_violations(&pvc, &claim),
            vec![
                "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
                    .to_string()
            ]
        );
    }
}
