//! What a pod references that its node must read to run it: Secrets, ConfigMaps,
//! PersistentVolumeClaims and its ServiceAccount. Decoded straight from the cached JSON into a
//! few borrowed fields, so that the authorizer's look-ups stay cheap.

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Name {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct KeyRefs {
    secret_key_ref: Option<Name>,
    config_map_key_ref: Option<Name>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Env {
    value_from: Option<KeyRefs>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EnvFrom {
    secret_ref: Option<Name>,
    config_map_ref: Option<Name>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Container {
    env: Vec<Env>,
    env_from: Vec<EnvFrom>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct SecretVolume {
    secret_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Claim {
    claim_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Projection {
    secret: Option<Name>,
    config_map: Option<Name>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Projected {
    sources: Vec<Projection>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct SecretRefHolder {
    secret_ref: Option<Name>,
    node_publish_secret_ref: Option<Name>,
    secret_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Volume {
    name: String,
    secret: Option<SecretVolume>,
    config_map: Option<Name>,
    projected: Option<Projected>,
    persistent_volume_claim: Option<Claim>,
    ephemeral: Option<serde::de::IgnoredAny>,
    // Volume plugins that take credentials from a Secret.
    csi: Option<SecretRefHolder>,
    azure_file: Option<SecretRefHolder>,
    cephfs: Option<SecretRefHolder>,
    cinder: Option<SecretRefHolder>,
    flex_volume: Option<SecretRefHolder>,
    iscsi: Option<SecretRefHolder>,
    rbd: Option<SecretRefHolder>,
    scale_io: Option<SecretRefHolder>,
    storageos: Option<SecretRefHolder>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    service_account_name: Option<String>,
    image_pull_secrets: Vec<Name>,
    containers: Vec<Container>,
    init_containers: Vec<Container>,
    ephemeral_containers: Vec<Container>,
    volumes: Vec<Volume>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Meta {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PodRefs {
    metadata: Meta,
    spec: Spec,
}

/// A kind of object a pod may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
    /// A PersistentVolumeClaim.
    Claim,
    /// A ServiceAccount.
    ServiceAccount,
}

fn names(n: &Option<Name>) -> Option<&str> {
    n.as_ref().and_then(|n| n.name.as_deref())
}

/// Whether the pod whose JSON is `json` references the object `kind`/`name` (in its own
/// namespace). JSON that does not decode references nothing.
pub fn references(json: &[u8], kind: Kind, name: &str) -> bool {
    visit(json, kind, &mut |n| n == name)
}

/// Whether the pod whose JSON is `json` references any object of `kind` (its ServiceAccount
/// only when it names one).
pub fn references_any(json: &[u8], kind: Kind) -> bool {
    visit(json, kind, &mut |n| !n.is_empty())
}

/// Calls `f` on the names of the objects of `kind` the pod references until it answers true;
/// whether it did.
fn visit(json: &[u8], kind: Kind, f: &mut dyn FnMut(&str) -> bool) -> bool {
    let Ok(pod) = serde_json::from_slice::<PodRefs>(json) else {
        return false;
    };
    let spec = &pod.spec;
    let mut is = |n: Option<&str>| n.is_some_and(&mut *f);
    let containers = || {
        spec.containers
            .iter()
            .chain(&spec.init_containers)
            .chain(&spec.ephemeral_containers)
    };
    match kind {
        Kind::ServiceAccount => {
            // The ServiceAccount admission names `default` when the pod names none.
            let sa = spec
                .service_account_name
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            is(Some(sa))
        }
        Kind::Claim => spec.volumes.iter().any(|v| {
            is(v.persistent_volume_claim
                .as_ref()
                .and_then(|c| c.claim_name.as_deref()))
                // A generic ephemeral volume's claim is named after the pod and the volume.
                || v.ephemeral.is_some()
                    && is(Some(&format!("{}-{}", pod.metadata.name, v.name)))
        }),
        Kind::Secret => {
            spec.image_pull_secrets
                .iter()
                .any(|s| is(s.name.as_deref()))
                || containers().any(|c| {
                    c.env
                        .iter()
                        .any(|e| is(e.value_from.as_ref().and_then(|f| names(&f.secret_key_ref))))
                        || c.env_from.iter().any(|e| is(names(&e.secret_ref)))
                })
                || spec.volumes.iter().any(|v| {
                    is(v.secret.as_ref().and_then(|s| s.secret_name.as_deref()))
                        || v.projected
                            .as_ref()
                            .is_some_and(|p| p.sources.iter().any(|s| is(names(&s.secret))))
                        || [
                            &v.csi,
                            &v.azure_file,
                            &v.cephfs,
                            &v.cinder,
                            &v.flex_volume,
                            &v.iscsi,
                            &v.rbd,
                            &v.scale_io,
                            &v.storageos,
                        ]
                        .into_iter()
                        .flatten()
                        .any(|h| {
                            is(names(&h.secret_ref))
                                || is(names(&h.node_publish_secret_ref))
                                || is(h.secret_name.as_deref())
                        })
                })
        }
        Kind::ConfigMap => {
            containers().any(|c| {
                c.env.iter().any(|e| {
                    is(e.value_from
                        .as_ref()
                        .and_then(|f| names(&f.config_map_key_ref)))
                }) || c.env_from.iter().any(|e| is(names(&e.config_map_ref)))
            }) || spec.volumes.iter().any(|v| {
                is(names(&v.config_map))
                    || v.projected
                        .as_ref()
                        .is_some_and(|p| p.sources.iter().any(|s| is(names(&s.config_map))))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "robot",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{
                    "name": "c",
                    "env": [
                        {"name": "A", "value": "x"},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    ],
                    "envFrom": [{"secretRef": {"name": "from-secret"}}, {"configMapRef": {"name": "from-cm"}}],
                }],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "m", "configMap": {"name": "vol-cm"}},
                    {"name": "p", "projected": {"sources": [
                        {"secret": {"name": "proj-secret"}},
                        {"configMap": {"name": "proj-cm"}},
                        {"serviceAccountToken": {"path": "token"}},
                    ]}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "c", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}},
                ],
            },
        }))
        .unwrap()
    }

    #[test]
    fn every_kind_of_reference_is_found() {
        let p = pod();
        for s in [
            "pull",
            "env-secret",
            "from-secret",
            "init-secret",
            "vol-secret",
            "proj-secret",
            "csi-secret",
        ] {
            assert!(references(&p, Kind::Secret, s), "{s}");
        }
        for c in ["env-cm", "from-cm", "vol-cm", "proj-cm"] {
            assert!(references(&p, Kind::ConfigMap, c), "{c}");
        }
        assert!(references(&p, Kind::Claim, "data"));
        assert!(references(&p, Kind::Claim, "web-e"));
        assert!(references(&p, Kind::ServiceAccount, "robot"));
        // Names in the wrong place or of another kind are no references.
        assert!(!references(&p, Kind::Secret, "env-cm"));
        assert!(!references(&p, Kind::ConfigMap, "vol-secret"));
        assert!(!references(&p, Kind::Secret, "other"));
        assert!(!references(&p, Kind::ServiceAccount, "default"));
        assert!(!references(&p, Kind::Claim, "web-d"));
        assert!(!references(b"not json", Kind::Secret, "pull"));
        let bare = serde_json::to_vec(&json!({"metadata": {"name": "x"}, "spec": {}})).unwrap();
        assert!(references(&bare, Kind::ServiceAccount, "default"));
        assert!(references_any(&p, Kind::Secret));
        assert!(!references_any(&bare, Kind::Secret));
        assert!(!references_any(&bare, Kind::ConfigMap));
        assert!(!references_any(&bare, Kind::Claim));
    }
}
