//! `skiff-crd-bench`: what serving a type through a CustomResourceDefinition costs against a
//! built-in one. Against a private etcd and `skiff-apiserver`, the admin creates ConfigMaps
//! and custom objects of about the same size (the custom kind has a structural schema with
//! defaults, an enum, bounds and one CEL rule, so every create is pruned, defaulted and
//! validated), at several levels of concurrency, then lists 10,000 of each, consistently (from
//! etcd) and from the watch cache (`resourceVersion=0`), timed until the last byte of the
//! response is in (the client's parsing is not the server's cost). The two kinds alternate, each going
//! first in every other round, so that the machine's drift shows as spread rather than as a
//! difference; the table gives the median of the rounds and their range. Prints a Markdown
//! table.
//!
//! Run it with release binaries: `SKIFF_BIN_DIR=target/release target/release/skiff-crd-bench`.
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_e2e::bench::{creates_per_second, median_range, percentile};
use skiff_e2e::{ApiServer, Etcd};

const LEVELS: &[usize] = &[1, 8, 64];
const CREATES: usize = 2000;
const LISTED: usize = 10_000;
const LISTS: usize = 10;
const ROUNDS: usize = 3;

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.bench.skiff.dev"},
  "spec": {
    "group": "bench.skiff.dev", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "subresources": {"status": {}},
      "schema": {"openAPIV3Schema": {
        "type": "object",
        "properties": {
          "spec": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
            "properties": {
              "size": {"type": "string", "enum": ["small", "medium", "large"]},
              "min": {"type": "integer", "minimum": 0, "default": 0},
              "max": {"type": "integer", "maximum": 1000, "default": 10},
              "owner": {"type": "string", "maxLength": 64},
              "note": {"type": "string", "maxLength": 256},
              "tags": {"type": "object", "additionalProperties": {"type": "string"}}
            }
          },
          "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }
      }}
    }]
  }
}"#;

fn configmap(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "data": {"size": "medium", "min": "1", "max": "20", "owner": "team-a",
                 "note": "a benchmark object of about the size of its custom twin",
                 "tier": "backend"},
    })
}

fn widget(name: &str) -> Value {
    json!({
        "apiVersion": "bench.skiff.dev/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"size": "medium", "min": 1, "max": 20, "owner": "team-a",
                 "note": "a benchmark object of about the size of its custom twin",
                 "tags": {"tier": "backend"}},
    })
}

/// One kind's figures in one round: creates/s per level, LIST p50 consistent and cached.
struct Figures {
    creates: Vec<f64>,
    list_etcd: Duration,
    list_cache: Duration,
}

struct Kind {
    name: &'static str,
    path: &'static str,
    make: fn(&str) -> Value,
}

const KINDS: [Kind; 2] = [
    Kind {
        name: "ConfigMap",
        path: "/api/v1/namespaces/bench/configmaps",
        make: configmap,
    },
    Kind {
        name: "custom Widget",
        path: "/apis/bench.skiff.dev/v1/namespaces/bench/widgets",
        make: widget,
    },
];

async fn measure(api: &ApiServer, kind: &Kind, round: usize) -> Result<Figures> {
    let admin = api.client()?;
    let url = api.url(kind.path);
    let mut creates = Vec::new();
    for &clients in LEVELS {
        let (admin, url, prefix, make) = (
            admin.clone(),
            url.clone(),
            format!("r{round}-c{clients}"),
            kind.make,
        );
        creates.push(
            creates_per_second(clients, CREATES, move |i| {
                admin.post(&url).json(&make(&format!("{prefix}-{i}")))
            })
            .await,
        );
    }
    // Fill up to LISTED objects of this kind.
    let have = LEVELS.len() * CREATES;
    if have < LISTED {
        let (admin, url, prefix, make) = (
            admin.clone(),
            url.clone(),
            format!("r{round}-fill"),
            kind.make,
        );
        creates_per_second(64, LISTED - have, move |i| {
            admin.post(&url).json(&make(&format!("{prefix}-{i}")))
        })
        .await;
    }
    let timed = |query: &'static str| {
        let (admin, url) = (admin.clone(), url.clone());
        async move {
            let mut times = Vec::with_capacity(LISTS);
            for _ in 0..LISTS {
                let t = Instant::now();
                let r = admin.get(format!("{url}{query}")).send().await?;
                let status = r.status();
                let bytes = r.bytes().await?;
                // The server's part: until the last byte is in. Parsing the body is the
                // client's, and depends on the objects' shape more than on the server.
                times.push(t.elapsed());
                if status != 200 {
                    bail!("LIST answered {status}");
                }
                let body: Value = serde_json::from_slice(&bytes)?;
                let n = body["items"].as_array().map(Vec::len).unwrap_or(0);
                if n < LISTED {
                    bail!("LIST returned {n} items, expected {LISTED}");
                }
            }
            times.sort();
            Ok(percentile(&times, 0.5))
        }
    };
    let list_etcd = timed("").await?;
    let list_cache = timed("?resourceVersion=0").await?;
    Ok(Figures {
        creates,
        list_etcd,
        list_cache,
    })
}

async fn round(round: usize) -> Result<[Figures; 2]> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let admin = api.client()?;
    for (url, body) in [
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        ),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            serde_json::from_str(CRD)?,
        ),
    ] {
        let r = admin.post(api.url(url)).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("creating {url}: {}", r.status());
        }
    }
    // The custom type is served once the definition is established.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin.get(api.url(KINDS[1].path)).send().await?;
        if r.status() == 200 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the custom type was not served within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let order: [usize; 2] = if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    };
    let first = measure(&api, &KINDS[order[0]], round).await?;
    let second = measure(&api, &KINDS[order[1]], round).await?;
    Ok(if order[0] == 0 {
        [first, second]
    } else {
        [second, first]
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(), Vec::new()];
    for r in 0..ROUNDS {
        let [cm, custom] = round(r).await?;
        results[0].push(cm);
        results[1].push(custom);
    }
    let summary = |f: &dyn Fn(&Figures) -> f64, m: usize, digits: usize| {
        median_range(results[m].iter().map(f), digits)
    };
    println!(
        "| measure, median (range) of {ROUNDS} runs each | {} | {} | custom / ConfigMap |",
        KINDS[0].name, KINDS[1].name
    );
    println!("|---|---|---|---|");
    for (i, clients) in LEVELS.iter().enumerate() {
        let (a, at) = summary(&|f| f.creates[i], 0, 0);
        let (b, bt) = summary(&|f| f.creates[i], 1, 0);
        println!(
            "| creates/s, {clients} client(s) | {at} | {bt} | {:.0}% |",
            100.0 * b / a
        );
    }
    let ms_of = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, pick) in [
        (
            "consistent (from etcd)",
            &(|f: &Figures| ms_of(f.list_etcd)) as &dyn Fn(&Figures) -> f64,
        ),
        ("`resourceVersion=0` (watch cache)", &|f: &Figures| {
            ms_of(f.list_cache)
        }),
    ] {
        let (a, at) = summary(pick, 0, 1);
        let (b, bt) = summary(pick, 1, 1);
        // Lists: the figure is a time, so the custom kind's share of the speed is a / b.
        println!(
            "| LIST {LISTED} objects, {name}, p50 ms | {at} | {bt} | {:.0}% |",
            100.0 * a / b
        );
    }
    Ok(())
}
