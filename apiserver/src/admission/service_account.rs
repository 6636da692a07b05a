//! ServiceAccount: every new pod runs under a ServiceAccount of its namespace (`default` when
//! it names none) that must exist, and — unless the pod or its ServiceAccount says
//! `automountServiceAccountToken: false`, or a container already mounts something at the
//! token path — gets the `kube-api-access-XXXXX` projected volume (a bound token, the cluster
//! CA from the `kube-root-ca.crt` ConfigMap, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, written exactly as
//! kube-apiserver writes it. Mirror pods may reference no ServiceAccount and no secrets.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::Result;
use crate::registry::Objects;

/// The ServiceAccount a pod naming none runs under.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Where the token, CA and namespace are mounted.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";

/// The token lifetime the volume asks for (Kubernetes' 3607 seconds: an hour and a marker
/// that lets the server tell these tokens from others).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The plugin.
pub struct ServiceAccount;

fn is_pod(a: &Attributes<'_>) -> bool {
    a.resource.group.is_empty() && a.resource.plural == "pods" && a.subresource.is_empty()
}

fn is_mirror(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// The projected volume kube-apiserver adds (its `TokenVolumeSource`).
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

/// Five characters of Kubernetes' generated-name alphabet.
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The ServiceAccount `ns/name`: from the cache, else from etcd; `default` is waited for a
/// little, as its controller may be about to make it in a new namespace.
async fn lookup(objs: &dyn Objects, ns: &str, name: &str) -> Option<Value> {
    let r = objs.resource("", "v1", "serviceaccounts")?;
    if let Some(c) = objs.cached(&r, Some(ns), name) {
        return Some(c.value());
    }
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
        10
    } else {
        1
    };
    for i in 0..attempts {
        if i > 0 {
            let ms = rand::rng().random_range(100..200);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Ok(sa) = objs.get(&r, Some(ns), name).await {
            return Some(sa);
        }
    }
    None
}

fn not_found(a: &Attributes<'_>, pod: &Value, sa: &str) -> crate::error::Error {
    forbidden(
        a,
        Some(pod),
        &format!(
            "error looking up service account {}/{sa}: serviceaccount \"{sa}\" not found",
            a.namespace
        ),
    )
}

/// Whether the token is mounted: the pod's say first, then the ServiceAccount's, else yes.
fn should_automount(sa: &Value, pod: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// Adds the volume and its mounts (kube-apiserver's `mountServiceAccountToken`).
fn mount(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(String::from)
        });
    let has_volume = existing.is_some();
    let name = existing.unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", suffix()));
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
                needs_volume = true;
            }
        }
    }
    if !has_volume && needs_volume {
        let vols = spec.entry("volumes").or_insert_with(|| json!([]));
        if !vols.is_array() {
            *vols = json!([]);
        }
        if let Some(vols) = vols.as_array_mut() {
            vols.push(token_volume(&name));
        }
    }
}

/// Whether a mirror pod references a ServiceAccount, secrets or a projected token.
fn mirror_refusal(pod: &Value) -> Option<&'static str> {
    let sa = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !sa.is_empty() {
        return Some("a mirror pod may not reference service accounts");
    }
    let vols = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let env_secret = ["containers", "initContainers"].iter().any(|l| {
        pod.pointer(&format!("/spec/{l}"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    let env = c.get("env").and_then(Value::as_array);
                    let from = c.get("envFrom").and_then(Value::as_array);
                    env.is_some_and(|e| {
                        e.iter()
                            .any(|v| v.pointer("/valueFrom/secretKeyRef").is_some())
                    }) || from.is_some_and(|f| f.iter().any(|v| v.get("secretRef").is_some()))
                })
            })
    });
    let secret_volume = vols.iter().any(|v| {
        v.get("secret").is_some()
            || v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|p| p.get("secret").is_some()))
    });
    let pull = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if env_secret || secret_volume || pull {
        return Some("a mirror pod may not reference secrets");
    }
    let projected_token = vols.iter().any(|v| {
        v.pointer("/projected/sources")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|p| p.get("serviceAccountToken").is_some()))
    });
    if projected_token {
        return Some("a mirror pod may not use ServiceAccountToken volume projections");
    }
    None
}

#[async_trait::async_trait]
impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let Some(pod) = obj else { return Ok(()) };
        if !is_pod(a) || a.operation != Operation::Create || is_mirror(pod) {
            return Ok(());
        }
        let name = match pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
        {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => DEFAULT_SERVICE_ACCOUNT.to_string(),
        };
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("serviceAccountName".into(), json!(name));
            // The deprecated field mirrors the name, as the v1 API writes it.
            spec.insert("serviceAccount".into(), json!(name));
        }
        let Some(sa) = lookup(objs, a.namespace, &name).await else {
            return Err(not_found(a, pod, &name));
        };
        if should_automount(&sa, pod) {
            mount(pod);
        }
        let no_pull_secrets = pod
            .pointer("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let sa_pull: Vec<Value> = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("name"))
                    .map(|n| json!({"name": n}))
                    .collect()
            })
            .unwrap_or_default();
        if no_pull_secrets && !sa_pull.is_empty() {
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("imagePullSecrets".into(), Value::Array(sa_pull));
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
        let Some(pod) = obj else { return Ok(()) };
        if !is_pod(a) || a.operation != Operation::Create {
            return Ok(());
        }
        if is_mirror(pod) {
            return match mirror_refusal(pod) {
                Some(why) => Err(forbidden(a, Some(pod), why)),
                None => Ok(()),
            };
        }
        let name = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.is_empty() {
            let pod_name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(forbidden(
                a,
                Some(pod),
                &format!(
                    "no service account specified for pod {}/{pod_name}",
                    a.namespace
                ),
            ));
        }
        if lookup(objs, a.namespace, name).await.is_none() {
            return Err(not_found(a, pod, name));
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

    fn attrs<'a>(
        r: &'a crate::registry::ResourceInfo,
        user: &'a UserInfo,
        op: Operation,
    ) -> Attributes<'a> {
        Attributes {
            operation: op,
            resource: r,
            subresource: "",
            namespace: "ns",
            name: "",
            old: None,
            user,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        }
    }

    fn sa(name: &str, extra: Value) -> Value {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns", "uid": "u"}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec})
    }

    #[tokio::test]
    async fn pods_get_the_projected_token_volume() {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = attrs(&pods, &user, Operation::Create);
        let objs = Fixed::default().with("serviceaccounts", "ns", sa("default", json!({})));
        let mut p = pod(json!({
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "c", "image": "busybox"},
                           {"name": "d", "image": "busybox", "volumeMounts": [{"name": "x", "mountPath": TOKEN_MOUNT_PATH}]}],
        }));
        ServiceAccount.admit(&a, Some(&mut p), &objs).await.unwrap();
        ServiceAccount.validate(&a, Some(&p), &objs).await.unwrap();
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        let vol = &p["spec"]["volumes"][0];
        let name = vol["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        assert_eq!(vol, &token_volume(name));
        let m = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"], json!([m]));
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([m]));
        // A container that mounts something there already keeps it alone.
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"],
            json!([{"name": "x", "mountPath": TOKEN_MOUNT_PATH}])
        );
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn automount_false_and_missing_accounts() {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = attrs(&pods, &user, Operation::Create);
        let objs = Fixed::default()
            .with("serviceaccounts", "ns", sa("default", json!({})))
            .with(
                "serviceaccounts",
                "ns",
                sa("quiet", json!({"automountServiceAccountToken": false})),
            );
        let c = json!([{"name": "c", "image": "busybox"}]);
        let mut p = pod(json!({"serviceAccountName": "quiet", "containers": c}));
        ServiceAccount.admit(&a, Some(&mut p), &objs).await.unwrap();
        assert!(p["spec"].get("volumes").is_none());
        // The pod's own say wins over its account's.
        let mut p = pod(
            json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true, "containers": c}),
        );
        ServiceAccount.admit(&a, Some(&mut p), &objs).await.unwrap();
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        let mut p = pod(json!({"automountServiceAccountToken": false, "containers": c}));
        ServiceAccount.admit(&a, Some(&mut p), &objs).await.unwrap();
        assert!(p["spec"].get("volumes").is_none());

        let mut p = pod(json!({"serviceAccountName": "ghost", "containers": c}));
        let e = ServiceAccount
            .admit(&a, Some(&mut p), &objs)
            .await
            .unwrap_err();
        assert_eq!(e.code(), 403);
        assert_eq!(
            e.to_string(),
            "pods \"web\" is forbidden: error looking up service account ns/ghost: serviceaccount \"ghost\" not found"
        );
        // Updates are left alone.
        let u = attrs(&pods, &user, Operation::Update);
        let mut p = pod(json!({"serviceAccountName": "ghost", "containers": c}));
        ServiceAccount.admit(&u, Some(&mut p), &objs).await.unwrap();
    }

    #[tokio::test]
    async fn mirror_pods_may_not_reference_accounts() {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = attrs(&pods, &user, Operation::Create);
        let objs = Fixed::default();
        let mut p = pod(json!({"serviceAccountName": "default", "containers": []}));
        p["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "x"});
        ServiceAccount.admit(&a, Some(&mut p), &objs).await.unwrap();
        let e = ServiceAccount
            .validate(&a, Some(&p), &objs)
            .await
            .unwrap_err();
        assert!(e
            .to_string()
            .contains("a mirror pod may not reference service accounts"));
    }
}
