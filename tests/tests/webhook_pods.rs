//! Webhooks written with the SDK, running as pods: the `admission_validator`,
//! `admission_mutator` and `crd_converter` examples, built here into images pushed to a node's
//! registry, run on a real node behind Services, with serving certificates made by the test
//! for `NAME.webhooks.svc` in `kubernetes.io/tls` Secrets mounted into the pods. The API
//! server reaches them through the Services' endpoints (from the controller manager's
//! EndpointSlices) and checks their certificates against each configuration's (or custom
//! resource definition's) `caBundle`. What reached a webhook is read from its own `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::images;
use skiff_e2e::node::Node;
use skiff_e2e::pki::TestCa as Ca;
use skiff_e2e::{eventually_ok, Cluster, Daemon, Kubectl};

/// The namespace the webhook pods run in (no webhook is called for it).
const WEBHOOK_NS: &str = "webhooks";

/// A test CA's HTTPS clients.
trait Clients {
    /// An HTTPS client trusting this CA only, reaching `dns` at `ip:8443`.
    fn client(&self, dns: &str, ip: &str) -> reqwest::Client;
}

impl Clients for Ca {
    fn client(&self, dns: &str, ip: &str) -> reqwest::Client {
        use rustls::pki_types::pem::PemObject;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .resolve(dns, format!("{ip}:8443").parse().unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}

/// A cluster with a node and the controller manager, and the CA of its webhooks.
struct Env {
    /// The controller manager (EndpointSlices, ServiceAccounts).
    cm: Daemon,
    node: Node,
    c: Cluster,
    k: Kubectl,
    ca: Ca,
    certs: tempfile::TempDir,
}

/// A webhook pod behind its Service.
struct Webhook {
    /// The Service's (and the pod's) name.
    name: String,
    /// The pod's IP.
    ip: String,
}

impl Env {
    async fn start() -> Env {
        let c = Cluster::start().await.unwrap();
        let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
        let cm = Daemon::start(
            "skiff-controller-manager",
            &c.api,
            &["--port=0", "--leader-elect=false"],
        )
        .unwrap();
        let k = c.kubectl();
        let env = Env {
            cm,
            node,
            k,
            c,
            ca: Ca::new("webhook-test-ca"),
            certs: tempfile::tempdir().unwrap(),
        };
        env.namespace(WEBHOOK_NS, &[]);
        env
    }

    /// The logs that explain a failure.
    fn logs(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- API server:\n{}\n--- kubelet:\n{}\n--- controller manager:\n{}",
            tail(self.c.api.log()),
            tail(self.node.kubelet.log()),
            tail(self.cm.log())
        )
    }

    /// Creates namespace `name` with `labels`, and waits for its `default` ServiceAccount.
    fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.k.ok_input(
            &["apply", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels}})
            .to_string(),
        );
        eventually_ok(
            &format!("the default ServiceAccount of {name}"),
            Duration::from_secs(30),
            || {
                let r = self
                    .k
                    .run(&["get", "serviceaccount", "default", "-n", name]);
                r.status.success().then_some(()).ok_or(r.stderr)
            },
            || self.logs(),
        );
    }

    /// Pushes the SDK example `example` as an image to the node's registry.
    fn image(&self, example: &str) -> String {
        let bin = skiff_e2e::bin_dir().join("examples").join(example);
        assert!(
            bin.exists(),
            "{} is built (cargo build -p skiff-client --examples)",
            bin.display()
        );
        let image = images::binary_image(&bin).unwrap();
        self.node
            .images
            .registry
            .push(&image, &format!("skiff/{}:1", example.replace('_', "-")))
            .unwrap()
    }

    /// Runs the example `example` with `args` as the pod `name` in the webhooks namespace,
    /// behind the Service `name` (port 443), its certificate for `name.webhooks.svc` in the
    /// Secret `name-tls`; waits until the Service has the pod as a ready endpoint.
    fn deploy(&self, name: &str, example: &str, args: &[&str]) -> Webhook {
        let dns = format!("{name}.{WEBHOOK_NS}.svc");
        let (cert, key) = self.ca.serving(&[&dns]);
        let cert_file = self.certs.path().join(format!("{name}.crt"));
        let key_file = self.certs.path().join(format!("{name}.key"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        self.k.ok(&[
            "create",
            "secret",
            "tls",
            &format!("{name}-tls"),
            "-n",
            WEBHOOK_NS,
            &format!("--cert={}", cert_file.display()),
            &format!("--key={}", key_file.display()),
        ]);
        let mut all_args = vec![
            "--cert-dir=/etc/webhook/certs".to_string(),
            "--secure-port=8443".into(),
            "-v=3".into(),
        ];
        all_args.extend(args.iter().map(|a| a.to_string()));
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": WEBHOOK_NS, "labels": {"app": name}},
            "spec": {
                "nodeName": "node-a",
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "webhook", "image": self.image(example), "args": all_args,
                    "ports": [{"containerPort": 8443}],
                    "readinessProbe": {"httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": 8443},
                                       "periodSeconds": 1},
                    "volumeMounts": [{"name": "certs", "mountPath": "/etc/webhook/certs", "readOnly": true}]
                }],
                "volumes": [{"name": "certs", "secret": {"secretName": format!("{name}-tls")}}]
            }
        });
        self.expose(name, pod)
    }

    /// Runs `pod` (labelled `app: NAME`) behind the Service `name` (port 443 to the pod's
    /// 8443); waits until the Service has the pod as a ready endpoint.
    fn expose(&self, name: &str, pod: Value) -> Webhook {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": WEBHOOK_NS},
            "spec": {"selector": {"app": name}, "ports": [{"port": 443, "targetPort": 8443}]}
        });
        self.k
            .ok_input(&["apply", "-f", "-"], &format!("{pod}\n---\n{svc}"));
        let ip = eventually_ok(
            &format!("the Service {name} with its pod as a ready endpoint"),
            Duration::from_secs(90),
            || {
                let slices = self.k.run(&[
                    "get",
                    "endpointslices",
                    "-n",
                    WEBHOOK_NS,
                    "-l",
                    &format!("kubernetes.io/service-name={name}"),
                    "-o",
                    "json",
                ]);
                let v: Value = serde_json::from_str(&slices.stdout).map_err(|e| e.to_string())?;
                v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                    .find(|e| e["conditions"]["ready"] == true)
                    .and_then(|e| e["addresses"][0].as_str().map(String::from))
                    .ok_or_else(|| format!("no ready endpoint: {v}"))
            },
            || {
                format!(
                    "{}\n--- pod:\n{}",
                    self.logs(),
                    self.k
                        .run(&["get", "pod", name, "-n", WEBHOOK_NS, "-o", "yaml"])
                        .stdout
                )
            },
        );
        Webhook {
            name: name.into(),
            ip,
        }
    }

    /// The reviews `hook` has answered at `path` with `result`, from its `/metrics`.
    async fn reviews(&self, hook: &Webhook, path: &str, result: &str) -> u64 {
        let dns = format!("{}.{WEBHOOK_NS}.svc", hook.name);
        let text = self
            .ca
            .client(&dns, &hook.ip)
            .get(format!("https://{dns}:8443/metrics"))
            .send()
            .await
            .expect("the webhook's /metrics answers over HTTPS with the test's CA")
            .text()
            .await
            .unwrap();
        let series = format!("skiff_webhook_reviews_total{{path=\"{path}\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// A webhook entry calling `hook` at `path`, for pod creates and updates in namespaces
    /// labelled `selector`.
    fn webhook_entry(
        &self,
        name: &str,
        hook: &Webhook,
        path: &str,
        selector: (&str, &str),
    ) -> Value {
        json!({
            "name": name,
            "clientConfig": {
                "service": {"namespace": WEBHOOK_NS, "name": hook.name, "path": path, "port": 443},
                "caBundle": self.ca.bundle()
            },
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                       "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {selector.0: selector.1}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 5
        })
    }

    /// Waits until a server-side dry run of a pod without labels in `ns` gives what `done`
    /// looks for: the configurations just made are in force.
    fn until_dry_run(&self, ns: &str, what: &str, done: impl Fn(&Out) -> bool) {
        let image = self.node.images.busybox.clone();
        eventually_ok(
            what,
            Duration::from_secs(30),
            || {
                let r = self.k.run(&[
                    "run",
                    "probe",
                    "-n",
                    ns,
                    "--image",
                    &image,
                    "--dry-run=server",
                    "-o",
                    "json",
                ]);
                let out = Out {
                    ok: r.status.success(),
                    stdout: r.stdout,
                    stderr: r.stderr,
                };
                if done(&out) {
                    Ok(())
                } else {
                    Err(format!("{}{}", out.stdout, out.stderr))
                }
            },
            || self.logs(),
        );
    }
}

/// What a kubectl run printed, and whether it succeeded.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

#[tokio::test]
async fn a_validating_webhook_pod_denies_pods_without_the_label() {
    let env = Env::start().await;
    let k = &env.k;
    let image = env.node.images.busybox.clone();
    let hook = env.deploy(
        "require-app",
        "admission_validator",
        &["--required-label=app"],
    );
    env.namespace("apps", &[("webhooks", "on")]);
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "require-app"},
        "webhooks": [env.webhook_entry("require-app.example.skiff.dev", &hook, "/validate", ("webhooks", "on"))]
    });
    k.ok_input(&["apply", "-f", "-"], &config.to_string());
    let denial = "admission webhook \"require-app.example.skiff.dev\" denied the request: \
                  pods must have the label \"app\"";
    env.until_dry_run("apps", "the validating webhook in force", |o| {
        !o.ok && o.stderr.contains(denial)
    });

    let denied_before = env.reviews(&hook, "/validate", "denied").await;
    let allowed_before = env.reviews(&hook, "/validate", "allowed").await;

    // Without the label: refused with the webhook's message, as kubectl shows it.
    let r = k.run(&["run", "nolabel", "-n", "apps", "--image", &image]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert_eq!(
        r.stderr,
        format!("Error from server (Forbidden): {denial}\n")
    );
    let gone = k.fails(&["get", "pod", "nolabel", "-n", "apps"]);
    assert!(gone.contains("NotFound"), "nothing stored: {gone}");

    // With it: created.
    let out = k.ok(&[
        "run",
        "labelled",
        "-n",
        "apps",
        "--image",
        &image,
        "--labels=app=web",
    ]);
    assert_eq!(out, "pod/labelled created\n");

    // An update that drops the label is refused too (UPDATE is in the rules).
    let r = k.run(&["label", "pod", "labelled", "-n", "apps", "app-"]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert!(r.stderr.contains(denial), "{}", r.stderr);
    let labels = k.json(&["get", "pod", "labelled", "-n", "apps"])["metadata"]["labels"].clone();
    assert_eq!(labels["app"], "web");

    // A namespace the selector leaves out: admitted without a call.
    let out = k.ok(&["run", "free", "--image", &image]);
    assert_eq!(out, "pod/free created\n");

    // Counted at the webhook: the create and the update denied, one create allowed; nothing
    // for the namespace left out.
    assert_eq!(
        env.reviews(&hook, "/validate", "denied").await,
        denied_before + 2
    );
    assert_eq!(
        env.reviews(&hook, "/validate", "allowed").await,
        allowed_before + 1
    );

    // The certificate rotated: a new CA signs a new one. The configuration trusts only the
    // new CA first, so calls fail while the old certificate is served; once the Secret is
    // updated and the kubelet has updated the mounted files, the running webhook serves the
    // new certificate — no restart — and calls go through again.
    let ca2 = Ca::new("webhook-test-ca");
    let mut rotated = config.clone();
    rotated["webhooks"][0]["clientConfig"]["caBundle"] = json!(ca2.bundle());
    k.ok_input(&["apply", "-f", "-"], &rotated.to_string());
    env.until_dry_run("apps", "the old certificate no longer trusted", |o| {
        !o.ok && o.stderr.contains("failed calling webhook") && o.stderr.contains("certificate")
    });
    let (cert, key) = ca2.serving(&[&format!("require-app.{WEBHOOK_NS}.svc")]);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "require-app-tls", "namespace": WEBHOOK_NS},
        "stringData": {"tls.crt": cert, "tls.key": key}
    });
    k.ok_input(&["apply", "-f", "-"], &secret.to_string());
    env.until_dry_run("apps", "the rotated certificate served", |o| {
        !o.ok && o.stderr == format!("Error from server (Forbidden): {denial}\n")
    });
    let pod = k.json(&["get", "pod", "require-app", "-n", WEBHOOK_NS]);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[tokio::test]
async fn mutating_webhook_pods_add_a_sidecar_and_labels_and_are_reinvoked() {
    let env = Env::start().await;
    let k = &env.k;
    let image = env.node.images.busybox.clone();
    let sidecar_image = format!("--sidecar-image={image}");
    let inject = env.deploy(
        "inject",
        "admission_mutator",
        &[
            "--label=sidecar.example.skiff.dev/injected=true",
            "--sidecar-name=proxy",
            &sidecar_image,
            "--sidecar-command=sleep,3600",
        ],
    );
    let team = env.deploy("team", "admission_mutator", &["--label=team=platform"]);
    env.namespace("apps", &[("webhooks", "on")]);
    // Configurations are called in name order: the injector first, then the team labeller,
    // whose change has the injector called again (IfNeeded), which then changes nothing.
    let mut a = env.webhook_entry(
        "inject.example.skiff.dev",
        &inject,
        "/mutate",
        ("webhooks", "on"),
    );
    a["reinvocationPolicy"] = json!("IfNeeded");
    let b = env.webhook_entry(
        "team.example.skiff.dev",
        &team,
        "/mutate",
        ("webhooks", "on"),
    );
    for (name, hook) in [("a-inject", a), ("b-team", b)] {
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [hook]
        });
        k.ok_input(&["apply", "-f", "-"], &config.to_string());
    }
    env.until_dry_run("apps", "both mutating webhooks in force", |o| {
        let Ok(pod) = serde_json::from_str::<Value>(&o.stdout) else {
            return false;
        };
        pod["metadata"]["labels"]["team"] == "platform"
            && pod["metadata"]["labels"]["sidecar.example.skiff.dev/injected"] == "true"
    });

    let inject_before = env.reviews(&inject, "/mutate", "allowed").await;
    let team_before = env.reviews(&team, "/mutate", "allowed").await;

    let out = k.ok(&[
        "run", "web", "-n", "apps", "--image", &image, "--", "sleep", "3600",
    ]);
    assert_eq!(out, "pod/web created\n");
    let pod = k.json(&["get", "pod", "web", "-n", "apps"]);
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["run"], "web", "the pod's own label is kept");
    assert_eq!(labels["team"], "platform");
    assert_eq!(labels["sidecar.example.skiff.dev/injected"], "true");
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["web", "proxy"],
        "the sidecar once, after the pod's own container"
    );
    assert_eq!(containers[1]["image"], image.as_str());
    assert_eq!(containers[1]["command"], json!(["sleep", "3600"]));
    // The injected container went through the API server's defaulting like any other.
    assert_eq!(
        containers[1]["terminationMessagePath"],
        "/dev/termination-log"
    );

    // What kubectl shows of them.
    let shown = k.ok(&[
        "get",
        "pod",
        "web",
        "-n",
        "apps",
        "-o",
        "custom-columns=CONTAINERS:.spec.containers[*].name,TEAM:.metadata.labels.team",
    ]);
    assert_eq!(shown, "CONTAINERS   TEAM\nweb,proxy    platform\n");

    // The injector was called twice for the pod (once more after the team label), the
    // labeller once.
    assert_eq!(
        env.reviews(&inject, "/mutate", "allowed").await,
        inject_before + 2
    );
    assert_eq!(
        env.reviews(&team, "/mutate", "allowed").await,
        team_before + 1
    );
}

#[tokio::test]
async fn a_webhook_pod_gone_is_ignored_or_refuses_as_its_failure_policy_says() {
    let env = Env::start().await;
    let k = &env.k;
    let image = env.node.images.busybox.clone();
    let hook = env.deploy(
        "require-app",
        "admission_validator",
        &["--required-label=app"],
    );
    env.namespace("lenient", &[("policy", "ignore")]);
    env.namespace("strict", &[("policy", "fail")]);
    let mut ignore = env.webhook_entry(
        "ignore.example.skiff.dev",
        &hook,
        "/validate",
        ("policy", "ignore"),
    );
    ignore["failurePolicy"] = json!("Ignore");
    let fail = env.webhook_entry(
        "fail.example.skiff.dev",
        &hook,
        "/validate",
        ("policy", "fail"),
    );
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "require-app"},
        "webhooks": [ignore, fail]
    });
    k.ok_input(&["apply", "-f", "-"], &config.to_string());
    for ns in ["lenient", "strict"] {
        env.until_dry_run(ns, &format!("the webhook in force in {ns}"), |o| {
            !o.ok && o.stderr.contains("pods must have the label \"app\"")
        });
    }

    // The same webhook with another CA's bundle: its certificate is not trusted, so the call
    // fails (and never reaches the webhook).
    env.namespace("wrong-ca", &[("policy", "wrong-ca")]);
    let mut wrong = env.webhook_entry(
        "wrong-ca.example.skiff.dev",
        &hook,
        "/validate",
        ("policy", "wrong-ca"),
    );
    wrong["clientConfig"]["caBundle"] = json!(Ca::new("webhook-test-ca").bundle());
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "wrong-ca"},
        "webhooks": [wrong]
    });
    k.ok_input(&["apply", "-f", "-"], &config.to_string());
    let untrusted = format!(
        "Error from server (InternalError): Internal error occurred: failed calling webhook \
         \"wrong-ca.example.skiff.dev\": failed to call webhook: Post \
         \"https://require-app.{WEBHOOK_NS}.svc:443/validate?timeout=5s\": "
    );
    env.until_dry_run("wrong-ca", "the webhook with the wrong CA in force", |o| {
        !o.ok && o.stderr.starts_with(&untrusted)
    });
    let calls = env.reviews(&hook, "/validate", "allowed").await;
    let r = k.run(&[
        "run",
        "untrusted",
        "-n",
        "wrong-ca",
        "--image",
        &image,
        "--labels=app=x",
    ]);
    assert!(r.stderr.starts_with(&untrusted), "{r:?}");
    assert!(r.stderr.contains("certificate"), "{r:?}");
    assert_eq!(env.reviews(&hook, "/validate", "allowed").await, calls);

    // The webhook goes away; once its Service has no endpoint left, calls cannot be made.
    k.ok(&[
        "delete",
        "pod",
        hook.name.as_str(),
        "-n",
        WEBHOOK_NS,
        "--wait=true",
    ]);
    let no_endpoints = "no endpoints available for service \"require-app\"";
    env.until_dry_run("strict", "the webhook's Service without endpoints", |o| {
        !o.ok && o.stderr.contains(no_endpoints)
    });

    // failurePolicy Ignore: admitted, though the pod lacks the label.
    let out = k.ok(&["run", "nolabel", "-n", "lenient", "--image", &image]);
    assert_eq!(out, "pod/nolabel created\n");

    // failurePolicy Fail: refused with Kubernetes' message, and nothing stored.
    let r = k.run(&["run", "nolabel", "-n", "strict", "--image", &image]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert_eq!(
        r.stderr,
        format!(
            "Error from server (InternalError): Internal error occurred: failed calling webhook \
             \"fail.example.skiff.dev\": failed to call webhook: Post \
             \"https://require-app.{WEBHOOK_NS}.svc:443/validate?timeout=5s\": {no_endpoints}\n"
        )
    );
    assert!(k
        .fails(&["get", "pod", "nolabel", "-n", "strict"])
        .contains("NotFound"));
    // Namespaces no webhook selects are not held up.
    assert_eq!(
        k.ok(&["run", "free", "--image", &image]),
        "pod/free created\n"
    );
}

#[tokio::test]
async fn selectors_and_match_conditions_narrow_the_calls_and_a_slow_webhook_holds_up_only_what_it_matches(
) {
    let env = Env::start().await;
    let k = &env.k;
    let image = env.node.images.busybox.clone();
    let hook = env.deploy(
        "require-app",
        "admission_validator",
        &["--required-label=app"],
    );
    env.namespace("apps", &[("webhooks", "on")]);
    env.namespace("other", &[]);
    let mut narrow = env.webhook_entry(
        "narrow.example.skiff.dev",
        &hook,
        "/validate",
        ("webhooks", "on"),
    );
    narrow["objectSelector"] =
        json!({"matchExpressions": [{"key": "checked", "operator": "NotIn", "values": ["no"]}]});
    narrow["matchConditions"] = json!([{"name": "not-skipped",
        "expression": "!object.metadata.name.startsWith('skip-')"}]);
    // A webhook that accepts connections and never answers: a TLS handshake that hangs.
    let slow = env.expose(
        "slow",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "slow", "namespace": WEBHOOK_NS, "labels": {"app": "slow"}},
            "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "hang", "image": image,
                    "command": ["nc", "-ll", "-p", "8443", "-e", "sleep", "3600"]}]}
        }),
    );
    let mut slow_ignore = env.webhook_entry(
        "slow.example.skiff.dev",
        &slow,
        "/validate",
        ("webhooks", "on"),
    );
    slow_ignore["objectSelector"] = json!({"matchLabels": {"slow": "yes"}});
    slow_ignore["failurePolicy"] = json!("Ignore");
    slow_ignore["timeoutSeconds"] = json!(10);
    let mut slow_fail = env.webhook_entry(
        "slow-fail.example.skiff.dev",
        &slow,
        "/validate",
        ("webhooks", "on"),
    );
    slow_fail["objectSelector"] = json!({"matchLabels": {"slow": "fail"}});
    slow_fail["timeoutSeconds"] = json!(2);
    for (name, hooks) in [
        ("narrow", json!([narrow])),
        ("slow", json!([slow_ignore, slow_fail])),
    ] {
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": hooks
        });
        k.ok_input(&["apply", "-f", "-"], &config.to_string());
    }
    env.until_dry_run("apps", "the narrowed webhook in force", |o| {
        !o.ok && o.stderr.contains("pods must have the label \"app\"")
    });
    let deadline = format!(
        "Error from server (InternalError): Internal error occurred: failed calling webhook \
         \"slow-fail.example.skiff.dev\": failed to call webhook: Post \
         \"https://slow.{WEBHOOK_NS}.svc:443/validate?timeout=2s\": context deadline exceeded\n"
    );
    eventually_ok(
        "the slow webhooks in force",
        Duration::from_secs(30),
        || {
            let r = k.run(&[
                "run",
                "probe",
                "-n",
                "apps",
                "--image",
                &image,
                "--labels=app=x,slow=fail",
                "--dry-run=server",
            ]);
            (r.stderr == deadline).then_some(()).ok_or(r.stderr)
        },
        || env.logs(),
    );

    // Only a pod in a selected namespace, not labelled `checked=no` and not named `skip-...`
    // reaches the webhook; the others are admitted without a call, though they lack the label.
    let denied = env.reviews(&hook, "/validate", "denied").await;
    let allowed = env.reviews(&hook, "/validate", "allowed").await;
    let r = k.run(&["run", "called", "-n", "apps", "--image", &image]);
    assert!(
        r.stderr.contains("pods must have the label \"app\""),
        "{r:?}"
    );
    for args in [
        &["run", "unchecked", "-n", "apps", "--labels=checked=no"][..],
        &["run", "skip-me", "-n", "apps"],
        &["run", "elsewhere", "-n", "other"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--image", &image]);
        let out = k.ok(&args);
        assert!(out.ends_with(" created\n"), "{args:?}: {out}");
    }
    assert_eq!(env.reviews(&hook, "/validate", "denied").await, denied + 1);
    assert_eq!(env.reviews(&hook, "/validate", "allowed").await, allowed);

    // A matched request waits for the 10 s timeout, then is admitted (Ignore); meanwhile,
    // requests the slow webhook does not match go through at once.
    let slow_run = {
        let k = env.c.kubectl();
        let image = image.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let r = k.run(&[
                "run",
                "waited",
                "-n",
                "apps",
                "--image",
                &image,
                "--labels=app=x,slow=yes",
            ]);
            (start.elapsed(), r)
        })
    };
    let start = std::time::Instant::now();
    let out = k.ok(&[
        "run",
        "quick",
        "-n",
        "apps",
        "--image",
        &image,
        "--labels=app=x",
    ]);
    let quick = start.elapsed();
    assert_eq!(out, "pod/quick created\n");
    assert!(
        quick < Duration::from_secs(3),
        "an unmatched create took {quick:?}"
    );
    assert!(
        !slow_run.is_finished(),
        "the unmatched create finished while the matched one still waits"
    );
    let (waited, r) = slow_run.join().unwrap();
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout, "pod/waited created\n");
    assert!(
        waited >= Duration::from_millis(9_500) && waited < Duration::from_secs(20),
        "the matched create took {waited:?}, not the webhook's 10 s timeout"
    );

    // failurePolicy Fail with a 2 s timeout: refused with Kubernetes' message.
    let r = k.run(&[
        "run",
        "refused",
        "-n",
        "apps",
        "--image",
        &image,
        "--labels=app=x,slow=fail",
    ]);
    assert_eq!(r.stderr, deadline);
    assert!(k
        .fails(&["get", "pod", "refused", "-n", "apps"])
        .contains("NotFound"));
}

/// The Widget group of the `crd_converter` example.
const WIDGETS: &str = "conversion.example.skiff.dev";

#[tokio::test]
async fn a_conversion_webhook_pod_serves_a_custom_kind_in_both_versions() {
    let env = Env::start().await;
    let k = &env.k;
    let hook = env.deploy("crd-converter", "crd_converter", &[]);
    let v1 = format!("widgets.v1.{WIDGETS}");
    let v2 = format!("widgets.v2.{WIDGETS}");

    // The definition as the example prints it, its conversion pointing at the Service with
    // the test's CA as caBundle.
    let ca_file = env.certs.path().join("ca.crt");
    std::fs::write(&ca_file, &env.ca.pem).unwrap();
    let printed =
        std::process::Command::new(skiff_e2e::bin_dir().join("examples").join("crd_converter"))
            .args([
                "--print-crd",
                "--service-namespace",
                WEBHOOK_NS,
                "--service-name",
                hook.name.as_str(),
                "--ca-bundle-file",
            ])
            .arg(&ca_file)
            .output()
            .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let crd: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"],
        json!({"service": {"namespace": WEBHOOK_NS, "name": "crd-converter",
                           "path": "/convert", "port": 443},
               "caBundle": env.ca.bundle()})
    );
    assert_eq!(
        k.ok_input(
            &["apply", "-f", "-"],
            &String::from_utf8_lossy(&printed.stdout)
        ),
        format!("customresourcedefinition.apiextensions.k8s.io/widgets.{WIDGETS} created\n")
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/widgets.{WIDGETS}"),
        "--timeout=30s",
    ]);
    eventually_ok(
        "the Widget kind served",
        Duration::from_secs(30),
        || {
            let r = k.run(&["get", &v2]);
            r.status.success().then_some(()).ok_or(r.stderr)
        },
        || env.logs(),
    );
    let before = env.reviews(&hook, "/convert", "success").await;

    // Created in v1 (the storage version, no conversion), read as v2.
    let small = json!({"apiVersion": format!("{WIDGETS}/v1"), "kind": "Widget",
        "metadata": {"name": "small", "namespace": "default"},
        "spec": {"size": 3, "color": "red"}});
    assert_eq!(
        k.ok_input(&["create", "-f", "-"], &small.to_string()),
        format!("widget.{WIDGETS}/small created\n")
    );
    assert_eq!(env.reviews(&hook, "/convert", "success").await, before);
    let got = k.json(&["get", &v2, "small"]);
    assert_eq!(got["apiVersion"], format!("{WIDGETS}/v2"));
    assert_eq!(got["kind"], "Widget");
    assert_eq!(
        got["spec"],
        json!({"dimensions": {"size": 3}, "color": "red"}),
        "{got:#}"
    );
    assert_eq!(got["metadata"]["name"], "small");
    assert_eq!(
        env.reviews(&hook, "/convert", "success").await,
        before + 1,
        "one review for the read"
    );
    let shown = k.ok(&[
        "get",
        &v2,
        "small",
        "-o",
        "custom-columns=NAME:.metadata.name,SIZE:.spec.dimensions.size",
    ]);
    assert_eq!(shown, "NAME    SIZE\nsmall   3\n");

    // Created in v2, stored in v1: read as v1.
    let reviews = env.reviews(&hook, "/convert", "success").await;
    let big = json!({"apiVersion": format!("{WIDGETS}/v2"), "kind": "Widget",
        "metadata": {"name": "big", "namespace": "default"},
        "spec": {"dimensions": {"size": 7}, "color": "blue"}});
    assert_eq!(
        k.ok_input(&["create", "-f", "-"], &big.to_string()),
        format!("widget.{WIDGETS}/big created\n")
    );
    assert!(
        env.reviews(&hook, "/convert", "success").await > reviews,
        "the object sent in v2 was converted by the webhook"
    );
    let got = k.json(&["get", &v1, "big"]);
    assert_eq!(got["apiVersion"], format!("{WIDGETS}/v1"));
    assert_eq!(got["spec"], json!({"size": 7, "color": "blue"}), "{got:#}");

    // Changed through v2: the v1 object follows.
    k.ok(&[
        "patch",
        &v2,
        "big",
        "--type=merge",
        "-p",
        r#"{"spec":{"dimensions":{"size":8}}}"#,
    ]);
    assert_eq!(k.json(&["get", &v1, "big"])["spec"]["size"], 8);
    // Applied (client-side) in v2, twice: the second time as a patch kubectl computes from
    // the last applied configuration, a JSON merge patch for a custom kind.
    let applied = |size: i64| {
        json!({"apiVersion": format!("{WIDGETS}/v2"), "kind": "Widget",
            "metadata": {"name": "applied", "namespace": "default"},
            "spec": {"dimensions": {"size": size}, "color": "green"}})
        .to_string()
    };
    assert_eq!(
        k.ok_input(&["apply", "-f", "-"], &applied(5)),
        format!("widget.{WIDGETS}/applied created\n")
    );
    assert_eq!(
        k.ok_input(&["apply", "-f", "-"], &applied(6)),
        format!("widget.{WIDGETS}/applied configured\n")
    );
    let reviews = env.reviews(&hook, "/convert", "success").await;
    let got = k.json(&["get", &v1, "applied"]);
    assert_eq!(got["spec"], json!({"size": 6, "color": "green"}), "{got:#}");

    // Lists in both versions: each item in the version asked for, and the list itself as
    // the API server sends it.
    let sizes = |list: &Value, version: &str, pointer: &str| -> Vec<(String, i64)> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                assert_eq!(w["apiVersion"], format!("{WIDGETS}/{version}"), "{w:#}");
                (
                    w["metadata"]["name"].as_str().unwrap().to_string(),
                    w.pointer(pointer).and_then(Value::as_i64).unwrap_or(-1),
                )
            })
            .collect()
    };
    let expected = vec![
        ("applied".to_string(), 6),
        ("big".to_string(), 8),
        ("small".to_string(), 3),
    ];
    let list = k.json(&["get", &v1]);
    assert_eq!(sizes(&list, "v1", "/spec/size"), expected, "{list:#}");
    assert_eq!(
        env.reviews(&hook, "/convert", "success").await,
        reviews,
        "reads of the storage version call no webhook"
    );
    let list = k.json(&["get", &v2]);
    assert_eq!(
        env.reviews(&hook, "/convert", "success").await,
        reviews + 1,
        "a list page converted in one review"
    );
    assert_eq!(
        sizes(&list, "v2", "/spec/dimensions/size"),
        expected,
        "{list:#}"
    );
    let raw: Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        &format!("/apis/{WIDGETS}/v2/namespaces/default/widgets"),
    ]))
    .unwrap();
    assert_eq!(raw["apiVersion"], format!("{WIDGETS}/v2"));
    assert_eq!(raw["kind"], "WidgetList");
    assert_eq!(
        sizes(&raw, "v2", "/spec/dimensions/size"),
        expected,
        "{raw:#}"
    );
    assert_eq!(
        k.ok(&["get", &v2])
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["NAME", "applied", "big", "small"]
    );
    assert_eq!(env.reviews(&hook, "/convert", "success").await, reviews + 3);
    assert_eq!(env.reviews(&hook, "/convert", "failure").await, 0);

    // The converter goes away: v2 can be neither read nor written, v1 goes on.
    k.ok(&[
        "delete",
        "pod",
        hook.name.as_str(),
        "-n",
        WEBHOOK_NS,
        "--wait=true",
    ]);
    let failed = format!(
        "Error from server: conversion webhook for {WIDGETS}/v1, Kind=Widget failed: Post \
         \"https://crd-converter.{WEBHOOK_NS}.svc:443/convert?timeout=30s\": no endpoints \
         available for service \"crd-converter\"\n"
    );
    eventually_ok(
        "reads of v2 failing without the converter",
        Duration::from_secs(30),
        || {
            let r = k.run(&["get", &v2, "small"]);
            (r.stderr == failed).then_some(()).ok_or(r.stderr)
        },
        || env.logs(),
    );
    assert_eq!(k.run(&["get", &v2]).stderr, failed);
    let r = k.run_with_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": format!("{WIDGETS}/v2"), "kind": "Widget",
            "metadata": {"name": "more", "namespace": "default"},
            "spec": {"dimensions": {"size": 1}}})
        .to_string(),
    );
    assert!(!r.status.success(), "{}", r.stdout);
    // The object sent in v2 is converted to v1 before it is stored: kubectl names the
    // input it came from.
    assert_eq!(
        r.stderr,
        failed.replace(
            &format!("Error from server: conversion webhook for {WIDGETS}/v1"),
            &format!(
                "Error from server: error when creating \"STDIN\": conversion webhook for \
                 {WIDGETS}/v2"
            )
        )
    );
    // What was written in v2 is stored in v1, so it reads without the converter.
    let list = k.json(&["get", &v1]);
    assert_eq!(sizes(&list, "v1", "/spec/size"), expected, "{list:#}");
    assert_eq!(k.json(&["get", &v1, "small"])["spec"]["color"], "red");
    assert!(k.fails(&["get", &v1, "more"]).contains("NotFound"));
}
