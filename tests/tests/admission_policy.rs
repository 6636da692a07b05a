//! ValidatingAdmissionPolicy end to end, against a real etcd and a real skiff-apiserver,
//! driven with the real kubectl, plain HTTPS and the gRPC SDK: a policy with params from a
//! ConfigMap refusing Deployment replicas above a limit in the namespaces its binding selects
//! only (messageExpression, variables, params by name and by selector, parameterNotFoundAction),
//! the same refusal through the gRPC door, Warn as a kubectl `Warning:`, Audit and
//! auditAnnotations in the audit log, failurePolicy on an expression that fails, the check
//! metrics, and `status.typeChecking` written by the server.
//!
//! Policies reach admission through the watch cache, so each test waits for a policy to act
//! before it relies on it.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};
use skiff_client::{Api, Client, PostParams};
use skiff_e2e::{eventually_ok, ApiServer, Cluster, Etcd, Kubectl};

const WAIT: Duration = Duration::from_secs(20);

const REPLICAS_POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-limit.example.com
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  variables:
  - name: replicas
    expression: "has(object.spec.replicas) ? object.spec.replicas : 1"
  - name: limit
    expression: "int(params.data.maxReplicas)"
  validations:
  - expression: "variables.replicas <= variables.limit"
    messageExpression: "'replicas ' + string(variables.replicas) + ' exceed the limit of ' + string(variables.limit) + ' set by ' + params.metadata.name"
"#;

/// Binds the policy in namespaces labelled `env=prod`, with the ConfigMap `limits` of
/// `policy-params` as params; no params is a refusal.
const PROD_BINDING: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-prod
spec:
  policyName: replica-limit.example.com
  validationActions: [Deny]
  paramRef:
    name: limits
    namespace: policy-params
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels: {env: prod}
"#;

/// Binds it in namespaces labelled `env=team`, with every ConfigMap of the request's own
/// namespace labelled `replica-limit` as params.
const TEAM_BINDING: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-team
spec:
  policyName: replica-limit.example.com
  validationActions: [Deny]
  paramRef:
    selector:
      matchLabels: {replica-limit: "true"}
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels: {env: team}
"#;

fn kubectl_create_deployment(k: &Kubectl, ns: &str, name: &str, replicas: u32) -> skiff_e2e::Run {
    k.run(&[
        "create",
        "deployment",
        name,
        "--image=registry.local/skiff/busybox:1",
        &format!("--replicas={replicas}"),
        "-n",
        ns,
    ])
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1"}]}},
        },
    }))
    .unwrap()
}

/// Creates `name` in `ns` until the policy refuses it (it reaches admission through the
/// watch cache), returning kubectl's error.
fn refused_once_bound(k: &Kubectl, api: &ApiServer, ns: &str, name: &str, replicas: u32) -> String {
    eventually_ok(
        "the policy refuses the deployment",
        WAIT,
        || {
            let r = kubectl_create_deployment(k, ns, name, replicas);
            if r.status.success() {
                k.ok(&["delete", "deployment", name, "-n", ns, "--wait=false"]);
                return Err(format!("created: {}", r.stdout));
            }
            Ok(r.stderr)
        },
        || api.log(),
    )
}

#[tokio::test]
async fn a_policy_with_params_limits_replicas_where_it_is_bound() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    for (ns, env) in [
        ("prod", "prod"),
        ("dev", "dev"),
        ("team", "team"),
        ("policy-params", ""),
    ] {
        k.ok(&["create", "namespace", ns]);
        if !env.is_empty() {
            k.ok(&["label", "namespace", ns, &format!("env={env}")]);
        }
    }
    k.ok(&[
        "create",
        "configmap",
        "limits",
        "-n",
        "policy-params",
        "--from-literal=maxReplicas=3",
    ]);
    k.ok_input(&["apply", "-f", "-"], REPLICAS_POLICY);
    k.ok_input(&["apply", "-f", "-"], PROD_BINDING);

    // Above the limit in a bound namespace: refused, in Kubernetes' words (422, Invalid, the
    // message as the cause kubectl prints).
    let err = refused_once_bound(&k, &c.api, "prod", "big", 5);
    assert!(
        err.contains(
            "ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-prod' denied request: replicas 5 exceed the limit of 3 set by limits"
        ),
        "{err}"
    );
    assert!(
        err.starts_with(
            "error: failed to create deployment: deployments.apps \"big\" is forbidden:"
        ) || err.contains("is invalid"),
        "{err}"
    );
    let http = c.api.client().unwrap();
    let (code, status) = skiff_e2e::send(
        &http,
        reqwest::Method::POST,
        c.api.url("/apis/apps/v1/namespaces/prod/deployments"),
        Some(serde_json::to_value(deployment("big", 4)).unwrap()),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "deployments.apps \"big\" is forbidden: ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-prod' denied request: replicas 4 exceed the limit of 3 set by limits"
    );
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-prod' denied request: replicas 4 exceed the limit of 3 set by limits"
    );
    // Within the limit, or in a namespace the binding does not select: admitted.
    assert!(kubectl_create_deployment(&k, "prod", "small", 3)
        .status
        .success());
    assert!(kubectl_create_deployment(&k, "dev", "big", 50)
        .status
        .success());
    // An update is checked too.
    let r = k.run(&[
        "patch",
        "deployment",
        "small",
        "-n",
        "prod",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":8}}"#,
    ]);
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("replicas 8 exceed the limit of 3"),
        "{}",
        r.stderr
    );

    // The gRPC door is checked the same.
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let e = deps
        .create(&PostParams::default(), &deployment("grpc", 7))
        .await
        .unwrap_err();
    let a = e.api().unwrap();
    assert_eq!((a.code, a.reason.as_str()), (422, "Invalid"), "{e}");
    assert!(
        a.message
            .ends_with("denied request: replicas 7 exceed the limit of 3 set by limits"),
        "{}",
        a.message
    );
    deps.create(&PostParams::default(), &deployment("grpc", 2))
        .await
        .unwrap();

    // Params found by a selector in the request's namespace, each checked; none found is a
    // refusal with parameterNotFoundAction: Deny, and no check with Allow.
    k.ok_input(&["apply", "-f", "-"], TEAM_BINDING);
    let err = refused_once_bound(&k, &c.api, "team", "t1", 1);
    assert!(
        err.contains("ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-team' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{err}"
    );
    for (name, max) in [("generous", "6"), ("strict", "4")] {
        k.ok(&[
            "create",
            "configmap",
            name,
            "-n",
            "team",
            &format!("--from-literal=maxReplicas={max}"),
        ]);
        k.ok(&[
            "label",
            "configmap",
            name,
            "-n",
            "team",
            "replica-limit=true",
        ]);
    }
    let err = eventually_ok(
        "both team limits apply",
        WAIT,
        || {
            let r = kubectl_create_deployment(&k, "team", "t5", 5);
            if r.status.success() {
                k.ok(&["delete", "deployment", "t5", "-n", "team", "--wait=false"]);
                return Err("created".into());
            }
            if r.stderr.contains("no params found") {
                return Err(r.stderr);
            }
            Ok(r.stderr)
        },
        || c.api.log(),
    );
    assert!(
        err.contains("replicas 5 exceed the limit of 4 set by strict"),
        "{err}"
    );
    assert!(kubectl_create_deployment(&k, "team", "t4", 4)
        .status
        .success());
    k.ok(&["delete", "configmap", "generous", "strict", "-n", "team"]);
    k.ok(&[
        "patch",
        "validatingadmissionpolicybinding",
        "replica-limit-team",
        "--type=merge",
        "-p",
        r#"{"spec":{"paramRef":{"parameterNotFoundAction":"Allow"}}}"#,
    ]);
    eventually_ok(
        "no params and Allow: not checked",
        WAIT,
        || {
            let r = kubectl_create_deployment(&k, "team", "t50", 50);
            r.status.success().then_some(()).ok_or(r.stderr)
        },
        || c.api.log(),
    );

    // The checks are counted.
    let (code, metrics) =
        skiff_e2e::send(&http, reqwest::Method::GET, c.api.url("/metrics"), None).await;
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("apiserver_validating_admission_policy_check_total{")
            && l.contains("policy=\"replica-limit.example.com\"")
            && l.contains("policy_binding=\"replica-limit-prod\"")
            && l.contains("enforcement_action=\"deny\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("apiserver_validating_admission_policy_check_duration_seconds_bucket{")
    );

    // The server type-checked the policy against Deployments: nothing to say.
    let p = k.json(&[
        "get",
        "validatingadmissionpolicy",
        "replica-limit.example.com",
    ]);
    assert_eq!(
        p["status"]["observedGeneration"],
        p["metadata"]["generation"]
    );
    assert!(
        p["status"]["typeChecking"]["expressionWarnings"].is_null(),
        "{p}"
    );
}

const OWNER_POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: owner.example.com
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [configmaps]
  validations:
  - expression: "has(object.metadata.labels) && 'owner' in object.metadata.labels"
    message: configmaps must name an owner
    reason: Forbidden
  auditAnnotations:
  - key: keys
    valueExpression: "has(object.data) ? string(size(object.data)) + ' keys' : ''"
"#;

const OWNER_BINDING: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: owner-warn
spec:
  policyName: owner.example.com
  validationActions: [Warn, Audit]
  matchResources:
    namespaceSelector:
      matchLabels: {owners: checked}
"#;

const AUDIT_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["configmaps"]
  - level: None
"#;

fn audit_events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn warn_and_audit_actions_tell_the_client_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("audit.yaml");
    std::fs::write(&policy, AUDIT_POLICY).unwrap();
    let log = dir.path().join("audit.log");
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(
        &etcd,
        &[
            &format!("--audit-policy-file={}", policy.display()),
            &format!("--audit-log-path={}", log.display()),
        ],
    )
    .await
    .unwrap();
    let k = api.kubectl();
    k.ok(&["create", "namespace", "checked"]);
    k.ok(&["label", "namespace", "checked", "owners=checked"]);
    k.ok_input(&["apply", "-f", "-"], OWNER_POLICY);
    k.ok_input(&["apply", "-f", "-"], OWNER_BINDING);

    // Warn: admitted, with kubectl's `Warning:` line.
    let mut n = 0;
    let warned = eventually_ok(
        "kubectl shows the policy's warning",
        WAIT,
        || {
            n += 1;
            let name = format!("unowned-{n}");
            let r = k.run(&[
                "create",
                "configmap",
                &name,
                "-n",
                "checked",
                "--from-literal=a=1",
                "--from-literal=b=2",
            ]);
            if !r.status.success() {
                return Err(format!("refused: {}", r.stderr));
            }
            if r.stderr.contains("Warning:") {
                Ok((name, r.stderr))
            } else {
                Err(format!("no warning: {}", r.stderr))
            }
        },
        || api.log(),
    );
    let (name, stderr) = warned;
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'owner.example.com' with binding 'owner-warn': configmaps must name an owner"),
        "{stderr}"
    );
    // An owned one, or one outside the bound namespaces: no warning.
    let r = k.run_with_input(
        &["create", "-f", "-"],
        "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"owned\", \"namespace\": \"checked\", \"labels\": {\"owner\": \"me\"}}}",
    );
    assert!(
        r.status.success() && !r.stderr.contains("Warning"),
        "{}",
        r.stderr
    );
    let r = k.run(&["create", "configmap", "elsewhere", "-n", "default"]);
    assert!(
        r.status.success() && !r.stderr.contains("Warning"),
        "{}",
        r.stderr
    );

    // Audit: the failure and the policy's own annotation on the request's audit event.
    let event = eventually_ok(
        "the audit event of the warned create",
        WAIT,
        || {
            audit_events(&log)
                .into_iter()
                .find(|e| {
                    e["stage"] == "ResponseComplete"
                        && e["verb"] == "create"
                        && e["objectRef"]["name"] == name.as_str()
                })
                .ok_or_else(|| "not yet".to_owned())
        },
        || api.log(),
    );
    let failure: Value = serde_json::from_str(
        event["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .unwrap_or_else(|| panic!("{event}")),
    )
    .unwrap();
    assert_eq!(
        failure,
        json!([{"message": "configmaps must name an owner", "policy": "owner.example.com",
            "binding": "owner-warn", "expressionIndex": 0, "validationActions": ["Warn", "Audit"]}])
    );
    assert_eq!(
        event["annotations"]["owner.example.com/keys"], "2 keys",
        "{event}"
    );
}

const BROKEN_POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: NAME
spec:
  failurePolicy: FAILURE
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [secrets]
  validations:
  - expression: "object.data.token == 'x'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: NAME
spec:
  policyName: NAME
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {failure: FAILURE}
"#;

#[tokio::test]
async fn an_expression_that_fails_follows_the_failure_policy_and_types_are_checked() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    for f in ["Fail", "Ignore"] {
        let ns = f.to_lowercase();
        k.ok(&["create", "namespace", &ns]);
        k.ok(&["label", "namespace", &ns, &format!("failure={f}")]);
        let yaml = BROKEN_POLICY
            .replace("NAME", &format!("broken-{ns}"))
            .replace("FAILURE", f);
        k.ok_input(&["apply", "-f", "-"], &yaml);
    }
    // `object.data.token` does not exist: the expression fails when it runs.
    let err = eventually_ok(
        "the failing expression refuses under Fail",
        WAIT,
        || {
            let r = k.run(&[
                "create",
                "secret",
                "generic",
                "s",
                "-n",
                "fail",
                "--from-literal=other=1",
            ]);
            if r.status.success() {
                k.ok(&["delete", "secret", "s", "-n", "fail"]);
                return Err("created".into());
            }
            Ok(r.stderr)
        },
        || c.api.log(),
    );
    assert!(
        err.contains("ValidatingAdmissionPolicy 'broken-fail' with binding 'broken-fail' denied request: expression 'object.data.token == 'x'' resulted in error: no such key: token"),
        "{err}"
    );
    // Under Ignore the same failure admits.
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "ignore",
        "--from-literal=other=1",
    ]);

    // status.typeChecking: a misspelt field of the matched kind is a warning.
    k.ok_input(
        &["apply", "-f", "-"],
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: typo.example.com
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [deployments]
  validations:
  - expression: "object.spec.replicsa <= 5"
  - expression: "object.spec.replicas <= 5"
    messageExpression: "'too many: ' + object.spec.replicas"
"#,
    );
    let warnings = eventually_ok(
        "the server type-checks the policy",
        WAIT,
        || {
            let p = k.json(&["get", "validatingadmissionpolicy", "typo.example.com"]);
            if p["status"]["observedGeneration"] != p["metadata"]["generation"] {
                return Err(format!("{p}"));
            }
            Ok(p["status"]["typeChecking"]["expressionWarnings"].clone())
        },
        || c.api.log(),
    );
    assert_eq!(
        warnings[0]["fieldRef"], "spec.validations[0].expression",
        "{warnings}"
    );
    assert!(
        warnings[0]["warning"].as_str().unwrap().starts_with(
            "apps/v1, Kind=Deployment: ERROR: <input>:1:12: undefined field 'replicsa'"
        ),
        "{warnings}"
    );
    assert_eq!(
        warnings[1]["fieldRef"], "spec.validations[1].messageExpression",
        "{warnings}"
    );
    assert!(
        warnings[1]["warning"]
            .as_str()
            .unwrap()
            .contains("found no matching overload for '_+_' applied to '(string, int)'"),
        "{warnings}"
    );
    assert_eq!(warnings.as_array().unwrap().len(), 2, "{warnings}");
}
