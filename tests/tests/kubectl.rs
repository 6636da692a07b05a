//! The real kubectl against skiff-apiserver: every command a user reaches for, with the output
//! a Kubernetes user expects.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::Cluster;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/skiff/httpd:1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn version_api_resources_versions_and_explain() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let v = k.ok(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
    assert!(v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap()
        .contains("skiff"));

    let res = k.ok(&["api-resources"]);
    let header = res.lines().next().unwrap();
    assert!(
        header.contains("SHORTNAMES") && header.contains("NAMESPACED"),
        "{header}"
    );
    for (name, short) in [
        ("pods", "po"),
        ("deployments", "deploy"),
        ("services", "svc"),
        ("cronjobs", "cj"),
    ] {
        assert!(
            res.lines()
                .any(|l| l.starts_with(name) && l.contains(short)),
            "{name} missing:\n{res}"
        );
    }
    let versions = k.ok(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "coordination.k8s.io/v1",
        "discovery.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} missing:\n{versions}"
        );
    }
    let explain = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("KIND:") && explain.contains("Pod"),
        "{explain}"
    );
    assert!(
        explain.contains("FIELD: containers <[]Container>"),
        "{explain}"
    );
    assert!(explain.contains("image\t<string>"), "{explain}");
    let explain = k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explain.contains("replicas\t<integer>") || explain.contains("FIELD: replicas <integer>"),
        "{explain}"
    );
}

#[tokio::test]
async fn create_commands_and_get_output_formats() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    assert_eq!(
        k.ok(&["create", "namespace", "team"]).trim(),
        "namespace/team created"
    );
    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "team",
        "--from-literal=password=s3cret",
    ]);
    k.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team",
        "--image=registry.local/skiff/httpd:1",
        "--replicas=3",
    ]);
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "team",
        "--tcp=80:8080",
    ]);

    // Table output, with the columns kubectl users know.
    let out = k.ok(&["get", "deploy", "-n", "team"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], &["web", "0/3", "0", "0"]);
    let wide = k.ok(&["get", "deploy", "web", "-n", "team", "-o", "wide"]);
    assert!(
        wide.contains("CONTAINERS")
            && wide.contains("registry.local/skiff/httpd:1")
            && wide.contains("app=web"),
        "{wide}"
    );

    let cm = k.ok(&["get", "cm", "cfg", "-n", "team"]);
    assert!(
        cm.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()[..2]
            == ["cfg", "2"],
        "{cm}"
    );
    let secret = k.json(&["get", "secret", "pw", "-n", "team"]);
    assert_eq!(secret["data"]["password"], "czNjcmV0");
    assert_eq!(secret["type"], "Opaque");
    let svc = k.ok(&["get", "svc", "web", "-n", "team"]);
    let row: Vec<&str> = svc.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[1], "ClusterIP");
    assert!(row[2].starts_with("10."), "{svc}");
    assert_eq!(row[4], "80/TCP");

    // -o yaml, jsonpath, name.
    let y = k.ok(&["get", "deploy", "web", "-n", "team", "-o", "yaml"]);
    assert!(
        y.contains("kind: Deployment") && y.contains("replicas: 3"),
        "{y}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "registry.local/skiff/httpd:1"
    );
    let names = k.ok(&["get", "cm,secret,deploy,svc", "-n", "team", "-o", "name"]);
    for n in [
        "configmap/cfg",
        "secret/pw",
        "deployment.apps/web",
        "service/web",
    ] {
        assert!(names.lines().any(|l| l == n), "{n} missing in:\n{names}");
    }
    // -A shows the NAMESPACE column and the kubernetes service.
    let all = k.ok(&["get", "svc", "-A"]);
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );
    assert!(all.contains("kubernetes") && all.contains("team"), "{all}");
    // describe.
    let d = k.ok(&["describe", "deploy", "web", "-n", "team"]);
    assert!(
        d.contains("Name:")
            && d.contains("web")
            && d.contains("Replicas:")
            && d.contains("3 desired"),
        "{d}"
    );
    // Errors read as kubectl users know them.
    let e = k.fails(&["get", "deploy", "nope", "-n", "team"]);
    assert!(
        e.contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{e}"
    );
    let e = k.fails(&["create", "namespace", "team"]);
    assert!(e.contains("AlreadyExists"), "{e}");
}

#[tokio::test]
async fn pods_columns_selectors_and_field_selectors() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    for (name, tier) in [("a", "fe"), ("b", "be"), ("c", "fe")] {
        k.ok(&[
            "run",
            name,
            "--image=registry.local/skiff/busybox:1",
            "--labels",
            &format!("tier={tier}"),
            "--",
            "sleep",
            "3600",
        ]);
    }
    let out = k.ok(&["get", "pods"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], &["a", "0/1", "Pending", "0"]);
    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("IP")
            && wide.lines().next().unwrap().contains("NODE"),
        "{wide}"
    );

    let fe = k.ok(&["get", "pods", "-l", "tier=fe", "-o", "name"]);
    assert_eq!(fe.lines().collect::<Vec<_>>(), vec!["pod/a", "pod/c"]);
    let notfe = k.ok(&["get", "pods", "-l", "tier!=fe", "-o", "name"]);
    assert_eq!(notfe.trim(), "pod/b");
    let byname = k.ok(&[
        "get",
        "pods",
        "--field-selector",
        "metadata.name=b",
        "-o",
        "name",
    ]);
    assert_eq!(byname.trim(), "pod/b");
    let pending = k.ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ]);
    assert_eq!(pending.lines().count(), 3);
    let e = k.fails(&["get", "pods", "--field-selector", "spec.bogus=x"]);
    assert!(e.contains("field label not supported"), "{e}");

    // Nodes print their status from the Ready condition, roles from labels.
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"node-role.kubernetes.io/worker":""}},
        "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.33.0-skiff","machineID":"","systemUUID":"","bootID":"","kernelVersion":"6.1","osImage":"Debian GNU/Linux 12","containerRuntimeVersion":"containerd://1.6.20","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"},
        "addresses":[{"type":"InternalIP","address":"10.0.0.5"}]}}"#;
    k.ok_input(&["create", "-f", "-"], node);
    let out = k.ok(&["get", "nodes", "-o", "wide"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..5], &["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4], row[5]),
        ("n1", "Ready", "worker", "v1.33.0-skiff", "10.0.0.5"),
        "{out}"
    );
    k.ok(&["cordon", "n1"]);
    assert!(k
        .ok(&["get", "node", "n1"])
        .contains("Ready,SchedulingDisabled"));
}

#[tokio::test]
async fn apply_client_and_server_side_with_multi_document_files() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "app.yaml", APP);
    let out = k.ok(&["apply", "-f", &f]);
    for l in [
        "namespace/shop created",
        "configmap/settings created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(out.contains(l), "{l} missing in:\n{out}");
    }
    let out = k.ok(&["apply", "-f", &f]);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");

    // A changed file re-applies; a container removed from the file is removed.
    let changed = APP
        .replace("replicas: 2", "replicas: 5")
        .replace("color: blue", "color: green");
    let f2 = write(&dir, "app2.yaml", &changed);
    let out = k.ok(&["apply", "-f", &f2]);
    assert!(
        out.contains("deployment.apps/web configured")
            && out.contains("configmap/settings configured"),
        "{out}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "green"
    );

    let two = changed.replace(
        "        ports:\n        - containerPort: 8080\n",
        "        ports:\n        - containerPort: 8080\n      - name: side\n        image: registry.local/skiff/busybox:1\n",
    );
    let f3 = write(&dir, "app3.yaml", &two);
    k.ok(&["apply", "-f", &f3]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "web side"
    );
    k.ok(&["apply", "-f", &f2]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "web"
    );

    // Server-side apply: its own field manager, conflicts unless forced.
    let ssa = APP
        .replace("name: shop\n---", "name: shop2\n---")
        .replace("namespace: shop", "namespace: shop2");
    let f4 = write(&dir, "ssa.yaml", &ssa);
    let out = k.ok(&["apply", "--server-side", "-f", &f4]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    k.ok(&["scale", "deploy", "web", "-n", "shop2", "--replicas=7"]);
    let bumped = ssa.replace("replicas: 2", "replicas: 3");
    let f5 = write(&dir, "ssa2.yaml", &bumped);
    let e = k.fails(&["apply", "--server-side", "-f", &f5]);
    assert!(
        e.contains("conflict") && e.contains(".spec.replicas"),
        "{e}"
    );
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &f5]);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop2",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );

    // Typos are refused (kubectl asks for strict server-side validation).
    let typo = APP.replace("replicas: 2", "replicas: 2\n  replicaz: 3");
    let f6 = write(&dir, "typo.yaml", &typo);
    let e = k.fails(&["apply", "-f", &f6]);
    assert!(e.contains("unknown field \"spec.replicaz\""), "{e}");
}

#[tokio::test]
async fn create_replace_edit_patch_label_annotate_scale() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "app.yaml", APP);
    k.ok(&["create", "-f", &f]);
    let e = k.fails(&["create", "-f", &f]);
    assert!(e.contains("AlreadyExists"), "{e}");

    // replace with a changed file.
    let changed = APP.replace("color: blue", "color: red");
    let f2 = write(&dir, "app2.yaml", &changed);
    let out = k.ok(&["replace", "-f", &f2]);
    assert!(out.contains("configmap/settings replaced"), "{out}");
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "red"
    );

    // edit through an EDITOR script.
    let editor = write(
        &dir,
        "editor.sh",
        "#!/bin/sh\nsed -i 's/color: red/color: purple/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = k.run_env(
        &["edit", "cm", "settings", "-n", "shop"],
        &[("EDITOR", &editor), ("KUBE_EDITOR", &editor)],
    );
    assert!(r.status.success(), "{}\n{}", r.stderr, r.stdout);
    assert!(
        r.stdout.contains("configmap/settings edited"),
        "{}",
        r.stdout
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "purple"
    );

    // patch: strategic (default), merge, json.
    k.ok(&["patch", "deploy", "web", "-n", "shop", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.local/skiff/httpd:2"}]}}}}"#]);
    assert_eq!(k.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]), "registry.local/skiff/httpd:2 8080");
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/patched","value":"yes"}]"#,
    ]);
    let d = k.json(&["get", "deploy", "web", "-n", "shop"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["labels"]["patched"], "yes");
    let e = k.fails(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":-3}}"#,
    ]);
    assert!(e.contains("spec.replicas") && e.contains("Invalid"), "{e}");

    // label / annotate, overwrite and removal.
    k.ok(&["label", "deploy", "web", "-n", "shop", "tier=fe"]);
    let e = k.fails(&["label", "deploy", "web", "-n", "shop", "tier=be"]);
    assert!(e.contains("already has a value"), "{e}");
    k.ok(&[
        "label",
        "deploy",
        "web",
        "-n",
        "shop",
        "tier=be",
        "--overwrite",
    ]);
    k.ok(&["annotate", "deploy", "web", "-n", "shop", "owner=ops"]);
    k.ok(&["label", "deploy", "web", "-n", "shop", "patched-"]);
    let d = k.json(&["get", "deploy", "web", "-n", "shop"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "be");
    assert!(d["metadata"]["labels"].get("patched").is_none());
    assert_eq!(d["metadata"]["annotations"]["owner"], "ops");

    // scale.
    assert_eq!(
        k.ok(&["scale", "deploy", "web", "-n", "shop", "--replicas=9"])
            .trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "9"
    );
}

#[tokio::test]
async fn delete_forms_wait_and_watch() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    for n in 0..4 {
        k.ok(&[
            "create",
            "configmap",
            &format!("cm{n}"),
            &format!("--from-literal=n={n}"),
        ]);
    }
    k.ok(&["label", "cm", "cm0", "cm1", "group=x"]);

    // get -w sees a change as it happens.
    let mut watch = k.spawn(&["get", "cm", "-w", "-o", "name"]);
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&["create", "configmap", "late"]);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline
        && !seen.iter().any(|l: &String| l.contains("configmap/late"))
    {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    // The initial list, then the object created after the watch began.
    assert_eq!(
        seen.first().map(String::as_str),
        Some("configmap/cm0"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("configmap/late"),
        "{seen:?}"
    );

    // delete by label, by name with --wait, -f, --all.
    let out = k.ok(&["delete", "cm", "-l", "group=x"]);
    assert!(
        out.contains("configmap \"cm0\" deleted") && out.contains("configmap \"cm1\" deleted"),
        "{out}"
    );
    k.ok(&["delete", "cm", "cm2", "--wait=true"]);
    assert!(k.fails(&["get", "cm", "cm2"]).contains("NotFound"));
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fromfile\n",
    );
    k.ok(&["create", "-f", &f]);
    assert!(k
        .ok(&["delete", "-f", &f])
        .contains("configmap \"fromfile\" deleted"));
    let out = k.ok(&["delete", "cm", "--all"]);
    assert!(
        out.contains("\"cm3\" deleted") && out.contains("\"late\" deleted"),
        "{out}"
    );
    assert_eq!(k.ok(&["get", "cm", "-o", "name"]).trim(), "");

    // A pod on a node deletes gracefully; --grace-period=0 --force removes it at once.
    let dir2 = tempfile::tempdir().unwrap();
    let pod = write(&dir2, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: x\n");
    k.ok(&["create", "-f", &pod]);
    k.ok(&["delete", "pod", "p", "--wait=false"]);
    let st = k.ok(&["get", "pod", "p"]);
    assert!(st.contains("Terminating"), "{st}");
    let r = k.run(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(k.fails(&["get", "pod", "p"]).contains("NotFound"));

    // wait --for=jsonpath.
    k.ok(&["create", "deployment", "w", "--image=x:1", "--replicas=1"]);
    let waiter = k.spawn(&[
        "wait",
        "deploy/w",
        "--for=jsonpath={.spec.replicas}=3",
        "--timeout=20s",
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&["scale", "deploy", "w", "--replicas=3"]);
    let out = waiter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/w condition met"));
}

#[tokio::test]
async fn apply_updates_a_secret_written_with_string_data() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let secret = |v: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                           "stringData": {"password": v}})
        .to_string()
    };
    k.ok_input(&["apply", "-f", "-"], &secret("first"));
    // stringData is write-only (folded into data): applying it again is no unknown field.
    k.ok_input(&["apply", "-f", "-"], &secret("second"));
    let data = k.ok(&["get", "secret", "s", "-o", "jsonpath={.data.password}"]);
    assert_eq!(data, "c2Vjb25k"); // "second"
                                  // A field no Secret has is still refused under strict validation.
    let r = k.run_with_input(
        &["apply", "--validate=strict", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                            "bogus": 1})
        .to_string(),
    );
    assert!(
        !r.status.success() && r.stderr.contains("bogus"),
        "{}",
        r.stderr
    );
}

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
"#;

/// A kind the server does not serve fails at REST mapping, with kube-apiserver's message, not
/// on OpenAPI: kubectl finds no path for it in the v3 document, falls back to the v2 one (which
/// it asks for as protobuf) to learn whether the kind takes `fieldValidation`, and validates on
/// the client against it before mapping the kind.
#[tokio::test]
async fn apply_of_a_kind_not_served_fails_at_rest_mapping() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let ingress = write(&dir, "ingress.yaml", INGRESS);
    let err = k.fails(&["apply", "-f", &ingress]);
    assert!(
        err.contains(r#"no matches for kind "Ingress" in version "networking.k8s.io/v1""#),
        "{err}"
    );
    assert!(!err.contains("failed to download openapi"), "{err}");
    assert!(!err.contains("error validating"), "{err}");

    // kubectl reads the v2 protobuf's models: explain from v2 follows a reference.
    let explain = k.ok(&[
        "explain",
        "pod.spec.containers",
        "--output=plaintext-openapiv2",
    ]);
    assert!(
        explain.contains("RESOURCE: containers <[]Object>")
            && explain.contains("A single application container"),
        "{explain}"
    );
}

#[tokio::test]
async fn openapi_v2_is_served_as_protobuf_or_json_by_accept() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    let url = c.api.url("/openapi/v2");
    let get = |accept: Option<&str>| {
        let mut r = http.get(&url);
        if let Some(a) = accept {
            r = r.header("Accept", a);
        }
        r.send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };

    let json = get(None).await.unwrap();
    assert_eq!(json.status(), 200);
    assert_eq!(header(&json, "content-type"), "application/json");
    let etag = header(&json, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let doc: Value = json.json().await.unwrap();
    assert_eq!(doc["swagger"], "2.0");

    for accept in [
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
    ] {
        let pb = get(Some(accept)).await.unwrap();
        assert_eq!(pb.status(), 200, "{accept}");
        assert_eq!(
            header(&pb, "content-type"),
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        );
        // One document, one ETag; caches tell the forms apart by Accept.
        assert_eq!(header(&pb, "etag"), etag);
        assert_eq!(header(&pb, "vary"), "Accept");
        let body = pb.bytes().await.unwrap();
        // Field 1 (swagger), length 3, "2.0".
        assert!(body.starts_with(b"\x0a\x032.0"), "{:?}", &body[..16]);
    }

    let refused = get(Some("text/html")).await.unwrap();
    assert_eq!(refused.status(), 406);
    let unchanged = http
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
}

#[tokio::test]
async fn a_list_file_applies_each_item_and_events_read_through_both_groups() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    // `kind: List`: kubectl validates each item against the server's OpenAPI, then applies it.
    let out = k.ok_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: listed-a}\n  data: {k: v}\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: listed-b}\n",
    );
    assert!(out.contains("configmap/listed-a created"), "{out}");
    assert!(out.contains("serviceaccount/listed-b created"), "{out}");
    assert_eq!(k.json(&["get", "configmap", "listed-a"])["data"]["k"], "v");

    // An event written through events.k8s.io/v1 is a core/v1 event, and the other way round.
    let created = k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: e1}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: example.com/ctl\nreportingInstance: ctl-1\naction: Check\nreason: Checked\ntype: Normal\nnote: all good\nregarding: {apiVersion: v1, kind: ConfigMap, name: listed-a, namespace: default}\n",
    );
    assert!(
        created.contains("event.events.k8s.io/e1 created"),
        "{created}"
    );
    let core = k.json(&["get", "events.v1.", "e1"]);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "all good");
    assert_eq!(core["involvedObject"]["name"], "listed-a");
    assert_eq!(core["reportingComponent"], "example.com/ctl");
    let newer = k.json(&["get", "events.v1.events.k8s.io", "e1"]);
    assert_eq!(newer["apiVersion"], "events.k8s.io/v1");
    assert_eq!(newer["note"], "all good");
    assert_eq!(newer["regarding"]["kind"], "ConfigMap");
    assert!(newer.get("message").is_none(), "{newer:#}");
    // events.k8s.io/v1's own rules for a new event, in kube-apiserver's words.
    let bad = k.run_with_input(
        &["create", "-f", "-"],
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: e2}\ntype: Normal\n",
    );
    let text = format!("{}{}", bad.stdout, bad.stderr);
    assert!(!bad.status.success(), "{text}");
    assert!(text.contains("eventTime: Required value"), "{text}");
    assert!(
        text.contains("reportingController: Required value"),
        "{text}"
    );
}
