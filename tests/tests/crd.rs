//! CustomResourceDefinitions end to end, against a real etcd and a real skiff-apiserver
//! (and `skiff-controller-manager` for garbage collection): definitions made with the real
//! kubectl, their objects driven through kubectl, plain HTTPS and the official Kubernetes
//! Python client, and read back from etcd with etcdctl — each check with what a Kubernetes
//! user sees, in Kubernetes' words where it has some.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{collect_events, eventually, send, watch_events, Cluster, Daemon, Kubectl};

/// A namespaced kind with a schema that has defaults, an int-or-string, an enum, a CEL rule, a
/// transition rule, a list-map, the status and scale subresources, printer columns (one of
/// priority 1) and a selectable field.
const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget is a thing made of parts.
        properties:
          spec:
            type: object
            description: What the widget should be.
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas must not exceed maxReplicas"
            properties:
              replicas: {type: integer, default: 1, description: How many to run.}
              maxReplicas: {type: integer, default: 10}
              size: {type: string, enum: [small, medium, large], default: small}
              port: {x-kubernetes-int-or-string: true}
              color: {type: string}
              selector: {type: string}
              tier:
                type: string
                x-kubernetes-validations:
                - rule: "self == oldSelf"
                  messageExpression: "'tier is immutable: it was ' + oldSelf"
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    port: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
              phase: {type: string}
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .spec.selector
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Color, type: string, jsonPath: .spec.color, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    selectableFields:
    - jsonPath: .spec.color
"#;

/// A cluster-scoped kind in the same group, with an open schema.
const GADGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Cluster
  names: {plural: gadgets, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Etcd and an API server with the Widget definition established.
async fn with_widgets(extra: &[&str]) -> Cluster {
    let c = Cluster::start_with(extra).await.unwrap();
    define(&c.kubectl(), WIDGETS, "widgets.example.com");
    c
}

/// Creates a definition and waits until it is Established.
fn define(k: &Kubectl, yaml: &str, name: &str) {
    k.ok_input(&["create", "-f", "-"], yaml);
    k.ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{name}"),
        "--timeout=30s",
    ]);
}

/// A Widget in `default` with `spec` (a YAML flow mapping) and label `app: a`.
fn widget(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}, labels: {{app: a}}}}\nspec: {spec}\n"
    )
}

/// The condition of `type_` of a definition: status, reason, message.
fn condition(crd: &Value, type_: &str) -> (String, String, String) {
    let c = crd["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {crd:#}"));
    let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

/// `etcdctl` against the test's etcd.
fn etcdctl(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.etcd.endpoint))
        .args(args)
        .output()
        .expect("etcdctl runs (Debian's etcd-client; scripts/test installs it)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The keys under `prefix` in etcd.
fn etcd_keys(c: &Cluster, prefix: &str) -> Vec<String> {
    etcdctl(c, &["get", "--prefix", "--keys-only", prefix])
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The object stored at `key`, as JSON.
fn etcd_json(c: &Cluster, key: &str) -> Value {
    let v = etcdctl(c, &["get", key, "--print-value-only"]);
    serde_json::from_str(v.trim()).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {v}"))
}

/// A request with a content type; the status code, headers and body.
async fn request(
    c: &Cluster,
    method: Method,
    path: &str,
    content_type: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = c
        .api
        .client()
        .unwrap()
        .request(method, c.api.url(path))
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        code,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const W: &str = "/apis/example.com/v1/namespaces/default/widgets";

#[tokio::test]
async fn a_schema_defaults_prunes_and_validates_in_kubernetes_words() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();

    // kubectl asks for fieldValidation=Strict: an unknown field refuses the object.
    let r = k.run_with_input(&["create", "-f", "-"], &widget("w1", "{replicas: 2, x: 1}"));
    assert!(!r.status.success(), "{}", r.stdout);
    assert!(
        r.stderr
            .contains(r#"Error from server (BadRequest): error when creating "STDIN": "#)
            && r.stderr
                .contains(r#"strict decoding error: unknown field "spec.x""#),
        "{}",
        r.stderr
    );
    let gone = k.fails(&["get", "widget", "w1"]);
    assert!(
        gone.contains(r#"widgets.example.com "w1" not found"#),
        "{gone}"
    );
    // Warn: stored without it, and the client is told.
    let r = k.run_with_input(
        &["create", "--validate=warn", "-f", "-"],
        &widget(
            "w1",
            "{replicas: 2, port: 8080, color: red, tier: gold, x: 1}",
        ),
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stderr.contains(r#"Warning: unknown field "spec.x""#),
        "{}",
        r.stderr
    );
    // Defaults fill what was left out; the unknown field is pruned.
    let w = k.json(&["get", "widget", "w1"]);
    assert_eq!(
        w["spec"],
        json!({"replicas": 2, "maxReplicas": 10, "size": "small", "port": 8080,
               "color": "red", "tier": "gold"})
    );
    assert_eq!(w["metadata"]["generation"], 1);
    // Ignore: pruned without a word.
    let r = k.run_with_input(
        &["create", "--validate=false", "-f", "-"],
        &widget("w2", "{y: true}"),
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert!(!r.stderr.contains("Warning"), "{}", r.stderr);
    let w2 = k.json(&["get", "widget", "w2"]);
    assert_eq!(
        w2["spec"],
        json!({"replicas": 1, "maxReplicas": 10, "size": "small"})
    );

    // Int-or-string: either, and nothing else.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"port":"http"}}"#,
    ]);
    assert_eq!(k.json(&["get", "widget", "w1"])["spec"]["port"], "http");
    let err = k.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"port":1.5}}"#,
    ]);
    assert!(
        err.contains(r#"The Widget "w1" is invalid: "#)
            && err.contains(
                r#"spec.port: Invalid value: "number": spec.port in body must be of type integer,string: "number""#
            ),
        "{err}"
    );

    // An enum.
    let err = k.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":"huge"}}"#,
    ]);
    assert!(
        err.contains(
            r#"spec.size: Unsupported value: "huge": supported values: "small", "medium", "large""#
        ),
        "{err}"
    );

    // A CEL rule: 422 with the rule's message, on the field that holds the rule.
    let err = k.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":11}}"#,
    ]);
    assert!(
        err.contains(
            r#"The Widget "w1" is invalid: spec: Invalid value: replicas must not exceed maxReplicas"#
        ),
        "{err}"
    );
    let (code, _, status) = request(
        &c,
        Method::PATCH,
        &format!("{W}/w1"),
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 11}}),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"],
        json!({"name": "w1", "group": "example.com", "kind": "Widget", "causes": [
            {"reason": "FieldValueInvalid", "message": "Invalid value: replicas must not exceed maxReplicas", "field": "spec"}
        ]})
    );
    // Within the rule, the change goes through.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":11,"maxReplicas":20}}"#,
    ]);

    // A transition rule: no old value on create, and its messageExpression on update.
    let err = k.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"tier":"silver"}}"#,
    ]);
    assert!(
        err.contains(
            r#"The Widget "w1" is invalid: spec.tier: Invalid value: "silver": tier is immutable: it was gold"#
        ),
        "{err}"
    );
    assert_eq!(k.json(&["get", "widget", "w1"])["spec"]["tier"], "gold");

    // A strategic merge patch has no meaning for a custom resource: 415.
    let (code, _, status) = request(
        &c,
        Method::PATCH,
        &format!("{W}/w1"),
        "application/strategic-merge-patch+json",
        &json!({"spec": {"color": "blue"}}),
    )
    .await;
    assert_eq!(code, 415, "{status}");
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert_eq!(
        status["message"],
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    // kubectl's default patch type is strategic; it says what the server said.
    let err = k.fails(&[
        "patch",
        "widget",
        "w1",
        "-p",
        r#"{"spec":{"color":"blue"}}"#,
    ]);
    assert!(
        err.contains("the body of the request was in an unknown format"),
        "{err}"
    );
    // A JSON patch works.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/color","value":"blue"}]"#,
    ]);
    assert_eq!(k.json(&["get", "widget", "w1"])["spec"]["color"], "blue");
}

#[tokio::test]
async fn server_side_apply_merges_a_list_map_by_its_keys() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    let apply = |manager: &str, ports: &str| apply_ports(&k, manager, ports, false);
    let r = apply("alice", "[{name: http, port: 80}]");
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "widget.example.com/m serverside-applied");
    let r = apply("bob", "[{name: https, port: 443}]");
    assert!(r.status.success(), "{}", r.stderr);
    // Each manager's entry kept: a list-map merges by key, not as a whole.
    let m = k.json(&["get", "widget", "m", "--show-managed-fields"]);
    assert_eq!(
        m["spec"]["ports"],
        json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}])
    );
    let managers: Vec<(&str, &str)> = m["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["manager"].as_str().unwrap(),
                f["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(managers.contains(&("alice", "Apply")), "{managers:?}");
    assert!(managers.contains(&("bob", "Apply")), "{managers:?}");
    let bobs = m["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["manager"] == "bob")
        .unwrap();
    assert!(
        bobs["fieldsV1"]["f:spec"]["f:ports"]
            .get(r#"k:{"name":"https"}"#)
            .is_some(),
        "{bobs}"
    );

    // Alice taking bob's entry's port is a conflict: 409, and kubectl's advice.
    let r = apply(
        "alice",
        "[{name: http, port: 80}, {name: https, port: 8443}]",
    );
    assert!(!r.status.success(), "{}", r.stdout);
    assert!(
        r.stderr.contains(
            r#"error: Apply failed with 1 conflict: conflict with "bob" using example.com/v1: .spec.ports"#
        ) && r.stderr.contains("--force-conflicts"),
        "{}",
        r.stderr
    );
    let (code, _, status) = request(
        &c,
        Method::PATCH,
        &format!("{W}/m?fieldManager=alice"),
        "application/apply-patch+yaml",
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "m"},
                "spec": {"ports": [{"name": "https", "port": 8443}]}}),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    assert_eq!(
        status["details"]["causes"][0]["message"],
        r#"conflict with "bob" using example.com/v1"#
    );
    // Forced, alice takes the field over; bob keeps his entry's key.
    let r = apply_ports(
        &k,
        "alice",
        "[{name: http, port: 80}, {name: https, port: 8443}]",
        true,
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(
        k.json(&["get", "widget", "m"])["spec"]["ports"],
        json!([{"name": "http", "port": 80}, {"name": "https", "port": 8443}])
    );
}

#[tokio::test]
async fn a_definition_is_established_discovered_and_explained() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    let crd = k.json(&["get", "crd", "widgets.example.com"]);
    assert_eq!(
        condition(&crd, "NamesAccepted"),
        (
            "True".into(),
            "NoConflicts".into(),
            "no conflicts found".into()
        )
    );
    assert_eq!(
        condition(&crd, "Established"),
        (
            "True".into(),
            "InitialNamesAccepted".into(),
            "the initial names have been accepted".into()
        )
    );
    assert_eq!(
        crd["status"]["acceptedNames"],
        json!({"plural": "widgets", "singular": "widget", "kind": "Widget",
               "listKind": "WidgetList", "shortNames": ["wd"], "categories": ["all"]})
    );
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(
        crd["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    let out = k.ok(&["get", "crd"]);
    assert!(
        out.starts_with("NAME ") && out.lines().next().unwrap().contains("CREATED AT"),
        "{out}"
    );
    assert!(out.contains("widgets.example.com"), "{out}");

    // kubectl api-resources: plural, short name, group-version, scope, kind.
    let out = k.ok(&["api-resources", "--api-group=example.com"]);
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("widgets "))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["widgets", "wd", "example.com/v1", "true", "Widget"]);
    let out = k.ok(&["api-resources", "--categories=all", "-o", "name"]);
    assert!(out.lines().any(|l| l == "widgets.example.com"), "{out}");

    // Every name reaches the kind; `get all` includes it (category `all`).
    k.ok_input(&["create", "-f", "-"], &widget("w1", "{}"));
    for name in [
        "widgets",
        "widget",
        "wd",
        "Widget",
        "widgets.example.com",
        "widgets.v1.example.com",
    ] {
        let out = k.ok(&["get", name, "-o", "name"]);
        assert_eq!(out.trim(), "widget.example.com/w1", "{name}");
    }
    let out = k.ok(&["get", "all"]);
    assert!(out.contains("widget.example.com/w1"), "{out}");
    assert!(out.contains("service/kubernetes"), "{out}");

    // kubectl explain, from the published OpenAPI v3.
    let out = k.ok(&["explain", "widgets"]);
    assert!(
        out.contains("KIND:       Widget")
            && out.contains("GROUP:      example.com")
            && out.contains("A Widget is a thing made of parts."),
        "{out}"
    );
    let out = k.ok(&["explain", "widgets.spec"]);
    assert!(out.contains("What the widget should be."), "{out}");
    assert!(out.contains("replicas\t<integer>"), "{out}");
    assert!(out.contains("How many to run."), "{out}");
    assert!(out.contains("enum: small, medium, large"), "{out}");
    let out = k.ok(&["explain", "wd.spec.ports"]);
    assert!(out.contains("FIELD: ports <[]Object>"), "{out}");
    assert!(out.contains("name\t<string> -required-"), "{out}");

    // Discovery: the group, its version's resources, and the aggregated document.
    let admin = c.api.client().unwrap();
    let (code, group) = send(&admin, Method::GET, c.api.url("/apis/example.com"), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        group,
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": "example.com",
               "versions": [{"groupVersion": "example.com/v1", "version": "v1"}],
               "preferredVersion": {"groupVersion": "example.com/v1", "version": "v1"}})
    );
    let (_, list) = send(&admin, Method::GET, c.api.url("/apis/example.com/v1"), None).await;
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "example.com/v1");
    let resources = list["resources"].as_array().unwrap();
    let widgets = resources.iter().find(|r| r["name"] == "widgets").unwrap();
    assert_eq!(widgets["singularName"], "widget");
    assert_eq!(widgets["namespaced"], true);
    assert_eq!(widgets["kind"], "Widget");
    assert_eq!(widgets["shortNames"], json!(["wd"]));
    assert_eq!(widgets["categories"], json!(["all"]));
    assert_eq!(
        widgets["verbs"],
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    );
    let status = resources
        .iter()
        .find(|r| r["name"] == "widgets/status")
        .unwrap();
    assert_eq!(status["verbs"], json!(["get", "patch", "update"]));
    let scale = resources
        .iter()
        .find(|r| r["name"] == "widgets/scale")
        .unwrap();
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (&json!("autoscaling"), &json!("v1"), &json!("Scale"))
    );
    let r = admin
        .get(c.api.url("/apis"))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let all: Value = r.json().await.unwrap();
    assert_eq!(all["kind"], "APIGroupDiscoveryList");
    let example = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "example.com")
        .unwrap_or_else(|| panic!("example.com in {all:#}"));
    let v1 = &example["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["freshness"], "Current");
    let res = &v1["resources"][0];
    assert_eq!(res["resource"], "widgets");
    assert_eq!(
        res["responseKind"],
        json!({"group": "example.com", "version": "v1", "kind": "Widget"})
    );
    assert_eq!(res["scope"], "Namespaced");
    assert_eq!(res["singularResource"], "widget");
    assert_eq!(res["shortNames"], json!(["wd"]));
    let subs: Vec<&str> = res["subresources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subresource"].as_str().unwrap())
        .collect();
    assert_eq!(subs, ["status", "scale"]);

    // OpenAPI v3: the group-version is listed, and its document holds the schema.
    let (_, index) = send(&admin, Method::GET, c.api.url("/openapi/v3"), None).await;
    let url = index["paths"]["apis/example.com/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_else(|| panic!("apis/example.com/v1 in {index:#}"));
    assert!(url.starts_with("/openapi/v3/apis/example.com/v1"), "{url}");
    let (code, doc) = send(&admin, Method::GET, c.api.url(url), None).await;
    assert_eq!(code, 200);
    let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "example.com", "version": "v1", "kind": "Widget"}])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["ports"]["x-kubernetes-list-map-keys"],
        json!(["name"])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["size"]["enum"],
        json!(["small", "medium", "large"])
    );
    assert!(
        doc["paths"]
            .get("/apis/example.com/v1/namespaces/{namespace}/widgets/{name}")
            .is_some(),
        "{:#}",
        doc["paths"]
    );
}

#[tokio::test]
async fn namespaced_and_cluster_scoped_kinds_are_stored_under_group_and_plural() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    define(&k, GADGETS, "gadgets.example.com");
    k.ok(&["create", "namespace", "team"]);
    k.ok_input(&["create", "-f", "-"], &widget("w1", "{color: red}"));
    k.ok_input(
        &["create", "-n", "team", "-f", "-"],
        &widget("w1", "{color: blue}"),
    );
    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {anything: [1, 2]}\n",
    );

    // As kube-apiserver keeps them: /registry/GROUP/PLURAL/[NAMESPACE/]NAME.
    assert_eq!(
        etcd_keys(&c, "/registry/example.com/"),
        [
            "/registry/example.com/gadgets/g1",
            "/registry/example.com/widgets/default/w1",
            "/registry/example.com/widgets/team/w1",
        ]
    );
    let stored = etcd_json(&c, "/registry/example.com/widgets/team/w1");
    assert_eq!(stored["apiVersion"], "example.com/v1");
    assert_eq!(stored["kind"], "Widget");
    assert_eq!(stored["spec"]["color"], "blue");
    assert!(stored["metadata"].get("resourceVersion").is_none());
    let g = etcd_json(&c, "/registry/example.com/gadgets/g1");
    assert_eq!(g["spec"], json!({"anything": [1, 2]}));
    assert!(g["metadata"].get("namespace").is_none());

    // The cluster-scoped kind has no namespaced path; the namespaced one lists across them.
    let admin = c.api.client().unwrap();
    let (code, _) = send(
        &admin,
        Method::GET,
        c.api.url("/apis/example.com/v1/namespaces/default/gadgets"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, list) = send(
        &admin,
        Method::GET,
        c.api.url("/apis/example.com/v1/gadgets"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "GadgetList");
    assert_eq!(list["items"][0]["metadata"]["name"], "g1");
    let out = k.ok(&["get", "widgets", "-A", "-o", "name"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = k.ok(&["get", "gd"]);
    assert!(
        out.starts_with("NAME ") && out.contains("AGE") && out.contains("g1"),
        "{out}"
    );
    let r = k.run(&["get", "gadgets", "-n", "team"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout.contains("g1"),
        "a namespace means nothing to a cluster-scoped kind"
    );
    let out = k.ok(&[
        "api-resources",
        "--namespaced=false",
        "--api-group=example.com",
    ]);
    assert!(out.contains("gadgets") && !out.contains("widgets"), "{out}");
}

#[tokio::test]
async fn custom_objects_list_by_selectors_page_and_watch() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    let admin = c.api.client().unwrap();
    let start = k.json(&["get", "widgets"])["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watch = admin
        .get(c.api.url(&format!("{W}?watch=1&resourceVersion={start}")))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let mut events = watch_events(watch);

    for (name, color, app) in [
        ("a", "red", "web"),
        ("b", "blue", "web"),
        ("c", "red", "db"),
        ("d", "green", "db"),
        ("e", "red", "web"),
    ] {
        k.ok_input(
            &["create", "-f", "-"],
            &format!(
                "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec: {{color: {color}}}\n"
            ),
        );
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["get", "widgets", "-o", "name"];
        a.extend_from_slice(args);
        k.ok(&a)
            .lines()
            .map(|l| l.trim_start_matches("widget.example.com/").to_string())
            .collect()
    };
    assert_eq!(names(&["-l", "app=web"]), ["a", "b", "e"]);
    assert_eq!(names(&["-l", "app in (db),app!=web"]), ["c", "d"]);
    assert_eq!(names(&["--field-selector", "metadata.name=c"]), ["c"]);
    assert_eq!(
        names(&["--field-selector", "metadata.name!=c"]),
        ["a", "b", "d", "e"]
    );
    // The version's selectableFields.
    assert_eq!(
        names(&["--field-selector", "spec.color=red"]),
        ["a", "c", "e"]
    );
    assert_eq!(
        names(&["--field-selector", "spec.color=red", "-l", "app=web"]),
        ["a", "e"]
    );
    assert_eq!(
        names(&["--field-selector", "spec.color!=red,metadata.name!=b"]),
        ["d"]
    );
    let err = k.fails(&["get", "widgets", "--field-selector", "spec.size=small"]);
    assert!(
        err.contains(
            r#"Unable to find "example.com/v1, Resource=widgets" that match label selector "", field selector "spec.size=small": field label not supported: spec.size"#
        ),
        "{err}"
    );

    // Pages of two, through `continue`, at one revision.
    let mut seen = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let mut path = format!("{W}?limit=2");
        if !cont.is_empty() {
            path.push_str(&format!("&continue={cont}"));
        }
        let (code, page) = send(&admin, Method::GET, c.api.url(&path), None).await;
        assert_eq!(code, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["metadata"]["name"].clone()));
        if pages == 1 {
            assert_eq!(page["metadata"]["remainingItemCount"], 3);
            // Written meanwhile: not in this list's pages.
            k.ok_input(&["create", "-f", "-"], &widget("late", "{}"));
        }
        match page["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        json!(["a", "b", "c", "d", "e"]).as_array().unwrap().clone()
    );
    let out = k.ok(&["get", "widgets", "--chunk-size=1", "-o", "name"]);
    assert_eq!(out.lines().count(), 6, "{out}");

    // The watch saw every create, then a change and a deletion.
    k.ok(&["label", "widget", "a", "tier=gold"]);
    k.ok(&["delete", "widget", "b"]);
    let got = collect_events(&mut events, 8, Duration::from_secs(10)).await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("ADDED", "d"),
        ("ADDED", "e"),
        ("ADDED", "late"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), n.to_string()))
    .collect();
    assert_eq!(seen, want);
    assert_eq!(got[0]["object"]["kind"], "Widget");
    assert_eq!(got[0]["object"]["apiVersion"], "example.com/v1");
    assert_eq!(got[6]["object"]["metadata"]["labels"]["tier"], "gold");

    // A watch with a label selector, as kubectl runs it.
    let mut w = k.spawn(&["get", "widgets", "-l", "app=db", "--watch", "-o", "name"]);
    let lines = lines_of(w.stdout.take().unwrap());
    let listed = next_lines(&lines, 2, Duration::from_secs(10));
    assert_eq!(listed, ["widget.example.com/c", "widget.example.com/d"]);
    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: skipped, labels: {app: web}}\n",
    );
    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: f, labels: {app: db}}\n",
    );
    let next = next_lines(&lines, 1, Duration::from_secs(10));
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(next, ["widget.example.com/f"]);
}

/// The lines a child process prints, as they come.
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next `n` lines, or those that came within `within`.
fn next_lines(rx: &std::sync::mpsc::Receiver<String>, n: usize, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(_) => break,
        }
    }
    out
}

#[tokio::test]
async fn status_and_scale_subresources_generation_and_printer_columns() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    // With a status subresource, status given on create is dropped.
    k.ok_input(
        &["create", "-f", "-"],
        &(widget("w1", "{replicas: 2, color: red, selector: app=a}") + "status: {phase: Ready}\n"),
    );
    let w = k.json(&["get", "widget", "w1"]);
    assert!(w.get("status").is_none(), "{w:#}");
    assert_eq!(w["metadata"]["generation"], 1);

    // A status write keeps spec, and does not count as a new generation.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"phase":"Ready"},"spec":{"color":"blue"}}"#,
    ]);
    let w = k.json(&["get", "widget", "w1"]);
    assert_eq!(w["status"], json!({"replicas": 2, "phase": "Ready"}));
    assert_eq!(w["spec"]["color"], "red");
    assert_eq!(w["metadata"]["generation"], 1);
    let (code, s) = send(
        &c.api.client().unwrap(),
        Method::GET,
        c.api.url(&format!("{W}/w1/status")),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(s["kind"], "Widget");
    assert_eq!(s["status"]["phase"], "Ready");

    // A main write keeps status; a spec change is a new generation, metadata is not.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"color":"green"},"status":{"phase":"Lost"}}"#,
    ]);
    let w = k.json(&["get", "widget", "w1"]);
    assert_eq!(w["spec"]["color"], "green");
    assert_eq!(w["status"]["phase"], "Ready");
    assert_eq!(w["metadata"]["generation"], 2);
    k.ok(&["label", "widget", "w1", "team=blue"]);
    k.ok(&["annotate", "widget", "w1", "note=x"]);
    assert_eq!(
        k.json(&["get", "widget", "w1"])["metadata"]["generation"],
        2
    );
    // A replace with a changed status keeps the stored status.
    let mut w = k.json(&["get", "widget", "w1"]);
    w["status"]["phase"] = json!("Replaced");
    w["spec"]["size"] = json!("large");
    k.ok_input(&["replace", "-f", "-"], &w.to_string());
    let w = k.json(&["get", "widget", "w1"]);
    assert_eq!(
        (&w["status"]["phase"], &w["spec"]["size"]),
        (&json!("Ready"), &json!("large"))
    );
    assert_eq!(w["metadata"]["generation"], 3);

    // Scale: kubectl scale writes spec.replicas; /scale reads the paths of the definition.
    let out = k.ok(&["scale", "widget", "w1", "--replicas=3"]);
    assert_eq!(out.trim(), "widget.example.com/w1 scaled");
    let (code, scale) = send(
        &c.api.client().unwrap(),
        Method::GET,
        c.api.url(&format!("{W}/w1/scale")),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["metadata"]["name"], "w1");
    assert_eq!(scale["metadata"]["namespace"], "default");
    assert_eq!(scale["spec"], json!({"replicas": 3}));
    assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=a"}));
    let w = k.json(&["get", "widget", "w1"]);
    assert_eq!(w["spec"]["replicas"], 3);
    assert_eq!(w["metadata"]["generation"], 4);
    // The scale goes through the schema like any write.
    let err = k.fails(&["scale", "widget", "w1", "--replicas=30"]);
    assert!(
        err.contains("replicas must not exceed maxReplicas"),
        "{err}"
    );
    // A stale resourceVersion on /scale is a conflict.
    k.ok(&["label", "widget", "w1", "moved=on"]);
    let mut stale = scale.clone();
    stale["spec"]["replicas"] = json!(4);
    let (code, status) = send(
        &c.api.client().unwrap(),
        Method::PUT,
        c.api.url(&format!("{W}/w1/scale")),
        Some(stale),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on widgets.example.com \"w1\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Printer columns: priority 0 by default, priority 1 only with -o wide.
    let out = k.ok(&["get", "widgets"]);
    let head: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "SIZE", "REPLICAS", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["w1", "large", "3"], "{out}");
    let out = k.ok(&["get", "widgets", "-o", "wide"]);
    let head: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "SIZE", "REPLICAS", "COLOR", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["w1", "large", "3", "green"], "{out}");
    // A column whose path finds nothing is an empty cell.
    k.ok_input(&["create", "-f", "-"], &widget("bare", "{}"));
    let out = k.ok(&["get", "widget", "bare", "-o", "wide", "--no-headers"]);
    let row: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(row.len(), 4, "{out}");
    assert_eq!(&row[..3], ["bare", "small", "1"], "{out}");

    // The Table itself, as kubectl asks for it.
    let table: Value = c
        .api
        .client()
        .unwrap()
        .get(c.api.url(W))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<(String, String, i64)> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, String, i64)> = [
        ("Name", "string", 0),
        ("Size", "string", 0),
        ("Replicas", "integer", 0),
        ("Color", "string", 1),
        ("Age", "date", 0),
    ]
    .iter()
    .map(|(n, t, p)| (n.to_string(), t.to_string(), *p))
    .collect();
    assert_eq!(cols, want);
    let bare = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "bare")
        .unwrap();
    assert_eq!(
        bare["cells"].as_array().unwrap()[1..4],
        [json!("small"), json!(1), Value::Null]
    );
}

/// The Widget definition with a second, deprecated version `v1beta1` (an open spec).
fn add_v1beta1(k: &Kubectl) {
    k.ok(&[
        "patch",
        "crd",
        "widgets.example.com",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/versions/-","value":{"name":"v1beta1","served":true,"storage":false,"deprecated":true,
            "schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}}}}]"#,
    ]);
}

#[tokio::test]
async fn a_second_version_is_served_and_storage_can_move() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    let admin = c.api.client().unwrap();
    k.ok_input(&["create", "-f", "-"], &widget("w1", "{color: red}"));
    add_v1beta1(&k);
    let group = eventually(Duration::from_secs(10), || {
        let r = k.run(&["get", "--raw", "/apis/example.com"]);
        let g: Value = serde_json::from_str(&r.stdout).ok()?;
        (g["versions"].as_array()?.len() == 2).then_some(g)
    })
    .await
    .expect("v1beta1 in discovery");
    // The GA version is preferred.
    assert_eq!(
        group["versions"],
        json!([{"groupVersion": "example.com/v1", "version": "v1"},
               {"groupVersion": "example.com/v1beta1", "version": "v1beta1"}])
    );
    assert_eq!(group["preferredVersion"]["version"], "v1");

    // Read through either version; the deprecated one warns, in Kubernetes' words.
    let warning = "example.com/v1beta1 Widget is deprecated; use example.com/v1 Widget";
    let r = k.run(&["get", "widgets.v1beta1.example.com", "w1", "-o", "json"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("Warning: {warning}")),
        "{}",
        r.stderr
    );
    let old: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(old["apiVersion"], "example.com/v1beta1");
    assert_eq!(old["spec"]["color"], "red");
    let r = admin
        .get(
            c.api
                .url("/apis/example.com/v1beta1/namespaces/default/widgets/w1"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["warning"].to_str().unwrap(),
        format!("299 - \"{warning}\"")
    );
    let r = k.run(&["get", "widgets.v1.example.com", "w1"]);
    assert!(!r.stderr.contains("Warning"), "{}", r.stderr);

    // Written through v1beta1, stored in the storage version v1.
    let r = k.run_with_input(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1beta1\nkind: Widget\nmetadata: {name: b1}\nspec: {color: blue, legacy: true}\n",
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stderr.contains(warning), "{}", r.stderr);
    let stored = etcd_json(&c, "/registry/example.com/widgets/default/b1");
    assert_eq!(stored["apiVersion"], "example.com/v1");
    assert_eq!(stored["spec"], json!({"color": "blue", "legacy": true}));
    let v1 = k.json(&["get", "widgets.v1.example.com", "b1"]);
    assert_eq!(v1["apiVersion"], "example.com/v1");
    // An update through v1beta1 of an object stored as v1.
    k.ok(&[
        "patch",
        "widgets.v1beta1.example.com",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"color":"teal"}}"#,
    ]);
    let stored = etcd_json(&c, "/registry/example.com/widgets/default/w1");
    assert_eq!(stored["apiVersion"], "example.com/v1");
    assert_eq!(stored["spec"]["color"], "teal");

    // Storage moves to v1beta1: both recorded in storedVersions; new writes in v1beta1.
    k.ok(&[
        "patch",
        "crd",
        "widgets.example.com",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/versions/0/storage","value":false},
            {"op":"replace","path":"/spec/versions/1/storage","value":true}]"#,
    ]);
    let crd = k.json(&["get", "crd", "widgets.example.com"]);
    assert_eq!(crd["status"]["storedVersions"], json!(["v1", "v1beta1"]));
    let stored = eventually(Duration::from_secs(10), || {
        let name = format!("c{}", rand_suffix());
        k.ok_input(&["create", "-f", "-"], &widget(&name, "{}"));
        let v = etcd_json(&c, &format!("/registry/example.com/widgets/default/{name}"));
        (v["apiVersion"] == "example.com/v1beta1").then_some(v)
    })
    .await;
    assert!(stored.is_some(), "new objects stored as v1beta1");
    // Objects stored before are read as they were.
    assert_eq!(k.json(&["get", "widget", "w1"])["spec"]["color"], "teal");
    // A version objects may still be stored in cannot leave spec.versions.
    let err = k.fails(&[
        "patch",
        "crd",
        "widgets.example.com",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/versions/0"}]"#,
    ]);
    assert!(
        err.contains(
            r#"status.storedVersions[0]: Invalid value: "v1": must appear in spec.versions"#
        ),
        "{err}"
    );

    // A version no longer served is not found.
    k.ok(&[
        "patch",
        "crd",
        "widgets.example.com",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/versions/0/served","value":false}]"#,
    ]);
    let gone = eventually(Duration::from_secs(10), || {
        let r = k.run(&[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/widgets",
        ]);
        (!r.status.success()).then_some(r.stderr)
    })
    .await
    .expect("v1 no longer served");
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    let r = k.run(&["get", "widgets.v1beta1.example.com", "w1", "-o", "name"]);
    assert!(r.status.success(), "{}", r.stderr);
}

/// A short unique suffix for names made in a retry loop.
fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// `GADGETS` with its names changed by `edit` (a sed-like list of replacements).
fn gadgets_with(edits: &[(&str, &str)]) -> String {
    edits
        .iter()
        .fold(GADGETS.to_string(), |y, (from, to)| y.replace(from, to))
}

#[tokio::test]
async fn bad_definitions_are_refused_and_name_conflicts_reported() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();

    // The name must be plural.group.
    let err = k
        .run_with_input(
            &["create", "-f", "-"],
            &gadgets_with(&[("name: gadgets.example.com", "name: tools.example.com")]),
        )
        .stderr;
    assert!(
        err.contains(
            r#"The CustomResourceDefinition "tools.example.com" is invalid: metadata.name: Invalid value: "tools.example.com": must be spec.names.plural+"."+spec.group"#
        ),
        "{err}"
    );
    // A schema must be structural: every field has a type.
    let yaml = gadgets_with(&[(
        "spec: {type: object, x-kubernetes-preserve-unknown-fields: true}",
        "spec: {properties: {a: {type: string}}}",
    )]);
    let err = k.run_with_input(&["create", "-f", "-"], &yaml).stderr;
    assert!(
        err.contains(
            r#"The CustomResourceDefinition "gadgets.example.com" is invalid: spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"#
        ),
        "{err}"
    );
    let body: Value = serde_json::from_str(&k.ok_input(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        &yaml,
    ))
    .unwrap();
    let (code, _, status) = request(
        &c,
        Method::POST,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        &body,
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value: must not be empty for specified object fields",
               "field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].type"})
    );
    // A conversion webhook must speak a ConversionReview version the server knows.
    let yaml = gadgets_with(&[(
        "  versions:",
        "  conversion:\n    strategy: Webhook\n    webhook:\n      conversionReviewVersions: [v9]\n      clientConfig: {url: \"https://convert.example.com/\"}\n  versions:",
    )]);
    let err = k.run_with_input(&["create", "-f", "-"], &yaml).stderr;
    assert!(
        err.contains(
            r#"spec.conversion.conversionReviewVersions: Invalid value: []string{"v9"}: must include at least one of v1, v1beta1"#
        ),
        "{err}"
    );
    // None of these was stored.
    let out = k.ok(&["get", "crd", "-o", "name"]);
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com"
    );

    // A short name another definition holds: stored, but not accepted nor served.
    k.ok_input(
        &["create", "-f", "-"],
        &gadgets_with(&[("shortNames: [gd]", "shortNames: [gd, wd]")]),
    );
    let crd = eventually(Duration::from_secs(10), || {
        let crd = k.json(&["get", "crd", "gadgets.example.com"]);
        crd["status"]["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
            .then_some(crd)
    })
    .await
    .expect("conditions on gadgets");
    assert_eq!(
        condition(&crd, "NamesAccepted"),
        (
            "False".into(),
            "ShortNamesConflict".into(),
            r#""wd" is already in use"#.into()
        )
    );
    assert_eq!(
        condition(&crd, "Established"),
        (
            "False".into(),
            "NotAccepted".into(),
            "not all names are accepted".into()
        )
    );
    // The names that are free are accepted; the short names wait for all of theirs.
    assert_eq!(crd["status"]["acceptedNames"]["plural"], "gadgets");
    assert!(
        crd["status"]["acceptedNames"].get("shortNames").is_none(),
        "{crd:#}"
    );
    let r = k.run(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.example.com",
        "--timeout=2s",
    ]);
    assert!(!r.status.success());
    let (code, _) = send(
        &c.api.client().unwrap(),
        Method::GET,
        c.api.url("/apis/example.com/v1/gadgets"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    // A kind another definition holds.
    k.ok_input(
        &["create", "-f", "-"],
        &gadgets_with(&[
            ("gadgets.example.com", "things.example.com"),
            ("plural: gadgets", "plural: things"),
            (
                "kind: Gadget",
                "kind: Widget, listKind: ThingList, singular: thing",
            ),
            ("shortNames: [gd]", "shortNames: []"),
        ]),
    );
    let crd = eventually(Duration::from_secs(10), || {
        let crd = k.json(&["get", "crd", "things.example.com"]);
        crd["status"]["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
            .then_some(crd)
    })
    .await
    .expect("conditions on things");
    assert_eq!(
        condition(&crd, "NamesAccepted"),
        (
            "False".into(),
            "KindConflict".into(),
            r#""Widget" is already in use"#.into()
        )
    );

    // Once the holder is gone, the waiting definition gets its names and is served.
    k.ok(&["delete", "crd", "widgets.example.com"]);
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.example.com",
        "--timeout=20s",
    ]);
    let crd = k.json(&["get", "crd", "gadgets.example.com"]);
    assert_eq!(
        condition(&crd, "NamesAccepted"),
        (
            "True".into(),
            "NoConflicts".into(),
            "no conflicts found".into()
        )
    );
    assert_eq!(
        crd["status"]["acceptedNames"]["shortNames"],
        json!(["gd", "wd"])
    );
    let out = k.ok(&["api-resources", "--api-group=example.com", "--no-headers"]);
    assert!(out.contains("gadgets") && out.contains("gd,wd"), "{out}");
}

#[tokio::test]
async fn deleting_a_definition_deletes_its_objects_first() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    k.ok(&["create", "namespace", "team"]);
    k.ok_input(&["create", "-f", "-"], &widget("held", "{}"));
    k.ok_input(&["create", "-n", "team", "-f", "-"], &widget("free", "{}"));
    k.ok(&[
        "patch",
        "widget",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);

    let out = k.ok(&["delete", "crd", "widgets.example.com", "--wait=false"]);
    assert_eq!(
        out.trim(),
        r#"customresourcedefinition.apiextensions.k8s.io "widgets.example.com" deleted"#
    );
    // Every object is deleted; one held by a finalizer holds the definition.
    let crd = eventually(Duration::from_secs(20), || {
        let crd = k.json(&["get", "crd", "widgets.example.com"]);
        let freed = etcd_keys(&c, "/registry/example.com/widgets/team/").is_empty();
        (freed
            && crd["status"]["conditions"]
                .to_string()
                .contains("Terminating"))
        .then_some(crd)
    })
    .await
    .expect("the free object deleted and the definition Terminating");
    assert!(crd["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        condition(&crd, "Terminating"),
        (
            "True".into(),
            "InstanceDeletionInProgress".into(),
            "CustomResource deletion is in progress".into()
        )
    );
    assert_eq!(
        crd["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    let held = k.json(&["get", "widget", "held"]);
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "{held:#}"
    );
    let out = k.ok(&["get", "crd"]);
    assert!(out.contains("widgets.example.com"), "{out}");

    // Its finalizer removed, the object goes, and then the definition.
    k.ok(&[
        "patch",
        "widget",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let err = eventually(Duration::from_secs(20), || {
        let r = k.run(&["get", "crd", "widgets.example.com"]);
        (!r.status.success()).then_some(r.stderr)
    })
    .await
    .expect("the definition deleted");
    assert!(
        err.contains(
            r#"Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io "widgets.example.com" not found"#
        ),
        "{err}"
    );
    assert!(etcd_keys(&c, "/registry/example.com/").is_empty());
    let served = eventually(Duration::from_secs(10), || {
        let r = k.run(&[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/widgets",
        ]);
        (!r.status.success()).then_some(())
    })
    .await;
    assert!(served.is_some(), "no longer served");
    // (A kubectl with no discovery cached from before.)
    let err = Kubectl::new(&c.api.kubeconfig).fails(&["get", "widgets"]);
    assert!(
        err.contains(r#"error: the server doesn't have a resource type "widgets""#),
        "{err}"
    );

    // Defined again, the kind starts empty.
    define(&k, WIDGETS, "widgets.example.com");
    let r = k.run(&["get", "widgets", "-A"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("No resources found"), "{}", r.stderr);
    k.ok_input(&["create", "-f", "-"], &widget("held", "{}"));
    assert!(k.json(&["get", "widget", "held"])["metadata"]
        .get("deletionTimestamp")
        .is_none());
}

#[tokio::test]
async fn the_garbage_collector_deletes_what_a_custom_object_owns() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    let cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--leader-elect=false"],
    )
    .unwrap();
    let owned = |cm_name: &str, owner: &str, uid: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {cm_name}\n  ownerReferences:\n  - {{apiVersion: example.com/v1, kind: Widget, name: {owner}, uid: {uid}}}\ndata: {{a: b}}\n"
        )
    };
    for w in ["w1", "w2"] {
        k.ok_input(&["create", "-f", "-"], &widget(w, "{}"));
        let uid = k.json(&["get", "widget", w])["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        k.ok_input(&["create", "-f", "-"], &owned(&format!("of-{w}"), w, &uid));
    }
    k.ok_input(
        &["create", "-f", "-"],
        &owned("of-nobody", "w9", "4f6c1f5e-0000-4000-8000-000000000009"),
    );

    // Background: the owner goes at once, then what it owned.
    k.ok(&["delete", "widget", "w1"]);
    let gone = |name: &str| !k.run(&["get", "configmap", name]).status.success();
    let collected = eventually(Duration::from_secs(30), || gone("of-w1").then_some(())).await;
    assert!(
        collected.is_some(),
        "of-w1 outlived its owner:\n{}",
        cm.log()
    );
    // An owner that never existed is as good as gone.
    let collected = eventually(Duration::from_secs(30), || gone("of-nobody").then_some(())).await;
    assert!(collected.is_some(), "of-nobody kept:\n{}", cm.log());
    assert!(!gone("of-w2"), "another owner's ConfigMap is kept");

    // Foreground: the owner waits (foregroundDeletion) until what it owns is gone.
    k.ok(&[
        "delete",
        "widget",
        "w2",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let done = eventually(Duration::from_secs(30), || {
        (gone("of-w2") && !k.run(&["get", "widget", "w2"]).status.success()).then_some(())
    })
    .await;
    assert!(done.is_some(), "foreground deletion of w2:\n{}", cm.log());
}

#[tokio::test]
async fn the_python_client_drives_custom_objects() {
    let python = skiff_e2e::kubernetes_venv();
    let c = with_widgets(&[]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/custom_objects.py");
    let run = Command::new(&python)
        .arg(script)
        .arg(&c.api.kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        seen,
        json!({
            "created": "py-one",
            "listed": ["py-one", "py-two"],
            "stale_replace": "Conflict",
            "scale": {"replicas": 2, "selector": "made-by=python"},
            "rule": "Invalid value: replicas must not exceed maxReplicas",
            "gone": "widgets.example.com \"py-two\" not found",
        })
    );
    // What Python wrote, kubectl reads.
    let k = c.kubectl();
    let one = k.json(&["get", "widget", "py-one"]);
    assert_eq!(one["spec"]["replicas"], 5);
    assert_eq!(one["spec"]["color"], "teal");
    assert_eq!(one["status"]["phase"], "Ready");
    assert!(k.fails(&["get", "widget", "py-two"]).contains("not found"));
}

#[tokio::test]
async fn a_user_granted_get_and_list_may_read_widgets_but_not_create_them() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token-0123456789,alice,1001\n").unwrap();
    let c = with_widgets(&[&format!("--token-auth-file={}", tokens.display())]).await;
    let admin = c.kubectl();
    admin.ok_input(&["create", "-f", "-"], &widget("w1", "{}"));
    admin.ok(&[
        "create",
        "role",
        "widget-reader",
        "--verb=get,list",
        "--resource=widgets.example.com",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-reads-widgets",
        "--role=widget-reader",
        "--user=alice",
    ]);
    let ca = std::fs::read(c.api.data_dir.join("ca.crt")).unwrap();
    let kc = skiff_rules::Kubeconfig::single("skiff", &c.api.url(""))
        .with_certificate_authority(&ca)
        .with_token("alice-token-0123456789")
        .with_user_name("alice");
    let path = dir.path().join("alice.kubeconfig");
    std::fs::write(&path, kc.to_yaml().unwrap()).unwrap();
    let alice = Kubectl::new(&path);

    assert!(alice.ok(&["get", "widgets"]).contains("w1"));
    assert_eq!(
        alice.ok(&["get", "widget", "w1", "-o", "name"]).trim(),
        "widget.example.com/w1"
    );
    let r = alice.run_with_input(&["create", "-f", "-"], &widget("w2", "{}"));
    assert!(!r.status.success());
    assert!(
        r.stderr.contains(
            r#"Error from server (Forbidden): error when creating "STDIN": widgets.example.com is forbidden: User "alice" cannot create resource "widgets" in API group "example.com" in the namespace "default""#
        ),
        "{}",
        r.stderr
    );
    let err = alice.fails(&["delete", "widget", "w1"]);
    assert!(
        err.contains(
            r#"widgets.example.com "w1" is forbidden: User "alice" cannot delete resource "widgets" in API group "example.com" in the namespace "default""#
        ),
        "{err}"
    );
    // kubectl reads the status before patching it; the patch itself is refused too.
    let err = alice.fails(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"x"}}"#,
    ]);
    assert!(
        err.contains(
            r#"widgets.example.com "w1" is forbidden: User "alice" cannot get resource "widgets/status" in API group "example.com" in the namespace "default""#
        ),
        "{err}"
    );
    let r = c
        .api
        .anonymous_client()
        .unwrap()
        .patch(c.api.url(&format!("{W}/w1/status")))
        .bearer_auth("alice-token-0123456789")
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"status":{"phase":"x"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "widgets.example.com \"w1\" is forbidden: User \"alice\" cannot patch resource \"widgets/status\" in API group \"example.com\" in the namespace \"default\"",
               "reason": "Forbidden",
               "details": {"name": "w1", "group": "example.com", "kind": "widgets"}, "code": 403})
    );
    let err = alice.fails(&["get", "widgets", "-n", "kube-system"]);
    assert!(
        err.contains(
            r#"widgets.example.com is forbidden: User "alice" cannot list resource "widgets" in API group "example.com" in the namespace "kube-system""#
        ),
        "{err}"
    );
    let err = alice.fails(&["get", "widgets", "--watch", "--request-timeout=5s"]);
    assert!(
        err.contains(
            r#"User "alice" cannot watch resource "widgets" in API group "example.com" in the namespace "default""#
        ),
        "{err}"
    );
    for (verb, want) in [
        ("list", "yes"),
        ("get", "yes"),
        ("create", "no"),
        ("delete", "no"),
    ] {
        let r = admin.run(&["auth", "can-i", verb, "widgets.example.com", "--as=alice"]);
        assert_eq!(r.stdout.trim(), want, "{verb}");
    }
    assert_eq!(
        admin.json(&["get", "widgets"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Server-side apply of `ports` (a YAML flow sequence) to Widget `m` by `manager`.
fn apply_ports(k: &Kubectl, manager: &str, ports: &str, force: bool) -> skiff_e2e::Run {
    let manager = format!("--field-manager={manager}");
    let mut args = vec!["apply", "--server-side", &manager, "-f", "-"];
    if force {
        args.push("--force-conflicts");
    }
    k.run_with_input(
        &args,
        &format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: m}}\nspec: {{ports: {ports}}}\n"
        ),
    )
}

#[tokio::test]
async fn an_apply_conflict_names_the_list_entry_by_its_key() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    assert!(apply_ports(&k, "bob", "[{name: https, port: 443}]", false)
        .status
        .success());
    let r = apply_ports(&k, "alice", "[{name: https, port: 8443}]", false);
    assert!(
        r.stderr.contains(
            r#"error: Apply failed with 1 conflict: conflict with "bob" using example.com/v1: .spec.ports[name="https"].port"#
        ),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn a_list_map_entry_no_manager_holds_any_more_is_removed() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    for (manager, ports, force) in [
        ("alice", "[{name: http, port: 80}]", false),
        ("bob", "[{name: https, port: 443}]", false),
        (
            "alice",
            "[{name: http, port: 80}, {name: https, port: 8443}]",
            true,
        ),
    ] {
        let r = apply_ports(&k, manager, ports, force);
        assert!(r.status.success(), "{manager}: {}", r.stderr);
    }
    // Alice lets go of http, which nobody else holds: it goes. Bob still holds https.
    let r = apply_ports(&k, "alice", "[{name: https, port: 8443}]", false);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(
        k.json(&["get", "widget", "m"])["spec"]["ports"],
        json!([{"name": "https", "port": 8443}])
    );
}

#[tokio::test]
async fn an_unknown_field_is_refused_in_kube_apiservers_words() {
    let c = with_widgets(&[]).await;
    let (code, _, status) = request(
        &c,
        Method::POST,
        &format!("{W}?fieldValidation=Strict"),
        "application/json",
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
                "spec": {"x": 1}}),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(
        status["message"],
        r#"Widget in version "v1" cannot be handled as a Widget: strict decoding error: unknown field "spec.x""#
    );
}

#[tokio::test]
async fn a_list_through_another_version_shows_every_item_in_that_version() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    k.ok_input(&["create", "-f", "-"], &widget("a", "{color: red}"));
    add_v1beta1(&k);
    eventually(Duration::from_secs(10), || {
        k.run(&["get", "widgets.v1beta1.example.com"])
            .status
            .success()
            .then_some(())
    })
    .await
    .expect("v1beta1 served");
    // Written through v1beta1: its managedFields name v1beta1; it is stored as v1.
    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1beta1\nkind: Widget\nmetadata: {name: b}\nspec: {color: blue}\n",
    );
    let admin = c.api.client().unwrap();
    for (version, query) in [
        ("v1beta1", ""),
        ("v1beta1", "?resourceVersion=0"),
        ("v1", ""),
    ] {
        let (_, list) = send(
            &admin,
            Method::GET,
            c.api.url(&format!(
                "/apis/example.com/{version}/namespaces/default/widgets{query}"
            )),
            None,
        )
        .await;
        let got: Vec<(&str, &str)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap(),
                    i["apiVersion"].as_str().unwrap(),
                )
            })
            .collect();
        let want = format!("example.com/{version}");
        assert_eq!(got, [("a", want.as_str()), ("b", want.as_str())], "{query}");
    }
    let watch =
        admin
            .get(c.api.url(
                "/apis/example.com/v1beta1/namespaces/default/widgets?watch=1&resourceVersion=0",
            ))
            .send()
            .await
            .unwrap();
    let mut events = watch_events(watch);
    let got = collect_events(&mut events, 2, Duration::from_secs(10)).await;
    let versions: Vec<&str> = got
        .iter()
        .map(|e| e["object"]["apiVersion"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["example.com/v1beta1", "example.com/v1beta1"]);
}

#[tokio::test]
async fn no_object_is_created_while_its_definition_terminates() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    k.ok_input(&["create", "-f", "-"], &widget("held", "{}"));
    k.ok(&[
        "patch",
        "widget",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    k.ok(&["delete", "crd", "widgets.example.com", "--wait=false"]);
    eventually(Duration::from_secs(20), || {
        let crd = k.json(&["get", "crd", "widgets.example.com"]);
        crd["status"]["conditions"]
            .to_string()
            .contains("Terminating")
            .then_some(())
    })
    .await
    .expect("the definition Terminating");
    let (code, _, status) = request(
        &c,
        Method::POST,
        W,
        "application/json",
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "late"}}),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        r#"widgets.example.com "late" is forbidden: create not allowed while custom resource definition is terminating"#
    );
    // Objects already there can still be changed (their finalizers removed).
    k.ok(&[
        "patch",
        "widget",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

#[tokio::test]
async fn definitions_are_stored_where_kube_apiserver_keeps_them() {
    let c = with_widgets(&[]).await;
    assert_eq!(
        etcd_keys(&c, "/registry/apiextensions.k8s.io/"),
        ["/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"]
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_custom_objects() {
    let c = with_widgets(&[]).await;
    let k = c.kubectl();
    let cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--leader-elect=false"],
    )
    .unwrap();
    k.ok(&["create", "namespace", "team"]);
    k.ok_input(&["create", "-n", "team", "-f", "-"], &widget("w1", "{}"));
    k.ok(&["delete", "namespace", "team", "--wait=false"]);
    let gone = eventually(Duration::from_secs(30), || {
        (!k.run(&["get", "namespace", "team"]).status.success()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "namespace team kept:\n{}", cm.log());
    assert_eq!(
        etcd_keys(&c, "/registry/example.com/"),
        Vec::<String>::new(),
        "the namespace's custom objects outlive it"
    );
}
