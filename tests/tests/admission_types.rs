//! The admissionregistration.k8s.io/v1 types end to end, against a real etcd and a real
//! skiff-apiserver, driven with the real kubectl and plain HTTPS: webhook configurations,
//! ValidatingAdmissionPolicies and their bindings created, defaulted, listed with kube's
//! columns, discovered, explained, and refused in Kubernetes' words when malformed; a policy's
//! `status` subresource and `generation`.
//!
//! Every rule here matches kinds the tests never write, so that the objects stay inert
//! whatever admission plugins act on them.

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{send, table_row, Cluster};

const GROUP_V1: &str = "/apis/admissionregistration.k8s.io/v1";

const VALIDATING: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: widget-policy
webhooks:
- name: widgets.policy.example.com
  clientConfig:
    service: {namespace: hooks, name: policy, path: /validate}
  rules:
  - operations: [CREATE, UPDATE]
    apiGroups: [example.com]
    apiVersions: [v1]
    resources: [widgets, widgets/status]
  sideEffects: None
  admissionReviewVersions: [v1]
  matchConditions:
  - name: not-kube-system
    expression: request.namespace != 'kube-system'
- name: gadgets.policy.example.com
  clientConfig:
    url: https://hooks.example.com:8443/gadgets
  rules:
  - operations: ["*"]
    apiGroups: [example.com]
    apiVersions: ["*"]
    resources: [gadgets]
    scope: Namespaced
  failurePolicy: Ignore
  timeoutSeconds: 3
  sideEffects: NoneOnDryRun
  admissionReviewVersions: [v1, v1beta1]
"#;

const MUTATING: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: widget-defaults
webhooks:
- name: widgets.defaults.example.com
  clientConfig:
    service: {namespace: hooks, name: defaults}
  rules:
  - operations: [CREATE]
    apiGroups: [example.com]
    apiVersions: [v1]
    resources: [widgets]
  sideEffects: None
  admissionReviewVersions: [v1]
"#;

const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: widget-replicas.example.com
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - apiGroups: [example.com]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [widgets]
  variables:
  - name: limit
    expression: int(params.data.maxReplicas)
  validations:
  - expression: object.spec.replicas <= variables.limit
    messageExpression: "'replicas must be at most ' + string(variables.limit)"
    reason: Invalid
status:
  observedGeneration: 7
"#;

const BINDING: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: widget-replicas-test
spec:
  policyName: widget-replicas.example.com
  validationActions: [Deny]
  paramRef: {name: limits, namespace: default, parameterNotFoundAction: Deny}
  matchResources:
    namespaceSelector:
      matchLabels: {env: test}
"#;

#[tokio::test]
async fn webhook_configurations_are_defaulted_listed_and_discovered() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let out = k.ok_input(&["create", "-f", "-"], VALIDATING);
    assert_eq!(
        out.trim(),
        "validatingwebhookconfiguration.admissionregistration.k8s.io/widget-policy created"
    );
    k.ok_input(&["create", "-f", "-"], MUTATING);

    // Kubernetes' defaults, and what was given kept.
    let v = k.json(&["get", "validatingwebhookconfiguration", "widget-policy"]);
    let first = &v["webhooks"][0];
    assert_eq!(first["failurePolicy"], "Fail", "{v:#}");
    assert_eq!(first["matchPolicy"], "Equivalent");
    assert_eq!(first["namespaceSelector"], json!({}));
    assert_eq!(first["objectSelector"], json!({}));
    assert_eq!(first["timeoutSeconds"], 10);
    assert_eq!(first["rules"][0]["scope"], "*");
    assert_eq!(
        first["clientConfig"]["service"],
        json!({"namespace": "hooks", "name": "policy", "path": "/validate", "port": 443})
    );
    assert_eq!(first["matchConditions"][0]["name"], "not-kube-system");
    let second = &v["webhooks"][1];
    assert_eq!(second["failurePolicy"], "Ignore");
    assert_eq!(second["timeoutSeconds"], 3);
    assert_eq!(second["rules"][0]["scope"], "Namespaced");
    assert!(v["metadata"].get("namespace").is_none(), "{v:#}");
    let m = k.json(&["get", "mutatingwebhookconfiguration", "widget-defaults"]);
    assert_eq!(m["webhooks"][0]["reinvocationPolicy"], "Never", "{m:#}");
    assert_eq!(m["webhooks"][0]["clientConfig"]["service"]["port"], 443);

    // kube-apiserver's columns.
    let out = k.ok(&["get", "validatingwebhookconfigurations"]);
    let (header, row) = table_row(&out, "widget-policy");
    assert_eq!(header, ["NAME", "WEBHOOKS", "AGE"], "{out}");
    assert_eq!(row[1], "2", "{out}");
    let out = k.ok(&["get", "mutatingwebhookconfigurations"]);
    let (header, row) = table_row(&out, "widget-defaults");
    assert_eq!(header, ["NAME", "WEBHOOKS", "AGE"], "{out}");
    assert_eq!(row[1], "1", "{out}");

    // Discovery: cluster-scoped, no short names, in the api-extensions category.
    let out = k.ok(&[
        "api-resources",
        "--api-group=admissionregistration.k8s.io",
        "--no-headers",
    ]);
    let mut rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            vec![
                "mutatingwebhookconfigurations",
                "admissionregistration.k8s.io/v1",
                "false",
                "MutatingWebhookConfiguration"
            ],
            vec![
                "validatingadmissionpolicies",
                "admissionregistration.k8s.io/v1",
                "false",
                "ValidatingAdmissionPolicy"
            ],
            vec![
                "validatingadmissionpolicybindings",
                "admissionregistration.k8s.io/v1",
                "false",
                "ValidatingAdmissionPolicyBinding"
            ],
            vec![
                "validatingwebhookconfigurations",
                "admissionregistration.k8s.io/v1",
                "false",
                "ValidatingWebhookConfiguration"
            ],
        ],
        "{out}"
    );
    let out = k.ok(&["get", "api-extensions", "-o", "name"]);
    assert!(
        out.contains("validatingwebhookconfiguration.admissionregistration.k8s.io/widget-policy")
            && out.contains(
                "mutatingwebhookconfiguration.admissionregistration.k8s.io/widget-defaults"
            ),
        "{out}"
    );

    // kubectl explain, from the published OpenAPI.
    let out = k.ok(&[
        "explain",
        "validatingwebhookconfigurations.webhooks.sideEffects",
    ]);
    assert!(
        out.contains("GROUP:      admissionregistration.k8s.io"),
        "{out}"
    );
    assert!(out.contains("sideEffects"), "{out}");
    let out = k.ok(&["explain", "mutatingwebhookconfigurations.webhooks"]);
    assert!(out.contains("reinvocationPolicy"), "{out}");

    // kubectl apply merges webhooks by name: dropping one and changing another leaves exactly
    // the other, changed, with its defaults kept.
    let two = MUTATING.replace("name: widget-defaults", "name: applied")
        + &MUTATING
            .split("webhooks:\n")
            .nth(1)
            .unwrap()
            .replace("widgets.defaults", "gadgets.defaults");
    k.ok_input(&["apply", "-f", "-"], &two);
    let m = k.json(&["get", "mutatingwebhookconfiguration", "applied"]);
    assert_eq!(m["webhooks"].as_array().unwrap().len(), 2, "{m:#}");
    let one = MUTATING
        .replace("name: widget-defaults", "name: applied")
        .replace("widgets.defaults", "gadgets.defaults")
        .replace(
            "sideEffects: None",
            "sideEffects: None\n  timeoutSeconds: 5",
        );
    k.ok_input(&["apply", "-f", "-"], &one);
    let m = k.json(&["get", "mutatingwebhookconfiguration", "applied"]);
    let hooks = m["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{m:#}");
    assert_eq!(hooks[0]["name"], "gadgets.defaults.example.com");
    assert_eq!(hooks[0]["timeoutSeconds"], 5);
    assert_eq!(hooks[0]["failurePolicy"], "Fail");
    let out = k.ok(&["get", "mutatingwebhookconfigurations"]);
    assert_eq!(table_row(&out, "applied").1[1], "1", "{out}");

    // Updates are checked as creates are.
    let err = k.fails(&[
        "patch",
        "validatingwebhookconfiguration",
        "widget-policy",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/1/timeoutSeconds","value":45}]"#,
    ]);
    assert!(
        err.contains("webhooks[1].timeoutSeconds: Invalid value: 45: the timeout value must be between 1 and 30 seconds"),
        "{err}"
    );
    k.ok(&["delete", "validatingwebhookconfiguration", "widget-policy"]);
    let err = k.fails(&["get", "validatingwebhookconfiguration", "widget-policy"]);
    assert!(
        err.contains(r#"validatingwebhookconfigurations.admissionregistration.k8s.io "widget-policy" not found"#),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_webhook_configurations_are_refused_in_kubernetes_words() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let bad = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: bad
webhooks:
- name: hook
  clientConfig:
    url: http://hooks.example.com/x?debug=1
  rules:
  - operations: ["*", CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
  admissionReviewVersions: [v2]
  matchConditions:
  - name: typo
    expression: object.metadata.name ==
"#;
    let err = k.run_with_input(&["create", "-f", "-"], bad).stderr;
    for want in [
        r#"The ValidatingWebhookConfiguration "bad" is invalid: "#,
        r#"webhooks[0].name: Invalid value: "hook": should be a domain with at least three segments separated by dots"#,
        r#"webhooks[0].rules[0].operations: Invalid value: []admissionregistration.OperationType{"*", "CREATE"}: if '*' is present, must not specify other operations"#,
        r#"webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"#,
        r#"webhooks[0].clientConfig.url: Invalid value: "http": 'https' is the only allowed URL scheme; desired format: https://host[/path]"#,
        r#"webhooks[0].clientConfig.url: Invalid value: "debug=1": query parameters are not permitted in the URL"#,
        r#"webhooks[0].matchConditions[0].expression: Invalid value: "object.metadata.name ==": compilation failed: ERROR: <input>:1:"#,
        r#"webhooks[0].admissionReviewVersions: Invalid value: []string{"v2"}: must include at least one of v1, v1beta1"#,
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        k.run(&["get", "validatingwebhookconfiguration", "bad"])
            .stderr
            .contains("not found"),
        "a refused object is not stored"
    );

    // The same through plain REST: a 422 Status whose causes name the fields.
    let admin = c.api.client().unwrap();
    let body = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "rest"},
        "webhooks": [
            {"name": "a.example.com", "clientConfig": {"service": {"namespace": "n", "name": "s"}},
             "sideEffects": "None", "admissionReviewVersions": ["v1"], "reinvocationPolicy": "Always"},
            {"name": "a.example.com", "clientConfig": {}, "sideEffects": "Some", "admissionReviewVersions": ["v1"]},
        ],
    });
    let (code, status) = send(
        &admin,
        Method::POST,
        c.api
            .url(&format!("{GROUP_V1}/mutatingwebhookconfigurations")),
        Some(body),
    )
    .await;
    assert_eq!(code, 422, "{status:#}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "MutatingWebhookConfiguration");
    assert_eq!(status["details"]["group"], "admissionregistration.k8s.io");
    let causes: Vec<(String, String)> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("webhooks[0].reinvocationPolicy", "FieldValueNotSupported"),
        ("webhooks[1].sideEffects", "FieldValueNotSupported"),
        ("webhooks[1].clientConfig", "FieldValueRequired"),
        ("webhooks[1].name", "FieldValueDuplicate"),
    ];
    assert_eq!(
        causes,
        want.map(|(f, r)| (f.to_string(), r.to_string())),
        "{status:#}"
    );
}

#[tokio::test]
async fn policies_and_bindings_have_status_generation_and_columns() {
    // Without the plugin nothing else writes the policies' status (its type checking).
    let c = Cluster::start_with(&["--disable-admission-plugins=ValidatingAdmissionPolicy"])
        .await
        .unwrap();
    let k = c.kubectl();
    let admin = c.api.client().unwrap();
    let name = "widget-replicas.example.com";
    k.ok_input(&["create", "-f", "-"], POLICY);
    let p = k.json(&["get", "validatingadmissionpolicy", name]);
    // The status given on create is dropped; defaults filled in; generation 1.
    assert!(p.get("status").is_none(), "{p:#}");
    assert_eq!(p["metadata"]["generation"], 1);
    assert_eq!(p["spec"]["failurePolicy"], "Fail");
    let mc = &p["spec"]["matchConstraints"];
    assert_eq!(mc["matchPolicy"], "Equivalent");
    assert_eq!(mc["namespaceSelector"], json!({}));
    assert_eq!(mc["objectSelector"], json!({}));
    assert_eq!(mc["resourceRules"][0]["scope"], "*");

    let out = k.ok(&["get", "validatingadmissionpolicies"]);
    let (header, row) = table_row(&out, name);
    assert_eq!(header, ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"], "{out}");
    assert_eq!(row[1..3], ["1", "v1/ConfigMap"], "{out}");

    // A status write keeps the spec and the generation.
    k.ok(&[
        "patch",
        "validatingadmissionpolicy",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1,"typeChecking":{}},"spec":{"failurePolicy":"Ignore"}}"#,
    ]);
    let p = k.json(&["get", "validatingadmissionpolicy", name]);
    assert_eq!(
        p["status"],
        json!({"observedGeneration": 1, "typeChecking": {}}),
        "{p:#}"
    );
    assert_eq!(p["spec"]["failurePolicy"], "Fail");
    assert_eq!(p["metadata"]["generation"], 1);
    let (code, s) = send(
        &admin,
        Method::GET,
        c.api.url(&format!(
            "{GROUP_V1}/validatingadmissionpolicies/{name}/status"
        )),
        None,
    )
    .await;
    assert_eq!(code, 200, "{s:#}");
    assert_eq!(s["kind"], "ValidatingAdmissionPolicy");
    assert_eq!(s["status"]["observedGeneration"], 1);
    // A malformed status is refused naming the field.
    let err = k.fails(&[
        "patch",
        "validatingadmissionpolicy",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"typeChecking":{"expressionWarnings":[{"fieldRef":"spec.validations[0].expression","warning":""}]}}}"#,
    ]);
    assert!(
        err.contains("status.typeChecking.expressionWarnings[0].warning: Required value"),
        "{err}"
    );

    // A main write keeps the status; a spec change is a new generation, a label is not.
    k.ok(&[
        "patch",
        "validatingadmissionpolicy",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"failurePolicy":"Ignore"},"status":{"observedGeneration":9}}"#,
    ]);
    let p = k.json(&["get", "validatingadmissionpolicy", name]);
    assert_eq!(p["spec"]["failurePolicy"], "Ignore");
    assert_eq!(p["status"]["observedGeneration"], 1, "{p:#}");
    assert_eq!(p["metadata"]["generation"], 2);
    k.ok(&["label", "validatingadmissionpolicy", name, "team=blue"]);
    assert_eq!(
        k.json(&["get", "validatingadmissionpolicy", name])["metadata"]["generation"],
        2
    );

    // A binding, and its columns.
    k.ok_input(&["create", "-f", "-"], BINDING);
    let out = k.ok(&["get", "validatingadmissionpolicybindings"]);
    let (header, row) = table_row(&out, "widget-replicas-test");
    assert_eq!(header, ["NAME", "POLICYNAME", "PARAMREF", "AGE"], "{out}");
    assert_eq!(row[1..3], [name, "default/limits"], "{out}");
    let b = k.json(&[
        "get",
        "validatingadmissionpolicybinding",
        "widget-replicas-test",
    ]);
    assert_eq!(
        b["spec"]["matchResources"]["matchPolicy"], "Equivalent",
        "{b:#}"
    );
    assert_eq!(b["spec"]["matchResources"]["objectSelector"], json!({}));
    assert!(b["metadata"].get("generation").is_none(), "{b:#}");

    let out = k.ok(&["get", "api-extensions", "-o", "name"]);
    assert!(
        out.contains(&format!(
            "validatingadmissionpolicy.admissionregistration.k8s.io/{name}"
        )) && out.contains(
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/widget-replicas-test"
        ),
        "{out}"
    );
    let out = k.ok(&["explain", "validatingadmissionpolicies.spec.validations"]);
    assert!(out.contains("messageExpression"), "{out}");
    let out = k.ok(&["explain", "validatingadmissionpolicybindings.spec.paramRef"]);
    assert!(out.contains("parameterNotFoundAction"), "{out}");
}

#[tokio::test]
async fn malformed_policies_and_bindings_are_refused_in_kubernetes_words() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let bad = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: bad
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [deployments/scale]
      scope: Anywhere
  validations:
  - expression: params.maxReplicas >= object.spec.replicas
    message: "too\nmany"
    reason: Unauthorized
  - expression: object.spec.replicas
"#;
    let err = k.run_with_input(&["create", "-f", "-"], bad).stderr;
    for want in [
        r#"The ValidatingAdmissionPolicy "bad" is invalid: "#,
        r#"spec.matchConstraints.resourceRules[0].scope: Unsupported value: "Anywhere": supported values: "*", "Cluster", "Namespaced""#,
        r#"spec.validations[0].expression: Invalid value: "params.maxReplicas >= object.spec.replicas": compilation failed: ERROR: <input>:1:1: undeclared reference to 'params'"#,
        r#"spec.validations[0].message: Invalid value: "too\nmany": message must not contain line breaks"#,
        r#"spec.validations[0].reason: Unsupported value: "Unauthorized": supported values: "Forbidden", "Invalid", "RequestEntityTooLarge""#,
        r#"spec.validations[1].expression: Invalid value: "object.spec.replicas": must evaluate to bool"#,
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    let bad = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: bad
spec:
  policyName: some-policy
  validationActions: [Deny, Warn]
  paramRef: {name: limits, selector: {matchLabels: {a: b}}}
"#;
    let err = k.run_with_input(&["create", "-f", "-"], bad).stderr;
    for want in [
        r#"The ValidatingAdmissionPolicyBinding "bad" is invalid: "#,
        "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
        "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
        "spec.paramRef.parameterNotFoundAction: Required value",
        r#"spec.validationActions: Invalid value: []admissionregistration.ValidationAction{"Deny", "Warn"}: must not contain both Deny and Warn"#,
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // Through REST, a binding without actions: 422 with the cause.
    let (code, status) = send(
        &c.api.client().unwrap(),
        Method::POST,
        c.api
            .url(&format!("{GROUP_V1}/validatingadmissionpolicybindings")),
        Some(json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "no-actions"}, "spec": {"policyName": "p"}})),
    )
    .await;
    assert_eq!(code, 422, "{status:#}");
    assert_eq!(
        status["message"],
        Value::from(
            "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io \"no-actions\" is invalid: spec.validationActions: Required value: at least one validation action is required"
        )
    );
}
