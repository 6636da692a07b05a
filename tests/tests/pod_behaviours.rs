//! Pod and Service behaviours as Kubernetes v1.33 has them, through the real `kubectl`, the
//! REST API and a real node (a kubelet on a private containerd): Service ports defaulted
//! from `targetPort: 0`, environment variables (relaxed names, Service links), sidecars with
//! startup probes, `metadata.generation` and `status.observedGeneration`, sysctls and
//! read-only root filesystems.

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{send, Cluster, Kubectl};

fn apply(k: &Kubectl, obj: &Value) {
    k.ok_input(&["apply", "-f", "-"], &obj.to_string());
}

#[tokio::test]
async fn service_target_port_zero_is_defaulted_to_the_port() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    // Through kubectl: a plain and a headless Service, as typed clients write them.
    for (name, cluster_ip) in [("plain", None), ("headless", Some("None"))] {
        let mut spec = json!({
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 0},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 0}
            ]
        });
        if let Some(ip) = cluster_ip {
            spec["clusterIP"] = json!(ip);
        }
        apply(
            &k,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}),
        );
        let svc = k.json(&["get", "service", name, "-o", "json"]);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80, "{svc}");
        assert_eq!(svc["spec"]["ports"][1]["targetPort"], 53, "{svc}");
    }
    let headless = k.json(&["get", "service", "headless", "-o", "json"]);
    assert_eq!(headless["spec"]["clusterIP"], "None");

    // Through the REST API: 0 and "" on create, and 0 again on an update.
    let http = c.api.client().unwrap();
    let url = c.api.url("/api/v1/namespaces/default/services");
    let (code, svc) = send(
        &http,
        Method::POST,
        url.clone(),
        Some(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "raw"},
            "spec": {"ports": [
                {"name": "a", "port": 8080, "targetPort": 0},
                {"name": "b", "port": 9090, "targetPort": ""},
                {"name": "c", "port": 7070, "targetPort": "web"}
            ]}
        })),
    )
    .await;
    assert_eq!(code, 201, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    assert_eq!(svc["spec"]["ports"][1]["targetPort"], 9090, "{svc}");
    assert_eq!(svc["spec"]["ports"][2]["targetPort"], "web", "{svc}");
    let mut update = svc.clone();
    update["spec"]["ports"] = json!([{"name": "a", "port": 8081, "targetPort": 0}]);
    let (code, svc) = send(&http, Method::PUT, format!("{url}/raw"), Some(update)).await;
    assert_eq!(code, 200, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8081, "{svc}");
    // A negative target port is still refused, in Kubernetes' words.
    let (code, status) = send(
        &http,
        Method::POST,
        url,
        Some(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
            "spec": {"ports": [{"port": 80, "targetPort": -1}]}
        })),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"].as_str().unwrap().contains(
            "spec.ports[0].targetPort: Invalid value: -1: must be between 1 and 65535, inclusive"
        ),
        "{status}"
    );
}
