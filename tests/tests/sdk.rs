//! The SDK's promises against a real API server: watchers that neither lose nor repeat an
//! event across dropped connections, API server restarts and compaction; informer caches
//! that end equal to a fresh list; the controller runner; leader election between
//! processes; dynamic objects through every verb, informers and controllers; the
//! `widget_operator` example on a custom resource.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use skiff_client::backoff::Backoff;
use skiff_client::controller::{self, Action, Controller};
use skiff_client::informer::InformerFactory;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::watcher::{self, Event};
use skiff_client::{
    Api, ApiResource, Client, Config, DeleteParams, DynamicObject, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use skiff_e2e::{ApiServer, Cluster, Etcd, Proxy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use skiff_e2e::configmap as cm;

/// A client that reaches the server through `proxy`.
fn client_via(api: &ApiServer, proxy: &Proxy) -> Client {
    let mut cfg = Config::from_kubeconfig(&api.kubeconfig).unwrap();
    cfg.server = format!("https://127.0.0.1:{}", proxy.port);
    Client::new(cfg).unwrap()
}

fn fast_config() -> watcher::Config {
    watcher::Config {
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
        ..Default::default()
    }
}

/// Runs a watcher in the background, sending what it reports.
fn spawn_watcher(
    api: Api<ConfigMap>,
    config: watcher::Config,
) -> mpsc::UnboundedReceiver<Result<Event<ConfigMap>, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let s = watcher::watcher(api, config);
        futures::pin_mut!(s);
        while let Some(ev) = s.next().await {
            if tx.send(ev.map_err(|e| e.to_string())).is_err() {
                return;
            }
        }
    });
    rx
}

fn rv(o: &ConfigMap) -> i64 {
    o.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits for the watcher's first complete list.
async fn until_listed(rx: &mut mpsc::UnboundedReceiver<Result<Event<ConfigMap>, String>>) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the first list arrives")
            .unwrap();
        if matches!(ev, Ok(Event::InitDone)) {
            return;
        }
    }
}

/// The (name → resourceVersion) a fresh list returns.
async fn fresh(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap(),
                c.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

fn contents(store: &Store<ConfigMap>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap(),
                c.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn watcher_neither_loses_nor_repeats_across_dropped_connections() {
    let c = Cluster::start().await.unwrap();
    let proxy = Proxy::start(c.api.port).await.unwrap();
    let direct: Api<ConfigMap> = Api::namespaced(
        Client::from_kubeconfig(&c.api.kubeconfig).unwrap(),
        "default",
    );
    let watched: Api<ConfigMap> = Api::namespaced(client_via(&c.api, &proxy), "default");
    let mut rx = spawn_watcher(watched, fast_config());
    until_listed(&mut rx).await;

    // Writes, with every connection through the proxy cut four times along the way.
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..200 {
        let name = format!("cm-{}", i % 40);
        let obj = if i < 40 {
            direct
                .create(&PostParams::default(), &cm(&name, "0"))
                .await
                .unwrap()
        } else {
            direct
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"k": i.to_string()}})),
                )
                .await
                .unwrap()
        };
        written.push(rv(&obj));
        if i % 50 == 25 {
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for i in 0..5 {
        let name = format!("cm-{i}");
        direct
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        deleted.push(name);
    }

    let mut applied = Vec::new();
    let mut deletes = Vec::new();
    let mut errors = 0;
    let mut inits = 0;
    while applied.len() < written.len() || deletes.len() < deleted.len() {
        let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "events stopped: {} of {} applies, {} deletes",
                    applied.len(),
                    written.len(),
                    deletes.len()
                )
            })
            .unwrap();
        match ev {
            Ok(Event::Apply(o)) => applied.push(rv(&o)),
            Ok(Event::Delete(o)) => deletes.push(o.metadata.name.unwrap()),
            Ok(Event::Init) => inits += 1,
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    assert!(errors >= 1, "the cuts broke the watch at least once");
    assert_eq!(
        inits, 0,
        "resuming from the last resourceVersion needs no re-list"
    );
    assert_eq!(applied, written, "every write exactly once, in order");
    assert_eq!(deletes, deleted);
}

#[tokio::test]
async fn watcher_carries_on_across_an_apiserver_restart() {
    let mut c = Cluster::start().await.unwrap();
    let direct: Api<ConfigMap> = Api::namespaced(
        Client::from_kubeconfig(&c.api.kubeconfig).unwrap(),
        "default",
    );
    let factory = InformerFactory::new(
        Client::from_kubeconfig(&c.api.kubeconfig).unwrap(),
        CancellationToken::new(),
    );
    let informer = factory.informer::<ConfigMap>();
    let store = informer.store();
    for i in 0..20 {
        direct
            .create(&PostParams::default(), &cm(&format!("a-{i}"), "0"))
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), store.wait_until_ready())
        .await
        .unwrap();

    c.api.restart().await.unwrap();
    for i in 0..20 {
        direct
            .create(&PostParams::default(), &cm(&format!("b-{i}"), "0"))
            .await
            .unwrap();
    }
    direct
        .delete("a-0", &DeleteParams::default())
        .await
        .unwrap();
    let want = fresh(&direct).await;
    let mut got = BTreeMap::new();
    for _ in 0..200 {
        got = contents(&store)
            .into_iter()
            .filter(|(k, _)| k != "kube-root-ca.crt")
            .collect();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, want, "the cache follows the restarted server");
}

#[tokio::test]
async fn watcher_relists_when_its_version_is_compacted() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(
        &etcd,
        &["--watch-cache-size=20", "--etcd-compaction-interval=1s"],
    )
    .await
    .unwrap();
    let proxy = Proxy::start(api.port).await.unwrap();
    let direct: Api<ConfigMap> =
        Api::namespaced(Client::from_kubeconfig(&api.kubeconfig).unwrap(), "default");
    for i in 0..10 {
        direct
            .create(&PostParams::default(), &cm(&format!("c-{i}"), "0"))
            .await
            .unwrap();
    }
    let watched: Api<ConfigMap> = Api::namespaced(client_via(&api, &proxy), "default");
    let mut rx = spawn_watcher(watched, fast_config());
    until_listed(&mut rx).await;

    // While the watcher is cut off, history moves past what the server keeps.
    proxy.refuse();
    for round in 0..10 {
        for i in 0..10 {
            direct
                .patch(
                    &format!("c-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"k": round.to_string()}})),
                )
                .await
                .unwrap();
        }
    }
    direct
        .delete("c-9", &DeleteParams::default())
        .await
        .unwrap();
    direct
        .create(&PostParams::default(), &cm("new", "1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.admit();

    let want = fresh(&direct).await;
    let mut gone = false;
    let mut relisted = false;
    let mut view: BTreeMap<String, String> = BTreeMap::new();
    let mut buffer = BTreeMap::new();
    while !(relisted && view == want) {
        let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no re-list: gone={gone} view={view:?}"))
            .unwrap();
        match ev {
            Err(e)
                if e.contains("OutOfRange") || e.contains("Expired") || e.contains("too old") =>
            {
                gone = true
            }
            Err(_) => {}
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(o)) => {
                buffer.insert(
                    o.metadata.name.clone().unwrap(),
                    o.metadata.resource_version.clone().unwrap(),
                );
            }
            Ok(Event::InitDone) => {
                relisted = true;
                view = std::mem::take(&mut buffer);
            }
            Ok(Event::Apply(o)) => {
                view.insert(
                    o.metadata.name.clone().unwrap(),
                    o.metadata.resource_version.clone().unwrap(),
                );
            }
            Ok(Event::Delete(o)) => {
                view.remove(o.metadata.name.as_ref().unwrap());
            }
        }
    }
    assert!(gone, "the resume was refused as too old (410)");
    let mut want_no_root = want.clone();
    want_no_root.remove("kube-root-ca.crt");
    view.remove("kube-root-ca.crt");
    assert_eq!(view, want_no_root);
}

#[tokio::test]
async fn shared_informer_cache_equals_a_fresh_list_after_churn() {
    let c = Cluster::start().await.unwrap();
    let proxy = Proxy::start(c.api.port).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    cfg.server = format!("https://127.0.0.1:{}", proxy.port);
    let factory = InformerFactory::new(Client::new(cfg).unwrap(), shutdown.clone());
    let one = factory.informer::<ConfigMap>();
    let two = factory.informer::<ConfigMap>();
    assert_eq!(factory.len(), 1, "two consumers share one watch");
    tokio::time::timeout(Duration::from_secs(20), one.store().wait_until_ready())
        .await
        .unwrap();

    c.kubectl().ok(&["create", "namespace", "other"]);
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let mut writers = Vec::new();
    for w in 0..4 {
        let ns = if w % 2 == 0 { "default" } else { "other" };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        writers.push(tokio::spawn(async move {
            for i in 0..120 {
                let name = format!("w{w}-{}", i % 15);
                match i % 4 {
                    0 | 1 => {
                        let _ = api.create(&PostParams::default(), &cm(&name, "0")).await;
                    }
                    2 => {
                        let _ = api
                            .patch(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"data": {"k": i.to_string()}})),
                            )
                            .await;
                    }
                    _ => {
                        let _ = api.delete(&name, &DeleteParams::default()).await;
                    }
                }
            }
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
    }
    for w in writers {
        w.await.unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client);
    let want: BTreeMap<String, String> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            (
                format!(
                    "{}/{}",
                    c.metadata.namespace.unwrap(),
                    c.metadata.name.unwrap()
                ),
                c.metadata.resource_version.unwrap(),
            )
        })
        .collect();
    let view = |s: &Store<ConfigMap>| -> BTreeMap<String, String> {
        s.state()
            .iter()
            .map(|c| {
                (
                    format!(
                        "{}/{}",
                        c.metadata.namespace.clone().unwrap(),
                        c.metadata.name.clone().unwrap()
                    ),
                    c.metadata.resource_version.clone().unwrap(),
                )
            })
            .collect()
    };
    let mut got = BTreeMap::new();
    for _ in 0..200 {
        got = view(&one.store());
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, want, "the cache converges to the truth");
    assert_eq!(
        view(&two.store()),
        want,
        "both consumers read the same cache"
    );
    assert!(
        one.store()
            .state()
            .iter()
            .all(|c| c.metadata.managed_fields.is_none()),
        "the factory's informers drop managed fields"
    );
    let others = one.store().in_namespace("other");
    assert_eq!(
        others.len(),
        want.keys().filter(|k| k.starts_with("other/")).count()
    );
    assert!(
        one.store()
            .get(&ObjectKey::new("default", "kube-root-ca.crt"))
            .is_some()
            || !want.contains_key("default/kube-root-ca.crt")
    );
    shutdown.cancel();
}

#[tokio::test]
async fn controller_reconciles_every_key_one_at_a_time_and_retries_failures() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..30 {
        api.create(&PostParams::default(), &cm(&format!("r-{i}"), "0"))
            .await
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let controller = Controller::new(
        factory.informer::<ConfigMap>(),
        controller::Config {
            concurrency: 4,
            backoff: Backoff::new(Duration::from_millis(20), Duration::from_secs(1)),
        },
    );
    let running: Arc<tracking::Running> = Arc::default();
    let flaky_attempts = Arc::new(AtomicUsize::new(0));
    let r2 = running.clone();
    let f2 = flaky_attempts.clone();
    let api2 = api.clone();
    let run = tokio::spawn(controller.run(
        move |key: ObjectKey, obj: Option<Arc<ConfigMap>>| {
            let running = r2.clone();
            let flaky = f2.clone();
            let api = api2.clone();
            async move {
                let _guard = running.enter(&key);
                tokio::time::sleep(Duration::from_millis(5)).await;
                let Some(obj) = obj else {
                    return Ok(Action::Done);
                };
                if key.name == "r-7" && flaky.fetch_add(1, Ordering::SeqCst) < 3 {
                    return Err("simulated failure".to_string());
                }
                let want = obj
                    .data
                    .as_ref()
                    .and_then(|d| d.get("k"))
                    .cloned()
                    .unwrap_or_default();
                let have = obj
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("seen"))
                    .cloned();
                if key.namespace == "default" && have.as_ref() != Some(&want) {
                    api.patch(
                        &key.name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"annotations": {"seen": want}}})),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Ok(Action::Done)
            }
        },
        shutdown.clone(),
    ));
    // Changes made while it runs are reconciled too.
    for i in 0..30 {
        api.patch(
            &format!("r-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "1"}})),
        )
        .await
        .unwrap();
    }
    let mut done = false;
    for _ in 0..300 {
        let list = api.list(&ListParams::default().labels("")).await.unwrap();
        done = list
            .items
            .iter()
            .filter(|c| c.metadata.name.as_deref().unwrap().starts_with("r-"))
            .all(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("seen"))
                    .map(String::as_str)
                    == Some("1")
            });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "every object reconciled to its latest state");
    assert!(
        flaky_attempts.load(Ordering::SeqCst) >= 4,
        "the failing key was retried until it passed"
    );
    assert!(
        !running.overlapped(),
        "one key was never reconciled by two workers at once"
    );
    assert!(running.max_parallel() > 1, "different keys ran in parallel");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

/// Tracks which keys are being reconciled, to catch two workers on one key.
mod tracking {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use skiff_client::reflector::ObjectKey;
    use tokio::sync::Mutex;

    #[derive(Default)]
    pub struct Running {
        keys: Mutex<HashSet<ObjectKey>>,
        overlap: AtomicBool,
        now: AtomicUsize,
        max: AtomicUsize,
    }

    pub struct Guard {
        running: Arc<Running>,
        key: ObjectKey,
    }

    impl Running {
        pub fn enter(self: &Arc<Self>, key: &ObjectKey) -> Guard {
            let mut keys = self.keys.try_lock().expect("uncontended");
            if !keys.insert(key.clone()) {
                self.overlap.store(true, Ordering::SeqCst);
            }
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            Guard {
                running: self.clone(),
                key: key.clone(),
            }
        }

        pub fn overlapped(&self) -> bool {
            self.overlap.load(Ordering::SeqCst)
        }

        pub fn max_parallel(&self) -> usize {
            self.max.load(Ordering::SeqCst)
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Ok(mut keys) = self.running.keys.try_lock() {
                keys.remove(&self.key);
            }
            self.running.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One `leader_election` example process.
struct Candidate {
    child: std::process::Child,
    lines: Arc<output::Lines>,
}

mod output {
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    pub struct Lines {
        pub leading: AtomicBool,
        pub stopped: AtomicBool,
    }

    impl Lines {
        pub fn leading(&self) -> bool {
            self.leading.load(Ordering::SeqCst)
        }
        pub fn saw(&self, line: &str) {
            if line.starts_with("leading") {
                self.leading.store(true, Ordering::SeqCst);
            }
            if line.starts_with("stopped working") {
                self.stopped.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl Candidate {
    fn start(kubeconfig: &std::path::Path, id: &str) -> Candidate {
        let bin = skiff_e2e::bin_dir()
            .join("examples")
            .join("leader_election");
        assert!(
            bin.exists(),
            "{} is built (cargo build --examples)",
            bin.display()
        );
        let mut child = std::process::Command::new(bin)
            .args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--identity",
                id,
                "--lease",
                "e2e",
            ])
            .args([
                "--lease-duration",
                "4s",
                "--renew-deadline",
                "3s",
                "--retry-period",
                "500ms",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<output::Lines> = Arc::default();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l2.saw(&line);
            }
        });
        Candidate { child, lines }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn first_leader(cands: &[&Candidate], within: Duration) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Some(i) = cands.iter().position(|c| c.lines.leading()) {
            return Some(i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn lease_holder(api: &Api<k8s_openapi::api::coordination::v1::Lease>) -> Option<String> {
    api.get("e2e").await.ok()?.spec?.holder_identity
}

#[tokio::test]
async fn leader_election_fails_over_and_releases_on_shutdown() {
    let c = Cluster::start().await.unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(
        Client::from_kubeconfig(&c.api.kubeconfig).unwrap(),
        "default",
    );

    // Killed outright: the other takes over once the lease expires.
    let a = Candidate::start(&c.api.kubeconfig, "a");
    let b = Candidate::start(&c.api.kubeconfig, "b");
    let first = first_leader(&[&a, &b], Duration::from_secs(20))
        .await
        .expect("someone leads");
    let (mut leader, follower) = if first == 0 { (a, b) } else { (b, a) };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!follower.lines.leading(), "only one leads at a time");
    let killed_at = tokio::time::Instant::now();
    leader.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = leader.child.wait();
    let took = first_leader(&[&follower], Duration::from_secs(15))
        .await
        .map(|_| killed_at.elapsed());
    let took = took.expect("the follower takes over");
    // The lease lasts 4 s; candidates look every 0.5 s (at most 0.5 s after the last renewal
    // to see it, at most 0.5 s after expiry to notice), as with client-go.
    assert!(took <= Duration::from_secs(5), "took over after {took:?}");
    drop(follower);

    // Shut down politely: the lease is released, and the next candidate leads at once.
    let _ = leases.delete("e2e", &DeleteParams::default()).await;
    let a = Candidate::start(&c.api.kubeconfig, "a2");
    first_leader(&[&a], Duration::from_secs(20))
        .await
        .expect("a2 leads");
    let b = Candidate::start(&c.api.kubeconfig, "b2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = tokio::time::Instant::now();
    a.signal(nix::sys::signal::Signal::SIGTERM);
    let took = first_leader(&[&b], Duration::from_secs(15))
        .await
        .map(|_| stopped_at.elapsed());
    let took = took.expect("b2 takes over");
    assert!(
        took < Duration::from_secs(2),
        "released, not expired: took {took:?}"
    );
    let mut a = a;
    let status = a.child.wait().unwrap();
    assert!(status.success(), "a clean exit after releasing: {status}");
    assert!(
        a.lines.stopped.load(std::sync::atomic::Ordering::SeqCst),
        "the work was stopped first"
    );
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("b2"));
}

#[tokio::test]
async fn examples_find_the_kubeconfig_like_kubectl() {
    let c = Cluster::start().await.unwrap();
    c.kubectl().ok(&["run", "ex-pod", "--image=busybox"]);
    let bin = skiff_e2e::bin_dir().join("examples").join("pod_list");
    // No --kubeconfig: KUBECONFIG is used (Client::try_default).
    let out = std::process::Command::new(&bin)
        .args(["--namespace", "default"])
        .env("KUBECONFIG", &c.api.kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ex-pod"), "{stdout}");
    // Nothing to find: a message naming the problem, not a panic.
    let out = std::process::Command::new(&bin)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}

/// Polls `f` until it gives `Some` or `within` has passed.
async fn until<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dynamic_objects_do_everything_typed_ones_do() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let ar = ApiResource::namespaced("", "v1", "ConfigMap", "configmaps");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let typed: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // A watch from the start, to see every write below in order.
    let start = api.list(&ListParams::default()).await.unwrap();
    let raw = api
        .watch(&WatchParams::default(), &start.resource_version)
        .await
        .unwrap();

    // Create: the typed API sees what the dynamic one wrote, and the server's answer comes
    // back as a dynamic object with its type.
    let obj = DynamicObject::new("dyn", &ar).data(json!({"data": {"k": "1"}}));
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let types = created.types.clone().expect("the server sends the type");
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("v1", "ConfigMap")
    );
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.data["data"], json!({"k": "1"}));
    let as_typed = typed.get("dyn").await.unwrap();
    assert_eq!(as_typed.data.unwrap()["k"], "1");
    // Created twice: the server's error, as for typed objects.
    let again = api.create(&PostParams::default(), &obj).await.unwrap_err();
    assert!(again.is_already_exists(), "{again}");

    // Get and list, with a label selector.
    let got = api.get("dyn").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert!(api.get_opt("nope").await.unwrap().is_none());
    typed
        .create(&PostParams::default(), &{
            let mut o = cm("labelled", "x");
            o.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
            o
        })
        .await
        .unwrap();
    let page = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let names: Vec<_> = page
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["labelled"]);

    // Replace: conditional on the resourceVersion it carries.
    let mut changed = got.clone();
    changed.data["data"]["k"] = json!("2");
    let replaced = api
        .replace("dyn", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.data["data"]["k"], "2");
    let stale = api
        .replace("dyn", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(stale.is_conflict(), "{stale}");

    // Patch in every format, server-side apply included.
    let merged = api
        .patch(
            "dyn",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data["data"], json!({"k": "2", "m": "3"}));
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/m"}])).unwrap();
    let jsoned = api
        .patch("dyn", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(jsoned.data["data"], json!({"k": "2"}));
    let applied = api
        .patch(
            "applied",
            &PatchParams::apply("sdk-test"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "applied"}, "data": {"a": "b"}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["data"], json!({"a": "b"}));
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["sdk-test"]);

    // The raw watch saw each write as it happened.
    let events: Vec<_> = raw
        .take(6)
        .map(|e| match e.unwrap() {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.unwrap()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.unwrap()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.unwrap()),
            WatchEvent::Bookmark { .. } => "BOOKMARK".into(),
        })
        .collect()
        .await;
    assert_eq!(
        events,
        [
            "ADDED dyn",
            "ADDED labelled",
            "MODIFIED dyn",
            "MODIFIED dyn",
            "MODIFIED dyn",
            "ADDED applied"
        ]
    );

    // Delete.
    match api
        .delete("applied", &DeleteParams::default())
        .await
        .unwrap()
    {
        skiff_client::Deleted::Gone(o) => assert_eq!(o.data["data"], json!({"a": "b"})),
        other => panic!("deleted at once, not {other:?}"),
    }
    assert!(typed.get_opt("applied").await.unwrap().is_none());

    // A resource the server does not serve: not found, naming it.
    let nothing = ApiResource::namespaced("example.skiff.dev", "v1", "Nothing", "nothings");
    let e = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &nothing)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("nothings"), "{e}");

    // The status subresource, on a resource of a named group: a Deployment's status is
    // written and read through it, and a status write leaves the spec alone.
    let deployments = ApiResource::namespaced("apps", "v1", "Deployment", "deployments");
    let dapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &deployments);
    let d = DynamicObject::new("web", &deployments).data(json!({"spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }
    }}));
    dapi.create(&PostParams::default(), &d).await.unwrap();
    let patched = dapi
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}, "status": {"observedGeneration": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["observedGeneration"], 7);
    assert_eq!(patched.data["spec"]["replicas"], 1);
    let mut s = dapi.get_status("web").await.unwrap();
    assert_eq!(s.data["status"]["observedGeneration"], 7);
    s.data["status"]["observedGeneration"] = json!(8);
    let replaced = dapi
        .replace_status("web", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["observedGeneration"], 8);
    // As a typed object, the same.
    let typed_d: k8s_openapi::api::apps::v1::Deployment = replaced.try_parse().unwrap();
    assert_eq!(typed_d.status.unwrap().observed_generation, Some(8));
}

#[tokio::test]
async fn dynamic_informers_and_controllers_follow_their_resource() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let ar = ApiResource::erase::<ConfigMap>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    for i in 0..5 {
        let o = DynamicObject::new(&format!("pre-{i}"), &ar).data(json!({"data": {"n": "0"}}));
        api.create(&PostParams::default(), &o).await.unwrap();
    }

    // A controller over DynamicObjects keeps an annotation equal to the number of keys, as
    // the configmap_controller example does with the typed API.
    let shutdown = CancellationToken::new();
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let informer = factory.informer_for::<DynamicObject>(
        &ar,
        Some("default"),
        watcher::Config::default(),
        Default::default(),
    );
    assert_eq!(informer.resource(), "configmaps");
    let store = informer.store();
    let controller = Controller::new(informer, controller::Config::default());
    let handled = Arc::new(AtomicUsize::new(0));
    let run = {
        let (api, handled, shutdown) = (api.clone(), handled.clone(), shutdown.clone());
        tokio::spawn(controller.run(
            move |key: ObjectKey, o: Option<Arc<DynamicObject>>| {
                let (api, handled) = (api.clone(), handled.clone());
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    let Some(o) = o else {
                        return Ok::<_, skiff_client::Error>(Action::Done);
                    };
                    let keys = o.data["data"]
                        .as_object()
                        .map_or(0, |d| d.len())
                        .to_string();
                    let have = o.metadata.annotations.as_ref().and_then(|a| a.get("keys"));
                    if have != Some(&keys) {
                        let patch = json!({"metadata": {"annotations": {"keys": keys}}});
                        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                            .await?;
                    }
                    Ok(Action::Done)
                }
            },
            shutdown,
        ))
    };
    store.wait_until_ready().await;

    let two = DynamicObject::new("two", &ar).data(json!({"data": {"a": "1", "b": "2"}}));
    api.create(&PostParams::default(), &two).await.unwrap();
    api.patch(
        "pre-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    let want = |name: &str| match name {
        "two" | "pre-0" => "2",
        _ => "1",
    };
    let settled = until(Duration::from_secs(20), || {
        let store = store.clone();
        async move {
            let all = store.state();
            (all.len() == 6
                && all.iter().all(|o| {
                    let name = o.metadata.name.as_deref().unwrap_or("");
                    o.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("keys"))
                        .map(String::as_str)
                        == Some(want(name))
                }))
            .then_some(())
        }
    })
    .await;
    assert!(settled.is_some(), "cache: {:?}", store.state());
    // The cache equals a fresh list.
    let fresh: BTreeMap<_, _> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| {
            (
                o.metadata.name.unwrap(),
                o.metadata.resource_version.unwrap(),
            )
        })
        .collect();
    let cached: BTreeMap<_, _> = store
        .state()
        .iter()
        .map(|o| {
            (
                o.metadata.name.clone().unwrap(),
                o.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(cached, fresh);
    assert!(handled.load(Ordering::SeqCst) >= 6);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

/// The `widget_operator` example, run against a cluster; killed when dropped.
struct Operator {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl Operator {
    fn start(kubeconfig: &std::path::Path) -> Operator {
        let bin = skiff_e2e::bin_dir()
            .join("examples")
            .join("widget_operator");
        assert!(
            bin.exists(),
            "{} is built (cargo build -p skiff-client --examples)",
            bin.display()
        );
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(bin)
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Operator { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Ready condition of a Widget, as `(status, reason)`.
fn ready_condition(w: &DynamicObject) -> Option<(String, String)> {
    let c = w.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into()))
}

#[tokio::test]
async fn widget_operator_keeps_a_configmap_per_widget_until_the_widget_goes() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let c = Cluster::start().await.unwrap();
    let mut manager = skiff_e2e::Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--leader-elect=false", "--kube-api-qps=0"],
    )
    .unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let mut operator = Operator::start(&c.api.kubeconfig);

    // The operator registers the resource.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = until(Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            crds.get_opt("widgets.example.skiff.dev")
                .await
                .ok()
                .flatten()
        }
    })
    .await
    .unwrap_or_else(|| panic!("the operator creates the CRD; its log:\n{}", operator.log()));
    let widgets = ApiResource::from_crd(&crd, "v1").unwrap();
    assert_eq!(
        widgets,
        ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets")
    );
    let wapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &widgets);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let log_ready = until(Duration::from_secs(30), || {
        let log = operator.log();
        async move { log.contains("reconciling widgets").then_some(()) }
    })
    .await;
    assert!(log_ready.is_some(), "operator log:\n{}", operator.log());

    // A Widget gets its ConfigMap, owned by it, and a status saying so.
    let hello = DynamicObject::new("hello", &widgets)
        .data(json!({"spec": {"replicas": 3, "message": "hi"}}));
    let hello = wapi.create(&PostParams::default(), &hello).await.unwrap();
    let uid = hello.metadata.uid.clone().unwrap();
    let cm_of = |name: &'static str, lines: &'static str| {
        let cms = cms.clone();
        async move {
            let cm = cms.get_opt(name).await.ok()??;
            (cm.data.as_ref()?.get("lines").map(String::as_str) == Some(lines)).then_some(cm)
        }
    };
    let made = until(Duration::from_secs(20), || cm_of("hello", "hi\nhi\nhi"))
        .await
        .unwrap_or_else(|| panic!("the ConfigMap is made; operator log:\n{}", operator.log()));
    let owner = made.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1, "{owner:?}");
    assert_eq!(
        (
            owner[0].kind.as_str(),
            owner[0].name.as_str(),
            owner[0].uid.as_str()
        ),
        ("Widget", "hello", uid.as_str())
    );
    assert_eq!(owner[0].controller, Some(true));
    let status_at = |generation: i64| {
        let wapi = wapi.clone();
        async move {
            let w = wapi.get("hello").await.ok()?;
            (w.data["status"]["observedGeneration"] == generation).then_some(w)
        }
    };
    let w = until(Duration::from_secs(20), || status_at(1))
        .await
        .expect("the status is written");
    assert_eq!(w.data["status"]["ready"], true);
    assert_eq!(
        ready_condition(&w),
        Some(("True".into(), "ConfigMapReady".into()))
    );
    // kubectl sees the same, and the schema's descriptions come from the Rust doc comments.
    let k = c.kubectl();
    let reason = k.ok(&[
        "get",
        "widget",
        "hello",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ]);
    assert_eq!(reason, "ConfigMapReady");
    let explain = k.ok(&["explain", "widget.spec.message"]);
    assert!(explain.contains("The message."), "{explain}");

    // A new spec: a new generation, acted on.
    wapi.patch(
        "hello",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1, "message": "bye"}})),
    )
    .await
    .unwrap();
    until(Duration::from_secs(20), || cm_of("hello", "bye"))
        .await
        .expect("the ConfigMap follows the spec");
    until(Duration::from_secs(20), || status_at(2))
        .await
        .expect("the status follows the generation");

    // The ConfigMap deleted by hand comes back.
    cms.delete("hello", &DeleteParams::default()).await.unwrap();
    let back = until(Duration::from_secs(20), || cm_of("hello", "bye"))
        .await
        .expect("the ConfigMap is made again");
    assert_ne!(back.metadata.uid, made.metadata.uid);

    // A spec the operator refuses, and a ConfigMap that is someone else's: not ready, why.
    let bad =
        DynamicObject::new("bad", &widgets).data(json!({"spec": {"replicas": -1, "message": "x"}}));
    wapi.create(&PostParams::default(), &bad).await.unwrap();
    cms.create(&PostParams::default(), &cm("taken", "mine"))
        .await
        .unwrap();
    let taken = DynamicObject::new("taken", &widgets)
        .data(json!({"spec": {"replicas": 1, "message": "x"}}));
    wapi.create(&PostParams::default(), &taken).await.unwrap();
    for (name, reason) in [("bad", "InvalidSpec"), ("taken", "ConfigMapExists")] {
        let w = until(Duration::from_secs(20), || {
            let wapi = wapi.clone();
            async move {
                let w = wapi.get(name).await.ok()?;
                ready_condition(&w).is_some().then_some(w)
            }
        })
        .await
        .unwrap_or_else(|| panic!("{name} gets a status"));
        assert_eq!(w.data["status"]["ready"], false, "{name}");
        assert_eq!(ready_condition(&w), Some(("False".into(), reason.into())));
    }
    let untouched = cms.get("taken").await.unwrap();
    assert_eq!(untouched.data.unwrap()["k"], "mine");
    assert!(untouched.metadata.owner_references.is_none());
    assert!(cms.get_opt("bad").await.unwrap().is_none());

    // The Widget deleted: the garbage collector deletes its ConfigMap.
    wapi.delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    let gone = until(Duration::from_secs(30), || {
        let cms = cms.clone();
        async move { cms.get_opt("hello").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        gone.is_some(),
        "the ConfigMap is collected; controller manager log:\n{}",
        manager.log()
    );

    // SIGTERM: a clean stop.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(operator.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exited = until(Duration::from_secs(15), || {
        let status = operator.child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    let status = exited.unwrap_or_else(|| panic!("the operator stops; log:\n{}", operator.log()));
    assert!(status.success(), "{status}; log:\n{}", operator.log());
    assert!(operator.log().contains("stopped"), "{}", operator.log());
    manager.stop();
}
