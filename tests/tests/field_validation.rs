//! Field validation end to end, against a real etcd and a real skiff-apiserver: unknown and
//! duplicate fields of request bodies (JSON and YAML), at the top level and inside a
//! Deployment's pod template, under each `fieldValidation` level, on every write path
//! (create, update, the three patch types, server-side apply; REST and gRPC), for built-in
//! kinds and custom resources — with raw HTTPS requests, the real kubectl and the gRPC stubs,
//! each answer in kube-apiserver's words.

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde_json::Value;
use skiff_client::proto::resources_client::ResourcesClient;
use skiff_client::Config;
use skiff_e2e::{Cluster, Kubectl};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// A Deployment named `name` (after a first `name` the body gives as well) that repeats
/// fields and names fields the kind lacks, at the top level and in its pod template.
fn faulty(name: &str) -> String {
    format!(
        r#"{{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": {{"name": "first", "name": "{name}", "labels": {{"app": "web"}}}},
  "spec": {{
    "replicas": 1,
    "paused": true,
    "paused": false,
    "selector": {{"matchLabels": {{"app": "web"}}}},
    "template": {{
      "metadata": {{"labels": {{"app": "web", "app": "web"}}, "annotationz": {{"a": "b"}}}},
      "spec": {{"containers": [{{"name": "c", "image": "busybox",
        "imagePullPolicy": "Always", "imagePullPolicy": "Never", "foo": 1}}]}}
    }}
  }},
  "bogus": true
}}"#
    )
}

/// What kube-apiserver finds in [`faulty`], in the order the body names it.
const FAULTS: [&str; 7] = [
    r#"duplicate field "metadata.name""#,
    r#"duplicate field "spec.paused""#,
    r#"duplicate field "spec.template.metadata.labels.app""#,
    r#"unknown field "spec.template.metadata.annotationz""#,
    r#"duplicate field "spec.template.spec.containers[0].imagePullPolicy""#,
    r#"unknown field "spec.template.spec.containers[0].foo""#,
    r#"unknown field "bogus""#,
];

/// The same faults in a YAML body; the second `name` is `yaml`.
const FAULTY_YAML: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: from-yaml
  name: yaml
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: c
        image: busybox
        foo: 1
        imagePullPolicy: Always
        imagePullPolicy: Never
  bogus: 1
";

/// A server-side apply configuration of Deployment `applied` that names `replicas` twice
/// (lines 6 and 7), with `extra` added to its container.
fn apply_config(extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: applied
spec:
  replicas: 1
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: c
        image: busybox
{extra}"
    )
}

/// One request's answer: status code, `Warning` headers' texts, body.
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

/// The texts of `Warning: 299 - "text"` headers, unquoted.
fn warning_texts(h: &HeaderMap) -> Vec<String> {
    h.get_all("warning")
        .iter()
        .map(|v| {
            let v = String::from_utf8_lossy(v.as_bytes()).to_string();
            let quoted = v.strip_prefix("299 - ").expect("a 299 warning");
            quoted[1..quoted.len() - 1]
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        })
        .collect()
}

async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    content_type: &str,
    body: String,
) -> Answer {
    let r = http
        .request(method, url)
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("request sent");
    let code = r.status().as_u16();
    let warnings = warning_texts(r.headers());
    let text = r.text().await.unwrap_or_default();
    Answer {
        code,
        warnings,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

fn refusal(kind: &str, faults: &[&str]) -> String {
    format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {}",
        faults.join(", ")
    )
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn create_and_update_report_duplicate_and_unknown_fields_at_each_level() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    let url = |q: &str| c.api.url(&format!("{DEPLOYMENTS}{q}"));
    let json = "application/json";
    let post = |q: &str, body: String| request(&http, reqwest::Method::POST, url(q), json, body);

    // Strict: 400, every problem in one message in the body's order, nothing stored.
    let a = post("?fieldValidation=Strict", faulty("web")).await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(a.body["reason"], "BadRequest");
    assert_eq!(a.body["message"], refusal("Deployment", &FAULTS));
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    for name in ["web", "first"] {
        assert_eq!(get(&http, url(&format!("/{name}"))).await.0, 404, "{name}");
    }

    // Warn (also the default): stored, the last of two values winning, one warning each.
    let a = post("", faulty("web")).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.warnings, FAULTS);
    let (code, web) = get(&http, url("/web")).await;
    assert_eq!(code, 200);
    assert_eq!(web["spec"]["paused"], false);
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "Never");
    assert!(
        container.get("foo").is_none() && web.get("bogus").is_none(),
        "{web}"
    );
    let a = post("?fieldValidation=Warn", faulty("web-warn")).await;
    assert_eq!(
        (a.code, a.warnings.len()),
        (201, FAULTS.len()),
        "{}",
        a.body
    );

    // Ignore: stored, not a word.
    let a = post("?fieldValidation=Ignore", faulty("web-ignored")).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);

    // Update: the same rules; a refused update leaves the object as it was.
    let rv = web["metadata"]["resourceVersion"].clone();
    let put = |q: &str, body: String| {
        request(
            &http,
            reqwest::Method::PUT,
            url(&format!("/web{q}")),
            json,
            body,
        )
    };
    let changed = faulty("web").replace(r#""replicas": 1"#, r#""replicas": 3"#);
    let a = put("?fieldValidation=Strict", changed.clone()).await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(a.body["message"], refusal("Deployment", &FAULTS));
    let (_, now) = get(&http, url("/web")).await;
    assert_eq!(
        (
            &now["spec"]["replicas"],
            &now["metadata"]["resourceVersion"]
        ),
        (&Value::from(1), &rv)
    );
    let a = put("", changed).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.warnings, FAULTS);
    assert_eq!(a.body["spec"]["replicas"], 3);

    // A YAML body: yaml.v2's words for repeated keys (by line), then the unknown fields.
    let yaml = |q: &str| {
        request(
            &http,
            reqwest::Method::POST,
            url(q),
            "application/yaml",
            FAULTY_YAML.to_string(),
        )
    };
    let a = yaml("?fieldValidation=Strict").await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         yaml: unmarshal errors:\n  line 5: key \"name\" already set in map\n  \
         line 21: key \"imagePullPolicy\" already set in map, unknown field \"spec.bogus\", \
         unknown field \"spec.template.spec.containers[0].foo\""
    );
    assert_eq!(get(&http, url("/yaml")).await.0, 404);
    let a = yaml("").await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.warnings,
        [
            r#"line 5: key "name" already set in map"#,
            r#"line 21: key "imagePullPolicy" already set in map"#,
            r#"unknown field "spec.bogus""#,
            r#"unknown field "spec.template.spec.containers[0].foo""#,
        ]
    );
    assert_eq!(a.body["metadata"]["name"], "yaml");
}

#[tokio::test]
async fn patches_report_the_patch_duplicates_and_the_patched_unknown_fields() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    let url = |q: &str| c.api.url(&format!("{DEPLOYMENTS}{q}"));
    let valid = faulty("web")
        .replace(r#""name": "first", "#, "")
        .replace(r#""paused": true,"#, "")
        .replace(r#""app": "web", "app": "web""#, r#""app": "web""#)
        .replace(r#", "annotationz": {"a": "b"}"#, "")
        .replace(r#""imagePullPolicy": "Always", "#, "")
        .replace(r#", "foo": 1"#, "")
        .replace(",\n  \"bogus\": true", "");
    let a = request(
        &http,
        reqwest::Method::POST,
        url(""),
        "application/json",
        valid,
    )
    .await;
    assert_eq!(
        (a.code, a.warnings.len()),
        (201, 0),
        "{} {:?}",
        a.body,
        a.warnings
    );
    let rv = a.body["metadata"]["resourceVersion"].clone();
    let patch = |q: &str, ct: &'static str, body: &str| {
        request(
            &http,
            reqwest::Method::PATCH,
            url(&format!("/web{q}")),
            ct,
            body.to_string(),
        )
    };
    let unchanged = || async {
        let (_, now) = get(&http, url("/web")).await;
        assert_eq!(now["metadata"]["resourceVersion"], rv, "{now}");
    };

    // A merge patch: its own duplicates, then the unknown fields of the patched object; a
    // refusal is kube-apiserver's invalid "patch", showing the patched object.
    let merge = "application/merge-patch+json";
    let body = r#"{"spec": {"paused": true, "paused": false, "foo": 1}}"#;
    let a = patch("?fieldValidation=Strict", merge, body).await;
    assert_eq!(
        (a.code, &a.body["reason"]),
        (422, &Value::from("Invalid")),
        "{}",
        a.body
    );
    let message = a.body["message"].as_str().unwrap();
    assert!(
        message
            .starts_with(r#" "" is invalid: patch: Invalid value: "{\"apiVersion\":\"apps/v1\","#),
        "{message}"
    );
    assert!(
        message.ends_with(
            r#"": strict decoding error: duplicate field "spec.paused", unknown field "spec.foo""#
        ),
        "{message}"
    );
    assert_eq!(a.body["details"]["causes"][0]["field"], "patch");
    assert_eq!(
        a.body["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );
    unchanged().await;
    let a = patch("", merge, body).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(
        a.warnings,
        [
            r#"duplicate field "spec.paused""#,
            r#"unknown field "spec.foo""#
        ]
    );
    assert_eq!(a.body["spec"]["paused"], false);

    // A strategic merge patch: the refusal shows the patch as Go prints a map.
    let rv = {
        let (_, now) = get(&http, url("/web")).await;
        now["metadata"]["resourceVersion"].clone()
    };
    let smp = "application/strategic-merge-patch+json";
    let body = r#"{"spec": {"template": {"spec": {"containers": [
        {"name": "c", "foo": 1, "image": "busybox", "image": "nginx"}]}}}}"#;
    let a = patch("?fieldValidation=Strict", smp, body).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.body["message"],
        r#" "" is invalid: patch: Invalid value: "map[spec:map[template:map[spec:map[containers:[map[foo:1 image:nginx name:c]]]]]]": strict decoding error: duplicate field "spec.template.spec.containers[0].image", unknown field "spec.template.spec.containers[0].foo""#
    );
    let (_, now) = get(&http, url("/web")).await;
    assert_eq!(now["metadata"]["resourceVersion"], rv);
    let a = patch("?fieldValidation=Ignore", smp, body).await;
    assert_eq!((a.code, a.warnings.len()), (200, 0), "{}", a.body);
    assert_eq!(
        a.body["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );

    // A JSON patch: its operations are read strictly too.
    let body = r#"[{"op": "add", "path": "/spec/minReadySeconds", "value": 5, "extra": 1},
                   {"op": "add", "path": "/spec/x", "path": "/spec/foo", "value": 1}]"#;
    let a = patch(
        "?fieldValidation=Strict",
        "application/json-patch+json",
        body,
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().ends_with(
            r#"": strict decoding error: json patch unknown field "[0].extra", json patch duplicate field "[1].path", unknown field "spec.foo""#
        ),
        "{}",
        a.body["message"]
    );
    let a = patch("?fieldValidation=Warn", "application/json-patch+json", body).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(
        a.warnings,
        [
            r#"json patch unknown field "[0].extra""#,
            r#"json patch duplicate field "[1].path""#,
            r#"unknown field "spec.foo""#
        ]
    );
    assert_eq!(a.body["spec"]["minReadySeconds"], 5);
}

#[tokio::test]
async fn server_side_apply_reports_repeated_keys_as_yaml_and_unknown_fields_as_undeclared() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    let apply = |q: &str, body: String| {
        request(
            &http,
            reqwest::Method::PATCH,
            c.api
                .url(&format!("{DEPLOYMENTS}/applied?fieldManager=test{q}")),
            "application/apply-patch+yaml",
            body,
        )
    };
    let url = c.api.url(&format!("{DEPLOYMENTS}/applied"));

    let a = apply("&fieldValidation=Strict", apply_config("")).await;
    assert_eq!(
        (a.code, &a.body["reason"]),
        (400, &Value::from("BadRequest")),
        "{}",
        a.body
    );
    assert_eq!(
        a.body["message"],
        "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  \
         line 7: key \"replicas\" already set in map"
    );
    assert_eq!(get(&http, url.clone()).await.0, 404);

    // A field the type lacks cannot be applied at all, whatever the validation: structured
    // merge diff's words, and kube-apiserver's 500 with no reason.
    for q in ["&fieldValidation=Strict", "&fieldValidation=Ignore", ""] {
        let a = apply(q, apply_config("        foo: 1\n")).await;
        assert_eq!(a.code, 500, "{q}: {}", a.body);
        assert_eq!(
            a.body["message"],
            "failed to create typed patch object (/applied; apps/v1, Kind=Deployment): \
             .spec.template.spec.containers[name=\"c\"].foo: field not declared in schema"
        );
        assert!(a.body.get("reason").is_none(), "{}", a.body);
    }
    assert_eq!(get(&http, url.clone()).await.0, 404);

    let a = apply("", apply_config("")).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.warnings, [r#"line 7: key "replicas" already set in map"#]);
    assert_eq!(a.body["spec"]["replicas"], 2);
    let a = apply("&fieldValidation=Ignore", apply_config("")).await;
    assert_eq!((a.code, a.warnings.len()), (200, 0), "{}", a.body);
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A Deployment whose pod template's container names a field the kind lacks.
const DEPLOYMENT_YAML: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: c
        image: busybox
        foo: 1
";

#[tokio::test]
async fn kubectl_validates_strictly_by_default_warns_or_ignores_on_request() {
    let c = Cluster::start().await.unwrap();
    let k: Kubectl = c.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "web.yaml", DEPLOYMENT_YAML);

    let r = k.run(&["create", "-f", &file]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "Error from server (BadRequest): error when creating \"{file}\": Deployment in \
             version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown \
             field \"spec.template.spec.containers[0].foo\""
        )
    );
    assert!(k.fails(&["get", "deployment", "web"]).contains("not found"));

    let r = k.run(&["create", "--validate=warn", "-f", &file]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        r#"Warning: unknown field "spec.template.spec.containers[0].foo""#
    );
    assert_eq!(r.stdout.trim(), "deployment.apps/web created");
    k.ok(&["delete", "deployment", "web"]);
    // Server-side apply cannot take the field at all.
    let r = k.run(&["apply", "--server-side", "-f", &file]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert_eq!(
        r.stderr.trim(),
        "Error from server: failed to create typed patch object (default/web; apps/v1, \
         Kind=Deployment): .spec.template.spec.containers[name=\"c\"].foo: field not declared \
         in schema"
    );
    let r = k.run(&["create", "--validate=false", "-f", &file]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stderr.trim(), "");

    // kubectl decodes a file before it sends it, keeping the last of two equal keys; a body
    // sent as it is (`--raw`) reaches the server with both.
    let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "a", "name": "b"}, "data": {"k": "1"}}"#;
    let cm_file = write(&dir, "cm.json", cm);
    let r = k.run(&["create", "-f", &cm_file]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "configmap/b created");
    k.ok(&["delete", "configmap", "b"]);
    let raw = "/api/v1/namespaces/default/configmaps";
    let r = k.run(&[
        "create",
        "--raw",
        &format!("{raw}?fieldValidation=Strict"),
        "-f",
        &cm_file,
    ]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert_eq!(
        r.stderr.trim(),
        "Error from server (BadRequest): ConfigMap in version \"v1\" cannot be handled as a \
         ConfigMap: strict decoding error: duplicate field \"metadata.name\""
    );
    assert!(k.fails(&["get", "configmap", "b"]).contains("not found"));
    let r = k.run(&["create", "--raw", raw, "-f", &cm_file]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        r#"Warning: duplicate field "metadata.name""#
    );
    assert_eq!(
        k.json(&["get", "configmap", "b", "-o", "json"])["data"]["k"],
        "1"
    );
}

#[tokio::test]
async fn the_grpc_door_and_custom_resources_report_duplicates_too() {
    let c = Cluster::start().await.unwrap();
    let cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let (cert, key) = cfg.identity.unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cfg.ca_pem.unwrap()))
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let mut grpc = ResourcesClient::new(
        tonic::transport::Channel::from_shared(c.api.url(""))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    use skiff_client::proto::{self as pb, FieldValidation as Fv};
    let create = |fv: Fv| pb::CreateRequest {
        resource: Some(pb::ResourceRef {
            group: String::new(),
            version: "v1".into(),
            resource: "configmaps".into(),
            namespace: "default".into(),
        }),
        object: Some(pb::Object {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            json: br#"{"metadata": {"name": "a", "name": "g"}, "data": {"k": "1"}, "bogus": 1}"#
                .to_vec()
                .into(),
        }),
        options: Some(pb::WriteOptions {
            field_validation: fv as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = grpc.create(create(Fv::Strict)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.message(),
        refusal(
            "ConfigMap",
            &[
                r#"duplicate field "metadata.name""#,
                r#"unknown field "bogus""#
            ]
        )
    );
    let w = grpc
        .create(create(Fv::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.warnings,
        [
            r#"duplicate field "metadata.name""#,
            r#"unknown field "bogus""#
        ]
    );

    // A custom resource: duplicates as it is read, then what the schema prunes.
    let k = c.kubectl();
    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              ports:
                type: array
                items:
                  type: object
                  properties:
                    port: {type: integer}
",
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.example.com",
        "--timeout=30s",
    ]);
    let http = c.api.client().unwrap();
    let gadgets = c.api.url("/apis/example.com/v1/namespaces/default/gadgets");
    let body = r#"{"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "spec": {"size": 1, "size": 2, "ports": [{"port": 1, "port": 2, "extra": 1}], "other": 1}}"#;
    let a = request(
        &http,
        reqwest::Method::POST,
        format!("{gadgets}?fieldValidation=Strict"),
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "Gadget in version \"v1\" cannot be handled as a Gadget: strict decoding error: \
         duplicate field \"spec.size\", duplicate field \"spec.ports[0].port\", \
         unknown field \"spec.other\", unknown field \"spec.ports[0].extra\""
    );
    let a = request(
        &http,
        reqwest::Method::POST,
        gadgets.clone(),
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.warnings.len(), 4, "{:?}", a.warnings);
    assert_eq!(a.body["spec"]["size"], 2);
}

#[tokio::test]
async fn subresource_creates_and_reviews_are_decoded_strictly_too() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    let json = "application/json";
    let pods = "/api/v1/namespaces/default/pods";
    let post = |path: String, body: &str| {
        request(
            &http,
            reqwest::Method::POST,
            c.api.url(&path),
            json,
            body.to_string(),
        )
    };
    for name in ["victim", "bound"] {
        let pod = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
                "spec": {{"containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
        );
        let a = post(pods.to_string(), &pod).await;
        assert_eq!(a.code, 201, "{}", a.body);
    }

    // An eviction: refused under Strict, the pod left alone; carried out under Warn.
    let eviction = r#"{"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "victim", "name": "victim"}, "deleteOptionz": {}}"#;
    let evict = |q: &str| post(format!("{pods}/victim/eviction{q}"), eviction);
    let a = evict("?fieldValidation=Strict").await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(
        a.body["message"],
        refusal(
            "Eviction",
            &[
                r#"duplicate field "metadata.name""#,
                r#"unknown field "deleteOptionz""#
            ]
        )
    );
    assert_eq!(
        get(&http, c.api.url(&format!("{pods}/victim"))).await.0,
        200
    );
    let a = evict("").await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.warnings,
        [
            r#"duplicate field "metadata.name""#,
            r#"unknown field "deleteOptionz""#
        ]
    );

    // A binding through the legacy `bindings` resource.
    let binding = r#"{"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"},
        "target": {"kind": "Node", "name": "n1", "name": "n2", "nodeName": "n3"}}"#;
    let bind = |q: &str| post(format!("/api/v1/namespaces/default/bindings{q}"), binding);
    let faults = [
        r#"duplicate field "target.name""#,
        r#"unknown field "target.nodeName""#,
    ];
    let a = bind("?fieldValidation=Strict").await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(a.body["message"], refusal("Binding", &faults));
    let (_, pod) = get(&http, c.api.url(&format!("{pods}/bound"))).await;
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    let a = bind("").await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.warnings, faults);
    let (_, pod) = get(&http, c.api.url(&format!("{pods}/bound"))).await;
    assert_eq!(pod["spec"]["nodeName"], "n2");

    // A review, never stored, is read as strictly as anything else.
    let review = r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "verb": "list", "resourcee": "pods"}}}"#;
    let ask = |q: &str| {
        post(
            format!("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews{q}"),
            review,
        )
    };
    let faults = [
        r#"duplicate field "spec.resourceAttributes.verb""#,
        r#"unknown field "spec.resourceAttributes.resourcee""#,
    ];
    let a = ask("?fieldValidation=Strict").await;
    assert_eq!(a.code, 400, "{}", a.body);
    assert_eq!(
        a.body["message"],
        refusal("SelfSubjectAccessReview", &faults)
    );
    let a = ask("").await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(a.warnings, faults);
    assert_eq!(a.body["spec"]["resourceAttributes"]["verb"], "list");
    let a = ask("?fieldValidation=Ignore").await;
    assert_eq!((a.code, a.warnings.len()), (201, 0), "{}", a.body);
}
