//! Discovery and OpenAPI parity with kube-apiserver v1.33: the live documents of a real
//! skiff-apiserver compared with Kubernetes' own published documents, kept trimmed in
//! `tests/fixtures/kube-v1.33/` (see the README there for their source).
//!
//! Discovery: for every group/version the server lists, every resource it serves must appear
//! upstream with the same kind, scope, singular name, verbs, short names, categories and
//! subresources (each subresource with the same kind and verbs), in the aggregated document and
//! in the legacy ones alike; nothing may be listed that upstream does not list. Resources (and
//! subresources) upstream lists that the server does not serve yet are named in
//! [`NOT_YET_SERVED`], each with why: one dropped by mistake fails, and so does one served
//! while still named there, so the list never claims less than is served.
//!
//! OpenAPI v3: for every kind the server serves in a group/version the fixtures hold, the
//! published schema of that kind and of everything it references, directly or not, must be
//! equal to the upstream one as JSON: the same types, formats, required fields, descriptions,
//! defaults and `x-kubernetes-*` extensions. No difference is forgiven.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY};
use serde_json::{json, Value};
use skiff_e2e::{send, Cluster};

/// The aggregated media type the server answers with, and the header kubectl sends.
const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// What upstream lists in a group/version the server serves but the server does not (yet), by
/// `group/version/resource[/subresource]` (`v1/...` for the core group), and why.
const NOT_YET_SERVED: &[(&str, &str)] = &[];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/kube-v1.33")
}

fn fixture(path: &str) -> Value {
    let p = fixtures().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `group/version` as the keys of [`NOT_YET_SERVED`] spell it (`v1` for the core group).
fn gv(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// One resource as both documents describe it, in the aggregated form, with its verbs sorted
/// (their order means nothing) and its subresources by name.
fn normal(r: &Value) -> (String, Value) {
    let mut r = r.clone();
    let sorted = |v: &mut Value| {
        if let Some(a) = v.as_array_mut() {
            a.sort_by_key(|x| x.as_str().unwrap_or_default().to_string());
        }
    };
    sorted(&mut r["verbs"]);
    let mut subs = BTreeMap::new();
    if let Some(list) = r.as_object_mut().and_then(|o| o.remove("subresources")) {
        for mut s in list.as_array().cloned().unwrap_or_default() {
            sorted(&mut s["verbs"]);
            let name = s["subresource"].as_str().unwrap_or_default().to_string();
            subs.insert(name, s);
        }
    }
    r["subresources"] = json!(subs);
    (r["resource"].as_str().unwrap_or_default().to_string(), r)
}

/// A legacy `APIResourceList` in the aggregated form, to compare with.
fn legacy_as_aggregated(list: &Value) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let resources = list["resources"].as_array().cloned().unwrap_or_default();
    for r in resources
        .iter()
        .filter(|r| !r["name"].as_str().unwrap_or("/").contains('/'))
    {
        let mut e = json!({
            "resource": r["name"],
            "responseKind": {"group": "", "version": "", "kind": r["kind"]},
            "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
            "singularResource": r["singularName"],
            "verbs": r["verbs"],
        });
        for key in ["shortNames", "categories"] {
            if let Some(v) = r.get(key) {
                e[key] = v.clone();
            }
        }
        out.insert(r["name"].as_str().unwrap_or_default().to_string(), e);
    }
    for s in resources
        .iter()
        .filter(|r| r["name"].as_str().unwrap_or("").contains('/'))
    {
        let (parent, name) = s["name"].as_str().unwrap_or("").split_once('/').unwrap();
        assert_eq!(s["singularName"], "", "{s}");
        let entry = json!({
            "subresource": name,
            "responseKind": {
                "group": s.get("group").cloned().unwrap_or(json!("")),
                "version": s.get("version").cloned().unwrap_or(json!("")),
                "kind": s["kind"],
            },
            "verbs": s["verbs"],
        });
        let parent = out
            .get_mut(parent)
            .unwrap_or_else(|| panic!("{} listed without its resource", s["name"]));
        let subs = parent
            .as_object_mut()
            .unwrap()
            .entry("subresources")
            .or_insert(json!([]));
        subs.as_array_mut().unwrap().push(entry);
    }
    out.into_values().map(|r| normal(&r)).collect()
}

/// The aggregated documents' group/versions: `(group, version)` → resources by name.
fn aggregated_gvs(docs: &[&Value]) -> BTreeMap<(String, String), BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for doc in docs {
        for g in doc["items"].as_array().cloned().unwrap_or_default() {
            let group = g["metadata"]["name"].as_str().unwrap_or("").to_string();
            for v in g["versions"].as_array().cloned().unwrap_or_default() {
                let version = v["version"].as_str().unwrap_or("").to_string();
                let resources = v["resources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(normal)
                    .collect();
                out.insert((group.clone(), version), resources);
            }
        }
    }
    out
}

/// The upstream discovery of every group/version the fixtures hold, aggregated form.
fn upstream() -> BTreeMap<(String, String), BTreeMap<String, Value>> {
    let mut out = aggregated_gvs(&[&fixture("discovery/aggregated_v2.json")]);
    out.insert(
        (String::new(), "v1".into()),
        legacy_as_aggregated(&fixture("discovery/api__v1.json")),
    );
    out
}

/// Compares what the server lists with upstream, returning every difference in words.
fn compare(
    served: &BTreeMap<(String, String), BTreeMap<String, Value>>,
    upstream: &BTreeMap<(String, String), BTreeMap<String, Value>>,
    what: &str,
) -> Vec<String> {
    let not_yet: BTreeSet<&str> = NOT_YET_SERVED.iter().map(|(k, _)| *k).collect();
    let mut problems = Vec::new();
    for ((group, version), resources) in served {
        let key = gv(group, version);
        let Some(theirs) = upstream.get(&(group.clone(), version.clone())) else {
            problems.push(format!(
                "{what}: {key} is served but not published upstream"
            ));
            continue;
        };
        for (name, ours) in resources {
            if not_yet.contains(format!("{key}/{name}").as_str()) {
                problems.push(format!(
                    "{what}: {key}/{name} is served: take it out of NOT_YET_SERVED"
                ));
            }
            let Some(their) = theirs.get(name) else {
                problems.push(format!(
                    "{what}: {key}/{name} is served but not published upstream"
                ));
                continue;
            };
            let mut ours = ours.clone();
            let mut their = their.clone();
            let our_subs = ours
                .as_object_mut()
                .unwrap()
                .remove("subresources")
                .unwrap();
            let their_subs = their
                .as_object_mut()
                .unwrap()
                .remove("subresources")
                .unwrap();
            if ours != their {
                problems.push(format!(
                    "{what}: {key}/{name}:\n  served   {ours}\n  upstream {their}"
                ));
            }
            let (our_subs, their_subs) = (
                our_subs.as_object().unwrap(),
                their_subs.as_object().unwrap(),
            );
            for (sub, s) in our_subs {
                if not_yet.contains(format!("{key}/{name}/{sub}").as_str()) {
                    problems.push(format!(
                        "{what}: {key}/{name}/{sub} is served: take it out of NOT_YET_SERVED"
                    ));
                }
                match their_subs.get(sub) {
                    None => problems.push(format!(
                        "{what}: {key}/{name}/{sub} is served but not published upstream"
                    )),
                    Some(t) if t != s => problems.push(format!(
                        "{what}: {key}/{name}/{sub}:\n  served   {s}\n  upstream {t}"
                    )),
                    Some(_) => {}
                }
            }
            for sub in their_subs.keys().filter(|s| !our_subs.contains_key(*s)) {
                if !not_yet.contains(format!("{key}/{name}/{sub}").as_str()) {
                    problems.push(format!("{what}: {key}/{name}/{sub} is published upstream but not served (nor listed in NOT_YET_SERVED)"));
                }
            }
        }
        for name in theirs.keys().filter(|n| !resources.contains_key(*n)) {
            if !not_yet.contains(format!("{key}/{name}").as_str()) {
                problems.push(format!("{what}: {key}/{name} is published upstream but not served (nor listed in NOT_YET_SERVED)"));
            }
        }
    }
    problems
}

async fn get(c: &reqwest::Client, url: String, accept: Option<&str>) -> reqwest::Response {
    let mut r = c.get(url);
    if let Some(a) = accept {
        r = r.header(ACCEPT, a);
    }
    r.send().await.expect("request sent")
}

async fn json_of(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn discovery_lists_what_kube_apiserver_v1_33_lists() {
    let cluster = Cluster::start().await.unwrap();
    let api = &cluster.api;
    let c = api.client().unwrap();
    let upstream = upstream();

    // Aggregated, as kubectl asks for it.
    let kubectl_accept = format!("{V2},{V2BETA1},application/json");
    let mut docs = Vec::new();
    for path in ["/api", "/apis"] {
        let resp = get(&c, api.url(path), Some(&kubectl_accept)).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()[CONTENT_TYPE], V2, "{path}");
        assert_eq!(resp.headers()[VARY], "Accept", "{path}");
        let doc = json_of(resp).await;
        assert_eq!(doc["kind"], "APIGroupDiscoveryList", "{doc}");
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2", "{doc}");
        docs.push(doc);
    }
    assert_eq!(docs[0]["items"].as_array().unwrap().len(), 1, "{}", docs[0]);
    assert_eq!(docs[0]["items"][0]["metadata"], json!({}), "{}", docs[0]);
    let served = aggregated_gvs(&docs.iter().collect::<Vec<_>>());
    assert!(served.contains_key(&(String::new(), "v1".into())));
    assert!(served.contains_key(&("apps".into(), "v1".into())));
    let mut problems = compare(&served, &upstream, "aggregated");

    // Legacy: every group/version's own document says the same.
    let mut legacy = BTreeMap::new();
    let (code, versions) = send(&c, reqwest::Method::GET, api.url("/api"), None).await;
    assert_eq!(code, 200);
    assert_eq!(versions["kind"], "APIVersions");
    assert_eq!(versions["versions"], json!(["v1"]));
    let (code, core) = send(&c, reqwest::Method::GET, api.url("/api/v1"), None).await;
    assert_eq!(code, 200);
    assert_eq!(core["groupVersion"], "v1");
    legacy.insert(
        (String::new(), "v1".to_string()),
        legacy_as_aggregated(&core),
    );
    let (code, groups) = send(&c, reqwest::Method::GET, api.url("/apis"), None).await;
    assert_eq!(code, 200);
    assert_eq!(groups["kind"], "APIGroupList");
    for g in groups["groups"].as_array().unwrap() {
        let name = g["name"].as_str().unwrap();
        let (code, group) = send(
            &c,
            reqwest::Method::GET,
            api.url(&format!("/apis/{name}")),
            None,
        )
        .await;
        assert_eq!(code, 200, "{group}");
        assert_eq!(group["kind"], "APIGroup");
        assert_eq!(group["preferredVersion"], g["preferredVersion"]);
        for v in g["versions"].as_array().unwrap() {
            let version = v["version"].as_str().unwrap();
            let path = format!("/apis/{name}/{version}");
            let (code, list) = send(&c, reqwest::Method::GET, api.url(&path), None).await;
            assert_eq!(code, 200, "{path}: {list}");
            assert_eq!(list["groupVersion"], format!("{name}/{version}"));
            legacy.insert(
                (name.to_string(), version.to_string()),
                legacy_as_aggregated(&list),
            );
        }
    }
    assert_eq!(
        legacy, served,
        "the legacy and aggregated documents disagree"
    );
    problems.extend(compare(&legacy, &upstream, "legacy"));

    // The core group's storage version hashes, which only the legacy document carries.
    let hashes = |list: &Value| -> BTreeMap<String, Value> {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| {
                Some((
                    r["name"].as_str()?.to_string(),
                    r.get("storageVersionHash")?.clone(),
                ))
            })
            .collect()
    };
    let theirs = hashes(&fixture("discovery/api__v1.json"));
    for (name, hash) in hashes(&core) {
        match theirs.get(&name) {
            Some(t) if *t == hash => {}
            other => problems.push(format!(
                "legacy: v1/{name} storageVersionHash {hash}, upstream {other:?}"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "discovery differs from kube-apiserver v1.33:\n{}",
        problems.join("\n")
    );

    // What kubectl makes of it: namespaces have no deletecollection, and the server refuses it.
    let out = cluster
        .kubectl()
        .ok(&["api-resources", "-o", "wide", "--api-group="]);
    let ns = out
        .lines()
        .find(|l| l.starts_with("namespaces "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        ns.split_whitespace()
            .any(|w| w == "create,delete,get,list,patch,update,watch"),
        "{ns}"
    );
    let (code, body) = send(
        &c,
        reqwest::Method::DELETE,
        api.url("/api/v1/namespaces"),
        None,
    )
    .await;
    assert_eq!(code, 405, "{body}");
    assert_eq!(body["reason"], "MethodNotAllowed", "{body}");
}

#[tokio::test]
async fn discovery_answers_every_accept_header_as_kube_apiserver_does() {
    let cluster = Cluster::start().await.unwrap();
    let api = &cluster.api;
    let c = api.client().unwrap();
    enum Want {
        Aggregated(&'static str),
        Legacy(&'static str),
        NotAcceptable,
    }
    use Want::*;
    let yaml_v2 = "application/yaml;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let cases: Vec<(String, Want)> = vec![
        (V2.into(), Aggregated(V2)),
        (format!("{V2},{V2BETA1},application/json"), Aggregated(V2)),
        (format!("{V2};profile=nopeer"), Aggregated(V2)),
        (
            format!("{V2};profile=nopeer,{V2},application/json"),
            Aggregated(V2),
        ),
        (
            "application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io".into(),
            Aggregated(V2),
        ),
        (yaml_v2.into(), Aggregated(yaml_v2)),
        (format!("application/json;q=0.5,{V2}"), Aggregated(V2)),
        // v2beta1 is no longer served (v1.33): the fallback answers, or nothing does.
        (
            format!("{V2BETA1},application/json"),
            Legacy("application/json"),
        ),
        (V2BETA1.into(), NotAcceptable),
        ("application/json".into(), Legacy("application/json")),
        ("application/yaml".into(), Legacy("application/yaml")),
        ("*/*".into(), Legacy("application/json")),
        (
            "application/vnd.kubernetes.protobuf,application/json".into(),
            Legacy("application/json"),
        ),
        (
            "application/json;g=apidiscovery.k8s.io;v=v1;as=APIGroupDiscoveryList".into(),
            NotAcceptable,
        ),
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io".into(),
            NotAcceptable,
        ),
        ("text/html".into(), NotAcceptable),
    ];
    for path in ["/api", "/apis"] {
        let resp = get(&c, api.url(path), None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        for (accept, want) in &cases {
            let resp = get(&c, api.url(path), Some(accept)).await;
            let code = resp.status().as_u16();
            let ct = resp
                .headers()
                .get(CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let vary = resp
                .headers()
                .get(VARY)
                .map(|v| v.to_str().unwrap().to_string());
            let body = resp.text().await.unwrap();
            let doc: Value = if ct.starts_with("application/yaml") {
                // The top-level kind is all that is read of a YAML answer.
                let kind = body.lines().find_map(|l| l.strip_prefix("kind: "));
                json!({"kind": kind})
            } else {
                serde_json::from_str(&body).unwrap_or(Value::Null)
            };
            let ctx = format!("GET {path} Accept: {accept} -> {code} {ct}: {body:.300}");
            match want {
                Aggregated(media) => {
                    assert_eq!((code, ct.as_str()), (200, *media), "{ctx}");
                    assert_eq!(doc["kind"], "APIGroupDiscoveryList", "{ctx}");
                    assert_eq!(vary.as_deref(), Some("Accept"), "{ctx}");
                }
                Legacy(media) => {
                    assert_eq!((code, ct.as_str()), (200, *media), "{ctx}");
                    let kind = if path == "/api" {
                        "APIVersions"
                    } else {
                        "APIGroupList"
                    };
                    assert_eq!(doc["kind"], kind, "{ctx}");
                    assert_eq!(vary.as_deref(), Some("Accept"), "{ctx}");
                }
                NotAcceptable => {
                    assert_eq!(code, 406, "{ctx}");
                    assert_eq!(doc["kind"], "Status", "{ctx}");
                    assert_eq!(doc["reason"], "NotAcceptable", "{ctx}");
                }
            }
        }
    }

    // The aggregated document has an ETag; a client that has it gets a 304.
    let resp = get(&c, api.url("/apis"), Some(V2)).await;
    let etag = resp.headers()[ETAG].clone();
    let again = c
        .get(api.url("/apis"))
        .header(ACCEPT, V2)
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[ETAG], etag);
    let stale = c
        .get(api.url("/apis"))
        .header(ACCEPT, V2)
        .header(IF_NONE_MATCH, "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
}

/// Every reference in a schema, by definition name.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => {
                        out.insert(r.rsplit('/').next().unwrap_or_default().to_string());
                    }
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
        _ => {}
    }
}

/// Where two JSON values differ, as JSON pointers (the first few).
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    if out.len() >= 5 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => differences(p, q, &format!("{at}/{k}"), out),
                    (p, q) => out.push(format!("{at}/{k}: served {p:?}, upstream {q:?}")),
                }
            }
        }
        _ if a != b => out.push(format!("{at}: served {a}, upstream {b}")),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_v3_schemas_are_kube_apiserver_v1_33s() {
    let cluster = Cluster::start().await.unwrap();
    let api = &cluster.api;
    let c = api.client().unwrap();
    let resp = get(&c, api.url("/apis"), Some(V2)).await;
    let served = aggregated_gvs(&[
        &json_of(get(&c, api.url("/api"), Some(V2)).await)
            .await
            .clone(),
        &json_of(resp).await,
    ]);
    let (code, index) = send(&c, reqwest::Method::GET, api.url("/openapi/v3"), None).await;
    assert_eq!(code, 200, "{index}");
    let mut problems = Vec::new();
    let mut compared = 0;
    for ((group, version), resources) in &served {
        let (base, path) = if group.is_empty() {
            (format!("api__{version}"), format!("api/{version}"))
        } else {
            (
                format!("apis__{group}__{version}"),
                format!("apis/{group}/{version}"),
            )
        };
        let file = fixtures()
            .join("openapi")
            .join(format!("{base}_openapi.json"));
        assert!(file.exists(), "no upstream OpenAPI document for {path}");
        let theirs = fixture(&format!("openapi/{base}_openapi.json"));
        let theirs = theirs["components"]["schemas"].as_object().unwrap();
        let url = index["paths"][&path]["serverRelativeURL"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI index: {index}"));
        let (code, doc) = send(&c, reqwest::Method::GET, api.url(url), None).await;
        assert_eq!(code, 200, "{url}: {doc}");
        let ours = doc["components"]["schemas"].as_object().unwrap();
        // The kinds served here, by the upstream definitions that carry them.
        let kinds: BTreeSet<&str> = resources
            .values()
            .filter_map(|r| r["responseKind"]["kind"].as_str())
            .collect();
        let mut todo: Vec<String> = theirs
            .iter()
            .filter(|(_, s)| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|gvks| {
                        gvks.iter().any(|k| {
                            k["group"] == group.as_str()
                                && k["version"] == version.as_str()
                                && kinds.contains(k["kind"].as_str().unwrap_or(""))
                        })
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        assert!(
            !todo.is_empty(),
            "no upstream schema for the kinds of {path}: {kinds:?}"
        );
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let their = &theirs[&name];
            let mut next = BTreeSet::new();
            refs(their, &mut next);
            todo.extend(next.into_iter().filter(|n| !seen.contains(n)));
            compared += 1;
            match ours.get(&name) {
                None => problems.push(format!("{path}: {name} is not published")),
                Some(our) if our != their => {
                    let mut diff = Vec::new();
                    differences(our, their, "", &mut diff);
                    problems.push(format!(
                        "{path}: {name} differs:\n    {}",
                        diff.join("\n    ")
                    ));
                }
                Some(_) => {}
            }
        }
    }
    assert!(compared > 100, "only {compared} schemas compared");
    assert!(
        problems.is_empty(),
        "{} of {compared} schemas differ from kube-apiserver v1.33's:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
