//! `skiff-admission-bench`: what extending admission costs a pod create. Against a private
//! etcd and `skiff-apiserver`, the admin creates pods one at a time (p50 and p99 latency) and
//! from 8 clients (creates/s) three ways: with no admission extension; with one
//! ValidatingAdmissionPolicy and its binding matching every pod (a CEL validation with a
//! variable and a message expression, evaluated on every create); and with one validating
//! webhook matching every pod, served over HTTPS from loopback by this process with the SDK's
//! webhook server. Each is confirmed in force before it is measured (a pod it must refuse is
//! refused). The three alternate, each going first in turn; the table gives the median of the
//! rounds and their range. Prints a Markdown table.
//!
//! Run it with release binaries: `SKIFF_BIN_DIR=target/release target/release/skiff-admission-bench`.
//! `--quick` runs one short round (a check that it works, not a measurement).
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_client::webhook::{admit_fn, AdmissionResponse, CertStore, Server};
use skiff_e2e::bench::{creates_per_second, median_range, percentile};
use skiff_e2e::pki::TestCa;
use skiff_e2e::{ApiServer, Etcd};
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 8;

/// How much to measure.
#[derive(Clone, Copy)]
struct Sizes {
    sequential: usize,
    creates: usize,
    rounds: usize,
}

const FULL: Sizes = Sizes {
    sequential: 400,
    creates: 2000,
    rounds: 3,
};
const QUICK: Sizes = Sizes {
    sequential: 40,
    creates: 200,
    rounds: 1,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Policy,
    Webhook,
}

const MODES: [Mode; 3] = [Mode::Plain, Mode::Policy, Mode::Webhook];

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1",
                                 "command": ["sleep", "3600"]}]},
    })
}

fn pod_rules() -> Value {
    json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}])
}

/// A validating webhook on loopback refusing pods named `refused-*`, admitting the rest.
async fn webhook(stop: CancellationToken) -> Result<(String, String)> {
    let ca = TestCa::new("admission-bench-ca");
    let (cert, key) = ca.serving(&["127.0.0.1"]);
    let certs = Arc::new(CertStore::from_pem(cert.as_bytes(), key.as_bytes())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}/validate", listener.local_addr()?);
    let server = Server::new().admit(
        "/validate",
        admit_fn(|req| async move {
            if req.name.starts_with("refused-") {
                AdmissionResponse::deny(&req, "refused by the bench webhook")
            } else {
                AdmissionResponse::allow(&req)
            }
        }),
    );
    let config = Arc::new(certs.server_config()?);
    tokio::spawn(async move {
        let _ = server.serve(listener, config, stop).await;
    });
    Ok((url, ca.bundle()))
}

/// (p50 ms, p99 ms, creates/s) for one mode.
async fn run(mode: Mode, round: usize, sizes: Sizes) -> Result<(f64, f64, f64)> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let admin = api.client()?;
    let send = |method: reqwest::Method, path: &str, body: Value| {
        let admin = admin.clone();
        let url = api.url(path);
        async move {
            let r = admin.request(method, url).json(&body).send().await?;
            let code = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            Ok::<_, anyhow::Error>((code, body))
        }
    };
    let must = |r: (u16, String)| {
        if r.0 >= 300 {
            bail!("{}: {}", r.0, r.1);
        }
        Ok(())
    };
    must(
        send(
            reqwest::Method::POST,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        )
        .await?,
    )?;
    let stop = CancellationToken::new();
    let group = "/apis/admissionregistration.k8s.io/v1";
    match mode {
        Mode::Plain => {}
        Mode::Policy => {
            must(send(reqwest::Method::POST, &format!("{group}/validatingadmissionpolicies"), json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": "bench.example.com"},
                "spec": {
                    "matchConstraints": {"resourceRules": pod_rules()},
                    "variables": [{"name": "name", "expression": "object.metadata.name"}],
                    "validations": [{
                        "expression": "!variables.name.startsWith('refused-') && object.spec.containers.all(c, c.image != '')",
                        "messageExpression": "'pod ' + variables.name + ' is refused'",
                    }],
                },
            })).await?)?;
            must(send(reqwest::Method::POST, &format!("{group}/validatingadmissionpolicybindings"), json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": "bench"},
                "spec": {"policyName": "bench.example.com", "validationActions": ["Deny"]},
            })).await?)?;
        }
        Mode::Webhook => {
            let (url, ca) = webhook(stop.clone()).await?;
            must(send(reqwest::Method::POST, &format!("{group}/validatingwebhookconfigurations"), json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "bench"},
                "webhooks": [{
                    "name": "bench.example.com",
                    "clientConfig": {"url": url, "caBundle": ca},
                    "rules": pod_rules(),
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                }],
            })).await?)?;
        }
    }
    if mode != Mode::Plain {
        // In force once a pod it must refuse is refused (configurations reach admission
        // through the watch cache).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, body) = send(
                reqwest::Method::POST,
                "/api/v1/namespaces/bench/pods",
                pod("refused-probe"),
            )
            .await?;
            if code >= 400 {
                break;
            }
            if !(200..300).contains(&code) {
                bail!("{code}: {body}");
            }
            send(
                reqwest::Method::DELETE,
                "/api/v1/namespaces/bench/pods/refused-probe",
                Value::Null,
            )
            .await?;
            if Instant::now() > deadline {
                bail!("the admission extension never came into force");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut latencies = Vec::with_capacity(sizes.sequential);
    let bench_start = Instant::now();
    for i in 0..sizes.sequential {
        let started = Instant::now();
        must(
            send(
                reqwest::Method::POST,
                "/api/v1/namespaces/bench/pods",
                pod(&format!("r{round}-s{i}")),
            )
            .await?,
        )?;
        latencies.push(started.elapsed());
        if bench_start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    latencies.sort();
    let pods = api.url("/api/v1/namespaces/bench/pods");
    let prefix = format!("r{round}-c");
    let rate = creates_per_second(CLIENTS, sizes.creates, move |i| {
        admin.post(&pods).json(&pod(&format!("{prefix}{i}")))
    })
    .await;
    stop.cancel();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        rate,
    ))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sizes = if std::env::args().any(|a| a == "--quick") {
        QUICK
    } else {
        FULL
    };
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); MODES.len()];
    for round in 0..sizes.rounds {
        for k in 0..MODES.len() {
            let m = (round + k) % MODES.len();
            results[m].push(run(MODES[m], round, sizes).await?);
        }
    }
    println!(
        "| pod creates, median (range) of {} runs each | p50 ms (1 client) | p99 ms (1 client) | creates/s ({CLIENTS} clients) |",
        sizes.rounds
    );
    println!("|---|---|---|---|");
    let names = [
        "no admission extension",
        "one ValidatingAdmissionPolicy + binding matching pods",
        "one validating webhook matching pods (HTTPS, loopback)",
    ];
    for (i, name) in names.iter().enumerate() {
        let (_, p50) = median_range(results[i].iter().map(|r| r.0), 2);
        let (_, p99) = median_range(results[i].iter().map(|r| r.1), 2);
        let (_, rate) = median_range(results[i].iter().map(|r| r.2), 0);
        println!("| {name} | {p50} | {p99} | {rate} |");
    }
    Ok(())
}
